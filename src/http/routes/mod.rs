pub mod classify;
pub mod conversations;
pub mod embed;
pub mod health;
pub mod kb;
pub mod kb_articles;
pub mod models;
