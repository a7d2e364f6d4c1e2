//! tierline's HTTP face: the axum router, API types, OpenAPI document, API keys and scopes,
//! the configuration file and server start-up. Every rule it applies comes from
//! `tierline-support`; it never touches SQL or candle tensors.

pub mod bootstrap;
pub mod config;
pub mod http;
