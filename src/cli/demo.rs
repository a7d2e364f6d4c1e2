//! `tierline demo`: realistic conversations played against a running server over HTTP.

use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Base URL of a running `tierline serve`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with the helpdesk and agent scopes (needed once keys exist).
    #[arg(long, env = "TIERLINE_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

struct Client {
    agent: ureq::Agent,
    base: String,
    key: Option<String>,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let auth = self.key.as_ref().map(|k| format!("Bearer {k}"));
        let mut response = match (method, body) {
            ("GET", _) => {
                let mut request = self.agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                request.call()?
            }
            (_, body) => {
                let mut request = self.agent.post(&url);
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                request.send_json(body.unwrap_or(json!({})))?
            }
        };
        let status = response.status();
        let value: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path}: {status}: {value}");
        Ok(value)
    }
}

fn say(who: &str, text: &str) {
    let indent = " ".repeat(who.len() + 4);
    let text = text.replace('\n', &format!("\n{indent}"));
    println!("  {who}: {text}");
}

fn decision(turn: &Value) {
    let d = &turn["decision"];
    println!(
        "    -> tier {}, queue {}, confidence {:.2}",
        d["tier"],
        d["queue"],
        d["confidence"].as_f64().unwrap_or(0.0)
    );
    for reason in d["reasons"].as_array().into_iter().flatten() {
        println!("       - {}", reason["message"].as_str().unwrap_or_default());
    }
}

fn customer(client: &Client, id: &str, text: &str) -> anyhow::Result<Value> {
    say("customer", text);
    let turn = client.call("POST", &format!("/v1/conversations/{id}/messages"), Some(json!({ "text": text })))?;
    if let Some(reply) = turn["reply"]["text"].as_str() {
        say("tierline (AI)", reply);
    }
    decision(&turn);
    Ok(turn)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let client = Client { agent, base: args.url, key: args.key };
    client.call("GET", "/ready", None).map_err(|err| anyhow::anyhow!("is `tierline serve` running? {err}"))?;

    println!("\n1. A routine question, answered by the AI from the knowledge base");
    let conversation = client.call("POST", "/v1/conversations", Some(json!({ "customer": { "name": "Dana" } })))?;
    let id = conversation["id"].as_str().unwrap_or_default().to_string();
    customer(&client, &id, "How do I reset my password?")?;
    client.call("POST", &format!("/v1/conversations/{id}/resolve"), Some(json!({ "resolved_by": "ai", "csat": 5 })))?;
    println!("    (resolved by the AI, CSAT 5)");

    println!("\n2. A double charge: escalated to billing, with the handoff packet");
    let conversation = client.call(
        "POST",
        "/v1/conversations",
        Some(json!({ "customer": { "name": "Sam Rivera", "email": "sam@acme.example" },
                     "account": { "id": "acme", "name": "Acme Corp", "plan": "business" } })),
    )?;
    let id = conversation["id"].as_str().unwrap_or_default().to_string();
    customer(
        &client,
        &id,
        "Hi, I was charged twice for our subscription this month. Can you refund the duplicate payment?",
    )?;
    let packet = client.call("GET", &format!("/v1/conversations/{id}/handoff"), None)?;
    println!("  handoff packet:\n{}", serde_json::to_string_pretty(&packet)?);
    let queue = client.call("GET", "/v1/queues/billing", None)?;
    println!("  billing queue: {} waiting", queue["waiting"].as_array().map_or(0, Vec::len));

    println!("\n3. A frustrated customer repeating the question: auto-escalated");
    let conversation = client.call("POST", "/v1/conversations", Some(json!({ "customer": { "name": "Lee" } })))?;
    let id = conversation["id"].as_str().unwrap_or_default().to_string();
    customer(&client, &id, "How can I export all my project data to CSV?")?;
    customer(&client, &id, "That didn't help at all. How do I export my project data as a CSV file??")?;
    let packet = client.call("GET", &format!("/v1/conversations/{id}/handoff"), None)?;
    println!("  summary for the agent: {}", serde_json::to_string_pretty(&packet["summary"])?);

    println!("\n4. \"Talk to a human\" works at any point");
    let conversation = client.call("POST", "/v1/conversations", Some(json!({})))?;
    let id = conversation["id"].as_str().unwrap_or_default().to_string();
    customer(&client, &id, "Can I speak to a real person please?")?;
    Ok(())
}
