//! Redaction of personal data and secrets customers paste into messages: applied after the
//! models have read the original, so what is stored, sent to live screens, put in handoff
//! packets and logged holds typed placeholders (`[email]`, `[card]`...) instead.
//!
//! Card numbers must pass the Luhn check and IBANs the ISO 7064 mod-97 check, so order numbers
//! and long ids are not blanked by mistake.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

/// What can be redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Redaction {
    Email,
    Phone,
    Card,
    Iban,
    /// API keys, tokens and passwords given as `password: ...`.
    Secret,
}

impl Redaction {
    pub const ALL: [Redaction; 5] =
        [Redaction::Email, Redaction::Phone, Redaction::Card, Redaction::Iban, Redaction::Secret];

    fn placeholder(self) -> &'static str {
        match self {
            Redaction::Email => "[email]",
            Redaction::Phone => "[phone]",
            Redaction::Card => "[card]",
            Redaction::Iban => "[iban]",
            Redaction::Secret => "[secret]",
        }
    }
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}\b").unwrap());
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b").unwrap());
/// 13-19 digits, optionally grouped by spaces or dashes.
static CARD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(?:\d[ \-]?){12,18}\d\b").unwrap());
/// An international or grouped number of 8-15 digits.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]?\d{2,4}){2,4}\b").unwrap()
});
/// Dates (`2024-03-05`, `05.03.2024`) have phone-like digit groups.
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:\d{4}[\-./]\d{1,2}[\-./]\d{1,2}|\d{1,2}[\-./]\d{1,2}[\-./]\d{4})\s*$").unwrap()
});
/// A labelled secret (`password: hunter2`, `api key = ...`) or a token-shaped string.
static LABELLED_SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(password|passwort|contraseña|mot de passe|passcode|pin|api[ _\-]?key|token|secret)(\s*(?:is|:|=)\s*)(\S+)")
        .unwrap()
});
static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:sk|pk|rk|tl|ghp|gho|xox[abp]|AKIA)[_\-]?[A-Za-z0-9_\-]{16,}\b|\b[A-Za-z0-9_\-]*[0-9][A-Za-z0-9_\-]*[A-Za-z][A-Za-z0-9_\-]{30,}\b")
        .unwrap()
});

/// The redactions a deployment applies (`privacy.redact`).
#[derive(Debug, Clone)]
pub struct Redactor {
    kinds: Vec<Redaction>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(&Redaction::ALL)
    }
}

impl Redactor {
    pub fn new(kinds: &[Redaction]) -> Self {
        Self { kinds: kinds.to_vec() }
    }

    pub fn none() -> Self {
        Self { kinds: Vec::new() }
    }

    fn on(&self, kind: Redaction) -> bool {
        self.kinds.contains(&kind)
    }

    /// `text` with each enabled kind replaced by its placeholder; borrowed when nothing matched.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        // Secrets and e-mails first: their digits must not be read as phone numbers.
        if self.on(Redaction::Secret) {
            out = replace(out, &LABELLED_SECRET, |c| format!("{}{}[secret]", &c[1], &c[2]));
            out = replace(out, &TOKEN, |_| Redaction::Secret.placeholder().to_string());
        }
        if self.on(Redaction::Email) {
            out = replace(out, &EMAIL, |_| Redaction::Email.placeholder().to_string());
        }
        if self.on(Redaction::Iban) {
            out = replace(out, &IBAN, |c| if iban_valid(&c[0]) { "[iban]".into() } else { c[0].to_string() });
        }
        if self.on(Redaction::Card) {
            out = replace(out, &CARD, |c| if luhn_valid(&c[0]) { "[card]".into() } else { c[0].to_string() });
        }
        if self.on(Redaction::Phone) {
            out = replace(out, &PHONE, |c| {
                let digits = c[0].bytes().filter(u8::is_ascii_digit).count();
                if (8..=15).contains(&digits) && !DATE.is_match(&c[0]) {
                    "[phone]".into()
                } else {
                    c[0].to_string()
                }
            });
        }
        out
    }
}

fn replace<'a>(text: Cow<'a, str>, pattern: &Regex, with: impl Fn(&Captures) -> String) -> Cow<'a, str> {
    if !pattern.is_match(&text) {
        return text;
    }
    let replaced = pattern.replace_all(&text, |c: &Captures| with(c)).into_owned();
    if replaced == *text {
        return text;
    }
    Cow::Owned(replaced)
}

fn luhn_valid(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_valid(candidate: &str) -> bool {
    let compact: String = candidate.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        for digit in value.to_string().chars() {
            remainder = (remainder * 10 + digit.to_digit(10).unwrap_or(0)) % 97;
        }
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_data_and_secrets_become_typed_placeholders() {
        let redactor = Redactor::default();
        let text = "I'm ana.lopez@example.com, call +44 20 7946 0958. Card 4111 1111 1111 1111 was charged, \
                    refund to DE89 3704 0044 0532 0130 00. My password: hunter2! key sk_live_4eC39HqLyjWDarjtT1zdp7dc";
        let redacted = redactor.redact(text);
        assert_eq!(
            redacted,
            "I'm [email], call [phone]. Card [card] was charged, refund to [iban]. My password: [secret] key [secret]"
        );
    }

    #[test]
    fn numbers_that_fail_their_checks_stay() {
        let redactor = Redactor::default();
        // Not Luhn-valid, an order number, a date, a price, an invalid IBAN check.
        for text in [
            "order 4111 1111 1111 1112 is late",
            "order #123456 arrived",
            "since 2024-03-05",
            "it cost 1299.00 euros",
            "DE00 3704 0044 0532 0130 00",
        ] {
            assert_eq!(redactor.redact(text), text, "{text}");
        }
        assert!(matches!(redactor.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn only_the_configured_kinds_are_redacted() {
        let redactor = Redactor::new(&[Redaction::Email]);
        assert_eq!(redactor.redact("a@b.io 4111111111111111"), "[email] 4111111111111111");
        assert_eq!(Redactor::none().redact("a@b.io"), "a@b.io");
    }
}
