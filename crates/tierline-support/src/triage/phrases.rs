//! Phrase matching on word boundaries, with negation: "no need for a human" does not ask for one.

/// Lower-cased words separated by single spaces, padded: `" charged twice "` matches whole words.
pub fn normalise(text: &str) -> String {
    let mut out = String::from(" ");
    for c in text.chars().flat_map(char::to_lowercase) {
        // Typographic apostrophes (phones type them) count as plain ones: "didn’t" = "didn't".
        let c = if matches!(c, '’' | '‘' | 'ʼ') { '\'' } else { c };
        if c.is_alphanumeric() || c == '\'' {
            out.push(c);
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

/// The phrases of `phrases` found in `normalised` text, whole words only.
pub fn matches<'a>(normalised: &str, phrases: &'a [String]) -> Vec<&'a str> {
    phrases.iter().filter(|p| normalised.contains(&format!(" {} ", p.to_lowercase()))).map(String::as_str).collect()
}

/// The phrases said and not negated: a phrase counts only where none of `negators` ends within
/// `window` words before it in the same clause ("no need for a human", "I'm not cancelling",
/// "ich will nicht kündigen"). A negation never reaches across punctuation: "No, I want a
/// person" asks for one. A phrase said once negated and once plainly counts. Takes the raw text.
pub fn affirmed<'a>(text: &str, phrases: &'a [String], negators: &[String], window: usize) -> Vec<&'a str> {
    let negators: Vec<String> = negators.iter().map(|n| normalise(n).trim().to_string()).collect();
    let clauses = clauses(text);
    phrases
        .iter()
        .filter(|phrase| {
            let needle = format!(" {} ", phrase.to_lowercase());
            clauses.iter().any(|clause| {
                let mut from = 0;
                while let Some(found) = clause[from..].find(&needle) {
                    let at = from + found;
                    if !negated_before(&clause[..at + 1], &negators, window) {
                        return true;
                    }
                    from = at + 1;
                }
                false
            })
        })
        .map(String::as_str)
        .collect()
}

/// The text's clauses, each normalised: split at punctuation that ends a clause (and the reach
/// of a negation) and at a spaced dash ("No - get me a human"). An apostrophe and a hyphen inside
/// a word do not split.
pub fn clauses(text: &str) -> Vec<String> {
    text.replace(" - ", ", ").split(CLAUSE_BREAKS).map(normalise).collect()
}

/// Punctuation that ends a clause.
const CLAUSE_BREAKS: &[char] =
    &[',', '.', ';', ':', '!', '?', '\n', '(', ')', '–', '—', '¿', '¡', '…', '"', '“', '”', '«', '»', '/'];

/// Whether a negator ends within the last `window` words of `before`.
fn negated_before(before: &str, negators: &[String], window: usize) -> bool {
    let words: Vec<&str> = before.split_whitespace().collect();
    let recent = words[words.len().saturating_sub(window)..].join(" ");
    let recent = format!(" {recent} ");
    negators.iter().any(|n| !n.is_empty() && recent.contains(&format!(" {n} ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn phrases_match_whole_words_only() {
        assert_eq!(normalise("It wasn’t me"), " it wasn't me ");
        let text = normalise("I was CHARGED twice!! Not me; the apiary isn't an API.");
        assert_eq!(text, " i was charged twice not me the apiary isn't an api ");
        let phrases = strings(&["charged twice", "not me", "api", "pi", "me the"]);
        assert_eq!(matches(&text, &phrases), ["charged twice", "not me", "api", "me the"]);
    }

    #[test]
    fn a_negated_phrase_does_not_count_and_a_plain_one_does() {
        let negators = strings(&["no need for", "don't", "not", "nicht", "no"]);
        let phrases = strings(&["a human", "cancel", "kündigen"]);
        let said = |text: &str| affirmed(text, &phrases, &negators, 4);
        assert!(said("No need for a human, just tell me where the API docs are").is_empty());
        assert!(said("I don't want to cancel, just pause").is_empty());
        assert!(said("Ich will nicht kündigen").is_empty());
        assert_eq!(said("please get me a human"), ["a human"]);
        assert_eq!(said("not sure where to go: I want to cancel"), ["cancel"]);
        // A negation ends with its clause: "No, ..." answers the bot, it negates nothing after it.
        assert_eq!(said("No, I want a human"), ["a human"]);
        assert_eq!(said("No - get me a human"), ["a human"]);
        assert_eq!(said("Das hilft nicht, ich will kündigen"), ["kündigen"]);
    }
}
