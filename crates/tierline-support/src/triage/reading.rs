//! What the models read in one message: the customer's own words and, for a long body, each
//! segment, all scored in one batched encoder pass; and the message's language.

use tierline_infer::classify::{Classifier, TextClassification};
use tierline_infer::EngineError;

use super::language;
use super::segments::{self, Prepared};

/// Weight of the subject line, scored on its own, in the request kind and queue of a long
/// e-mail (the body's own words weigh the rest).
const SUBJECT_WEIGHT: f32 = 0.3;

#[derive(Debug, Clone)]
pub struct Reading {
    pub prepared: Prepared,
    /// ISO 639-1.
    pub language: String,
    /// The subject and the customer's own words, read whole.
    pub whole: TextClassification,
    /// The subject alone, for a long e-mail with one.
    pub subject: Option<TextClassification>,
    /// Each segment of a long body, in order (empty for a short message).
    pub segments: Vec<TextClassification>,
    /// The whole text's embedding (repeat and spike detection).
    pub embedding: Vec<f32>,
}

/// The strongest reading of one label over the whole text and every segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Strongest<'a> {
    pub score: f32,
    /// The text that scored it: a segment, or the whole message.
    pub text: &'a str,
    /// Whether a segment (not the whole message) scored it.
    pub in_segment: bool,
}

impl Reading {
    /// Reads `subject` + `body` (one encoder pass for every part).
    pub async fn of(
        classifier: &Classifier,
        subject: Option<&str>,
        body: &str,
        fallback_language: &str,
    ) -> Result<Self, EngineError> {
        let prepared = segments::prepare(subject, body);
        let language = language::detect(&prepared.text, fallback_language);
        let subject_alone = prepared.subject.clone().filter(|_| !prepared.segments.is_empty());
        let mut texts = vec![prepared.text.clone()];
        texts.extend(subject_alone.iter().cloned());
        texts.extend(prepared.segments.iter().cloned());
        let mut outputs = classifier.classify_with_embeddings(texts, 20).await?.into_iter();
        let (whole, embedding) =
            outputs.next().ok_or_else(|| EngineError::Inference("no result for the message".into()))?;
        let subject = subject_alone.and_then(|_| outputs.next()).map(|(classification, _)| classification);
        let segments = outputs.map(|(classification, _)| classification).collect();
        Ok(Self { prepared, language, whole, subject, segments, embedding })
    }

    /// The strongest reading of `label` from head `head`: the whole message, or a segment of a
    /// long one. A segment alone is read out of its context, so it counts as the geometric mean
    /// of its own score and the whole message's: a segment can make a signal the whole message
    /// hints at stand out, not invent one the message as a whole does not carry.
    pub fn strongest(&self, head: &str, label: &str) -> Strongest<'_> {
        let whole = self.whole.probability(head, label);
        let mut best = Strongest { score: whole, text: &self.prepared.text, in_segment: false };
        for (segment, text) in self.segments.iter().zip(&self.prepared.segments) {
            let score = (segment.probability(head, label) * whole).sqrt();
            if score > best.score {
                best = Strongest { score, text, in_segment: true };
            }
        }
        best
    }

    /// The best label of a single-label head among those `keep` accepts, with its probability
    /// renormalised over them.
    pub fn label_among(&self, head: &str, keep: impl Fn(&str) -> bool) -> Option<(String, f32)> {
        let labels: Vec<String> = self.whole.labels(head).into_iter().filter(|l| keep(l)).collect();
        let scores: Vec<f32> = labels.iter().map(|l| self.blended(head, l)).collect();
        let total: f32 = scores.iter().sum();
        let (best, score) = labels.into_iter().zip(scores).max_by(|a, b| a.1.total_cmp(&b.1))?;
        Some((best, if total > 0.0 { score / total } else { score }))
    }

    fn blended(&self, head: &str, label: &str) -> f32 {
        match &self.subject {
            Some(subject) => {
                (1.0 - SUBJECT_WEIGHT) * self.whole.probability(head, label)
                    + SUBJECT_WEIGHT * subject.probability(head, label)
            }
            None => self.whole.probability(head, label),
        }
    }

    /// The best label of a single-label head, the subject weighted in for a long e-mail.
    pub fn label(&self, head: &str) -> Option<(String, f32)> {
        let Some(subject) = &self.subject else {
            return self.whole.label(head).map(|(label, score)| (label.to_string(), score));
        };
        let blended = |label: &str| {
            (1.0 - SUBJECT_WEIGHT) * self.whole.probability(head, label)
                + SUBJECT_WEIGHT * subject.probability(head, label)
        };
        self.whole
            .labels(head)
            .into_iter()
            .map(|label| {
                let score = blended(&label);
                (label, score)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}
