//! The language of a message (ISO 639-1), so a help center that serves English does not answer
//! German tickets with English articles as if it understood them.
//!
//! Support messages are short, and trigram detectors misread short English often ("do you have a
//! dark mode" as Portuguese). The common function words of each language decide first (a short
//! message still has "the", "ich", "quiero", "je"); `whatlang` decides the rest, and only when it
//! is sure.

use whatlang::{Detector, Lang};

/// Function words that mark a language; a word shared by two languages counts for both.
const FUNCTION_WORDS: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "the", "a", "an", "to", "i", "my", "is", "how", "do", "you", "can", "for", "and", "it", "of", "in", "not",
            "please", "with", "we", "our", "your", "this", "that", "what", "where", "why", "when", "have", "has",
            "was", "are", "me", "be", "on", "at", "from", "but", "if", "there", "just", "get", "want", "need", "does",
            "don't", "i'm", "it's", "can't", "won't", "would", "could", "should", "which", "any", "all", "they",
            "them", "still", "again", "help", "thanks", "thank", "hi", "hello",
        ],
    ),
    (
        "de",
        &[
            "ich", "und", "nicht", "ist", "der", "die", "das", "mit", "ein", "eine", "einen", "wie", "kann", "mein",
            "meine", "bitte", "wir", "sie", "zu", "auf", "für", "von", "den", "dem", "es", "sich", "auch", "noch",
            "haben", "habe", "wird", "sind", "nach", "bei", "aus", "unser", "unsere", "möchte", "würde", "kein",
            "keine", "warum", "wo", "was", "danke", "hallo", "immer", "schon", "einem", "mich", "mir", "uns",
        ],
    ),
    (
        "es",
        &[
            "el", "la", "de", "que", "y", "en", "mi", "por", "no", "es", "con", "para", "una", "un", "cómo", "como",
            "quiero", "los", "las", "puedo", "del", "se", "lo", "al", "me", "nuestra", "nuestro", "pero", "hola",
            "gracias", "está", "esta", "hay", "sus", "tengo", "qué", "cuenta", "favor", "ya", "sigue", "desde",
            "hemos", "necesito", "muy", "también", "dónde",
        ],
    ),
    (
        "fr",
        &[
            "je", "le", "la", "les", "de", "des", "et", "un", "une", "est", "pas", "que", "pour", "dans", "mon", "ma",
            "mes", "nous", "vous", "avec", "sur", "ne", "ce", "cette", "il", "elle", "au", "aux", "du", "comment",
            "merci", "bonjour", "notre", "votre", "mais", "suis", "avons", "j'ai", "c'est", "qui", "où", "toujours",
            "veux", "voudrais", "peux", "être", "très",
        ],
    ),
    (
        "pt",
        &[
            "o", "a", "de", "que", "e", "do", "da", "em", "um", "uma", "para", "com", "não", "meu", "minha", "os",
            "as", "no", "na", "por", "mais", "como", "nós", "nosso", "nossa", "você", "isso", "está", "estou",
            "obrigado", "obrigada", "olá", "quero", "gostaria", "preciso", "ainda", "também", "já", "foi", "ser", "ao",
            "dos", "das", "pelo", "pela", "conta",
        ],
    ),
    (
        "it",
        &[
            "il",
            "la",
            "di",
            "che",
            "e",
            "non",
            "un",
            "una",
            "per",
            "con",
            "mi",
            "sono",
            "è",
            "del",
            "della",
            "nel",
            "nella",
            "lo",
            "gli",
            "le",
            "come",
            "vorrei",
            "grazie",
            "ciao",
            "buongiorno",
            "nostro",
            "nostra",
            "ho",
            "abbiamo",
            "anche",
            "ancora",
            "già",
            "perché",
            "posso",
            "questo",
            "questa",
            "mio",
            "mia",
            "al",
            "alla",
            "dei",
            "delle",
            "ma",
            "se",
            "sul",
            "tutti",
        ],
    ),
    (
        "nl",
        &[
            "ik", "de", "het", "een", "en", "niet", "is", "van", "in", "op", "met", "voor", "dat", "die", "mijn", "we",
            "wij", "ons", "onze", "hoe", "kan", "kunnen", "wil", "graag", "bedankt", "hallo", "maar", "nog", "ook",
            "er", "zijn", "heb", "hebben", "wordt", "geen", "naar", "om", "bij", "al", "waarom", "waar", "steeds", "u",
            "jullie",
        ],
    ),
    (
        "pl",
        &[
            "i",
            "w",
            "nie",
            "się",
            "na",
            "z",
            "do",
            "to",
            "jest",
            "że",
            "mój",
            "moja",
            "moje",
            "jak",
            "czy",
            "mam",
            "mamy",
            "nasz",
            "nasza",
            "nasze",
            "proszę",
            "dziękuję",
            "dzień",
            "dobry",
            "ale",
            "po",
            "dla",
            "jeszcze",
            "już",
            "chcę",
            "chciałbym",
            "chciałabym",
            "mogę",
            "tak",
            "od",
            "przez",
            "ten",
            "ta",
            "nadal",
            "konto",
            "co",
            "gdzie",
            "dlaczego",
        ],
    ),
];

