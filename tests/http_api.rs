//! The HTTP API over real sockets with the real model: answers, JSON errors, overload.

mod common;

use serde_json::{json, Value};

use common::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_endpoint_answers_and_rejects_bad_input_with_json_errors() {
    let server = TestServer::start(common::config()).await;

    let (status, health) = server.get_text("/health").await;
    assert_eq!((status, health.contains("ok")), (200, true));

    let (status, body) = server
        .post("/v1/embed", json!({ "texts": ["How do I reset my password?", "What is your refund policy?"] }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dimensions"], 384);
    assert_eq!(body["model"], "sentence-transformers/all-MiniLM-L6-v2");
    let first: Vec<f32> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    let second: Vec<f32> = serde_json::from_value(body["data"][1]["embedding"].clone()).unwrap();
    assert!((first[0] - 0.006903).abs() < 1e-4 && (first[1] + 0.063023).abs() < 1e-4);
    assert!((common::cosine(&first, &second) - 0.1610).abs() < 1e-4);
    assert_eq!(body["data"][0]["tokens"], 9);
    assert_eq!(
        body["usage"]["tokens"].as_u64().unwrap(),
        body["data"][0]["tokens"].as_u64().unwrap() + body["data"][1]["tokens"].as_u64().unwrap()
    );

    // base64: the same numbers as little-endian f32 bytes.
    let (status, packed) = server
        .post("/v1/embed", json!({ "texts": ["How do I reset my password?"], "encoding_format": "base64" }))
        .await;
    assert_eq!(status, 200, "{packed}");
    let decoded = decode_base64_f32(packed["data"][0]["embedding"].as_str().unwrap());
    assert_eq!(decoded, first, "base64 carries exactly the float embedding");

    // OpenAI's embeddings API: one text or a list, float or base64, usage in prompt tokens.
    let (status, openai) = server
        .post("/v1/embeddings", json!({ "input": "How do I reset my password?", "model": "all-MiniLM-L6-v2" }))
        .await;
    assert_eq!(status, 200, "{openai}");
    assert_eq!((openai["object"].as_str(), openai["data"][0]["object"].as_str()), (Some("list"), Some("embedding")));
    let same: Vec<f32> = serde_json::from_value(openai["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(same, first);
    assert_eq!(openai["usage"]["prompt_tokens"], 9);
    let (status, openai) = server
        .post("/v1/embeddings", json!({ "input": ["a", "How do I reset my password?"], "encoding_format": "base64" }))
        .await;
    assert_eq!(status, 200, "{openai}");
    assert_eq!(decode_base64_f32(openai["data"][1]["embedding"].as_str().unwrap()), first);
    for (body, field) in [
        (json!({ "input": "x", "model": "text-embedding-3-small" }), Some("model")),
        (json!({ "input": "x", "dimensions": 256 }), Some("dimensions")),
        (json!({ "input": [] }), Some("input")),
        (json!({ "input": ["ok", " "] }), Some("input[1]")),
        (json!({ "input": [[1, 2, 3]] }), None),
    ] {
        let (status, error) = server.post("/v1/embeddings", body.clone()).await;
        assert_eq!((status, error["error"]["field"].as_str()), (422, field), "{body}: {error}");
    }

    // Each bad request: status, error code, and the field named where there is one.
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (json!({ "texts": [] }), 422, "invalid_field", Some("texts")),
        (json!({ "texts": ["ok", "   "] }), 422, "invalid_field", Some("texts[1]")),
        (json!({ "texts": vec!["x"; 257] }), 413, "too_large", Some("texts")),
        (json!({ "texts": ["a".repeat(40_000)] }), 413, "too_large", Some("texts[0]")),
        (json!({ "texts": "not a list" }), 422, "invalid_body", None),
        (json!({ "texts": ["ok"], "normalise": true }), 422, "invalid_body", None),
        (json!({}), 422, "invalid_body", None),
    ];
    for (request, status, code, field) in cases {
        let (got, body) = server.post("/v1/embed", request.clone()).await;
        assert_eq!(got, status, "{request}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        if let Some(field) = field {
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    }
    let (status, body) =
        server.post_raw("/v1/embed", "application/json", b"{\"texts\": [\"unterminated".to_vec()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed_json")));
    let (status, body) =
        server.post_raw("/v1/embed", "application/json", b"{\"texts\": [\"\xff\xfe\"]}".to_vec()).await;
    assert_eq!(status, 400, "invalid UTF-8 is refused: {body}");
    let (status, body) = server.post_raw("/v1/embed", "text/plain", b"{\"texts\": [\"hi\"]}".to_vec()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (415, Some("unsupported_media_type")));
    let big = format!("{{\"texts\": [\"{}\"]}}", "a".repeat(3 * 1024 * 1024));
    let (status, body) = server.post_raw("/v1/embed", "application/json", big.into_bytes()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("too_large")));
    let (status, body) = server.post_raw("/v1/nope", "application/json", b"{}".to_vec()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    // Classification: every committed head, the out-of-scope score and the versions used.
    let (status, body) = server
        .post("/v1/classify", json!({ "texts": ["I was charged twice and nobody answers my emails!"], "top_k": 2 }))
        .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["results"][0];
    assert_eq!(result["sentiment"]["label"], "negative", "{body}");
    assert_eq!(result["topic"]["label"], "billing", "{body}");
    assert_eq!(result["topic"]["top"].as_array().unwrap().len(), 2);
    assert_eq!(result["topic"]["activation"], "softmax");
    assert_eq!(result["frustration"]["activation"], "sigmoid");
    assert!(result["frustration"]["labels"].as_array().unwrap().contains(&json!("frustrated")), "{body}");
    assert!(result["out_of_scope"].as_f64().unwrap() < 0.5);
    assert_eq!(body["models"]["encoder"], "sentence-transformers/all-MiniLM-L6-v2");
    assert!(body["models"]["heads"]["topic"].as_u64().unwrap() >= 1);
    let (status, body) = server.post("/v1/classify", json!({ "texts": ["hi"], "top_k": 0 })).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("top_k")));
    let response = server.client.get(format!("{}/v1/models", server.base)).send().await.unwrap();
    let models: Value = response.json().await.unwrap();
    let heads: Vec<&str> = models["heads"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(heads, ["frustration", "kind", "queue", "sentiment", "signals", "topic"]);
    assert_eq!(models["heads"][3]["encoder"]["id"], "sentence-transformers/all-MiniLM-L6-v2");
    assert!(models["heads"][3]["metrics"]["evaluations"].is_array());

    // Knowledge base: the sample help center is indexed at start.
    let (status, body) = server.post("/v1/answer", json!({ "question": "How do I reset my password?" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["answered"].as_bool(), body["ai_generated"].as_bool()), (Some(true), Some(true)), "{body}");
    assert_eq!(body["citations"][0]["article_id"], "reset-your-password", "{body}");
    let (status, body) = server.post("/v1/answer", json!({ "question": "What is the airspeed of a swallow?" })).await;
    assert_eq!((status, body["answered"].as_bool()), (200, Some(false)), "{body}");
    assert!(body["reason"].is_string());
    let (status, body) = server.post("/v1/answer", json!({ "question": "  " })).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("question")));
    let (status, text) = server.get_text("/v1/kb/search?q=rotate%20api%20keys&k=3").await;
    assert_eq!(status, 200, "{text}");
    let hits: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(hits["hits"][0]["article_id"], "rotate-api-keys", "{hits}");
    let (status, _) = server.get_text("/v1/kb/search?q=x&audience=everyone").await;
    assert_eq!(status, 422);
    let (status, text) = server.get_text("/v1/kb/search?q=x&k=many").await;
    let body: Value = serde_json::from_str(&text).expect("query errors are JSON");
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");

    // The OpenAPI document is generated from the code and lists every /v1 route.
    let (status, text) = server.get_text("/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    for path in
        ["/v1/classify", "/v1/answer", "/v1/conversations/{id}/messages", "/v1/queues/{queue}", "/v1/kb/articles/{id}"]
    {
        assert!(doc["paths"][path].is_object(), "{path} missing from /openapi.json");
    }
    for schema in ["Decision", "Signal", "Packet", "ErrorBody", "Answer"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
    let (status, page) = server.get_text("/docs").await;
    assert!(status == 200 && page.contains("/v1/conversations/{id}/handoff"), "{page}");

    let (status, metrics) = server.get_text("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "tierline_engine_batch_size",
        "tierline_engine_inference_seconds",
        "tierline_engine_queue_seconds",
        "tierline_http_request_seconds",
        "tierline_engine_queued_texts",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
    server.stop().await;
}

/// Reads `name{le="1"}` and `name_count` from Prometheus text.
fn histogram_le1_and_count(metrics: &str, name: &str) -> (f64, f64) {
    let value = |prefix: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value(&format!("{name}_bucket{{le=\"1\"}}")), value(&format!("{name}_count")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_answers_or_429_and_batches_form() {
    let mut config = common::config();
    // A small queue so 200 clients overflow it; each request carries 4 texts.
    config.engine.max_queued_texts = 256;
    config.server.max_texts_per_request = 64;
    let server = TestServer::start(config).await;
    let texts: Vec<String> = (0..4)
        .map(|i| format!("Ticket {i}: my dashboard export to CSV fails with error E{i}42 since this morning"))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let client = server.client.clone();
        let url = format!("{}/v1/embed", server.base);
        let body = json!({ "texts": texts });
        tasks.push(tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }));
    }
    let (mut ok, mut overloaded) = (0, 0);
    for task in tasks {
        let (status, retry_after, body) = task.await.unwrap();
        match status {
            200 => {
                ok += 1;
                assert_eq!(body["data"].as_array().unwrap().len(), 4);
            }
            429 => {
                overloaded += 1;
                assert_eq!(body["error"]["code"], "overloaded");
                assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(ok > 0, "some requests are served");
    let (_, metrics) = server.get_text("/metrics").await;
    let (single, batches) = histogram_le1_and_count(&metrics, "tierline_engine_batch_size");
    assert!(
        batches > 0.0 && single < batches,
        "batches larger than one text formed ({single} of {batches} were single)"
    );
    eprintln!("200 clients: {ok} answered, {overloaded} got 429, {batches} encoder passes");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knowledge_base_articles_are_edited_over_http_and_edits_survive_a_restart() {
    use reqwest::Method;
    let config = common::config();
    let server = TestServer::start(config.clone()).await;
    let question = json!({ "question": "How do I pair the Brightwave desk lamp with my account?" });
    let (_, before) = server.post("/v1/answer", question.clone()).await;
    assert_ne!(before["citations"][0]["article_id"], "pair-desk-lamp", "{before}");

    let article = json!({
        "title": "Pair the Brightwave desk lamp",
        "body": "To pair the Brightwave desk lamp with your account, hold the lamp's power button for five seconds until it blinks blue, then open Settings > Devices > Add device and pick the lamp from the list.",
        "url": "https://help.brightwave.io/pair-desk-lamp",
        "tags": ["devices"],
    });
    let (status, created) = server.post("/v1/kb/articles", article.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "pair-the-brightwave-desk-lamp");
    assert!(created["passages"].as_u64().unwrap() >= 1);
    let id = "pair-the-brightwave-desk-lamp";
    let (status, body) = server.post("/v1/kb/articles", article.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("already_exists")), "{body}");

    let (_, answer) = server.post("/v1/answer", question.clone()).await;
    assert_eq!(answer["answered"], true, "{answer}");
    assert_eq!(answer["citations"][0]["article_id"], id, "{answer}");

    // Replace: the new text answers; the old does not linger.
    let mut replaced = article.clone();
    replaced["body"] = json!("Pairing the Brightwave desk lamp: press the lamp's power button three times quickly; the Brightwave app then shows it under Devices, ready to add to your account.");
    let (status, body) = server.send(Method::PUT, &format!("/v1/kb/articles/{id}"), Some(replaced)).await;
    assert_eq!(status, 200, "{body}");
    let (status, got) = server.send(Method::GET, &format!("/v1/kb/articles/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(got["body"].as_str().unwrap().contains("three times"), "{got}");

    // Bad input: 4xx with the field named, nothing stored.
    let cases = [
        (Method::POST, "/v1/kb/articles".to_string(), json!({ "title": " ", "body": "text" }), 422, Some("title")),
        (Method::POST, "/v1/kb/articles".to_string(), json!({ "title": "T", "body": "" }), 422, Some("body")),
        (
            Method::POST,
            "/v1/kb/articles".to_string(),
            json!({ "id": "../etc", "title": "T", "body": "x" }),
            422,
            Some("id"),
        ),
        (
            Method::POST,
            "/v1/kb/articles".to_string(),
            json!({ "title": "T", "body": "x", "audiance": "public" }),
            422,
            None,
        ),
        (
            Method::PUT,
            format!("/v1/kb/articles/{id}"),
            json!({ "id": "other", "title": "T", "body": "x" }),
            422,
            Some("id"),
        ),
        (
            Method::POST,
            "/v1/kb/articles".to_string(),
            json!({ "title": "T", "body": "x".repeat(300_000) }),
            413,
            Some("body"),
        ),
    ];
    for (method, path, request, status, field) in cases {
        let (got, body) = server.send(method, &path, Some(request)).await;
        assert_eq!(got, status, "{path}: {body}");
        if let Some(field) = field {
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    }
    let (_, list) = server.send(Method::GET, "/v1/kb/articles", None).await;
    let count = list["articles"].as_array().unwrap().len();
    assert!(list["articles"].as_array().unwrap().iter().all(|a| a["title"] != "T"), "nothing half-stored");

    // Remove a sample article; it stops answering.
    let (status, _) = server.send(Method::DELETE, "/v1/kb/articles/reset-your-password", None).await;
    assert_eq!(status, 204);
    let (status, body) = server.send(Method::DELETE, "/v1/kb/articles/reset-your-password", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (_, answer) = server.post("/v1/answer", json!({ "question": "How do I reset my password?" })).await;
    assert!(answer["citations"].as_array().unwrap().iter().all(|c| c["article_id"] != "reset-your-password"));
    server.stop().await;

    // A restart rebuilds from the source folder plus the stored edits.
    let server = TestServer::start(config).await;
    let (_, list) = server.send(Method::GET, "/v1/kb/articles", None).await;
    assert_eq!(list["articles"].as_array().unwrap().len(), count - 1);
    let (status, got) = server.send(Method::GET, &format!("/v1/kb/articles/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(got["body"].as_str().unwrap().contains("three times"), "{got}");
    let (status, _) = server.send(Method::GET, "/v1/kb/articles/reset-your-password", None).await;
    assert_eq!(status, 404);
    server.stop().await;
}

fn decode_base64_f32(text: &str) -> Vec<f32> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
        }
    }
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}
