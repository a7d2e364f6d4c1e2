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

use super::{replies, Event, Models, Reply, Support, SupportError, Ticket, TicketTriage, Turn};
use crate::clock::now_ms;
use crate::store::{AiReply, Change, ConversationRow, MessageRow, NewMessage, Role, Status, StoredDecision};
use crate::triage::{self, phrases, signals, Channel, Decision, Policy, Reading, Reason, ReasonCode, Tier};

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
        let reading = Reading::of(models.classifier, None, &text, policy.first_language()).await?;
        let mut planned = match TurnState::of(&conversation) {
            TurnState::WithAi => self.triage_turn(models, &policy, &conversation, &history, &text, &reading).await?,
            TurnState::WithPerson => stay_with_person(&conversation, &policy),
            TurnState::Reopening => reopen(&conversation, &policy),
        };
        let first_ticket = !history.iter().any(|m| m.role == Role::Customer);
        // The models read the original; what is stored and shown holds placeholders instead.
        let stored_text = self.redactor().redact(&text).into_owned();
        for signal in &mut planned.decision.signals {
            if let Some(sentence) = &mut signal.sentence {
                *sentence = self.redactor().redact(sentence).into_owned();
            }
            signal.evidence = self.redactor().redact(&signal.evidence).into_owned();
        }
        let mut messages = vec![customer_record(stored_text, &planned.decision, reading)];
        if let Some(reply) = &planned.reply {
            let detail = AiReply { citations: reply.citations.clone(), handoff: planned.handoff };
            messages.push(NewMessage::ai(reply.text.clone(), detail));
        }
        let published: Vec<Event> = messages
            .iter()
            .map(|m| Event::Message { conversation_id: id.into(), role: m.role, text: m.text.clone(), at: now_ms() })
            .collect();
        self.store.record(id, messages, planned.change).await?;
        for event in published {
            self.events.publish(event);
        }
        if first_ticket {
            self.watch_for_spikes().await;
        }
        if planned.handoff {
            let reason = planned.decision.reasons.first().map_or(ReasonCode::HumanRequested, |r| r.code);
            self.events.publish(Event::Handoff {
                conversation_id: id.into(),
                queue: planned.decision.queue.clone(),
                reason,
                at: now_ms(),
            });
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

    /// The AI's turn: the signals, then the conversation's own rules (a thank-you resolves, a new
    /// question starts a new attempt, a repeat or too many unresolved answers hand off), the
    /// knowledge base, the decision.
    async fn triage_turn(
        &self,
        models: Models<'_>,
        policy: &Policy,
        conversation: &ConversationRow,
        history: &[MessageRow],
        text: &str,
        reading: &Reading,
    ) -> Result<Planned, SupportError> {
        let account = &conversation.account;
        let standing = self.account_standing(policy, account).await;
        let earlier: Vec<&MessageRow> = history.iter().filter(|m| m.role == Role::Customer).collect();
        let earlier_text: String = earlier.iter().map(|m| m.text.as_str()).collect::<Vec<_>>().join("\n");
        let earliest_negativity = earlier.first().and_then(|m| m.decision()).map(|d| d.negativity);
        let history_read = signals::History { earlier_text: &earlier_text, earliest_negativity };
        let signals = signals::score(policy, reading, history_read, account, standing.as_ref());
        let fired = signals.iter().any(|s| s.fired);

        if !fired && triage::is_thanks(policy, reading) {
            return Ok(thanked(policy, reading, signals, Closing::Thanks));
        }
        if !fired && triage::is_greeting(reading) {
            return Ok(thanked(policy, reading, signals, Closing::Greeting));
        }
        let answer = match models.kb {
            Some(kb) if !fired => {
                let context: Vec<String> = earlier.iter().map(|m| m.text.clone()).collect();
                let bar = policy.conversation.min_answer_confidence;
                Some(kb.answer_at(text, &context, bar).await.map_err(SupportError::from_kb)?)
            }
            _ => None,
        };
        let reread = Reread::of(policy, text);
        let mut forced: Vec<Reason> = clarified(policy, history, text)
            .or_else(|| repeated_question(policy, history, &reading.embedding, answer.as_ref(), reread))
            .into_iter()
            .collect();
        let follow_up =
            earlier.last().map(|previous| FollowUp::of(policy, &reread, reading, previous, answer.as_ref()));
        let new_issue = follow_up == Some(FollowUp::NewQuestion);
        tracing::debug!(
            conversation = %conversation.id,
            closest_earlier = closest_earlier(history, &reading.embedding),
            moving_on = reread.moving_on,
            pushback = reread.asks_again(),
            follow_up = ?follow_up,
            article = answer.as_ref().filter(|a| a.answered).and_then(|a| a.citations.first()).map(|c| c.article_id.as_str()),
            confidence = answer.as_ref().map(|a| a.confidence),
            repeat = !forced.is_empty(),
            "conversation turn read"
        );
        if forced.is_empty() && !new_issue && conversation.ai_exchanges >= policy.conversation.max_ai_exchanges {
            forced.push(Reason::new(
                ReasonCode::ExchangeLimit,
                format!("{} AI answers did not resolve the issue", conversation.ai_exchanges),
                Some(conversation.ai_exchanges as f32),
            ));
        }
        let channel = Channel::Chat { follow_up: !earlier.is_empty() };
        let decision = triage::decide(policy, reading, channel, signals, forced, answer.as_ref());
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
            reset_ai_exchanges: new_issue,
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
        let mut results = Vec::with_capacity(tickets.len());
        for ticket in tickets {
            let reading =
                Reading::of(models.classifier, ticket.subject.as_deref(), &ticket.body, policy.first_language())
                    .await?;
            let standing = self.account_standing(&policy, &ticket.account).await;
            let signals = signals::score(&policy, &reading, Default::default(), &ticket.account, standing.as_ref());
            let answer = match models.kb {
                Some(kb) if !signals.iter().any(|s| s.fired) => {
                    let bar = policy.conversation.min_answer_confidence;
                    Some(kb.answer_at(&reading.prepared.text, &[], bar).await.map_err(SupportError::from_kb)?)
                }
                _ => None,
            };
            let decision = triage::decide(&policy, &reading, Channel::Ticket, signals, Vec::new(), answer.as_ref());
            // A person answers `assist` and `human` tickets; the AI prepares the draft for both.
            let (answer, draft) = match decision.tier {
                Tier::Auto => (answer, None),
                Tier::Assist | Tier::Human => (None, Some(replies::draft(&decision, answer.as_ref()))),
            };
            results.push(TicketTriage { classification: reading.whole, decision, answer, draft });
        }
        Ok(results)
    }
}

