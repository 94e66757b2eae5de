//! Opaque record ids.
//!
//! Every record key is a UUIDv7 in its hyphenated text form: random enough not to be guessed,
//! ordered by creation time so that `ORDER BY id` is a stable order for cursor pagination.
//! The API shows only the key; the table is implied by the route.

use surrealdb::types::RecordId;

use crate::error::ApiError;

/// A fresh, time-ordered record key.
pub fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Parses an id from a path or body; anything that is not one of our keys is a 400, so hostile
/// input never reaches a query.
pub fn parse_key(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::try_parse(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::InvalidId(truncate(raw)))
}

/// The record id of `key` in `table`.
pub fn record(table: &str, key: &str) -> RecordId {
    RecordId::new(table, key.to_string())
}

/// The key of a record id as the API shows it.
pub fn key_of(id: &RecordId) -> String {
    match &id.key {
        surrealdb::types::RecordIdKey::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn truncate(raw: &str) -> String {
    raw.chars().take(64).collect()
}
