//! tierline's support domain: triage (signals, policy, decisions), conversations with escalation
//! discipline, the knowledge base, insights (spikes, account health), the learning loop and the
//! storage behind them. Uses `tierline-infer` for every model; knows nothing of HTTP.

pub mod access;
pub mod clock;
pub mod conversation;
pub mod insights;
pub mod kb;
pub mod learn;
pub mod privacy;
pub mod settings;
pub mod store;
pub mod text;
pub mod triage;
