//! What a phone app and the Outpost server must agree on.
//!
//! The HTTP wire types every client needs (the error body, the login exchange, the page
//! envelope) and the synced record types with their field rules, which phone and server both
//! run. Nothing in this crate may depend on axum, SurrealDB or anything a phone cannot
//! compile.

pub mod api;
pub mod records;
