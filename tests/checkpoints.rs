//! DistilBERT and XLM-RoBERTa sequence-classification checkpoints (tiny, random, written here with
//! the Hugging Face weight names) load with their labels, give probabilities that sum to 1, do not
//! depend on what else is in the batch, and for XLM-R match candle's own
//! `XLMRobertaForSequenceClassification` on the same weights.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tierline::inference::checkpoint::SequenceClassifier;
use tierline::inference::heads::Activation;
use tierline::inference::ResolvedModel;

const LABELS: [&str; 3] = ["calm", "upset", "furious"];
const TEXTS: [&str; 3] = ["my order is late!", "thank you", "the app crashes?"];

fn id2label() -> serde_json::Value {
    serde_json::json!({"0": LABELS[0], "1": LABELS[1], "2": LABELS[2]})
}

fn resolved(dir: &std::path::Path, id: &str) -> ResolvedModel {
    ResolvedModel {
        role: "sentiment".into(),
        id: id.into(),
        revision: "local".into(),
        dir: dir.to_path_buf(),
        source: "path".into(),
    }
}

/// Probabilities per text, batch of all texts and one by one: the same either way.
fn check_probabilities(model: &SequenceClassifier) -> Vec<Vec<f32>> {
    assert_eq!(model.labels(), LABELS);
    assert_eq!(model.activation(), Activation::Softmax);
    let batch = model.classify(&TEXTS).unwrap();
    assert_eq!(batch.len(), TEXTS.len());
    for (text, row) in TEXTS.iter().zip(&batch) {
        assert_eq!(row.len(), LABELS.len());
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "softmax sums to 1: {row:?}");
        let alone = model.classify(&[text]).unwrap().remove(0);
        for (a, b) in row.iter().zip(&alone) {
            assert!((a - b).abs() < 1e-5, "`{text}` scored differently in a batch: {row:?} vs {alone:?}");
        }
    }
    assert_ne!(batch[0], batch[1], "different texts, different outputs");
    batch
}

#[test]
fn a_distilbert_checkpoint_loads_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "model_type": "distilbert", "architectures": ["DistilBertForSequenceClassification"],
        "vocab_size": 16, "dim": 8, "n_layers": 2, "n_heads": 2, "hidden_dim": 12, "activation": "gelu",
        "max_position_embeddings": 32, "initializer_range": 0.02, "pad_token_id": 0,
        "id2label": id2label()
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let distil: candle_transformers::models::distilbert::Config = serde_json::from_value(config).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    candle_transformers::models::distilbert::DistilBertModel::load(vb.pp("distilbert"), &distil).unwrap();
    candle_nn::linear(8, 8, vb.pp("pre_classifier")).unwrap();
    candle_nn::linear(8, 3, vb.pp("classifier")).unwrap();
    varmap.save(dir.path().join("model.safetensors")).unwrap();
    common::write_tiny_tokenizer(dir.path());

    let model = SequenceClassifier::load(&resolved(dir.path(), "test/tiny-distilbert"), &Device::Cpu).unwrap();
    check_probabilities(&model);
}

#[test]
fn an_xlm_roberta_checkpoint_matches_candles_own_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "model_type": "xlm-roberta", "architectures": ["XLMRobertaForSequenceClassification"],
        "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 12, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 40, "type_vocab_size": 1,
        "layer_norm_eps": 1e-5, "pad_token_id": 0, "position_embedding_type": "absolute",
        "id2label": id2label()
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let xlmr: candle_transformers::models::xlm_roberta::Config = serde_json::from_value(config).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let reference =
        candle_transformers::models::xlm_roberta::XLMRobertaForSequenceClassification::new(3, &xlmr, vb).unwrap();
    varmap.save(dir.path().join("model.safetensors")).unwrap();
    common::write_tiny_tokenizer(dir.path());

    let model = SequenceClassifier::load(&resolved(dir.path(), "test/tiny-xlm-r"), &Device::Cpu).unwrap();
    let ours = check_probabilities(&model);

    let tokenizer = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    for (text, ours) in TEXTS.iter().zip(ours) {
        let ids = tokenizer.encode(*text, true).unwrap().get_ids().to_vec();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let mask = input.ones_like().unwrap();
        let types = input.zeros_like().unwrap();
        let logits = reference.forward(&input, &mask, &types).unwrap();
        let expected = candle_nn::ops::softmax_last_dim(&logits).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in ours.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-4, "`{text}`: ours {ours:?}, candle {expected:?}");
        }
    }
}
