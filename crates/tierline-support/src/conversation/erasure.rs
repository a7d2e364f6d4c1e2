//! Erasure of one customer (GDPR article 17) and the retention sweep: conversations, their
//! messages and feedback, and the examples spike alerts quote from them.

use serde::Serialize;

use super::{Support, SupportError};
use crate::clock::now_ms;
use crate::store::Erased;

/// What an erasure removed: the receipt returned to the caller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasureReceipt {
    /// The customer id or e-mail the erasure was asked for.
    pub customer: String,
    pub conversations: usize,
    pub messages: usize,
    pub feedback: usize,
    /// Examples removed from spike alerts.
    pub alert_examples: usize,
    pub erased_at: i64,
}

/// Retention deletes in batches of this many conversations.
const RETENTION_BATCH: usize = 500;

impl Support {
    /// Erases every conversation whose customer details carry this id or e-mail.
    pub async fn erase_customer(&self, customer: &str) -> Result<ErasureReceipt, SupportError> {
        let ids = self.store.customer_conversations(customer).await?;
        let (erased, alert_examples) = self.erase(&ids).await?;
        tracing::info!(
            audit = "erasure",
            conversations = erased.conversations,
            messages = erased.messages,
            feedback = erased.feedback,
            "customer erased"
        );
        Ok(ErasureReceipt {
            customer: customer.to_string(),
            conversations: erased.conversations,
            messages: erased.messages,
            feedback: erased.feedback,
            alert_examples,
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
