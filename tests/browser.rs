//! The three screens in a real browser (Debian's Chromium through chromedriver): a customer asks
//! a knowledge-base question and sees the answer with its citation, presses "Talk to a person";
//! an agent, in a second browser session, sees the conversation arrive in its queue without a
//! reload, opens the packet, edits the suggested reply and sends it; the customer sees it live;
//! the agent resolves with a correction; the customer's CSAT lands; the dashboard's counts move.
//! Also: the button is visible in every state (and at phone width), a customer token never
//! reads another conversation's stream, and a browser without a key gets the sign-in page.

mod common;

use std::time::Duration;

use common::browser::{self, assert_person_button_visible, text_appears, visible};
use common::server::TestServer;
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, Locator};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tierline::access::{self, Scope};

const LIVE: Duration = Duration::from_secs(2);
const SLOW: Duration = Duration::from_secs(60);

async fn type_into(client: &Client, css: &str, text: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Does `act` to what `css` matches now: a live re-render can replace the element between finding
/// it and acting on it, which a person never notices, so a stale element is found again.
async fn on_current(client: &Client, css: &str, act: impl AsyncFn(Element) -> Result<(), CmdError>) {
    for _ in 0..20 {
        match act(visible(client, css, SLOW).await).await {
            Err(e) if e.is_stale_element_reference() => continue,
            done => return done.unwrap(),
        }
    }
    panic!("`{css}` went stale 20 times in a row");
}

async fn click(client: &Client, css: &str) {
    on_current(client, css, async |element| element.click().await).await;
}

/// Picks `value` in the `<select>` at `css`.
async fn choose(client: &Client, css: &str, value: &str) {
    on_current(client, css, async |element| element.select_by_value(value).await).await;
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let path = common::root().join("docs/screens").join(name);
    std::fs::write(&path, png).unwrap();
}

async fn agent_get(server: &TestServer, key: &str, path: &str) -> Value {
    let response = server.client.get(format!("{}{path}", server.base)).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_and_an_agent_work_a_conversation_in_real_browsers() {
    let Some(port) = browser::driver() else { return };
    let config = common::config();
    let store = tierline::store::open(&config.support.database, 4).await.unwrap();
    let agent_key = access::create(&*store, "console", &[Scope::Agent]).await.unwrap().key;
    drop(store);
    let server = TestServer::start(config).await;
    let base = server.base.clone();

    // A browser without a key gets the sign-in page and no data.
    let agent = browser::session(port, 1280, 900).await;
    agent.goto(&format!("{base}/console")).await.unwrap();
    visible(&agent, "#signin", SLOW).await;
    assert!(!agent.find(Locator::Css("#app")).await.unwrap().is_displayed().await.unwrap(), "data shown without a key");
    assert!(agent.find_all(Locator::Css(".queue")).await.unwrap().is_empty(), "queues fetched without a key");
    let wrong = "tl_not_a_key";
    type_into(&agent, "#key-input", wrong).await;
    click(&agent, "#signin-button").await;
    text_appears(&agent, "#signin-error", "not valid", SLOW).await;
    visible(&agent, "#signin", SLOW).await;

    // The dashboard before: nothing resolved yet.
    let before = agent_get(&server, &agent_key, "/v1/metrics/support?window=day").await;

    // The customer asks a knowledge-base question and sees the answer with its citation.
    let customer = browser::session(port, 1024, 800).await;
    customer.goto(&format!("{base}/chat")).await.unwrap();
    visible(&customer, "#ai-banner", SLOW).await;
    assert_person_button_visible(&customer, "before the first message").await;
    let chat_figures = browser::page_figures(&customer).await;
    type_into(&customer, "#message-input", "How do I reset my password?").await;
    click(&customer, "#send").await;
    assert_person_button_visible(&customer, "while the turn runs").await;
    let citation = text_appears(&customer, "#messages .msg.ai a.citation", "Reset your password", SLOW).await;
    assert!(citation.contains("Reset your password"), "{citation}");
    text_appears(&customer, "#messages .msg.ai", "AI", SLOW).await;
    assert_person_button_visible(&customer, "after an AI answer").await;
    screenshot(&customer, "chat.png").await;

    // The agent signs in and watches the conversation's queue.
    let stored: Value = serde_json::from_str(
        customer.execute("return localStorage.getItem('tierline.chat');", vec![]).await.unwrap().as_str().unwrap(),
    )
    .unwrap();
    let id = stored["conversation_id"].as_str().unwrap().to_string();
    let queue =
        agent_get(&server, &agent_key, &format!("/v1/conversations/{id}")).await["queue"].as_str().unwrap().to_string();
    type_into(&agent, "#key-input", &agent_key).await;
    click(&agent, "#signin-button").await;
    visible(&agent, "#app", SLOW).await;
    click(&agent, &format!(".queue[data-queue=\"{queue}\"]")).await;
    text_appears(&agent, "#waiting", "No conversations waiting", SLOW).await;
    let console_figures = browser::page_figures(&agent).await;

    // The customer presses "Talk to a person"; the console shows it within 2 s, no reload.
    click(&customer, "#talk-to-person").await;
    let started = std::time::Instant::now();
    let item_css = format!(".waiting-item[data-id=\"{id}\"]");
    visible(&agent, &item_css, LIVE).await;
    let arrived = started.elapsed();
    println!("handoff reached the agent console in {} ms", arrived.as_millis());
    let notice = visible(&customer, "#handoff-notice", SLOW).await.text().await.unwrap();
    assert!(notice.contains("won't have to repeat") || notice.contains("won't need to repeat"), "{notice}");
    assert_person_button_visible(&customer, "after the handoff").await;

    // The agent opens the packet, edits the suggested reply and sends it.
    click(&agent, &item_css).await;
    text_appears(&agent, "#summary", "reset my password", SLOW).await;
    text_appears(&agent, "#transcript .msg.customer", "How do I reset my password?", SLOW).await;
    let suggested = agent.find(Locator::Css("#reply")).await.unwrap().prop("value").await.unwrap().unwrap_or_default();
    assert!(!suggested.trim().is_empty(), "the suggested reply is ready to edit");
    screenshot(&agent, "console.png").await;
    type_into(&agent, "#agent-name", "Maria").await;
    type_into(&agent, "#reply", "Hi, I'm Maria from support. I've sent you a fresh reset link.").await;
    click(&agent, "#send-reply").await;

    // The customer sees it live.
    text_appears(&customer, "#messages .msg.agent", "I've sent you a fresh reset link", Duration::from_secs(10)).await;
    assert_person_button_visible(&customer, "after an agent reply").await;

    // The agent resolves with a correction; the customer rates it; the CSAT lands.
    choose(&agent, "#corrected-queue", "security").await;
    type_into(&agent, "#corrected-topic", "account_access").await;
    click(&agent, "#resolve-button").await;
    visible(&customer, "#csat", Duration::from_secs(10)).await;
    assert_person_button_visible(&customer, "after the resolution").await;
    click(&customer, "#csat button[data-score=\"5\"]").await;
    visible(&customer, "#csat-thanks", Duration::from_secs(10)).await;
    let row = agent_get(&server, &agent_key, &format!("/v1/conversations/{id}")).await;
    assert_eq!((row["status"].as_str(), row["csat"].as_u64()), (Some("resolved"), Some(5)), "{row}");
    assert_eq!(row["outcome"]["corrected_queue"], "security", "{row}");
    assert_eq!(row["outcome"]["corrected_topic"], "account_access", "{row}");

    // At phone width the button is still on screen, with the whole conversation above it.
    customer.set_window_size(360, 740).await.unwrap();
    assert_person_button_visible(&customer, "at 360 px wide").await;
    let overflow: bool = customer
        .execute("return document.documentElement.scrollWidth > window.innerWidth;", vec![])
        .await
        .unwrap()
        .as_bool()
        .unwrap();
    assert!(!overflow, "the chat scrolls sideways at 360 px");
    screenshot(&customer, "chat-phone.png").await;

    // The dashboard shows the counts changed.
    agent.goto(&format!("{base}/dashboard")).await.unwrap();
    visible(&agent, "#app", SLOW).await;
    let after = agent_get(&server, &agent_key, "/v1/metrics/support?window=day").await;
    assert_eq!(after["overall"]["resolved"].as_u64().unwrap(), before["overall"]["resolved"].as_u64().unwrap() + 1);
    let conversations = after["overall"]["conversations"].as_u64().unwrap().to_string();
    text_appears(&agent, "#metrics", &conversations, SLOW).await;
    visible(&agent, "#chart-escalation", SLOW).await;
    let dashboard_figures = browser::page_figures(&agent).await;
    screenshot(&agent, "dashboard.png").await;

    let figures = json!({ "chat": chat_figures, "console": console_figures, "dashboard": dashboard_figures,
                          "handoff_to_console_ms": arrived.as_millis() as u64 });
    println!("page figures: {figures}");
    std::fs::write(common::root().join("docs/screens/figures.json"), serde_json::to_string_pretty(&figures).unwrap())
        .unwrap();

    customer.close().await.unwrap();
    agent.close().await.unwrap();
    server.stop().await;
}

/// Reads events from `/v1/events` with `token` until `needle` shows up or `within` passes.
async fn stream_sees(server: &TestServer, token: &str, needle: &str, within: Duration) -> (bool, String) {
    let response = server.client.get(format!("{}/v1/events", server.base)).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains(needle) {
                    return (true, seen);
                }
            }
            _ => return (false, seen),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_token_reads_only_its_own_conversation() {
    // With a key in the store, keys are enforced on every route that needs one.
    let config = common::config();
    let store = tierline::store::open(&config.support.database, 4).await.unwrap();
    access::create(&*store, "console", &[Scope::Agent]).await.unwrap();
    drop(store);
    let server = TestServer::start(config).await;
    let start = || server.post("/v1/chat/conversations", json!({}));
    let (status, mine) = start().await;
    assert_eq!(status, 201, "{mine}");
    let (_, theirs) = start().await;
    let (my_id, my_token) = (mine["conversation_id"].as_str().unwrap(), mine["token"].as_str().unwrap());
    let their_id = theirs["conversation_id"].as_str().unwrap();
    let their_token = theirs["token"].as_str().unwrap().to_string();

    // My token opens my conversation, not theirs (it reads as absent), and lists nothing else.
    let get = |id: &str, token: &str| {
        server.client.get(format!("{}/v1/conversations/{id}", server.base)).bearer_auth(token.to_string()).send()
    };
    assert_eq!(get(my_id, my_token).await.unwrap().status(), 200);
    assert_eq!(get(their_id, my_token).await.unwrap().status(), 404);
    let queues = server.client.get(format!("{}/v1/queues", server.base)).bearer_auth(my_token).send().await.unwrap();
    assert_eq!(queues.status(), 401, "a customer token is no key");
    let post = |id: &str, token: &str| {
        server
            .client
            .post(format!("{}/v1/conversations/{id}/escalate", server.base))
            .bearer_auth(token.to_string())
            .json(&json!({}))
            .send()
    };
    assert_eq!(post(their_id, my_token).await.unwrap().status(), 404);

    // Their handoff never reaches my stream; mine does.
    let mine_listening = stream_sees(&server, my_token, their_id, Duration::from_secs(3));
    let escalate_theirs = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(post(their_id, &their_token).await.unwrap().status(), 200);
    };
    let ((leaked, seen), ()) = tokio::join!(mine_listening, escalate_theirs);
    assert!(!leaked, "another conversation's events reached this token: {seen}");
    let mine_listening = stream_sees(&server, my_token, "handoff", Duration::from_secs(10));
    let escalate_mine = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(post(my_id, my_token).await.unwrap().status(), 200);
    };
    let ((heard, seen), ()) = tokio::join!(mine_listening, escalate_mine);
    assert!(heard && seen.contains(my_id), "its own handoff: {seen}");
    server.stop().await;
}
