//! Heads on the shared encoder: the committed defaults load and predict clear examples, a head
//! from another encoder (or of another input width) is refused, and a Hugging Face sequence-classification checkpoint (a
//! tiny random one written here) loads with its own labels.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device};
use tierline::classify::{Classifier, HeadResult};
use tierline::inference::checkpoint::SequenceClassifier;
use tierline::inference::heads::{load_heads, Activation, ClassifierHead, Head, HeadInput};
use tierline::inference::{self, BackendKind, BatchLimits, Engine, EngineMetrics, HeadSet, ResolvedModel};

fn classifier() -> Classifier {
    let config = common::config();
    let encoder = inference::load_encoder(&config.infer(), BackendKind::Auto, false).unwrap();
    let reference = encoder.info().reference();
    let heads = load_heads(&common::root().join("models/heads"), &[], &reference, &Device::Cpu).unwrap();
    let engine = Engine::start(
        encoder,
        HeadSet::default(),
        BatchLimits::from_settings(&config.engine),
        EngineMetrics::register(&prometheus::Registry::new()).unwrap(),
    )
    .unwrap();
    Classifier::new(engine, heads).unwrap()
}

fn single(result: &HeadResult) -> (&str, f32) {
    match result {
        HeadResult::Single { label, score, .. } => (label.as_str(), *score),
        HeadResult::Multi { .. } => panic!("expected a single-label head"),
    }
}

#[test]
fn default_heads_predict_clear_examples() {
    let classifier = classifier();
    let cards = classifier.cards();
    let names: Vec<&str> = cards.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["frustration", "kind", "queue", "sentiment", "signals", "topic"]);
    let texts: Vec<String> = [
        "I was charged twice and nobody answers my emails!",
        "Thank you so much, your support team was wonderful and fixed it in minutes.",
        "Someone logged into my account from another country and changed my password without me.",
        "Let me talk to a real person please, not a bot.",
        "What's a good recipe for banana bread?",
        "Where is my order? It was supposed to arrive on Monday.",
    ]
    .map(String::from)
    .to_vec();
    let results = classifier.classify_blocking(&texts, 3).unwrap();

    let charged = &results[0];
    assert_eq!(single(&charged.heads["sentiment"]).0, "negative");
    assert_eq!(single(&charged.heads["topic"]).0, "billing");
    match &charged.heads["frustration"] {
        HeadResult::Multi { labels, level, .. } => {
            assert!(labels.contains(&"frustrated".to_string()), "{labels:?}");
            assert_eq!(*level, tierline::classify::Level::High);
        }
        other => panic!("frustration is multi-label: {other:?}"),
    }
    assert_eq!(single(&results[1].heads["sentiment"]).0, "positive");
    assert_eq!(single(&results[2].heads["topic"]).0, "security");
    assert_eq!(single(&results[3].heads["topic"]).0, "human_request");
    assert_eq!(single(&results[4].heads["topic"]).0, "other");
    assert!(results[4].out_of_scope.unwrap() > 0.5 && charged.out_of_scope.unwrap() < 0.1);
    assert_eq!(single(&results[5].heads["topic"]).0, "order_status");
    // Softmax scores are probabilities.
    if let HeadResult::Single { top, .. } = &charged.heads["topic"] {
        assert_eq!(top.len(), 3);
        assert!(top[0].score >= top[1].score && top[1].score >= top[2].score);
    }
    classifier.engine().shutdown();
}

#[test]
fn a_head_trained_on_another_encoder_refuses_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::root().join("models/heads/sentiment");
    for file in ["card.json", "weights.safetensors"] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    let encoder = common::encoder(BackendKind::Packed).info().reference();
    ClassifierHead::load(dir.path(), &encoder, &Device::Cpu).expect("the committed head matches the encoder");
    let card = std::fs::read_to_string(dir.path().join("card.json"))
        .unwrap()
        .replace(&encoder.revision, "0000000000000000000000000000000000000000");
    std::fs::write(dir.path().join("card.json"), card).unwrap();
    let err = ClassifierHead::load(dir.path(), &encoder, &Device::Cpu).err().expect("refused").to_string();
    assert!(err.contains("was trained on encoder") && err.contains("retrain"), "{err}");
}

#[test]
fn a_layer_pools_head_of_the_wrong_width_is_refused_when_served() {
    let classifier = classifier();
    let engine = classifier.engine();
    let mut card = tierline::inference::heads::HeadCard::read(&common::root().join("models/heads/sentiment")).unwrap();
    card.input = HeadInput::LayerPools;
    card.hidden = Vec::new();
    let head_of_width = |width: usize| {
        let head = ClassifierHead::from_parts(card.clone(), &head_weights_of_width(width)).unwrap();
        HeadSet::new(vec![Arc::new(head) as Arc<dyn Head>]).unwrap()
    };
    let err = engine.set_heads(head_of_width(3 * 384)).expect_err("refused").to_string();
    assert!(err.contains("width 1152") && err.contains("2688"), "{err}");
    engine.set_heads(head_of_width(7 * 384)).expect("the encoder's own width is served");
    let scores = engine.score_blocking(&["hello".to_string()]).unwrap();
    assert_eq!(scores[0].heads["sentiment"], vec![1.0 / 3.0; 3], "zero weights: uniform softmax");
    let err = ClassifierHead::from_parts(card.clone(), &head_weights_of_width(100)).err().unwrap().to_string();
    assert!(err.contains("multiple of the encoder's 384"), "{err}");
    engine.shutdown();
}

