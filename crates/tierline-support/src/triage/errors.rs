//! Error codes a customer quotes: a client-side error the help center documents is a known fix
//! the AI can give; a server error or an unknown one is a bug for a person to look at.

use crate::kb::Answer;

/// The client-side error codes in `text`: HTTP 4xx statuses ("a 401", "429s", "HTTP 403") and
/// upper-case identifiers with an underscore (`ERR_SSO_401`, `REQUEST_LIMIT_EXCEEDED`). A number
/// that is an amount, a date or part of a longer number is not one.
pub fn client_error_codes(text: &str) -> Vec<&str> {
    let mut codes = Vec::new();
    let mut rest = text;
    let mut before: Option<char> = None;
    while let Some(start) = rest.find(is_word_char) {
        let preceding = rest[..start].chars().next_back().or(before);
        let word_end = rest[start..].find(|c: char| !is_word_char(c)).map_or(rest.len(), |end| start + end);
        let word = &rest[start..word_end];
        let following = rest[word_end..].chars().next();
        if is_identifier(word) || is_client_status(word, preceding, following) {
            codes.push(word.trim_end_matches('s'));
        }
        before = word.chars().next_back();
        rest = &rest[word_end..];
    }
    codes.dedup();
    codes
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `ERR_SSO_401`: upper-case letters and digits joined by underscores, starting with a letter.
fn is_identifier(word: &str) -> bool {
    word.len() >= 5
        && word.contains('_')
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !word.ends_with('_')
}

/// `401` or `429s`, not `$400`, `4.401`, `12:45` or `401,50`.
fn is_client_status(word: &str, preceding: Option<char>, following: Option<char>) -> bool {
    let digits = word.strip_suffix('s').unwrap_or(word);
    let status = digits.len() == 3 && digits.starts_with('4') && digits.chars().all(|c| c.is_ascii_digit());
    // A full stop after the number may end the sentence, so it does not disqualify it.
    let amount_or_part =
        preceding.is_some_and(|c| "$€£¥.,:/#-".contains(c)) || following.is_some_and(|c| ",:/%€$-".contains(c));
    status && !amount_or_part
}

/// The first of `codes` that the answer's passage (or a cited passage) names, if any.
pub fn documented_in<'a>(codes: &[&'a str], answer: &Answer) -> Option<&'a str> {
    let passages: Vec<&str> = answer
        .answer
        .as_deref()
        .into_iter()
        .chain(answer.citations.iter().take(1).map(|citation| citation.passage.as_str()))
        .collect();
    codes.iter().copied().find(|code| {
        passages.iter().any(|passage| {
            passage.match_indices(code).any(|(at, _)| {
                let before = passage[..at].chars().next_back();
                let after = passage[at + code.len()..].chars().next();
                !before.is_some_and(is_word_char) && !after.is_some_and(|c| is_word_char(c) && c != 's')
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_identifiers_but_not_amounts() {
        assert_eq!(client_error_codes("our zap stops with a 401 since yesterday"), ["401"]);
        assert_eq!(client_error_codes("Getting 429s from the API"), ["429"]);
        assert_eq!(client_error_codes("One new hire gets ERR_SSO_401, everyone else"), ["ERR_SSO_401"]);
        assert_eq!(client_error_codes("sync log says REQUEST_LIMIT_EXCEEDED"), ["REQUEST_LIMIT_EXCEEDED"]);
        assert!(client_error_codes("you charged $400 on 4.404, and 401,50 EUR at 12:403").is_empty());
        assert!(client_error_codes("intermittent 500 errors, 40 seats, 4015 rows, 45% of runs").is_empty());
        assert!(client_error_codes("the USt-IdNr. DE 298 114 562 is refused").is_empty());
        assert!(client_error_codes("I'm on the PRO_ plan, HELLO").is_empty());
    }
}
