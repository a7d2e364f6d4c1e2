pub mod embed;
pub mod health;
