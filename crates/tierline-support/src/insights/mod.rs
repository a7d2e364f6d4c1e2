//! What the stored traffic says beyond one conversation: spikes of similar tickets (a likely
//! bug or outage) and accounts whose health is slipping.

pub mod alerts;
pub mod anomaly;
pub mod health;
