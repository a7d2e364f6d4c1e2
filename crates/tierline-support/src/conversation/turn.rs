//! One customer message, as a state machine over where the conversation is:
//!
//! ```text
//!   Ai ──(signal, person asked, repeat, exchange limit, no confident answer)──> Waiting
//!   Ai ──(confident knowledge-base answer)──> Ai
//!   Waiting | Human ──(any message)──> unchanged: stored for the person, no AI reply
//!   Resolved ──(any message)──> Waiting (reopened)
//! ```
//!
//! The turn holds the conversation's lock from the first read to the commit, so turns of one
//! conversation never interleave.

use tierline_infer::classify::TextClassification;

use super::{replies, Models, Reply, Support, SupportError, Ticket, TicketTriage, Turn};
use crate::store::{AiReply, Change, ConversationRow, MessageRow, NewMessage, Role, Status, StoredDecision};
use crate::triage::{self, signals, Decision, Policy, Reason, ReasonCode, Tier};

/// Where a conversation is when a customer message arrives: what the turn does.
enum TurnState {
    /// The AI handles it: triage, then answer or hand off.
    WithAi,
    /// A person owns it: keep the message for them, no AI reply.
    WithPerson,
    /// It was resolved and the customer wrote again: reopen it for a person.
    Reopening,
}

impl TurnState {
    fn of(conversation: &ConversationRow) -> Self {
        match conversation.status {
            Status::Ai => TurnState::WithAi,
            Status::Waiting | Status::Human => TurnState::WithPerson,
            Status::Resolved => TurnState::Reopening,
        }
    }
}

/// What the classifier read in the message (one encoder pass: embedding + heads).
struct Reading {
    classification: TextClassification,
    embedding: Vec<f32>,
}

/// The outcome of a turn before it is stored.
struct Planned {
    decision: Decision,
    reply: Option<Reply>,
    handoff: bool,
    status: Status,
    change: Change,
}

impl Support {
    /// One customer message: the AI answers it or hands the conversation off.
    pub async fn customer_message(&self, models: Models<'_>, id: &str, text: String) -> Result<Turn, SupportError> {
        let _turn = self.store.lock_conversation(id).await?;
        let (conversation, history) = self.load(id).await?;
        let policy = self.policy();
        let reading = read(models, &text).await?;
        let planned = match TurnState::of(&conversation) {
            TurnState::WithAi => self.triage_turn(models, &policy, &conversation, &history, &text, &reading).await?,
            TurnState::WithPerson => stay_with_person(&conversation, &policy),
            TurnState::Reopening => reopen(&conversation, &policy),
        };
        let first_ticket = !history.iter().any(|m| m.role == Role::Customer);
        let mut messages = vec![customer_record(text, &planned.decision, reading)];
        if let Some(reply) = &planned.reply {
            let detail = AiReply { citations: reply.citations.clone(), handoff: planned.handoff };
            messages.push(NewMessage::ai(reply.text.clone(), detail));
        }
        self.store.record(id, messages, planned.change).await?;
        if first_ticket {
            self.watch_for_spikes().await;
        }
        if planned.handoff {
            tracing::info!(conversation = id, tier = planned.decision.tier.as_str(), queue = %planned.decision.queue, "handed off");
        }
        Ok(Turn {
            conversation_id: id.to_string(),
            status: planned.status,
            handoff: planned.handoff,
            reply: planned.reply,
            decision: planned.decision,
        })
    }

    /// The AI's turn: conversation rules, the six signals, the knowledge base, the decision.
    async fn triage_turn(
        &self,
        models: Models<'_>,
        policy: &Policy,
        conversation: &ConversationRow,
        history: &[MessageRow],
        text: &str,
        reading: &Reading,
    ) -> Result<Planned, SupportError> {
        let classification = &reading.classification;
        let account = &conversation.account;
        let standing = self.account_standing(policy, account).await;
        let earlier: Vec<&MessageRow> = history.iter().filter(|m| m.role == Role::Customer).collect();
        let conversation_text: String =
            earlier.iter().map(|m| m.text.as_str()).chain([text]).collect::<Vec<_>>().join("\n");
        let earliest_negativity = earlier.first().and_then(|m| m.decision()).map(|d| d.negativity);
        let signals = signals::score(
            policy,
            text,
            classification,
            &conversation_text,
            earliest_negativity,
            account,
            standing.as_ref(),
        );

        // Conversation rules that escalate whatever the message says.
        let mut forced: Vec<Reason> = triage::human_request(policy, text, classification).into_iter().collect();
        if let Some(repeat) = repeated_question(policy, &earlier, &reading.embedding) {
            forced.push(repeat);
        }
        if conversation.ai_exchanges >= policy.conversation.max_ai_exchanges {
            forced.push(Reason::new(
                ReasonCode::ExchangeLimit,
                format!("{} AI answers did not resolve the issue", conversation.ai_exchanges),
                Some(conversation.ai_exchanges as f32),
            ));
        }

        let escalating = !forced.is_empty() || signals.iter().any(|s| s.fired);
        let answer = match models.kb {
            Some(kb) if !escalating => {
                let context: Vec<String> = earlier.iter().map(|m| m.text.clone()).collect();
                Some(kb.answer_in_context(text, &context).await.map_err(SupportError::from_kb)?)
            }
            _ => None,
        };
        let decision = triage::decide(policy, classification, signals, forced, answer.as_ref());
        let handoff = decision.tier != Tier::Auto;
        let reply = match answer.as_ref().filter(|_| !handoff) {
            Some(answer) => {
                Reply { text: replies::answer(answer), ai_generated: true, citations: answer.citations.clone() }
            }
            None => Reply { text: replies::handoff(&decision), ai_generated: true, citations: Vec::new() },
        };
        let status = if handoff { Status::Waiting } else { Status::Ai };
        let change = Change {
            status: Some(status),
            tier: Some(decision.tier),
            queue: Some(decision.queue.clone()),
            add_ai_exchange: !handoff,
            escalated: handoff.then(|| decision.reasons.first().map_or(ReasonCode::NoKbAnswer, |r| r.code)),
            ..Default::default()
        };
        Ok(Planned { decision, reply: Some(reply), handoff, status, change })
    }

