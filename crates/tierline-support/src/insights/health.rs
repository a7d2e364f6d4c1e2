//! Account health: from an account's recent conversations (sentiment of its messages, how often
//! it writes, escalations, repeated contacts, low CSAT) a score out of 100 with the reasons, so a
//! support lead can reach out before the customer leaves.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{AccountConversation, Store, StoreResult};
pub use crate::triage::policy::HealthRules;
use crate::triage::{AccountStanding, ReasonCode};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The figures a score is made of.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct HealthFigures {
    pub recent_conversations: usize,
    /// Conversations per `recent_days` before the recent period (same length, for comparison).
    pub earlier_rate: f32,
    /// Mean negativity (0..1) of the customer's messages, recent and earlier.
    pub recent_negativity: Option<f32>,
    pub earlier_negativity: Option<f32>,
    pub recent_escalations: usize,
    /// Reopened conversations and repeated questions in the recent period.
    pub repeated_contacts: usize,
    /// Recent conversations rated 1 or 2.
    pub low_csat: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AccountHealth {
    pub account: String,
    /// 100 is healthy; each problem takes points off.
    pub score: f32,
    pub at_risk: bool,
    /// What took points off, largest first, in plain words.
    pub reasons: Vec<String>,
    pub figures: HealthFigures,
    pub last_contact_at: i64,
}

impl AccountHealth {
    /// What triage needs of it.
    pub fn standing(&self) -> AccountStanding {
        AccountStanding { at_risk: self.at_risk, score: self.score, reason: self.reasons.first().cloned() }
    }
}

/// Health of every account in `conversations` (read over `rules.lookback_days` up to `now`).
pub fn assess(conversations: &[AccountConversation], rules: &HealthRules, now: i64) -> Vec<AccountHealth> {
    let mut by_account: BTreeMap<&str, Vec<&AccountConversation>> = BTreeMap::new();
    for conversation in conversations {
        by_account.entry(conversation.account_id.as_str()).or_default().push(conversation);
    }
    by_account.into_iter().map(|(account, history)| assess_account(account, &history, rules, now)).collect()
}

/// Reads the history (every identified account, or one) and assesses it as of now.
pub async fn load(store: &dyn Store, rules: &HealthRules, account: Option<&str>) -> StoreResult<Vec<AccountHealth>> {
    let now = crate::clock::now_ms();
    let since = now - i64::from(rules.lookback_days) * DAY_MS;
    let history = store.account_conversations(since, account).await?;
    let rules = rules.clone();
    let assessed = tokio::task::spawn_blocking(move || assess(&history, &rules, now))
        .await
        .map_err(|err| anyhow::anyhow!("account health task failed: {err}"))?;
    Ok(assessed)
}

fn assess_account(account: &str, history: &[&AccountConversation], rules: &HealthRules, now: i64) -> AccountHealth {
    let recent_from = now - i64::from(rules.recent_days) * DAY_MS;
    let (recent, earlier): (Vec<&AccountConversation>, Vec<&AccountConversation>) =
        history.iter().partition(|c| c.conversation.created_at >= recent_from);
    let earlier_periods =
        rules.lookback_days.saturating_sub(rules.recent_days) as f32 / rules.recent_days.max(1) as f32;

    let figures = HealthFigures {
        recent_conversations: recent.len(),
        earlier_rate: earlier.len() as f32 / earlier_periods.max(1.0),
        recent_negativity: mean_negativity(&recent),
        earlier_negativity: mean_negativity(&earlier),
        // Escalations the at-risk rule itself caused would keep an account at risk forever.
        recent_escalations: recent
            .iter()
            .filter(|c| c.conversation.escalated_at.is_some())
            .filter(|c| c.conversation.escalation_reason != Some(ReasonCode::HighValue))
            .count(),
        repeated_contacts: recent
            .iter()
            .map(|c| {
                c.conversation.reopened_count as usize
                    + usize::from(c.conversation.escalation_reason == Some(ReasonCode::RepeatedQuestion))
            })
            .sum(),
        low_csat: recent.iter().filter(|c| c.conversation.csat.is_some_and(|s| s <= 2)).count(),
    };

    let mut penalties: Vec<(f32, String)> = Vec::new();
    if let Some(negativity) = figures.recent_negativity.filter(|n| *n >= 0.5) {
        penalties
            .push((40.0 * (negativity - 0.5) * 2.0, format!("negative messages (mean negativity {negativity:.2})")));
    }
    if let (Some(recent), Some(earlier)) = (figures.recent_negativity, figures.earlier_negativity) {
        if recent - earlier >= 0.15 {
            penalties.push((
                (recent - earlier) * 50.0,
                format!(
                    "sentiment worsening (negativity {earlier:.2} before, {recent:.2} in the last {} days)",
                    rules.recent_days
                ),
            ));
        }
    }
    let surge = figures.recent_conversations as f32 / figures.earlier_rate.max(1.0);
    if figures.recent_conversations >= 3 && surge >= 2.0 {
        penalties.push((
            (5.0 * (surge - 1.0)).min(20.0),
            format!(
                "{} conversations in the last {} days, {:.1} usually",
                figures.recent_conversations, rules.recent_days, figures.earlier_rate
            ),
        ));
    }
    if figures.recent_escalations > 0 {
        penalties.push((
            (6.0 * figures.recent_escalations as f32).min(20.0),
            format!("{} escalated to a person", figures.recent_escalations),
        ));
    }
    if figures.repeated_contacts > 0 {
        penalties.push((
            (8.0 * figures.repeated_contacts as f32).min(20.0),
            format!("{} repeated contacts (reopened or asked again)", figures.repeated_contacts),
        ));
    }
    if figures.low_csat > 0 {
        penalties.push(((10.0 * figures.low_csat as f32).min(20.0), format!("{} low CSAT ratings", figures.low_csat)));
    }
    penalties.sort_by(|a, b| b.0.total_cmp(&a.0));

    let score = (100.0 - penalties.iter().map(|(p, _)| p).sum::<f32>()).clamp(0.0, 100.0);
    let at_risk = score < rules.at_risk_below && figures.recent_conversations >= rules.min_recent_conversations;
    AccountHealth {
        account: account.to_string(),
        score: (score * 10.0).round() / 10.0,
        at_risk,
        reasons: penalties.into_iter().map(|(points, reason)| format!("{reason}: -{points:.0}")).collect(),
        last_contact_at: history.iter().map(|c| c.conversation.updated_at).max().unwrap_or(0),
        figures,
    }
}

fn mean_negativity(conversations: &[&AccountConversation]) -> Option<f32> {
    let values: Vec<f32> =
        conversations.iter().flat_map(|c| &c.customer_messages).filter_map(|(_, negativity)| *negativity).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f32>() / values.len() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConversationRow, Status};
    use crate::triage::AccountContext;

    fn conversation(
        account: &str,
        age_days: f32,
        negativity: f32,
        escalated: bool,
        reopened: u32,
    ) -> AccountConversation {
        let now = 100 * DAY_MS;
        let created_at = now - (age_days * DAY_MS as f32) as i64;
        AccountConversation {
            account_id: account.into(),
            conversation: ConversationRow {
                id: format!("{account}-{age_days}"),
                created_at,
                updated_at: created_at,
                status: Status::Resolved,
                customer: serde_json::Value::Null,
                account: AccountContext { id: Some(account.into()), ..Default::default() },
                queue: None,
                tier: None,
                ai_exchanges: 1,
                escalated_at: escalated.then_some(created_at),
                escalation_reason: escalated.then_some(ReasonCode::Billing),
                first_human_reply_at: None,
                resolved_at: Some(created_at),
                resolved_by: Some("ai".into()),
                csat: None,
                outcome: Default::default(),
                reopened_count: reopened,
            },
            customer_messages: vec![(created_at, Some(negativity))],
        }
    }

    #[test]
    fn a_souring_account_is_at_risk_with_its_reasons_and_a_calm_one_is_not() {
        let now = 100 * DAY_MS;
        let mut history = Vec::new();
        for day in [25.0, 20.0, 15.0, 10.0] {
            history.push(conversation("calm", day, 0.2, false, 0));
            history.push(conversation("souring", day, 0.2, false, 0));
        }
        history.push(conversation("calm", 2.0, 0.3, false, 0));
        for day in [6.0, 4.0, 3.0, 1.0, 0.5] {
            history.push(conversation("souring", day, 0.9, true, u32::from(day < 2.0)));
        }
        let health = assess(&history, &HealthRules::default(), now);
        let calm = health.iter().find(|h| h.account == "calm").unwrap();
        let souring = health.iter().find(|h| h.account == "souring").unwrap();
        assert!(!calm.at_risk && calm.score > 90.0, "{calm:?}");
        assert!(souring.at_risk && souring.score < 40.0, "{souring:?}");
        assert_eq!(souring.figures.recent_escalations, 5);
        assert_eq!(souring.figures.repeated_contacts, 2);
        let reasons = souring.reasons.join("; ");
        assert!(reasons.contains("sentiment worsening") && reasons.contains("escalated"), "{reasons}");
    }

    #[test]
    fn one_bad_conversation_is_not_a_risk() {
        let history = vec![conversation("new", 1.0, 0.95, true, 0)];
        let health = assess(&history, &HealthRules::default(), 100 * DAY_MS);
        assert!(health[0].score < 100.0 && !health[0].at_risk, "{:?}", health[0]);
    }
}
