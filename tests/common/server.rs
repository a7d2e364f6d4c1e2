//! A real server on an ephemeral port, driven over HTTP.

use std::time::{Duration, Instant};

use serde_json::Value;
use tierline::config::Config;

pub struct TestServer {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub client: reqwest::Client,
    /// Sent as `Authorization: Bearer` when set.
    pub key: Option<String>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tierline::server::run(config, listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let response = client.get(format!("{base}/ready")).send().await.unwrap();
            if response.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "server not ready: {}", response.text().await.unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { base, stop: Some(stop), task, client, key: None }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.authed(self.client.post(format!("{}{path}", self.base))).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sends on a connection of its own: a rejected oversized body makes the server close the
    /// connection while the client may still be writing, and a pooled client could hand that
    /// dead connection to the next request.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let response = client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.expect("error bodies are JSON"))
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.authed(self.client.request(method, format!("{}{path}", self.base)));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.authed(self.client.get(format!("{}{path}", self.base))).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}
