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

/// The [`newest_first_key`] of a record whose key is one of ours (a UUIDv7), by the instant
/// in the key: so a page cursor (a key) turns into the place to read on from.
pub fn newest_first_key_of(key: &str) -> Option<String> {
    let (seconds, nanos) = uuid::Uuid::try_parse(key).ok()?.get_timestamp()?.to_unix();
    let instant = chrono::DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)?;
    Some(newest_first_key(instant, key))
}

fn truncate(raw: &str) -> String {
    raw.chars().take(64).collect()
}
