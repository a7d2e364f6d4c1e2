//! The one rule for "this text says nothing", shared by every field that must hold something,
//! so the API's checks and its OpenAPI document (`pattern: "\S"`) agree.

/// Whether `text` holds nothing but whitespace: Unicode White_Space plus the ASCII information
/// separators U+001C-U+001F, which common regex engines (Python's, used by API fuzzers and
/// validators) also count as whitespace.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Length as the OpenAPI document counts it (`maxLength`): Unicode scalar values.
pub fn char_len(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_whitespace_only() {
        assert!(is_blank(""));
        assert!(is_blank(" \t\n\u{a0}\u{3000}\u{1f}"));
        assert!(!is_blank(" a "));
        assert!(!is_blank("\u{1}"));
        assert!(!is_blank("\u{feff}"));
    }
}