    /// Stateless triage of tickets: one encoder pass for the batch, then signals, tier and queue
    /// per ticket; `auto` tickets carry the answer, `assist` tickets a draft.
    pub async fn triage_tickets(
        &self,
        models: Models<'_>,
        tickets: &[Ticket],
    ) -> Result<Vec<TicketTriage>, SupportError> {
        let policy = self.policy();
        let texts: Vec<String> = tickets.iter().map(Ticket::text).collect();
        let classified = models.classifier.classify_with_embeddings(texts.clone(), 20).await?;
        let mut results = Vec::with_capacity(tickets.len());
        for ((ticket, text), (classification, _)) in tickets.iter().zip(&texts).zip(classified) {
            let standing = self.account_standing(&policy, &ticket.account).await;
            let signals =
                signals::score(&policy, text, &classification, text, None, &ticket.account, standing.as_ref());
            let human: Vec<Reason> = triage::human_request(&policy, text, &classification).into_iter().collect();
            let answer = match models.kb {
                Some(kb) => Some(kb.answer_in_context(text, &[]).await.map_err(SupportError::from_kb)?),
                None => None,
            };
            let decision = triage::decide(&policy, &classification, signals, human, answer.as_ref());
            let (answer, draft) = match decision.tier {
                Tier::Auto => (answer, None),
                Tier::Assist => (None, Some(replies::draft(&decision, answer.as_ref()))),
                Tier::Human => (None, None),
            };
            results.push(TicketTriage { classification, decision, answer, draft });
        }
        Ok(results)
    }
}

async fn read(models: Models<'_>, text: &str) -> Result<Reading, SupportError> {
    let (classification, embedding) = models
        .classifier
        .classify_with_embeddings(vec![text.to_string()], 20)
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("the classifier returned no result"))?;
    Ok(Reading { classification, embedding })
}

/// The closest earlier customer message, when it is close enough to be the same question again.
fn repeated_question(policy: &Policy, earlier: &[&MessageRow], embedding: &[f32]) -> Option<Reason> {
    let (message, similarity) = earlier
        .iter()
        .filter_map(|m| m.embedding.as_ref().map(|e| (m, tierline_infer::kernels::dot(e, embedding))))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if similarity < policy.conversation.repeat_similarity {
        return None;
    }
    let quoted: String = message.text.chars().take(80).collect();
    Some(Reason::new(
        ReasonCode::RepeatedQuestion,
        format!("the customer repeated an earlier question (\"{quoted}\", similarity {similarity:.2})"),
        Some(similarity),
    ))
}

/// A person owns the conversation: store the message for them, no AI reply.
fn stay_with_person(conversation: &ConversationRow, policy: &Policy) -> Planned {
    let reason = Reason::new(ReasonCode::WithHuman, "a person is handling this conversation", None);
    Planned {
        decision: person_owns(conversation, policy, reason),
        reply: None,
        handoff: false,
        status: conversation.status,
        change: Change::default(),
    }
}

/// The issue came back: reopen and put it in front of a person (counted as a reopening).
fn reopen(conversation: &ConversationRow, policy: &Policy) -> Planned {
    let reason =
        Reason::new(ReasonCode::Reopened, "the customer wrote again after the conversation was resolved", None);
    let decision = person_owns(conversation, policy, reason);
    let reply = Reply { text: replies::reopened(&decision), ai_generated: true, citations: Vec::new() };
    let change = Change {
        status: Some(Status::Waiting),
        tier: Some(Tier::Human),
        queue: Some(decision.queue.clone()),
        reopened: true,
        escalated: Some(ReasonCode::Reopened),
        restart_escalation: true,
        ..Default::default()
    };
    Planned { decision, reply: Some(reply), handoff: true, status: Status::Waiting, change }
}

/// The decision when a person owns the conversation (no triage needed): human, its queue.
fn person_owns(conversation: &ConversationRow, policy: &Policy, reason: Reason) -> Decision {
    Decision {
        tier: Tier::Human,
        queue: conversation.queue.clone().unwrap_or_else(|| policy.default_queue.clone()),
        confidence: 1.0,
        reasons: vec![reason],
        signals: Vec::new(),
    }
}

/// The customer message as stored: its decision with the readings behind it, and its embedding
/// (for repeat detection and spike detection).
fn customer_record(text: String, decision: &Decision, reading: Reading) -> NewMessage {
    let classification = &reading.classification;
    let stored = StoredDecision {
        decision: decision.clone(),
        negativity: signals::negativity(classification),
        sentiment: classification.label("sentiment").map(|(label, _)| label.to_string()),
        topic: classification.label("topic").map(|(label, _)| label.to_string()),
    };
    NewMessage::customer(text, stored, reading.embedding)
}