fn head_weights_of_width(width: usize) -> std::collections::HashMap<String, candle_core::Tensor> {
    std::collections::HashMap::from([
        ("layer0.weight".to_string(), candle_core::Tensor::zeros((3, width), DType::F32, &Device::Cpu).unwrap()),
        ("layer0.bias".to_string(), candle_core::Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()),
    ])
}

/// Writes a tiny random BERT sequence-classification checkpoint: config.json with id2label,
/// model.safetensors, and a WordPiece tokenizer.json.
fn write_tiny_checkpoint(dir: &std::path::Path, problem_type: Option<&str>) {
    let mut config = serde_json::json!({
        "model_type": "bert", "architectures": ["BertForSequenceClassification"],
        "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 12, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "max_position_embeddings": 32, "type_vocab_size": 2, "initializer_range": 0.02,
        "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "id2label": {"0": "calm", "1": "upset", "2": "furious"},
        "label2id": {"calm": 0, "upset": 1, "furious": 2}
    });
    if let Some(kind) = problem_type {
        config["problem_type"] = serde_json::json!(kind);
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bert_config: candle_transformers::models::bert::Config = serde_json::from_value(config).unwrap();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    candle_transformers::models::bert::BertModel::load(vb.pp("bert"), &bert_config).unwrap();
    candle_nn::linear(8, 8, vb.pp("bert.pooler.dense")).unwrap();
    candle_nn::linear(8, 3, vb.pp("classifier")).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();

    common::write_tiny_tokenizer(dir);
}

fn resolved(dir: &std::path::Path) -> ResolvedModel {
    ResolvedModel {
        role: "sentiment".into(),
        id: "test/tiny-bert".into(),
        revision: "local".into(),
        dir: dir.to_path_buf(),
        source: "path".into(),
    }
}

#[test]
fn a_sequence_classification_checkpoint_loads_with_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_checkpoint(dir.path(), None);
    let model = SequenceClassifier::load(&resolved(dir.path()), &Device::Cpu).unwrap();
    assert_eq!(model.labels(), ["calm", "upset", "furious"]);
    assert_eq!(model.activation(), Activation::Softmax);
    let probs = model.classify(&["my order is late!", "thank you", "the app crashes?"]).unwrap();
    assert_eq!(probs.len(), 3);
    for row in &probs {
        assert_eq!(row.len(), 3);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "softmax sums to 1: {row:?}");
        assert!(row.iter().all(|p| (0.0..=1.0).contains(p)));
    }
    assert_ne!(probs[0], probs[1], "different texts, different outputs");

    let multi = tempfile::tempdir().unwrap();
    write_tiny_checkpoint(multi.path(), Some("multi_label_classification"));
    let model = SequenceClassifier::load(&resolved(multi.path()), &Device::Cpu).unwrap();
    assert_eq!(model.activation(), Activation::Sigmoid);
    let probs = model.classify(&["my order is late!"]).unwrap();
    assert!(probs[0].iter().all(|p| *p > 0.0 && *p < 1.0));

    // A checkpoint without id2label is not a classifier.
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config.as_object_mut().unwrap().remove("id2label");
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let err = SequenceClassifier::load(&resolved(dir.path()), &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("id2label"), "{err}");
}

#[test]
fn the_cli_classifies_a_double_charge_complaint() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tierline"))
        .current_dir(common::root())
        .args(["classify", "I was charged twice and nobody answers my emails!"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = |head: &str| stdout.lines().find(|l| l.trim_start().starts_with(head)).unwrap_or_default().to_string();
    assert!(line("sentiment").contains("negative"), "{stdout}");
    assert!(line("frustration").contains("High"), "{stdout}");
    assert!(line("topic").contains("billing"), "{stdout}");
}

#[test]
fn a_checkpoint_role_serves_in_place_of_a_head() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("tiny");
    std::fs::create_dir_all(&checkpoint).unwrap();
    write_tiny_checkpoint(&checkpoint, None);
    let manifest = dir.path().join("models.toml");
    let shipped = std::fs::read_to_string(common::root().join("models/models.toml")).unwrap();
    let role = format!(
        "\n[sentiment_checkpoint]\nkind = \"sequence-classification\"\nhead = \"sentiment\"\nid = \"test/tiny-bert\"\npath = \"{}\"\n\
         files = {{ \"config.json\" = \"\", \"model.safetensors\" = \"\", \"tokenizer.json\" = \"\" }}\n",
        checkpoint.display()
    );
    std::fs::write(&manifest, shipped + &role).unwrap();
    let mut config = common::config();
    config.models.manifest = manifest;
    let classifier = tierline::classify::start(
        &config.infer(),
        EngineMetrics::register(&prometheus::Registry::new()).unwrap(),
        false,
    )
    .unwrap();
    let versions = classifier.versions();
    assert_eq!(versions.checkpoints.get("sentiment").map(String::as_str), Some("test/tiny-bert@main"));
    assert!(!versions.heads.contains_key("sentiment"), "the checkpoint replaces the trained head");
    let results = classifier.classify_blocking(&["my order is late!".to_string()], 3).unwrap();
    match &results[0].heads["sentiment"] {
        HeadResult::Single { label, top, .. } => {
            assert!(["calm", "upset", "furious"].contains(&label.as_str()), "{label}");
            let total: f32 = top.iter().map(|t| t.score).sum();
            assert!((total - 1.0).abs() < 1e-5, "all three labels, summing to 1");
        }
        other => panic!("softmax checkpoint: {other:?}"),
    }
    assert!(results[0].heads.contains_key("topic"), "the other heads still run");
    classifier.engine().shutdown();
}
