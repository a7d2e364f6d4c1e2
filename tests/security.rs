//! Closed by default, scopes that match the roles, redaction, erasure and request ids, over
//! real HTTP against the real models.

mod common;

use reqwest::Method;
use serde_json::json;
use tierline::access::{self, Scope};

use common::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_a_non_loopback_bind_refuses_to_start() {
    let config = common::config();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = tierline::server::run(config.clone(), listener, std::future::pending()).await.unwrap_err();
    assert!(format!("{err:#}").contains("refusing to serve"), "{err:#}");

    // With an admin key, the same bind is allowed (the start gets past the check: it is served).
    let store = tierline::store::open(&config.support.database, 4).await.unwrap();
    let admin = access::create(&*store, "ops", &[Scope::Admin]).await.unwrap();
    // The last admin key cannot be revoked; another admin first, then it can.
    let err = access::revoke(&*store, &admin.id).await.unwrap_err();
    assert!(err.to_string().contains("last admin key"), "{err}");
    let second = access::create(&*store, "ops-2", &[Scope::Admin]).await.unwrap();
    access::revoke(&*store, &admin.id).await.unwrap();
    assert!(access::revoke(&*store, &second.id).await.is_err(), "the remaining admin key stays");
    // Revoking every helpdesk key does not open the server again: keys stay required.
    let helpdesk = access::create(&*store, "zendesk", &[Scope::Helpdesk]).await.unwrap();
    access::revoke(&*store, &helpdesk.id).await.unwrap();
    let agent = access::create(&*store, "console", &[Scope::Agent]).await.unwrap();
    drop(store);
    let mut config = config;
    config.server.metrics_require_key = true;
    let mut server = TestServer::start(config).await;
    let (status, body) = server.post("/v1/conversations", json!({})).await;
    assert_eq!(status, 401, "{body}");
    // /metrics behind a key when configured so.
    let (status, _) = server.get_text("/metrics").await;
    assert_eq!(status, 401);
    server.key = Some(agent.key);
    let (status, metrics) = server.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("tierline_http_request_seconds"), "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_redaction_erasure_and_request_ids() {
    let config = common::config();
    let database = config.support.database.clone();
    let index_dir = config.kb.index_dir.clone();
    let store = tierline::store::open(&database, 4).await.unwrap();
    let helpdesk = access::create(&*store, "zendesk", &[Scope::Helpdesk]).await.unwrap().key;
    let agent = access::create(&*store, "console", &[Scope::Agent]).await.unwrap().key;
    let admin = access::create(&*store, "ops", &[Scope::Admin]).await.unwrap().key;
    drop(store);
    let mut server = TestServer::start(config).await;

    // A customer pastes a card number, an e-mail, a phone number and a password.
    server.key = Some(helpdesk.clone());
    let (status, conversation) = server
        .post("/v1/conversations", json!({ "customer": { "id": "cust-42", "email": "Ana.Lopez@example.com" } }))
        .await;
    assert_eq!(status, 201, "{conversation}");
    let id = conversation["id"].as_str().unwrap().to_string();
    let secret_text = "I was charged twice on card 4111 1111 1111 1111, write to ana.lopez@example.com or call \
                       +44 20 7946 0958. My password: Tr0ub4dor&3";
    let response = server
        .client
        .post(format!("{}/v1/conversations/{id}/messages", server.base))
        .bearer_auth(&helpdesk)
        .json(&json!({ "text": secret_text }))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("x-request-id").is_some(), "every response carries a request id");
    assert_eq!(response.status(), 200);
    let turn: serde_json::Value = response.json().await.unwrap();
    // The models read the original: a double charge is still billing, for a person.
    assert_eq!(turn["decision"]["tier"], "human", "{turn}");

    server.key = Some(agent.clone());
    let (_, view) = server.send(Method::GET, &format!("/v1/conversations/{id}"), None).await;
    let stored = view["messages"][0]["text"].as_str().unwrap();
    assert_eq!(
        stored, "I was charged twice on card [card], write to [email] or call [phone]. My password: [secret]",
        "{view}"
    );
    let (_, packet) = server.send(Method::GET, &format!("/v1/conversations/{id}/handoff"), None).await;
    let packet = packet.to_string();
    for leaked in ["4111", "ana.lopez", "7946", "Tr0ub4dor"] {
        assert!(!packet.contains(leaked), "{leaked} in the packet: {packet}");
    }

    // A helpdesk key cannot write knowledge or training data through a resolution.
    server.key = Some(helpdesk.clone());
    let teach =
        json!({ "resolved_by": "human", "approved_answer": "Refunds take 5 days.", "corrected_topic": "refund" });
    let (status, body) = server.post(&format!("/v1/conversations/{id}/resolve"), teach.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    // ...nor erase customers or reload the policy.
    let (status, _) = server.send(Method::DELETE, "/v1/customers/cust-42", None).await;
    assert_eq!(status, 403);
    let (status, _) = server.post("/v1/admin/policy/reload", json!({})).await;
    assert_eq!(status, 403);
    // An agent may teach.
    server.key = Some(agent.clone());
    let (status, body) = server.post(&format!("/v1/conversations/{id}/resolve"), teach).await;
    assert_eq!(status, 200, "{body}");
    // The approved answer became an internal article titled by the (redacted) ticket.
    let article = body["knowledge_base_article"].as_str().unwrap().to_string();
    let (status, stored) = server.send(Method::GET, &format!("/v1/kb/articles/{article}"), None).await;
    assert_eq!(status, 200, "{stored}");
    assert!(stored["title"].as_str().unwrap().contains("charged twice on card [card]"), "{stored}");

    // Erasure by e-mail (any case): a receipt, and the customer's text is nowhere in the files.
    server.key = Some(admin.clone());
    let (status, receipt) = server.send(Method::DELETE, "/v1/customers/ana.lopez@EXAMPLE.com", None).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["conversations"], 1, "{receipt}");
    assert!(receipt["messages"].as_u64().unwrap() >= 2, "{receipt}");
    assert_eq!(receipt["articles"], 1, "the article made from the ticket goes too: {receipt}");
    let (status, _) = server.send(Method::GET, &format!("/v1/kb/articles/{article}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = server.send(Method::GET, &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(status, 404);
    let (_, again) = server.send(Method::DELETE, "/v1/customers/cust-42", None).await;
    assert_eq!(again["conversations"], 0, "erasing again finds nothing: {again}");
    // Admin actions are in the audit log, with who did them.
    let (status, _) = server.post("/v1/admin/policy/reload", json!({})).await;
    assert_eq!(status, 200);
    let (status, log) = server.send(Method::GET, "/v1/admin/audit?limit=50", None).await;
    assert_eq!(status, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions[..3], ["policy_reloaded", "customer_erased", "customer_erased"], "{log}");
    assert_eq!(actions.iter().filter(|a| **a == "key_created").count(), 3, "{log}");
    // The erased customer is named by a hash, never by the id the erasure removed.
    assert!(entries[1]["target"].as_str().unwrap().starts_with("sha256:"), "{log}");
    assert!(entries[0]["actor"].as_str().unwrap().starts_with("key_"), "the admin key's id: {log}");
    server.key = Some(agent.clone());
    let (status, _) = server.send(Method::GET, "/v1/admin/audit", None).await;
    assert_eq!(status, 403, "agents do not read the audit log");
    server.key = Some(admin.clone());

    // Nowhere in the database files (SQLite) nor in the knowledge-base index, any generation.
    let mut folders = vec![index_dir];
    if !database.to_string_lossy().starts_with("postgres") {
        folders.push(database.parent().unwrap().to_path_buf());
    }
    let mut scanned = 0;
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            scanned += 1;
            for needle in ["charged twice on card", "Ana.Lopez", "cust-42"] {
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
                assert!(!found, "`{needle}` survives in {}", path.display());
            }
        }
    }
    assert!(scanned > 3, "the index and database files were read ({scanned})");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_kept_to_one_account_opens_only_its_conversations_and_the_document_states_the_keys() {
    let config = common::config();
    let store = tierline::store::open(&config.support.database, 4).await.unwrap();
    let scopes = [Scope::Helpdesk, Scope::Agent];
    let acme = access::create_for_accounts(&*store, "acme-desk", &scopes, &["acme".into()]).await.unwrap().key;
    let other = access::create(&*store, "zendesk", &[Scope::Helpdesk]).await.unwrap().key;
    let err = access::create_for_accounts(&*store, "ops", &[Scope::Admin], &["acme".into()]).await.err().unwrap();
    assert!(err.to_string().contains("admin"), "{err}");
    drop(store);
    let mut server = TestServer::start(config).await;

    server.key = Some(other);
    let (status, globex) = server.post("/v1/conversations", json!({ "account": { "id": "globex" } })).await;
    assert_eq!(status, 201, "{globex}");
    let globex = globex["id"].as_str().unwrap().to_string();

    server.key = Some(acme);
    let (status, mine) = server.post("/v1/conversations", json!({ "account": { "id": "acme" } })).await;
    assert_eq!(status, 201, "{mine}");
    let mine = mine["id"].as_str().unwrap().to_string();
    let (status, _) = server.send(Method::GET, &format!("/v1/conversations/{mine}"), None).await;
    assert_eq!(status, 200);
    // Another account's conversation reads as absent on every conversation route.
    for (method, path, body) in [
        (Method::GET, format!("/v1/conversations/{globex}"), None),
        (Method::GET, format!("/v1/conversations/{globex}/handoff"), None),
        (
            Method::POST,
            format!("/v1/conversations/{globex}/agent-messages"),
            Some(json!({ "agent": "a", "text": "hi" })),
        ),
        (Method::POST, format!("/v1/conversations/{globex}/escalate"), Some(json!({}))),
        (Method::POST, format!("/v1/conversations/{globex}/resolve"), Some(json!({ "resolved_by": "human" }))),
    ] {
        let (status, body) = server.send(method.clone(), &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    // It opens conversations for its own account only.
    for account in [json!({ "account": { "id": "globex" } }), json!({})] {
        let (status, body) = server.post("/v1/conversations", account).await;
        assert_eq!(status, 403, "{body}");
    }
    // Routes that span every account refuse it; stateless ones serve it.
    for path in ["/v1/queues", "/v1/metrics/support", "/v1/events", "/v1/alerts"] {
        let (status, body) = server.send(Method::GET, path, None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, body) = server.post("/v1/embed", json!({ "texts": ["hello"] })).await;
    assert_eq!(status, 200, "{body}");

    // Keys exist, so the document declares them; every operation it secures answers 401
    // without one, and the ones it leaves open do not.
    server.key = None;
    let (status, doc) = server.send(Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["security"], json!([{ "api_key": [] }]), "{}", doc["security"]);
    let mut secured = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let open = operation.get("security").is_some_and(|s| s == &json!([]));
            let url = path.replace("{id}", "x").replace("{queue}", "billing");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = operation.get("requestBody").map(|_| json!({}));
            let (status, answer) = server.send(method.clone(), &url, body).await;
            if open {
                assert_ne!(status, 401, "{method} {path} is documented open: {answer}");
            } else {
                secured += 1;
                assert_eq!(status, 401, "{method} {path} is documented as needing a key: {answer}");
            }
        }
    }
    assert!(secured > 30, "{secured} secured operations");
    server.stop().await;
}

/// The server's own log, at its most verbose, never carries what redaction removes from stored
/// text (the models read the original; nothing else keeps it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_never_carries_redacted_text() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let log_path = dir.path().join("serve.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tierline"))
        .args(["serve", "-vv"])
        .current_dir(common::root())
        .env("TIERLINE_SERVER__PORT", port.to_string())
        .env("TIERLINE_SUPPORT__DATABASE", dir.path().join("tierline.db"))
        .env("TIERLINE_KB__INDEX_DIR", dir.path().join("kb"))
        .env("TIERLINE_MODELS__HEAD_VERSIONS", dir.path().join("heads"))
        .env("TIERLINE_ENGINE__DEVICE", "cpu")
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(dir.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("the tierline binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !client.get(format!("{base}/ready")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(std::time::Instant::now() < deadline, "server not ready");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let secrets = "card 4111 1111 1111 1111, mail ana.lopez@example.com, phone +44 20 7946 0958, password: Tr0ub4dor&3";
    let conversation: serde_json::Value =
        client.post(format!("{base}/v1/conversations")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let id = conversation["id"].as_str().unwrap();
    for (path, body) in [
        (format!("/v1/conversations/{id}/messages"), json!({ "text": format!("I was charged twice on my {secrets}") })),
        ("/v1/classify".to_string(), json!({ "texts": [secrets] })),
        ("/v1/answer".to_string(), json!({ "question": secrets })),
    ] {
        let response = client.post(format!("{base}{path}")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("/v1/conversations") || log.contains("ready"), "the log was captured: {log}");
    for leaked in ["4111", "ana.lopez", "7946 0958", "Tr0ub4dor"] {
        assert!(!log.contains(leaked), "`{leaked}` in the server log");
    }
}
