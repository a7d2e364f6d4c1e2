//! The encoder against sentence-transformers 5.x (PyTorch, f32) on the same weights.

mod common;

use common::{cosine, embed, encoder};
use tierline::inference::{BackendKind, Precision};

const RESET: &str = "How do I reset my password?";
const FORGOT: &str = "I forgot my password, how can I change it?";
const REFUND: &str = "What is your refund policy?";
/// First values of sentence-transformers' embedding of RESET.
const RESET_PREFIX: [f32; 5] = [0.006903, -0.063023, -0.072044, -0.032496, -0.042709];

fn check_reference_values(backend: BackendKind) {
    let encoder = encoder(backend);
    let vectors = embed(encoder, &[RESET, FORGOT, REFUND]);
    for (i, (got, want)) in vectors[0].iter().zip(RESET_PREFIX).enumerate() {
        assert!((got - want).abs() < 1e-4, "{backend:?} dim {i}: {got} vs {want}");
    }
    let paraphrase = cosine(&vectors[0], &vectors[1]);
    let unrelated = cosine(&vectors[0], &vectors[2]);
    assert!((paraphrase - 0.8939).abs() < 1e-4, "{backend:?} cosine(reset, forgot) = {paraphrase}");
    assert!((unrelated - 0.1610).abs() < 1e-4, "{backend:?} cosine(reset, refund) = {unrelated}");
    for v in &vectors {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "embeddings are L2-normalised (norm {norm})");
    }
    assert_eq!(vectors[0].len(), 384);
}

#[test]
fn packed_backend_matches_reference_values() {
    assert_eq!(encoder(BackendKind::Packed).info().backend, "packed");
    check_reference_values(BackendKind::Packed);
}

#[test]
fn generic_backend_matches_reference_values() {
    assert_eq!(encoder(BackendKind::Generic).info().backend, "generic");
    check_reference_values(BackendKind::Generic);
}

#[test]
fn a_text_alone_and_inside_a_padded_batch_gives_the_same_vector() {
    let long = "My invoice for March shows two charges for the Pro plan, one on the 3rd and one on the 4th, and the second one pushed my card over its limit so a supplier payment bounced.";
    for backend in [BackendKind::Packed, BackendKind::Generic] {
        let encoder = encoder(backend);
        let alone = &embed(encoder, &[RESET])[0];
        let batch = embed(encoder, &[long, RESET, "hi", REFUND]);
        let diff = alone.iter().zip(&batch[1]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{backend:?}: max difference {diff}");
    }
}

#[test]
fn packed_and_generic_backends_agree_on_varied_texts() {
    let texts = [
        "hi",
        "Cancel my subscription now.",
        "SSO login fails with ERR_SSO_412 after we rotated the SAML certificate on https://login.example.com, and our 300 users are locked out.",
        "Where is my order #4471? It was supposed to arrive Tuesday.",
        "The webhook to our Slack workspace stopped firing after the 2.3 update; the delivery log shows 429 Too Many Requests from our side, then nothing.",
    ];
    let packed = embed(encoder(BackendKind::Packed), &texts);
    let generic = embed(encoder(BackendKind::Generic), &texts);
    for (i, (a, b)) in packed.iter().zip(&generic).enumerate() {
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "text {i}: max difference {diff}");
    }
}

#[test]
fn long_texts_are_truncated_at_the_model_limit() {
    let encoder = encoder(BackendKind::Packed);
    assert_eq!(encoder.info().max_tokens, 256, "sentence_bert_config.json says 256");
    let long = "my export keeps failing ".repeat(200);
    let tokenized = encoder.tokenize(&long).unwrap();
    assert_eq!(tokenized.ids.len(), 256);
    assert!(tokenized.truncated);
    let short = encoder.tokenize(RESET).unwrap();
    assert!(!short.truncated);
    assert_eq!(short.ids.len(), 9, "[CLS] how do i reset my password ? [SEP]");
    let vectors = embed(encoder, &[&long]);
    assert!(vectors[0].iter().all(|v| v.is_finite()));
}

