//! What a phone app and the Outpost server must agree on.
//!
//! The HTTP wire types every client needs (the error body, the login exchange, the page
//! envelope), the synced record types with their field rules, which phone and server both
//! run, automerge-repo's wire protocol, and the [`device`] client a phone app embeds. Nothing
//! in this crate may depend on axum, SurrealDB or anything a phone cannot compile.

pub mod api;
pub mod device;
pub mod document_id;
pub mod manifest;
pub mod protocol;
pub mod records;

pub use document_id::DocumentId;