/// A message that needs no answer from the knowledge base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// A thank-you or a confirmation: the issue is resolved (the next question starts anew).
    Thanks,
    /// Only a hello: the AI asks what it can help with; the issue, if any, stays open.
    Greeting,
}

/// A thank-you, a confirmation or a hello: no handoff, whatever its kind reads.
fn thanked(policy: &Policy, reading: &Reading, signals: Vec<crate::triage::Signal>, closing: Closing) -> Planned {
    let mut decision = triage::decide(policy, reading, Channel::Chat { follow_up: false }, signals, Vec::new(), None);
    let (code, why, text) = match closing {
        Closing::Thanks => (ReasonCode::CustomerConfirmed, "the customer thanked or confirmed", replies::thanks()),
        Closing::Greeting => (ReasonCode::Greeted, "the customer greeted", replies::hello()),
    };
    decision.tier = Tier::Auto;
    if !decision.reasons.iter().any(|r| r.code == code) {
        decision.reasons = vec![Reason::new(code, why, None)];
    }
    let reply = Reply { text, ai_generated: true, citations: Vec::new() };
    let change = Change {
        status: Some(Status::Ai),
        tier: Some(decision.tier),
        queue: Some(decision.queue.clone()),
        reset_ai_exchanges: closing == Closing::Thanks,
        ..Default::default()
    };
    Planned { decision, reply: Some(reply), handoff: false, status: Status::Ai, change }
}

