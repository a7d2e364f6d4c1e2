//! Long tickets read the way a person reads them: the customer's own new words, without the
//! greeting, the signature, the legal footer or the quoted earlier replies, cut into segments
//! of a few sentences so every part is scored in the same batched encoder pass and no signal
//! drowns in a long e-mail.

/// A message prepared for the models.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The subject line, when the ticket has one.
    pub subject: Option<String>,
    /// The customer's own words (greeting, signature, boilerplate and quotes removed), with the
    /// subject on the first line: what topic and routing read.
    pub text: String,
    /// The body in segments of a few sentences; empty when the body is one short segment (then
    /// `text` is all there is to score).
    pub segments: Vec<String>,
}

/// Most words in one segment; sentences are never split.
const SEGMENT_WORDS: usize = 40;
/// Bodies of at most this many words are scored whole, as one text.
const SHORT_WORDS: usize = 45;

/// Cleans and segments a ticket.
pub fn prepare(subject: Option<&str>, body: &str) -> Prepared {
    let subject = subject.map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    let own = own_words(body);
    let own = if own.trim().is_empty() { body.trim().to_string() } else { own };
    let text = match &subject {
        Some(subject) => format!("{subject}\n{own}"),
        None => own.clone(),
    };
    let segments = if own.split_whitespace().count() <= SHORT_WORDS { Vec::new() } else { segment(&own) };
    Prepared { subject, text, segments }
}

/// The lines the customer wrote for this message: stops at a quoted reply or a forwarded block,
/// drops the signature and footer, and a greeting or sign-off line.
pub fn own_words(body: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for line in body.lines() {
        let trimmed = line.trim();
        if starts_quote(trimmed) || starts_signature(trimmed) {
            break;
        }
        if trimmed.starts_with('>') || is_greeting(trimmed) || is_boilerplate(trimmed) {
            continue;
        }
        kept.push(line);
    }
    // A sign-off ("Thanks,", "Best regards") and the name lines after it end the message.
    if let Some(at) = kept.iter().rposition(|line| is_sign_off(line.trim())) {
        if kept.len() - at <= 6 {
            kept.truncate(at);
        }
    }
    kept.join("\n").trim().to_string()
}

/// Sentences grouped into segments of at most `SEGMENT_WORDS` words (paragraph breaks end one).
pub fn segment(text: &str) -> Vec<String> {
    let mut segments = Vec::new();
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let mut current = String::new();
        for sentence in sentences(paragraph) {
            let words = sentence.split_whitespace().count();
            if !current.is_empty() && current.split_whitespace().count() + words > SEGMENT_WORDS {
                segments.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(sentence);
        }
        if !current.is_empty() {
            segments.push(current);
        }
    }
    segments
}

/// Sentences of one paragraph: cut after `.`, `?`, `!` followed by a space, and at line breaks.
fn sentences(paragraph: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in paragraph.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut start = 0;
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let end_mark = matches!(b, b'.' | b'?' | b'!');
            if end_mark && bytes.get(i + 1).is_some_and(|n| *n == b' ') {
                let sentence = line[start..=i].trim();
                if !sentence.is_empty() {
                    out.push(sentence);
                }
                start = i + 1;
            }
        }
        let rest = line[start..].trim();
        if !rest.is_empty() {
            out.push(rest);
        }
    }
    out
}

/// The start of a quoted earlier message or a forwarded one.
fn starts_quote(line: &str) -> bool {
    let lower = line.to_lowercase();
    (lower.starts_with("on ") && (lower.ends_with("wrote:") || lower.contains(" wrote:")))
        || (lower.starts_with("am ") && lower.contains("schrieb"))
        || (lower.starts_with("le ") && lower.contains("a écrit"))
        || (lower.starts_with("el ") && lower.contains("escribió"))
        || lower.contains("-----original message-----")
        || lower.contains("---------- forwarded message")
        || lower.starts_with("begin forwarded message")
        || (lower.starts_with("from:") && lower.contains('@'))
        || lower.starts_with("-----")
        || lower.starts_with("________________")
}

/// A signature delimiter or a device footer.
fn starts_signature(line: &str) -> bool {
    let lower = line.to_lowercase();
    line == "--" || line == "-- " || lower.starts_with("sent from my ") || lower.starts_with("get outlook for")
}

