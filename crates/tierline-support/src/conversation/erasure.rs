//! Erasure of one customer (GDPR article 17) and the retention sweep: conversations, their
//! messages and feedback, and the examples spike alerts quote from them; an erasure also removes
//! the internal articles made from the customer's tickets (titled by them).

use std::sync::Arc;

use serde::Serialize;

use super::resolution::approved_article_id;
use super::{Support, SupportError};
use crate::clock::now_ms;
use crate::kb::KnowledgeBase;
use crate::store::Erased;

/// What an erasure removed: the receipt returned to the caller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasureReceipt {
    /// The customer id or e-mail the erasure was asked for.
    pub customer: String,
    pub conversations: usize,
    pub messages: usize,
    pub feedback: usize,
    /// Examples removed from spike alerts (stored, and held in memory by this node's detector).
    pub alert_examples: usize,
    /// Knowledge-base articles made from an approved answer to one of the customer's tickets.
    pub articles: usize,
    pub erased_at: i64,
}

/// Retention deletes in batches of this many conversations.
const RETENTION_BATCH: usize = 500;

impl Support {
    /// Erases every conversation whose customer details carry this id or e-mail, and the
    /// approved-answer articles made from them in `kb`.
    pub async fn erase_customer(
        &self,
        kb: Option<&Arc<KnowledgeBase>>,
        customer: &str,
    ) -> Result<ErasureReceipt, SupportError> {
        let ids = self.store.customer_conversations(customer).await?;
        // Articles first: an article that failed to go is reported while its source still exists.
        let articles = match kb {
            Some(kb) => remove_approved_articles(kb.clone(), &ids).await?,
            None => 0,
        };
        let (erased, stored_examples) = self.erase(&ids).await?;
        let held = self.alerting.forget(&ids).await;
        // Again: an alert saved while the conversations were being deleted may quote them.
        let alert_examples = stored_examples + held + self.scrub_alerts(&ids).await?;
        tracing::info!(
            audit = "erasure",
            conversations = erased.conversations,
            messages = erased.messages,
            feedback = erased.feedback,
            articles,
            alert_examples,
            "customer erased"
        );
        Ok(ErasureReceipt {
            customer: customer.to_string(),
            conversations: erased.conversations,
            messages: erased.messages,
            feedback: erased.feedback,
            alert_examples,
            articles,
            erased_at: now_ms(),
        })
    }

    /// Deletes conversations older than `privacy.retention_days` (a no-op at 0).
    pub async fn apply_retention(&self) -> Result<Erased, SupportError> {
        if self.retention_days == 0 {
            return Ok(Erased::default());
        }
        let before = now_ms() - i64::from(self.retention_days) * 86_400_000;
        let ids = self.store.conversations_before(before, RETENTION_BATCH).await?;
        let (erased, _) = self.erase(&ids).await?;
        self.alerting.forget(&ids).await;
        if erased.conversations == 0 {
            return Ok(erased);
        }
        tracing::info!(
            conversations = erased.conversations,
            days = self.retention_days,
            "retention: old conversations deleted"
        );
        Ok(erased)
    }

    /// Deletes these conversations and the alert examples quoting them (how many of those).
    async fn erase(&self, ids: &[String]) -> Result<(Erased, usize), SupportError> {
        if ids.is_empty() {
            return Ok((Erased::default(), 0));
        }
        let alert_examples = self.scrub_alerts(ids).await?;
        Ok((self.store.erase_conversations(ids).await?, alert_examples))
    }

    /// Removes alert examples quoting these conversations; how many.
    async fn scrub_alerts(&self, ids: &[String]) -> Result<usize, SupportError> {
        let mut removed = 0;
        for mut alert in self.store.alerts(false, 10_000).await? {
            let before = alert.examples.len();
            alert.examples.retain(|example| !ids.contains(&example.ticket_id));
            if alert.examples.len() != before {
                removed += before - alert.examples.len();
                self.store.save_alert(&alert).await?;
            }
        }
        Ok(removed)
    }
}

/// Removes the approved-answer articles of these conversations (one rebuild); how many there were.
async fn remove_approved_articles(kb: Arc<KnowledgeBase>, conversation_ids: &[String]) -> Result<usize, SupportError> {
    let ids: Vec<String> = conversation_ids.iter().map(|id| approved_article_id(id)).collect();
    let removed = tokio::task::spawn_blocking(move || kb.purge(&ids))
        .await
        .map_err(|err| anyhow::anyhow!("article removal task failed: {err}"))?
        .map_err(|err| anyhow::anyhow!("could not remove the customer's approved-answer articles: {err:#}"))?;
    Ok(removed)
}
