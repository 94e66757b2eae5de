//! What a phone app and the Outpost server must agree on.
//!
//! Today that is the HTTP wire types every client needs first: the error body, the login
//! exchange and the page envelope. The offline-sync issue adds the record schemas and the device
//! client here. Nothing in this crate may depend on axum, SurrealDB or anything a phone cannot
//! compile.

pub mod api;
