//! The shared store on a real PostgreSQL server (a throwaway cluster per test binary): the
//! `Store` contract on both backends, three `tierline serve` processes on one database with one
//! of them killed mid-run, and an outage answered with 503 + Retry-After.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tierline::store::{
    Change, CreatedPage, FeedbackFilter, FeedbackKind, MessageDetail, NewFeedback, NewMessage, Role, Status, Store,
    StoredDecision, EVENTS_CHANNEL,
};
use tierline::triage::{Decision, Tier};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// What every backend must do the same way.
async fn store_contract(store: Arc<dyn Store>, other_node: Arc<dyn Store>) {
    let id = format!("conv_contract_{}", store.kind());
    let created = store.create_conversation(&id, &json!({ "name": "Ana" }), &Default::default(), Some("tok")).await;
    let created = created.unwrap();
    assert_eq!((created.status, created.ai_exchanges), (Status::Ai, 0));
    assert_eq!(other_node.conversation_by_token("tok").await.unwrap().as_deref(), Some(id.as_str()));

    let first = NewMessage { role: Role::Customer, author: None, text: "hello".into(), detail: None, embedding: None };
    let change = Change { add_ai_exchange: true, ..Change::default() };
    assert!(store
        .record(&id, vec![first.clone(), NewMessage::agent("sam".into(), "hi".into())], change)
        .await
        .unwrap());
    let messages = other_node.messages(&id).await.unwrap();
    let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::Customer, Role::Agent]);
    assert!(messages[0].id < messages[1].id);
    assert_eq!(other_node.conversation(&id).await.unwrap().unwrap().ai_exchanges, 1);

    // A change conditional on the status applies once: the second sweeper finds it taken.
    let handoff = || Change {
        status: Some(Status::Waiting),
        only_if_status: Some(Status::Ai),
        escalated: Some(tierline::triage::ReasonCode::TimeLimit),
        ..Change::default()
    };
    let note = || NewMessage::system("handed over".into(), tierline::triage::ReasonCode::TimeLimit);
    let (a, b) =
        tokio::join!(store.record(&id, vec![note()], handoff()), other_node.record(&id, vec![note()], handoff()));
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|won| **won).count(), 1, "exactly one handoff wins");
    let messages = store.messages(&id).await.unwrap();
    assert_eq!(messages.iter().filter(|m| m.role == Role::System).count(), 1, "the loser wrote nothing");
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().status, Status::Waiting);

    // Turns of one conversation are serialised across nodes.
    let held = store.lock_conversation(&id).await.unwrap();
    let contender = {
        let other_node = other_node.clone();
        let id = id.clone();
        tokio::spawn(async move { other_node.lock_conversation(&id).await.map(|_| Instant::now()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!contender.is_finished(), "a second node waits for the first one's turn");
    let released = Instant::now();
    drop(held);
    let acquired = tokio::time::timeout(Duration::from_secs(10), contender).await.unwrap().unwrap().unwrap();
    assert!(acquired >= released);

    // Feedback rows written with a resolution, then reviewed.
    let feedback = NewFeedback {
        head: "topic".into(),
        text: "refund please".into(),
        label: "refund".into(),
        predicted: Some("billing".into()),
        kind: FeedbackKind::Corrected,
    };
    let resolve =
        Change { resolved: Some(("human:sam".into(), Some(5))), feedback: vec![feedback], ..Change::default() };
    assert!(store.record(&id, vec![], resolve).await.unwrap());
    let rows = other_node.feedback(&FeedbackFilter { head: Some("topic".into()), ..Default::default() }).await;
    let rows = rows.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(other_node.review_feedback(rows[0].id, tierline::store::FeedbackStatus::Rejected, None).await.unwrap());
    let resolved = store.conversation(&id).await.unwrap().unwrap();
    assert_eq!((resolved.resolved_by.as_deref(), resolved.csat), (Some("human:sam"), Some(5)));

    // Shared documents are versioned.
    assert_eq!(store.save_document("kb_edits", "[1]").await.unwrap(), 1);
    assert_eq!(other_node.save_document("kb_edits", "[1,2]").await.unwrap(), 2);
    assert_eq!(store.document("kb_edits").await.unwrap(), Some((2, "[1,2]".to_string())));

    // API keys.
    store.insert_key("key1", "hash1", "zendesk", &["helpdesk".to_string()], &["acme".to_string()]).await.unwrap();
    let key = other_node.key_by_hash("hash1").await.unwrap().unwrap();
    assert_eq!((key.name.as_str(), key.accounts.as_slice()), ("zendesk", ["acme".to_string()].as_slice()));
    assert!(other_node.revoke_key("key1").await.unwrap());
    assert!(store.key_by_hash("hash1").await.unwrap().is_none());

    // Reports read a window in pages, newest first: every conversation once, ties on the
    // creation millisecond broken by id, with the first customer message's decision.
    let since = now_ms();
    let decided = |tier| StoredDecision {
        decision: Decision {
            tier,
            queue: "billing".into(),
            confidence: 0.9,
            reasons: vec![],
            signals: vec![],
            language: None,
            kind: None,
        },
        negativity: 0.1,
        sentiment: None,
        topic: None,
    };
    let mut paged_ids = Vec::new();
    for i in 0..5 {
        let page_id = format!("conv_page_{}_{i}", store.kind());
        store.create_conversation(&page_id, &json!({}), &Default::default(), None).await.unwrap();
        let detail = (i % 2 == 0).then(|| MessageDetail::Customer(Box::new(decided(Tier::Human))));
        let ticket =
            NewMessage { role: Role::Customer, author: None, text: format!("ticket {i}"), detail, embedding: None };
        let later =
            NewMessage { role: Role::Customer, author: None, text: "again".into(), detail: None, embedding: None };
        store.record(&page_id, vec![ticket, later], Change::default()).await.unwrap();
        paged_ids.push(page_id);
    }
    let mut page = Some(CreatedPage { from: since, to: now_ms() + 1, after: None, limit: 2 });
    let mut walked = Vec::new();
    while let Some(current) = page {
        let rows = other_node.first_decisions(&current).await.unwrap();
        assert!(rows.len() <= 2);
        page = current.next(&rows, |(row, _)| (row.created_at, row.id.clone()));
        walked.extend(rows.into_iter().map(|(row, first)| (row.created_at, row.id, first.map(|d| d.decision.tier))));
    }
    let mut newest_first = walked.clone();
    newest_first.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    assert_eq!(walked, newest_first, "pages come newest first, without repeats");
    for (i, page_id) in paged_ids.iter().enumerate() {
        let seen: Vec<_> = walked.iter().filter(|(_, id, _)| id == page_id).collect();
        assert_eq!(seen.len(), 1, "{page_id} read exactly once: {walked:?}");
        assert_eq!(seen[0].2, (i % 2 == 0).then_some(Tier::Human), "{page_id}: the ticket's decision");
    }
    let plain = store.conversations_created(&CreatedPage { from: since, to: i64::MAX, after: None, limit: 3 }).await;
    let plain: Vec<String> = plain.unwrap().into_iter().map(|row| row.id).collect();
    let first_three: Vec<String> = walked.iter().take(3).map(|(_, id, _)| id.clone()).collect();
    assert_eq!(plain, first_three);

    // Unknown conversations are absent, not errors.
    assert!(store.conversation("conv_nope").await.unwrap().is_none());
    assert!(store.ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_on_sqlite_and_on_postgres() {
    let sqlite_path = common::config().support.database;
    let sqlite_path = if sqlite_path.to_string_lossy().starts_with("postgres") { tempdir_db() } else { sqlite_path };
    let sqlite = tierline::store::open(&sqlite_path, 4).await.unwrap();
    store_contract(sqlite.clone(), sqlite).await;

    let Some(cluster) = common::postgres::shared() else { return };
    let url = PathBuf::from(cluster.database());
    let node_a = tierline::store::open(&url, 4).await.unwrap();
    let node_b = tierline::store::open(&url, 4).await.unwrap();
    store_contract(node_a.clone(), node_b.clone()).await;

    // One leader at a time; a dropped leadership passes on.
    let lead = node_a.try_lead("spikes").await.unwrap().expect("the first node leads");
    assert!(lead.still_held().await);
    assert!(node_b.try_lead("spikes").await.unwrap().is_none(), "a second node does not lead too");
    drop(lead);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if node_b.try_lead("spikes").await.unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "leadership did not pass on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Notifications reach the other node.
    let mut inbox = node_b.listen(&[EVENTS_CHANNEL]).expect("postgres listens");
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        node_a.notify(EVENTS_CHANNEL, "ping").await.unwrap();
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(300), inbox.recv()).await {
            break got;
        }
        assert!(Instant::now() < deadline, "no notification arrived");
    };
    assert_eq!((got.channel.as_str(), got.payload.as_str()), (EVENTS_CHANNEL, "ping"));

    // A bad URL is a clear start-up error, not a panic.
    let err = tierline::store::open(&PathBuf::from("postgres://postgres@127.0.0.1:1/none"), 2).await.err().unwrap();
    assert!(format!("{err:#}").contains("migrate"), "{err:#}");
}

fn tempdir_db() -> PathBuf {
    std::env::temp_dir().join(format!("tierline-test-db-pgcontract-{}/tierline.db", std::process::id()))
}

/// One `tierline serve` process.
struct Node {
    name: &'static str,
    base: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A policy with a short time limit and a fast sweep, for the sweeper checks.
fn fast_policy() -> PathBuf {
    let text = std::fs::read_to_string(common::root().join("models/policy.toml")).unwrap();
    let text = text
        .replace("time_limit_secs = 900", "time_limit_secs = 6")
        .replace("sweep_interval_secs = 15", "sweep_interval_secs = 1");
    assert!(text.contains("time_limit_secs = 6") && text.contains("sweep_interval_secs = 1"), "policy keys moved");
    let path = std::env::temp_dir().join(format!("tierline-test-policy-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_node(name: &'static str, database: &str, policy: &std::path::Path) -> Node {
    let config = common::config();
    let port = common::free_port();
    let root = common::root();
    let child = Command::new(env!("CARGO_BIN_EXE_tierline"))
        .current_dir(&root)
        .arg("serve")
        .env("TIERLINE_SERVER__HOST", "127.0.0.1")
        .env("TIERLINE_SERVER__PORT", port.to_string())
        .env("TIERLINE_DATA_DIR", root.join("data"))
        .env("TIERLINE_MODELS__MANIFEST", &config.models.manifest)
        .env("TIERLINE_MODELS__LOCAL_DIR", &config.models.local_dir)
        .env("TIERLINE_MODELS__HEAD_VERSIONS", &config.models.head_versions)
        .env("TIERLINE_ENGINE__DEVICE", "cpu")
        .env("TIERLINE_KB__SOURCE", &config.kb.source)
        .env("TIERLINE_KB__ANSWERABILITY", &config.kb.answerability)
        .env("TIERLINE_KB__INDEX_DIR", &config.kb.index_dir)
        .env("TIERLINE_SUPPORT__DATABASE", database)
        .env("TIERLINE_SUPPORT__POLICY", policy)
        .env("TIERLINE_ANOMALY__MIN_HISTORY_SECS", "0")
        .env("TIERLINE_ANOMALY__MIN_COUNT", "10")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tierline serve starts");
    Node { name, base: format!("http://127.0.0.1:{port}"), child }
}

async fn wait_ready(client: &reqwest::Client, node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(response) = client.get(format!("{}/ready", node.base)).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "node {} not ready", node.name);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// POSTs to `bases[first]`, moving on to the next node when one cannot be reached (as a load
/// balancer does when a node dies).
async fn post_any(client: &reqwest::Client, bases: &[String], first: usize, path: &str, body: &Value) -> (u16, Value) {
    for attempt in 0..bases.len() {
        let base = &bases[(first + attempt) % bases.len()];
        match client.post(format!("{base}{path}")).json(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                return (status, response.json().await.unwrap_or(Value::Null));
            }
            // Refused, or a pooled connection to the killed node reset: the request never reached
            // a live node (the kill happens between rounds), so another node may take it.
            Err(err) if err.is_connect() || err.is_request() => continue,
            Err(err) => panic!("{base}{path}: {err}"),
        }
    }
    panic!("no node reachable for {path}");
}

async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> Value {
    let response = client.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn count_role(view: &Value, role: &str) -> usize {
    view["messages"].as_array().unwrap().iter().filter(|m| m["role"] == role).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_database_and_survive_losing_one() {
    let Some(cluster) = common::postgres::shared() else { return };
    let database = cluster.database();
    let policy = fast_policy();
    let client = reqwest::Client::new();

    // B starts first, so it leads spike detection until it is killed.
    let b = spawn_node("b", &database, &policy);
    wait_ready(&client, &b).await;
    let a = spawn_node("a", &database, &policy);
    let c = spawn_node("c", &database, &policy);
    wait_ready(&client, &a).await;
    wait_ready(&client, &c).await;
    let mut nodes = vec![a, b, c];
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();

    // A hundred customers, each writing to a different node every turn; the second message of
    // every tenth customer is sent to two nodes at once (a double-submitted form).
    let started = Instant::now();
    let mut conversations: Vec<(String, usize)> = Vec::new();
    let mut tasks = Vec::new();
    for customer in 0..100usize {
        let client = client.clone();
        let bases = bases.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({ "customer": { "name": format!("c{customer}") }, "account": { "id": format!("acct{customer}") } });
            let (status, conversation) = post_any(&client, &bases, customer, "/v1/conversations", &body).await;
            assert_eq!(status, 201, "{conversation}");
            let id = conversation["id"].as_str().unwrap().to_string();
            let path = format!("/v1/conversations/{id}/messages");
            let (status, turn) =
                post_any(&client, &bases, customer + 1, &path, &json!({ "text": "How do I reset my password?" })).await;
            assert_eq!(status, 200, "{turn}");
            let second = json!({ "text": "That did not work. I want to talk to a human agent now." });
            let mut sent = 2;
            if customer % 10 == 0 {
                let (one, two) = tokio::join!(
                    post_any(&client, &bases, customer + 2, &path, &second),
                    post_any(&client, &bases, customer + 3, &path, &second)
                );
                assert_eq!((one.0, two.0), (200, 200), "{} {}", one.1, two.1);
                sent += 1;
            } else {
                let (status, turn) = post_any(&client, &bases, customer + 2, &path, &second).await;
                assert_eq!(status, 200, "{turn}");
            }
            (id, sent)
        }));
        if tasks.len() == 20 {
            for task in tasks.drain(..) {
                conversations.push(task.await.unwrap());
            }
        }
    }
    for task in tasks {
        conversations.push(task.await.unwrap());
    }
    let first_round = started.elapsed();

    // Every customer message stored once, one handoff per conversation, whichever node wrote it.
    for (i, (id, sent)) in conversations.iter().enumerate() {
        let view = get_json(&client, &bases[i % 3], &format!("/v1/conversations/{id}")).await;
        assert_eq!(count_role(&view, "customer"), *sent, "{view}");
        let handoffs = view["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "ai" && m["decision"]["handoff"] == true)
            .count();
        assert_eq!(handoffs, 1, "one handoff, not one per node: {view}");
        assert_eq!(view["status"], "waiting", "{view}");
        assert_eq!(view["escalation_reason"], "human_requested", "{view}");
    }

    // Kill B (the spike leader) without warning.
    let b = nodes.remove(1);
    let mut b_child = b;
    let _ = b_child.child.kill();
    let _ = b_child.child.wait();
    let survivors: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let all_with_dead = bases.clone();

    // Conversations left with the AI: the sweepers on the surviving nodes hand each over once.
    let mut idle = Vec::new();
    for i in 0..6usize {
        let (status, conversation) = post_any(&client, &all_with_dead, 1, "/v1/conversations", &json!({})).await;
        assert_eq!(status, 201);
        let id = conversation["id"].as_str().unwrap().to_string();
        let path = format!("/v1/conversations/{id}/messages");
        let (status, turn) =
            post_any(&client, &all_with_dead, i, &path, &json!({ "text": "How do I reset my password?" })).await;
        assert_eq!(status, 200, "{turn}");
        assert_eq!(turn["handoff"], false, "{turn}");
        idle.push(id);
    }

    // A spike about one failing feature from many accounts, spread over the survivors.
    let spike = common::CSV_SPIKE;
    for i in 0..16usize {
        let body = json!({ "account": { "id": format!("spike{}", i % 7) } });
        let (status, conversation) = post_any(&client, &survivors, i, "/v1/conversations", &body).await;
        assert_eq!(status, 201);
        let path = format!("/v1/conversations/{}/messages", conversation["id"].as_str().unwrap());
        let (status, turn) = post_any(&client, &survivors, i + 1, &path, &json!({ "text": spike[i % 6] })).await;
        assert_eq!(status, 200, "{turn}");
    }

    // A knowledge-base article added on A answers on C.
    let article = json!({
        "title": "Pair the Brightwave desk lamp",
        "body": "To pair the Brightwave desk lamp with your account, hold the lamp's power button for five seconds until it blinks blue, then open Settings > Devices > Add device and pick the lamp from the list.",
    });
    let (status, created) = post_any(&client, &survivors, 0, "/v1/kb/articles", &article).await;
    assert_eq!(status, 201, "{created}");
    let question = json!({ "question": "How do I pair the Brightwave desk lamp with my account?" });

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answered_on_c = false;
    let mut alerts_seen = Value::Null;
    let mut idle_done = false;
    while Instant::now() < deadline && !(answered_on_c && idle_done && alerts_seen.is_array()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !answered_on_c {
            let response = client.post(format!("{}/v1/answer", survivors[1])).json(&question).send().await.unwrap();
            let answer: Value = response.json().await.unwrap();
            answered_on_c = answer["citations"][0]["article_id"] == "pair-the-brightwave-desk-lamp";
        }
        if !alerts_seen.is_array() {
            let alerts = get_json(&client, &survivors[0], "/v1/alerts?active=true").await;
            let csv = |a: &Value| a["terms"].as_array().is_some_and(|t| t.iter().any(|t| t == "csv"));
            if alerts["alerts"].as_array().is_some_and(|a| a.iter().any(csv)) {
                alerts_seen = alerts["alerts"].clone();
            }
        }
        if !idle_done {
            let mut all = true;
            for id in &idle {
                let view = get_json(&client, &survivors[1], &format!("/v1/conversations/{id}")).await;
                all &= view["status"] == "waiting";
            }
            idle_done = all;
        }
    }
    assert!(answered_on_c, "the article added on A answers on C");
    assert!(idle_done, "the sweepers handed over every idle conversation");
    // Two more sweeps: nobody hands them over a second time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &idle {
        let view = get_json(&client, &survivors[0], &format!("/v1/conversations/{id}")).await;
        assert_eq!(count_role(&view, "system"), 1, "handed over once: {view}");
        assert_eq!(view["escalation_reason"], "time_limit", "{view}");
    }
    // (The first round's hundred identical password questions are a spike of their own.)
    let alerts = alerts_seen.as_array().expect("the spike raised an alert after the leader died");
    let about_csv: Vec<&Value> =
        alerts.iter().filter(|a| a["terms"].as_array().unwrap().iter().any(|t| t == "csv")).collect();
    assert_eq!(about_csv.len(), 1, "one alert for one spike, not one per node: {alerts:?}");
    let mut clusters: Vec<u64> = alerts.iter().map(|a| a["cluster"].as_u64().unwrap()).collect();
    clusters.dedup();
    assert_eq!(clusters.len(), alerts.len(), "no cluster alerted twice: {alerts:?}");
    let on_c = get_json(&client, &survivors[1], "/v1/alerts?active=true").await;
    assert_eq!(on_c["alerts"].as_array().unwrap().len(), alerts.len(), "{on_c}");

    // Metrics agree whichever node computes them.
    let on_a = get_json(&client, &survivors[0], "/v1/metrics/support?window=day").await;
    let on_c = get_json(&client, &survivors[1], "/v1/metrics/support?window=day").await;
    assert_eq!(on_a["overall"], on_c["overall"]);
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for (id, _) in &conversations {
        let view = get_json(&client, &survivors[0], &format!("/v1/conversations/{id}")).await;
        *by_status.entry(view["status"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(by_status.get("waiting"), Some(&100), "{by_status:?}");
    println!("three nodes: 100 customers, 310 turns in {first_round:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_with_retry_after_and_recovers() {
    let Some(cluster) = common::postgres::private() else { return };
    let mut config = common::config();
    config.support.database = PathBuf::from(cluster.database());
    let server = common::server::TestServer::start(config).await;
    let (status, conversation) = server.post("/v1/conversations", json!({})).await;
    assert_eq!(status, 201, "{conversation}");
    let id = conversation["id"].as_str().unwrap().to_string();
    let path = format!("/v1/conversations/{id}/messages");
    let (status, _) = server.post(&path, json!({ "text": "How do I reset my password?" })).await;
    assert_eq!(status, 200);

    cluster.stop();
    let response = server.client.get(format!("{}/ready", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 503, "not ready without its database");
    let response =
        server.client.post(format!("{}{path}", server.base)).json(&json!({ "text": "hello?" })).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some(), "{:?}", response.headers());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let (status, _) = server.get_text("/health").await;
    assert_eq!(status, 200, "alive, only not ready");

    cluster.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, turn) = server.post(&path, json!({ "text": "Thanks, that worked!" })).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{turn}");
        assert!(Instant::now() < deadline, "no recovery after the database came back");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, view) = server.send(reqwest::Method::GET, &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(count_role(&view, "customer"), 2, "the turn refused during the outage left nothing: {view}");
    server.stop().await;
}
