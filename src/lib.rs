//! tierline: a self-hosted engine for AI customer-support automation.
//!
//! Layers point one way: `http` (transport) -> domain services -> `inference` (models).
//! See ARCHITECTURE.md.

pub mod access;
pub mod classify;
pub mod config;
pub mod conversation;
pub mod http;
pub mod inference;
pub mod insights;
pub mod kb;
pub mod learn;
pub mod server;
pub mod storage;
pub mod triage;