/// How a customer message relates to the conversation so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FollowUp {
    /// A question the conversation has not asked yet: a fresh attempt.
    NewQuestion,
    /// More about the same issue (it did not work, details): counts toward the exchange limit.
    SameIssue,
}

impl FollowUp {
    fn of(
        policy: &Policy,
        reread: &Reread,
        reading: &Reading,
        previous: &MessageRow,
        answer: Option<&crate::kb::Answer>,
    ) -> Self {
        if reread.announced && !reread.unresolved && reread.asking {
            return FollowUp::NewQuestion;
        }
        if reread.unresolved || !reread.asking {
            return FollowUp::SameIssue;
        }
        let similarity =
            previous.embedding.as_ref().map_or(0.0, |e| tierline_infer::kernels::dot(e, &reading.embedding));
        if similarity < policy.conversation.new_question_similarity || answer.is_some_and(|a| a.answered) {
            FollowUp::NewQuestion
        } else {
            FollowUp::SameIssue
        }
    }
}

/// Whether a message asks something: a question mark, or an opening question word.
fn asks(text: &str) -> bool {
    if text.contains('?') {
        return true;
    }
    let first = text.split_whitespace().next().unwrap_or("").to_lowercase();
    const OPENERS: &[&str] = &[
        "how", "what", "where", "when", "why", "which", "who", "can", "could", "is", "are", "do", "does", "will",
        "would", "should", "may", "and", "also",
    ];
    OPENERS.contains(&first.trim_end_matches(|c: char| !c.is_alphanumeric()))
}

/// How the message reads against the last answer, from its words (read once per turn).
#[derive(Debug, Clone, Copy)]
struct Reread {
    /// It says the answer failed (`unresolved_phrases`: "still not working").
    unresolved: bool,
    /// It announces another question (`new_question_phrases`: "separate question:").
    announced: bool,
    /// It asks something (a report of what the customer did is not asking again).
    asking: bool,
    /// It pushes back on the answer (`pushback_phrases`: "but", "actually").
    pushes_back: bool,
    /// It acknowledges the answer and moves on ("Thanks. And how do I...?"), or announces another
    /// question, without saying the answer failed ("Did that, and it still spins?") or pushing
    /// back on it ("Ok, but where do I actually...?").
    moving_on: bool,
}

impl Reread {
    fn of(policy: &Policy, text: &str) -> Self {
        let rules = &policy.conversation;
        let words = phrases::normalise(text);
        let says = |list: &[String]| !phrases::matches(&words, list).is_empty();
        let (unresolved, announced, pushes_back) =
            (says(&rules.unresolved_phrases), says(&rules.new_question_phrases), says(&rules.pushback_phrases));
        let opening: String = words.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
        let acknowledges = !phrases::matches(&format!(" {opening} "), &rules.moving_on_phrases).is_empty();
        // A conjunction moves on only where a clause starts: "Done. And...", not "date and time".
        let follows_on = || {
            phrases::clauses(text)
                .iter()
                .take(2)
                .filter_map(|clause| clause.split_whitespace().next())
                .any(|first| rules.follow_on_words.iter().any(|w| w.eq_ignore_ascii_case(first)))
        };
        let moving_on = !unresolved && (announced || (!pushes_back && (acknowledges || follows_on())));
        Reread { unresolved, announced, asking: asks(text), pushes_back, moving_on }
    }

    /// Pushing back while asking is asking again; "I did that, but it still spins" reports.
    fn asks_again(&self) -> bool {
        self.asking && self.pushes_back
    }
}