/// Letters that only some of the candidate languages use.
const LETTERS: &[(&str, &str)] =
    &[("de", "äöüß"), ("es", "ñ¿¡"), ("fr", "èêëçœàùû"), ("pt", "ãõç"), ("it", "ìò"), ("pl", "ąęłśżźćń")];

/// Other languages told apart by `whatlang` when it is sure.
const OTHERS: &[(Lang, &str)] = &[
    (Lang::Eng, "en"),
    (Lang::Deu, "de"),
    (Lang::Spa, "es"),
    (Lang::Fra, "fr"),
    (Lang::Por, "pt"),
    (Lang::Ita, "it"),
    (Lang::Nld, "nl"),
    (Lang::Pol, "pl"),
    (Lang::Swe, "sv"),
    (Lang::Dan, "da"),
    (Lang::Nob, "no"),
    (Lang::Fin, "fi"),
    (Lang::Ces, "cs"),
    (Lang::Ron, "ro"),
    (Lang::Hun, "hu"),
    (Lang::Tur, "tr"),
    (Lang::Rus, "ru"),
    (Lang::Ukr, "uk"),
    (Lang::Ell, "el"),
    (Lang::Jpn, "ja"),
    (Lang::Cmn, "zh"),
    (Lang::Kor, "ko"),
    (Lang::Ara, "ar"),
    (Lang::Heb, "he"),
    (Lang::Hin, "hi"),
];

/// The detected language, or `fallback` when the text gives too little to tell.
pub fn detect(text: &str, fallback: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !(c.is_alphabetic() || c == '\'')).filter(|w| !w.is_empty()).collect();
    let latin =
        text.chars().filter(|c| c.is_alphabetic()).all(|c| c.is_ascii() || ('\u{00C0}'..='\u{024F}').contains(&c));
    if latin {
        if let Some(language) = by_function_words(&words, &lower) {
            return language.to_string();
        }
    }
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    let detector = Detector::with_allowlist(OTHERS.iter().map(|(lang, _)| *lang).collect());
    match detector.detect(text) {
        // A script of its own is enough; a Latin text needs a sure detector.
        Some(info) if !latin || (info.is_reliable() && letters >= 20) => OTHERS
            .iter()
            .find(|(lang, _)| *lang == info.lang())
            .map_or_else(|| fallback.to_string(), |(_, code)| code.to_string()),
        _ => fallback.to_string(),
    }
}

/// The language whose function words (and letters) the text uses most, when one clearly leads.
fn by_function_words(words: &[&str], lower: &str) -> Option<&'static str> {
    let mut scores: Vec<(&'static str, f32)> = FUNCTION_WORDS
        .iter()
        .map(|(language, marks)| {
            let hits = words.iter().filter(|w| marks.contains(w)).count() as f32;
            let letters =
                LETTERS.iter().filter(|(l, _)| l == language).any(|(_, set)| lower.chars().any(|c| set.contains(c)));
            (*language, hits + if letters { 1.5 } else { 0.0 })
        })
        .collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (best, score) = scores[0];
    let second = scores[1].1;
    // One more mark than any other language, or English tied with nothing against it.
    (score >= 1.0 && score > second).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::detect;

    #[test]
    fn common_support_languages_are_told_apart_and_short_texts_fall_back() {
        assert_eq!(detect("ich möchte mit einem Mitarbeiter sprechen", "en"), "de");
        assert_eq!(detect("Quiero cancelar mi suscripción", "en"), "es");
        assert_eq!(detect("Je veux parler à un conseiller", "en"), "fr");
        assert_eq!(detect("Quero falar com um atendente humano.", "en"), "pt");
        assert_eq!(detect("Vorrei parlare con un operatore, per favore", "en"), "it");
        assert_eq!(detect("Ik wil graag een medewerker spreken", "en"), "nl");
        assert_eq!(detect("Chcę rozmawiać z konsultantem", "en"), "pl");
        assert_eq!(detect("How do I export all our projects to CSV?", "en"), "en");
        assert_eq!(detect("do you have a dark mode", "en"), "en");
        assert_eq!(detect("operator", "en"), "en");
        assert_eq!(detect("ok thx", "en"), "en");
        assert_ne!(detect("Мне нужна помощь с моим счетом, пожалуйста", "en"), "en", "a script of its own");
    }

    #[test]
    fn the_project_corpus_is_read_in_its_own_language() {
        // 3,208 tickets written for the project in eight languages (models/triage/corpus).
        let (mut english, mut english_wrong, mut others, mut others_wrong) = (0, 0, 0, 0);
        for file in ["en_signals", "en_emails", "en_people", "en_routine", "multilingual"] {
            let path = format!("{}/../../models/triage/corpus/{file}.jsonl", env!("CARGO_MANIFEST_DIR"));
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                let (text, language) = (row["text"].as_str().unwrap(), row["lang"].as_str().unwrap());
                let wrong = detect(text, "en") != language;
                if language == "en" {
                    (english, english_wrong) = (english + 1, english_wrong + usize::from(wrong));
                } else {
                    (others, others_wrong) = (others + 1, others_wrong + usize::from(wrong));
                }
            }
        }
        assert!(
            english_wrong * 200 <= english,
            "{english_wrong} of {english} English tickets read as another language"
        );
        assert!(others_wrong * 15 <= others, "{others_wrong} of {others} other-language tickets misread");
    }
}
