//! A few hundred conversations with outcomes driven through the API; every support metric is
//! checked against values the test computes itself from what it did.

mod common;

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value};

use common::server::TestServer;
use common::Rng;

#[derive(Debug, Default, Clone)]
struct Record {
    id: String,
    queue: String,
    escalated: bool,
    resolved_by: Option<&'static str>,
    csat: Option<u8>,
    needed_information: Option<bool>,
    reopened: bool,
}

fn ratio(n: usize, d: usize) -> Value {
    if d == 0 {
        Value::Null
    } else {
        json!(n as f64 / d as f64)
    }
}

fn mean(values: &[f64]) -> Value {
    if values.is_empty() {
        Value::Null
    } else {
        json!(values.iter().sum::<f64>() / values.len() as f64)
    }
}

fn nearest_rank(sorted: &[f64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    json!(sorted[rank - 1])
}

fn expected(records: &[&Record], waits: &BTreeMap<String, f64>) -> BTreeMap<&'static str, Value> {
    let escalated: Vec<&&Record> = records.iter().filter(|r| r.escalated).collect();
    let resolved: Vec<&&Record> = records.iter().filter(|r| r.resolved_by.is_some()).collect();
    let ai_resolved = resolved.iter().filter(|r| r.resolved_by == Some("ai")).count();
    let human_escalations: Vec<&&&Record> = escalated.iter().filter(|r| r.resolved_by == Some("human")).collect();
    let answered: Vec<bool> = human_escalations.iter().filter_map(|r| r.needed_information).collect();
    let mut wait_values: Vec<f64> = escalated.iter().filter_map(|r| waits.get(&r.id).copied()).collect();
    wait_values.sort_by(f64::total_cmp);
    let csat_ai: Vec<f64> =
        resolved.iter().filter(|r| r.resolved_by == Some("ai")).filter_map(|r| r.csat.map(f64::from)).collect();
    let csat_escalated: Vec<f64> = escalated.iter().filter_map(|r| r.csat.map(f64::from)).collect();
    BTreeMap::from([
        ("conversations", json!(records.len())),
        ("escalated", json!(escalated.len())),
        ("escalation_rate", ratio(escalated.len(), records.len())),
        ("resolved", json!(resolved.len())),
        ("ai_resolved", json!(ai_resolved)),
        ("ai_resolution_rate", ratio(ai_resolved, records.len())),
        ("re_escalation_rate", ratio(resolved.iter().filter(|r| r.reopened).count(), resolved.len())),
        ("over_escalation_rate", ratio(answered.iter().filter(|needed| !**needed).count(), answered.len())),
        ("time_to_human_p50_secs", nearest_rank(&wait_values, 0.5)),
        ("time_to_human_p90_secs", nearest_rank(&wait_values, 0.9)),
        (
            "first_contact_resolution_after_escalation",
            ratio(human_escalations.iter().filter(|r| !r.reopened).count(), human_escalations.len()),
        ),
        ("csat_ai_resolved", mean(&csat_ai)),
        ("csat_escalated", mean(&csat_escalated)),
    ])
}