/// The customer says the AI's answer missed the question ("I mean the size of the body", "the
/// question was...", "you answered about the tax ID"): a repeat in other words, at once.
fn clarified(policy: &Policy, history: &[MessageRow], text: &str) -> Option<Reason> {
    // Only a knowledge-base answer can miss the question (not a hello or a thank-you reply).
    history.iter().rev().find_map(|m| m.ai_reply()).filter(|reply| !reply.handoff && !reply.citations.is_empty())?;
    let said = phrases::affirmed(
        text,
        &policy.conversation.clarification_phrases,
        &policy.negation.words,
        policy.negation.window,
    );
    let phrase = said.first()?;
    Some(Reason::new(
        ReasonCode::RepeatedQuestion,
        format!("the customer says the answer missed the question (\"{phrase}\")"),
        None,
    ))
}

/// An earlier customer message this one asks again: close enough in meaning on its own, or,
/// asking about the issue still open, close and about to get the very article the AI already
/// answered it with.
fn repeated_question(
    policy: &Policy,
    history: &[MessageRow],
    embedding: &[f32],
    answer: Option<&crate::kb::Answer>,
    reread: Reread,
) -> Option<Reason> {
    let new_article = answer.filter(|a| a.answered).and_then(|a| a.citations.first()).map(|c| c.article_id.as_str());
    let rules = &policy.conversation;
    // A thank-you or a confirmation closes the issues before it: a related question after it is new.
    let open_from = history.iter().rposition(confirmed).map_or(0, |at| at + 1);
    let mut best: Option<(&MessageRow, f32)> = None;
    for (index, message) in history.iter().enumerate() {
        let Some(earlier) = message.embedding.as_ref().filter(|_| message.role == Role::Customer) else { continue };
        let similarity = tierline_infer::kernels::dot(earlier, embedding);
        let answered_with = history[index + 1..]
            .iter()
            .take_while(|m| m.role != Role::Customer)
            .find_map(|m| m.ai_reply())
            .and_then(|r| r.citations.first())
            .map(|c| c.article_id.as_str());
        // "Thanks. And how do I...?" acknowledges the answer: a related question, not a repeat.
        let same_answer = !reread.moving_on
            && reread.asking
            && index >= open_from
            && new_article.is_some()
            && answered_with == new_article;
        let same_answer_bar =
            if reread.asks_again() { rules.repeat_similarity_pushback } else { rules.repeat_similarity_same_answer };
        let repeats = similarity >= rules.repeat_similarity || (same_answer && similarity >= same_answer_bar);
        if repeats && best.is_none_or(|(_, s)| similarity > s) {
            best = Some((message, similarity));
        }
    }
    let (message, similarity) = best?;
    let quoted: String = message.text.chars().take(80).collect();
    Some(Reason::new(
        ReasonCode::RepeatedQuestion,
        format!("the customer repeated an earlier question (\"{quoted}\", similarity {similarity:.2})"),
        Some(similarity),
    ))
}

/// Whether a stored customer message thanked or confirmed (it closed the issue before it).
fn confirmed(message: &MessageRow) -> bool {
    message.decision().is_some_and(|d| d.decision.reasons.iter().any(|r| r.code == ReasonCode::CustomerConfirmed))
}

/// The highest cosine between this message and an earlier customer message (for the turn's trace).
fn closest_earlier(history: &[MessageRow], embedding: &[f32]) -> f32 {
    history
        .iter()
        .filter(|m| m.role == Role::Customer)
        .filter_map(|m| m.embedding.as_ref())
        .map(|e| tierline_infer::kernels::dot(e, embedding))
        .fold(0.0, f32::max)
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
        language: None,
        kind: None,
    }
}

