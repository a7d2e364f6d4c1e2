//! tierline: a self-hosted engine for AI customer-support automation.
//!
//! The work lives in three crates whose dependency graph is the layer diagram of ARCHITECTURE.md:
//! `tierline-server` (HTTP) -> `tierline-support` (the support domain) -> `tierline-infer`
//! (models). This facade names their modules for the integration tests, benches and anyone
//! embedding tierline; the `tierline` binary is the command line over the same functions.

pub use tierline_infer as inference;
pub use tierline_infer::classify;
pub use tierline_server::bootstrap as server;
pub use tierline_server::{config, http};
pub use tierline_support::{access, conversation, insights, kb, learn, settings, store, triage};
