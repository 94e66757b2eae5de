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

/// The latest instant a [`newest_first_key`] tells apart, in epoch milliseconds (year 2255):
/// keeps the key's number at exactly 13 digits, as migrations that compute the same key in
/// SurrealQL (`9999999999999 - math::clamp(time::millis(t), 0, 8999999999999)`) write it.
const NEWEST_FIRST_LAST_MILLIS: i64 = 8_999_999_999_999;

/// A key that sorts the records of a list newest first when read **forward**: the instant's
/// milliseconds subtracted from a constant, zero-padded, then the record key for ties.
///
/// "Newest N" reads go forward through an index on such a key instead of backwards through an
/// index on the time: SurrealKV 0.21 starts every backward range scan at the end of its whole
/// in-memory table and steps back one entry at a time (`SkiplistIterator::last`), so after a
/// burst of writes each backward read cost tens of milliseconds however small its range.
pub fn newest_first_key(instant: chrono::DateTime<chrono::Utc>, key: &str) -> String {
    let millis = instant
        .timestamp_millis()
        .clamp(0, NEWEST_FIRST_LAST_MILLIS);
    format!("{:013}|{key}", 9_999_999_999_999_i64 - millis)
}

/// A key that sorts records keyed by us (UUIDv7, creation order) newest first when read
/// forward: the key with each hex digit complemented (`0` ↔ `f`), so its order is exactly the
/// reverse of the keys', down to entries written in the same millisecond. A page cursor (a
/// key) turns into the place to read on from. `None` for a key that is not one of ours.
pub fn newest_first_key_of(key: &str) -> Option<String> {
    uuid::Uuid::try_parse(key).ok()?;
    Some(
        key.chars()
            .map(|c| match c.to_digit(16) {
                Some(digit) => char::from_digit(15 - digit, 16).unwrap_or(c),
                None => c,
            })
            .collect(),
    )
}

fn truncate(raw: &str) -> String {
    raw.chars().take(64).collect()
}