/// The customer message as stored: its decision with the readings behind it, and its embedding
/// (for repeat detection and spike detection).
fn customer_record(text: String, decision: &Decision, reading: Reading) -> NewMessage {
    let classification = &reading.whole;
    let stored = StoredDecision {
        decision: decision.clone(),
        negativity: signals::negativity(classification),
        sentiment: classification.label("sentiment").map(|(label, _)| label.to_string()),
        topic: classification.label("topic").map(|(label, _)| label.to_string()),
    };
    NewMessage::customer(text, stored, reading.embedding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ai_reply(text: &str, handoff: bool, citations: Vec<crate::kb::Citation>) -> MessageRow {
        MessageRow {
            id: 1,
            role: Role::Ai,
            author: None,
            text: text.into(),
            created_at: 0,
            detail: Some(crate::store::MessageDetail::Ai(AiReply { citations, handoff })),
            embedding: None,
        }
    }

    fn shipped() -> Policy {
        Policy::parse(include_str!("../../../../models/policy.toml")).unwrap()
    }

    fn opens_with(policy: &Policy, text: &str) -> bool {
        Reread::of(policy, text).moving_on
    }

    fn pushes_back(policy: &Policy, text: &str) -> bool {
        Reread::of(policy, text).pushes_back
    }

    #[test]
    fn conjunctions_move_on_only_where_a_sentence_starts() {
        let policy = shipped();
        assert!(opens_with(&policy, "Makes sense. And if I remove a seat later, do I get money back?"));
        assert!(opens_with(&policy, "Done. And where do I find the recovery codes?"));
        assert!(opens_with(&policy, "Thanks! Separate question: do Zapier calls count against the limit?"));
        assert!(!opens_with(&policy, "Automatic date and time is already on and the clock is correct."));
        // Polish "i" is English "I": it moves nothing on.
        assert!(!opens_with(&policy, "I did that and the button spins."));
        // Saying it still fails is never moving on, whatever conjunction opens the sentence.
        assert!(!opens_with(&policy, "Did that, and it still spins?"));
        assert!(!opens_with(&policy, "How do I set up SSO with Okta?"));
    }

    #[test]
    fn pushing_back_is_never_moving_on() {
        let policy = shipped();
        assert!(pushes_back(&policy, "Ok, but where do I actually get the PDF of the bill?"));
        assert!(!opens_with(&policy, "Thanks, but that's not how I make him an admin?"));
        // Announcing another question wins over a "but" or a "sorry" in it.
        assert!(opens_with(&policy, "Sorry, another question: can I also export CSV?"));
        assert!(!pushes_back(&policy, "Thanks. Which events are available?"));
    }

    #[test]
    fn clarifications_need_an_answer_to_correct() {
        let policy = shipped();
        let citation = crate::kb::Citation {
            article_id: "api-rate-limits".into(),
            title: "API rate limits".into(),
            url: None,
            heading: None,
            passage: "600 requests a minute".into(),
            score: 1.0,
            similarity: 0.9,
        };
        let answered = ai_reply("Here is how rate limits work.", false, vec![citation]);
        let clarification = "I mean the size of the body you send to us";
        assert!(clarified(&policy, std::slice::from_ref(&answered), clarification).is_some());
        assert!(clarified(
            &policy,
            std::slice::from_ref(&answered),
            "Das beantwortet meine Frage nicht, ich meine die Größe"
        )
        .is_some());
        assert!(clarified(&policy, std::slice::from_ref(&answered), "How big can a webhook payload get?").is_none());
        // No AI answer yet (or it already handed off): nothing to correct.
        assert!(clarified(&policy, &[], clarification).is_none());
        let handed_off = ai_reply("A person will take over.", true, Vec::new());
        let hello = ai_reply("Hi! What can I help you with?", false, Vec::new());
        // A hello is no answer: "my question is..." after it asks, it does not correct.
        assert!(clarified(&policy, &[hello], clarification).is_none());
        assert!(clarified(&policy, &[handed_off], clarification).is_none());
    }
}
