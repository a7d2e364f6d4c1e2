//! Learning: datasets, recipes, head training and evaluation. Builds on `inference` (the engine
//! encodes texts) and never on HTTP.

pub mod dataset;
pub mod embed_cache;
pub mod eval;
pub mod feedback;
pub mod metrics;
pub mod pipeline;
pub mod recipe;
pub mod train;
pub mod triage_eval;
