//! Closing a conversation: who resolved it, the CSAT, what the resolver recorded; the labeled
//! example the resolution teaches (stored in the same transaction); and an approved answer
//! turned into an internal knowledge-base article (after the resolution is stored: a failure
//! there is logged, never undoing the resolution).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Support, SupportError};
use crate::kb::{Article, Audience, KnowledgeBase};
use crate::store::{Change, ConversationRow, FeedbackKind, MessageRow, NewFeedback, ResolutionOutcome, Role, Status};

/// Longest topic label a resolver may give.
pub const MAX_TOPIC_CHARS: usize = 64;

/// Who closed a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResolvedBy {
    Ai,
    Human,
}

/// What a resolver sends.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub by: ResolvedBy,
    pub agent: Option<String>,
    /// 1-5.
    pub csat: Option<u8>,
    pub outcome: ResolutionOutcome,
}

/// The resolved conversation, and the internal article made from an approved answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Resolved {
    #[serde(flatten)]
    pub conversation: ConversationRow,
    /// The internal article made from `approved_answer` (publish it by setting its audience to public).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge_base_article: Option<String>,
}

impl Support {
    pub async fn resolve(
        &self,
        kb: Option<&Arc<KnowledgeBase>>,
        id: &str,
        resolution: Resolution,
    ) -> Result<Resolved, SupportError> {
        self.check_resolution(&resolution)?;
        let article = {
            let _turn = self.store.lock_conversation(id).await?;
            let (conversation, messages) = self.load(id).await?;
            if conversation.status == Status::Resolved {
                return Err(SupportError::Conflict(format!("conversation `{id}` is already resolved")));
            }
            if resolution.by == ResolvedBy::Ai && conversation.status.with_person() {
                return Err(SupportError::Conflict(format!(
                    "conversation `{id}` is with a person ({}); resolve it as `human`",
                    conversation.status.as_str()
                )));
            }
            let who = match (resolution.by, &resolution.agent) {
                (ResolvedBy::Ai, _) => "ai".to_string(),
                (ResolvedBy::Human, Some(agent)) => format!("human:{agent}"),
                (ResolvedBy::Human, None) => "human".to_string(),
            };
            let feedback = topic_feedback(&messages, resolution.by, &resolution.outcome).into_iter().collect();
            let article =
                resolution.outcome.approved_answer.as_deref().and_then(|a| approved_article(id, &messages, a));
            let change = Change {
                status: Some(Status::Resolved),
                resolved: Some((who, resolution.csat)),
                outcome: Some(resolution.outcome),
                feedback,
                ..Default::default()
            };
            self.store.record(id, Vec::new(), change).await?;
            article
        };
        let knowledge_base_article = match (article, kb) {
            (Some(article), Some(kb)) => add_approved_article(kb.clone(), article).await,
            _ => None,
        };
        let (conversation, _) = self.load(id).await?;
        self.events.publish(super::Event::Resolved { conversation_id: id.into(), at: crate::clock::now_ms() });
        Ok(Resolved { conversation, knowledge_base_article })
    }

    /// The rules a resolution must follow that only the domain knows.
    fn check_resolution(&self, resolution: &Resolution) -> Result<(), SupportError> {
        let invalid = |field, message: String| Err(SupportError::Invalid { field, message });
        if resolution.csat.is_some_and(|c| !(1..=5).contains(&c)) {
            return invalid("csat", "`csat` must be between 1 and 5".into());
        }
        let policy = self.policy();
        if let Some(queue) = resolution.outcome.corrected_queue.as_ref().filter(|q| !policy.queues.contains(q)) {
            return invalid(
                "corrected_queue",
                format!("unknown queue `{queue}` (queues: {})", policy.queues.join(", ")),
            );
        }
        let topic = resolution.outcome.corrected_topic.as_deref();
        if topic.is_some_and(|t| crate::text::is_blank(t) || crate::text::char_len(t) > MAX_TOPIC_CHARS) {
            return invalid("corrected_topic", format!("`corrected_topic` must be 1-{MAX_TOPIC_CHARS} characters"));
        }
        Ok(())
    }
}

/// The labeled example a resolution teaches: the conversation's first customer message (the
/// ticket) under the corrected topic, or under the predicted one that the resolution confirmed.
fn topic_feedback(messages: &[MessageRow], by: ResolvedBy, outcome: &ResolutionOutcome) -> Option<NewFeedback> {
    let ticket = messages.iter().find(|m| m.role == Role::Customer)?;
    let predicted = ticket.decision().and_then(|d| d.topic.clone());
    let (label, kind) = match (&outcome.corrected_topic, by) {
        (Some(corrected), _) => (corrected.clone(), FeedbackKind::Corrected),
        (None, ResolvedBy::Human) => (predicted.clone()?, FeedbackKind::Confirmed),
        (None, ResolvedBy::Ai) => (predicted.clone()?, FeedbackKind::AiResolved),
    };
    Some(NewFeedback { head: "topic".into(), text: ticket.text.clone(), label, predicted, kind })
}

/// The id of the article made from a conversation's approved answer (erasure finds it by this).
pub(crate) fn approved_article_id(conversation_id: &str) -> String {
    format!("approved-{}", conversation_id.trim_start_matches("conv_"))
}

/// An agent's approved answer as an internal knowledge-base article (agents see it at once; a
/// person publishes it to customers by setting `audience` to `public`). Titled by the ticket.
fn approved_article(conversation_id: &str, messages: &[MessageRow], answer: &str) -> Option<Article> {
    let ticket = messages.iter().find(|m| m.role == Role::Customer)?;
    let mut title: String = ticket.text.split_whitespace().collect::<Vec<_>>().join(" ");
    if title.chars().count() > 120 {
        title = title.chars().take(117).collect::<String>() + "...";
    }
    let topic = ticket.decision().and_then(|d| d.topic.as_deref());
    Some(Article {
        id: approved_article_id(conversation_id),
        title,
        url: None,
        tags: std::iter::once("approved-answer").chain(topic).map(String::from).collect(),
        product: None,
        audience: Audience::Internal,
        updated: None,
        body: answer.to_string(),
    })
}

/// Adds the approved answer to the knowledge base (an index rebuild, off the async workers).
async fn add_approved_article(kb: Arc<KnowledgeBase>, article: Article) -> Option<String> {
    let id = article.id.clone();
    match tokio::task::spawn_blocking(move || kb.upsert(article)).await {
        Ok(Ok(_)) => {
            tracing::info!(article = %id, "approved answer added to the knowledge base (internal)");
            Some(id)
        }
        Ok(Err(err)) => {
            tracing::warn!(article = %id, error = format!("{err:#}"), "approved answer not added to the knowledge base");
            None
        }
        Err(err) => {
            tracing::error!(article = %id, error = %err, "approved-answer task failed");
            None
        }
    }
}