/// Confidentiality notices and similar footers.
fn is_boilerplate(line: &str) -> bool {
    let lower = line.to_lowercase();
    ["this email and any", "this e-mail and any", "this message and any", "confidentiality notice", "disclaimer:"]
        .iter()
        .any(|start| lower.starts_with(start))
        || (lower.contains("intended recipient") && lower.contains("confidential"))
}

/// A line that only greets: "Hi team,", "Dear Support,", "Hallo,".
fn is_greeting(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.is_empty() || words.len() > 4 || !line.ends_with([',', '!', ':']) && words.len() > 2 {
        return false;
    }
    let first = words[0].trim_end_matches([',', '!', ':']).to_lowercase();
    GREETINGS.contains(&first.as_str())
}

/// Whether `word` (lower-case) opens a greeting: "hi", "hallo", "bonjour".
pub fn is_greeting_word(word: &str) -> bool {
    GREETINGS.contains(&word) && word != "good" && word != "dear"
}

/// A line that only signs off: "Thanks,", "Best regards", "Mit freundlichen Grüßen".
fn is_sign_off(line: &str) -> bool {
    let lower = line.trim_end_matches([',', '.', '!']).to_lowercase();
    !lower.is_empty() && lower.split_whitespace().count() <= 4 && SIGN_OFFS.iter().any(|s| lower == *s)
}

const GREETINGS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "dear",
    "hiya",
    "greetings",
    "good",
    "hallo",
    "liebe",
    "lieber",
    "sehr",
    "bonjour",
    "hola",
    "estimados",
    "estimado",
    "buenos",
    "olá",
    "ola",
    "prezados",
    "caro",
    "cara",
    "gentile",
    "buongiorno",
    "ciao",
    "beste",
    "geachte",
    "dzień",
    "witam",
    "szanowni",
];

const SIGN_OFFS: &[&str] = &[
    "thanks",
    "thank you",
    "many thanks",
    "thanks in advance",
    "regards",
    "best regards",
    "kind regards",
    "warm regards",
    "best",
    "cheers",
    "sincerely",
    "yours sincerely",
    "all the best",
    "thx",
    "br",
    "mit freundlichen grüßen",
    "viele grüße",
    "beste grüße",
    "cordialement",
    "bien cordialement",
    "saludos",
    "un saludo",
    "atentamente",
    "atenciosamente",
    "obrigado",
    "obrigada",
    "cordiali saluti",
    "saluti",
    "met vriendelijke groet",
    "groeten",
    "pozdrawiam",
    "z poważaniem",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_keeps_only_the_customers_new_words() {
        let body = "Hi team,\n\nWe were charged twice for March. Please refund the duplicate.\n\nThanks,\nAda Lovelace\nFinance, Acme Ltd\n+44 20 7946 0000\n\nOn Tue, 3 Mar 2026 at 10:02, Support <support@example.com> wrote:\n> Your account security settings are fine.\n> We never share passwords.";
        let prepared = prepare(Some("Invoice question"), body);
        assert_eq!(prepared.text, "Invoice question\nWe were charged twice for March. Please refund the duplicate.");
        assert!(prepared.segments.is_empty(), "a short body is scored whole");
    }

    #[test]
    fn a_long_body_is_cut_into_sentence_segments() {
        let sentence = "The sync between our CRM and the billing system stopped working yesterday morning.";
        let body =
            format!("{}\n\nSecurity note: someone logged into our admin account from Brazil.", [sentence; 6].join(" "));
        let prepared = prepare(None, &body);
        assert!(prepared.segments.len() >= 3, "{:?}", prepared.segments);
        assert!(prepared.segments.iter().all(|s| s.split_whitespace().count() <= SEGMENT_WORDS));
        assert_eq!(
            prepared.segments.last().unwrap(),
            "Security note: someone logged into our admin account from Brazil."
        );
    }

    #[test]
    fn a_body_that_is_all_boilerplate_is_kept_as_it_is() {
        assert_eq!(prepare(None, "Thanks,").text, "Thanks,");
        assert_eq!(prepare(None, "Sent from my iPhone").text, "Sent from my iPhone");
    }
}
