pub mod engine;
pub mod persistence;
pub mod stripe;
