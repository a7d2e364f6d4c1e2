pub mod classify;
pub mod embed;
pub mod health;
pub mod models;