#[test]
fn int8_precision_stays_within_0_99_cosine_of_f32_and_ranks_paraphrases_first() {
    let mut config = common::config();
    config.engine.precision = Precision::Int8;
    let int8 = tierline::inference::load_encoder(&config.infer(), BackendKind::Auto, false).unwrap();
    assert_eq!(int8.info().precision, Precision::Int8);
    let texts = [RESET, FORGOT, REFUND, "hi", "Where is my order #4471? It was supposed to arrive Tuesday."];
    let quantized = embed(&int8, &texts);
    let exact = embed(encoder(BackendKind::Packed), &texts);
    for (i, (q, e)) in quantized.iter().zip(&exact).enumerate() {
        assert!(cosine(q, e) >= 0.99, "text {i}: cosine {}", cosine(q, e));
    }
    assert!(cosine(&quantized[0], &quantized[1]) > cosine(&quantized[0], &quantized[2]) + 0.5);
}

#[test]
fn int8_refuses_the_generic_backend() {
    let mut config = common::config();
    config.engine.precision = Precision::Int8;
    let err = tierline::inference::load_encoder(&config.infer(), BackendKind::Generic, false).err().unwrap();
    assert!(format!("{err:#}").contains("int8 runs on the packed backend"), "{err:#}");
}

/// Layer pools of RESET from transformers' `output_hidden_states` (same weights, PyTorch f32):
/// first values of the normalised mean of layers 1, 3 and 6, and of the last layer's max.
const RESET_LAYER_POOLS: [(usize, [f32; 4]); 4] = [
    (0, [0.011995, 0.003537, 0.022553, 0.024206]),
    (2, [-0.008072, 0.028125, 0.065883, -0.006092]),
    (5, [0.006903, -0.063023, -0.072044, -0.032496]),
    (6, [0.056982, -0.01476, -0.006721, 0.029724]),
];

fn layer_pools(encoder: &tierline::inference::Encoder, texts: &[&str]) -> Vec<Vec<f32>> {
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| encoder.tokenize(t).unwrap().ids).collect();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let encoded = encoder.encode(&refs, true).unwrap();
    encoded.layer_pools.expect("asked for").to_vec2::<f32>().unwrap()
}

#[test]
fn layer_pools_match_reference_values_on_both_backends_and_in_any_batch() {
    let long = "My invoice for March shows two charges for the Pro plan, one on the 3rd and one on the 4th.";
    let mut per_backend = Vec::new();
    for backend in [BackendKind::Packed, BackendKind::Generic] {
        let encoder = encoder(backend);
        assert_eq!(encoder.info().layer_pools, Some(7 * 384));
        let pools = layer_pools(encoder, &[long, RESET, "hi"]);
        let reset = &pools[1];
        assert_eq!(reset.len(), 7 * 384);
        for (slot, want) in RESET_LAYER_POOLS {
            for (i, (got, want)) in reset[slot * 384..].iter().zip(want).enumerate() {
                assert!((got - want).abs() < 1e-4, "{backend:?} slot {slot} value {i}: {got} vs {want}");
            }
        }
        for slot in reset.chunks_exact(384) {
            let norm: f32 = slot.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{backend:?}: every slot is L2-normalised (norm {norm})");
        }
        let alone = &layer_pools(encoder, &[RESET])[0];
        let diff = alone.iter().zip(reset).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{backend:?}: alone vs in a batch, max difference {diff}");
        per_backend.push(pools);
    }
    for (packed, generic) in per_backend[0].iter().zip(&per_backend[1]) {
        for (a, b) in packed.chunks_exact(384).zip(generic.chunks_exact(384)) {
            assert!(cosine(a, b) > 0.9999, "backends agree slot by slot");
        }
    }
}
