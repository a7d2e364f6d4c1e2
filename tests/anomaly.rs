//! Spike detection on real embeddings: a day and a half of ordinary support traffic (uneven
//! topics, a day/night rhythm, many accounts) stays quiet; hundreds of tickets about one failing
//! feature, phrased every which way by many accounts, raise one alert for that cluster.

mod common;

use common::Rng;
use tierline::inference::BackendKind;
use tierline::insights::anomaly::{AlertChange, AnomalyConfig, Detector, TicketEvent};

/// Ordinary intents, each with phrasings and a rate per hour at peak.
const NORMAL: &[(&[&str], f64)] = &[
    (
        &[
            "I forgot my password and the reset email never arrives",
            "how do I reset my password?",
            "can't log in, password not accepted",
            "locked out of my account after too many attempts",
        ],
        9.0,
    ),
    (
        &[
            "where is my order? it was due yesterday",
            "my package has not arrived yet",
            "tracking shows no update for my parcel",
            "when will my order ship?",
        ],
        8.0,
    ),
    (
        &[
            "I want a refund for my last purchase",
            "how long does a refund take?",
            "please refund the item I returned",
            "refund still not on my card",
        ],
        5.0,
    ),
    (
        &[
            "how do I change my billing address?",
            "can I pay by bank transfer instead of card?",
            "I need an invoice with my company VAT number",
            "update the credit card on file",
        ],
        4.0,
    ),
    (
        &[
            "how do I cancel my subscription?",
            "please cancel my plan at the end of the month",
            "I want to close my account",
            "stop auto renewal",
        ],
        3.0,
    ),
    (
        &[
            "how do I add a team member?",
            "can I change the owner of the workspace?",
            "invite a colleague to our account",
            "remove a user from our team",
        ],
        3.0,
    ),
    (
        &[
            "the mobile app crashes when I open settings",
            "app freezes on the login screen on Android",
            "iPhone app closes right after launch",
        ],
        2.0,
    ),
    (&["do you ship to Canada?", "what are your delivery costs to Europe?", "is express shipping available?"], 2.0),
    (
        &[
            "how do I enable two-factor authentication?",
            "I lost my phone with the authenticator app",
            "set up 2FA for my team",
        ],
        1.5,
    ),
    (
        &[
            "can I upgrade to the annual plan?",
            "what is included in the pro plan?",
            "difference between basic and premium plans",
        ],
        1.5,
    ),
    (
        &[
            "notifications emails are too frequent, how to turn them off?",
            "unsubscribe me from marketing emails",
            "change my email preferences",
        ],
        1.0,
    ),
    (
        &[
            "how do I connect the Slack integration?",
            "Zapier integration is not triggering",
            "sync with Google Calendar",
        ],
        1.0,
    ),
];

const SPIKE_OPENINGS: &[&str] = &[
    "CSV export fails",
    "the export to CSV button does nothing",
    "exporting my report as CSV gives an error 500",
    "CSV export is broken since this morning",
    "I can't export data to CSV anymore",
    "export CSV keeps failing with a server error",
    "the CSV download from reports errors out",
    "report export to CSV stopped working",
];
const SPIKE_DETAILS: &[&str] = &[
    "",
    " and I need it for my monthly accounts",
    ", we tried two browsers",
    ", the file never downloads",
    ". Is there an outage?",
    " for every report we try",
];

struct Ticket {
    at_ms: i64,
    account: String,
    text: String,
    spike: bool,
}

const HOUR_MS: i64 = 3_600_000;

/// Poisson-ish arrivals per 5-minute slot, busier by day than by night.
fn normal_traffic(rng: &mut Rng, hours: i64) -> Vec<Ticket> {
    let mut tickets = Vec::new();
    for slot in 0..hours * 12 {
        let hour_of_day = (slot / 12) % 24;
        let rhythm = if (8..20).contains(&hour_of_day) { 1.0 } else { 0.3 };
        for (phrasings, per_hour) in NORMAL {
            let expected = per_hour * rhythm / 12.0;
            let mut arrivals = 0;
            while rng.unit() < expected / (arrivals as f64 + 1.0) && arrivals < 4 {
                arrivals += 1;
            }
            for _ in 0..arrivals {
                tickets.push(Ticket {
                    at_ms: slot * 300_000 + rng.below(300_000) as i64,
                    account: format!("acct-{}", rng.below(400)),
                    text: phrasings[rng.below(phrasings.len())].to_string(),
                    spike: false,
                });
            }
        }
    }
    tickets
}

fn spike(rng: &mut Rng, start_ms: i64, count: usize, accounts: usize) -> Vec<Ticket> {
    (0..count)
        .map(|_| Ticket {
            at_ms: start_ms + rng.below(40 * 60_000) as i64,
            account: format!("spike-acct-{}", rng.below(accounts)),
            text: format!(
                "{}{}",
                SPIKE_OPENINGS[rng.below(SPIKE_OPENINGS.len())],
                SPIKE_DETAILS[rng.below(SPIKE_DETAILS.len())]
            ),
            spike: true,
        })
        .collect()
}

#[test]
fn a_spike_of_similar_tickets_raises_one_alert_and_ordinary_traffic_stays_quiet() {
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut tickets = normal_traffic(&mut rng, 36);
    let normal_count = tickets.len();
    tickets.extend(spike(&mut rng, 34 * HOUR_MS, 300, 40));
    tickets.sort_by_key(|t| t.at_ms);

    // Embed each distinct text once (the encoder is deterministic).
    let encoder = common::encoder(BackendKind::Auto);
    let mut distinct: Vec<&str> = tickets.iter().map(|t| t.text.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let mut embeddings = std::collections::HashMap::new();
    for chunk in distinct.chunks(64) {
        for (text, embedding) in chunk.iter().zip(common::embed(encoder, chunk)) {
            embeddings.insert(*text, embedding);
        }
    }

    let mut detector = Detector::new(AnomalyConfig::default());
    let mut raised = Vec::new();
    for (i, ticket) in tickets.iter().enumerate() {
        let id = format!("t{i}");
        let event = TicketEvent {
            at_ms: ticket.at_ms,
            ticket_id: &id,
            account: Some(&ticket.account),
            text: &ticket.text,
            embedding: &embeddings[ticket.text.as_str()],
        };
        if let (_, Some(AlertChange::Raised(alert))) = detector.observe(&event) {
            raised.push((ticket.spike, alert));
        }
    }

    let false_alerts: Vec<_> = raised.iter().filter(|(spike, _)| !spike).map(|(_, a)| &a.summary).collect();
    assert!(false_alerts.is_empty(), "{normal_count} ordinary tickets raised alerts: {false_alerts:?}");
    assert!(!raised.is_empty(), "the spike raised no alert ({} clusters)", detector.cluster_count());
    let (_, alert) = &raised[0];
    assert!(alert.count >= 15 && alert.accounts.len() >= 3, "{alert:?}");
    assert!(alert.examples.iter().all(|e| e.account.as_deref().is_some_and(|a| a.starts_with("spike-"))), "{alert:?}");
    assert!(alert.terms.iter().any(|t| t == "csv" || t == "export"), "terms: {:?}", alert.terms);
    // One cluster, not a storm of alerts for fragments of the same incident.
    assert!(
        raised.len() <= 2,
        "{} alerts for one incident: {:?}",
        raised.len(),
        raised.iter().map(|(_, a)| &a.summary).collect::<Vec<_>>()
    );
    println!("normal tickets {normal_count}, clusters {}, alert: {}", detector.cluster_count(), alert.summary);
}
