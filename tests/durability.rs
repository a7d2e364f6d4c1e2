//! Every acknowledged write survives `kill -9`: the real server binary is killed in the middle of
//! a write load, restarted on the same database, and every message that got a 2xx is there.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start(dir: &std::path::Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_tierline"))
        .arg("serve")
        .current_dir(common::root())
        .env("TIERLINE_SERVER__PORT", port.to_string())
        .env("TIERLINE_SUPPORT__DATABASE", dir.join("tierline.db"))
        .env("TIERLINE_KB__INDEX_DIR", dir.join("kb"))
        .env("TIERLINE_ENGINE__DEVICE", "cpu")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the tierline binary starts");
    let server = Server(child);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/ready")).send().await {
            if response.status() == 200 {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start(dir.path(), port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut conversation: Option<String> = None;
            for n in 0.. {
                if n % 5 == 0 || conversation.is_none() {
                    let Ok(response) = client.post(format!("{base}/v1/conversations")).json(&json!({})).send().await
                    else {
                        return;
                    };
                    let Ok(body) = response.json::<Value>().await else { return };
                    conversation = body["id"].as_str().map(String::from);
                }
                let id = conversation.clone().unwrap();
                let text = format!("Writer {writer} message {n}: how do I set up webhooks for project {n}?");
                let sent = client
                    .post(format!("{base}/v1/conversations/{id}/messages"))
                    .json(&json!({ "text": text }))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => acked.lock().unwrap().push((id, text)),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the load run, then kill the server without warning.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 40 && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    for writer in writers {
        let _ = writer.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40, "the load acknowledged only {} messages", acked.len());

    let _server = start(dir.path(), port).await;
    let conversations: HashSet<&String> = acked.iter().map(|(id, _)| id).collect();
    let mut stored = HashSet::new();
    for id in conversations {
        let view: Value =
            client.get(format!("{base}/v1/conversations/{id}")).send().await.unwrap().json().await.unwrap();
        for message in view["messages"].as_array().unwrap() {
            if message["role"] == "customer" {
                stored.insert((id.clone(), message["text"].as_str().unwrap().to_string()));
            }
        }
    }
    let lost: Vec<&(String, String)> = acked.iter().filter(|m| !stored.contains(*m)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged messages lost, e.g. {:?}", lost.len(), acked.len(), lost.first());
}