fn assert_metrics(got: &Value, want: &BTreeMap<&'static str, Value>, scope: &str) {
    for (key, value) in want {
        let actual = &got[*key];
        match (actual.as_f64(), value.as_f64()) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{scope}.{key}: got {a}, want {b}"),
            _ => assert_eq!(actual, value, "{scope}.{key}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_an_independent_count_of_a_few_hundred_conversations() {
    let mut config = common::config();
    config.server.metrics_refresh_secs = 1;
    let server = TestServer::start(config).await;
    let openers = [
        "How do I reset my password?",
        "I was charged twice this month and I want my money back",
        "How do I set up webhooks?",
        "Can I talk to a human please?",
        "How do I rotate my API keys?",
        "Someone logged into my account and it was not me",
    ];
    let mut rng = Rng(7);
    let mut records = Vec::new();
    for n in 0..240 {
        let (_, conversation) = server.post("/v1/conversations", json!({})).await;
        let id = conversation["id"].as_str().unwrap().to_string();
        let text = openers[n % openers.len()];
        let (status, turn) = server.post(&format!("/v1/conversations/{id}/messages"), json!({ "text": text })).await;
        assert_eq!(status, 200, "{turn}");
        let mut record = Record {
            id: id.clone(),
            queue: turn["decision"]["queue"].as_str().unwrap().to_string(),
            escalated: turn["handoff"].as_bool().unwrap(),
            ..Default::default()
        };
        let csat = rng.chance(70).then(|| (rng.next() % 5 + 1) as u8);
        if record.escalated {
            if rng.chance(80) {
                let (status, _) = server
                    .post(
                        &format!("/v1/conversations/{id}/agent-messages"),
                        json!({ "agent": "kim", "text": "On it." }),
                    )
                    .await;
                assert_eq!(status, 200);
                if rng.chance(85) {
                    let needed = if rng.chance(75) { Some(rng.chance(60)) } else { None };
                    let mut body = json!({ "resolved_by": "human", "agent": "kim", "csat": csat });
                    if let Some(needed) = needed {
                        body["needed_information_ai_lacked"] = json!(needed);
                    }
                    let (status, row) = server.post(&format!("/v1/conversations/{id}/resolve"), body).await;
                    assert_eq!(status, 200, "{row}");
                    record.resolved_by = Some("human");
                    record.csat = csat;
                    record.needed_information = needed;
                }
            }
        } else if rng.chance(65) {
            let (status, _) = server
                .post(&format!("/v1/conversations/{id}/resolve"), json!({ "resolved_by": "ai", "csat": csat }))
                .await;
            assert_eq!(status, 200);
            record.resolved_by = Some("ai");
            record.csat = csat;
        }
        if record.resolved_by.is_some() && rng.chance(12) {
            let (status, turn) =
                server.post(&format!("/v1/conversations/{id}/messages"), json!({ "text": "It broke again." })).await;
            assert_eq!((status, turn["decision"]["reasons"][0]["code"].as_str()), (200, Some("reopened")), "{turn}");
            record.reopened = true;
            record.escalated = true;
        }
        records.push(record);
    }

    // Time to a human from the stored timestamps of each conversation.
    let mut waits = BTreeMap::new();
    for record in records.iter().filter(|r| r.escalated) {
        let (_, view) = server.send(Method::GET, &format!("/v1/conversations/{}", record.id), None).await;
        if let (Some(reply), Some(escalated)) = (view["first_human_reply_at"].as_i64(), view["escalated_at"].as_i64()) {
            waits.insert(record.id.clone(), (reply - escalated).max(0) as f64 / 1000.0);
        }
    }

    let (status, report) = server.send(Method::GET, "/v1/metrics/support?window=day", None).await;
    assert_eq!(status, 200, "{report}");
    let all: Vec<&Record> = records.iter().collect();
    assert_metrics(&report["overall"], &expected(&all, &waits), "overall");
    let mut queues: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for record in &records {
        queues.entry(record.queue.as_str()).or_default().push(record);
    }
    assert!(queues.len() >= 3, "traffic reached several queues: {:?}", queues.keys());
    for (queue, rows) in &queues {
        assert_metrics(&report["by_queue"][*queue], &expected(rows, &waits), queue);
    }
    // Sanity: the mix produced every kind of outcome the metrics count.
    let overall = &report["overall"];
    for key in ["escalation_rate", "ai_resolution_rate", "re_escalation_rate", "over_escalation_rate", "csat_escalated"]
    {
        assert!(overall[key].as_f64().is_some_and(|v| v > 0.0), "{key} is zero: {overall}");
    }

    // Calibration replays the same conversations against their outcomes.
    let (status, calibration) = server.send(Method::GET, "/v1/calibration?window=day", None).await;
    assert_eq!(status, 200, "{calibration}");
    assert_eq!(calibration["conversations"], 240);
    assert!(calibration["with_verdict"].as_u64().unwrap() > 50, "{calibration}");
    assert_eq!(calibration["signals"].as_array().unwrap().len(), 9);
    for signal in calibration["signals"].as_array().unwrap() {
        assert_eq!(signal["rows"].as_array().unwrap().iter().filter(|r| r["current"] == true).count(), 1);
        assert!(!signal["suggestion"].as_str().unwrap().is_empty());
    }

    // The same figures reach Prometheus (refreshed in the background every second here).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(metrics.contains("tierline_support{metric=\"escalation_rate\",queue=\"all\"}"), "{metrics}");
    let (status, _) = server.send(Method::GET, "/v1/metrics/support?window=month", None).await;
    assert_eq!(status, 400);
    server.stop().await;
}
