//! Wire types of the HTTP API shared by the server and its clients.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: the body of every 4xx and 5xx response.
///
/// `type` is stable and safe to branch on; `detail` is for people. A 422 lists each bad field in
/// `errors`; a 409 may carry `winner` or other machine-readable context in `context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A stable URI naming the kind of problem, e.g. `urn:outpost:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request id (also in the `x-request-id` header), to find the request in the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Per-field errors of a 422.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extension members of this kind of problem (RFC 9457 §3.2), e.g. the duplicate
    /// candidates of a refused create or the winner of a lost claim.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

/// One invalid field of a request body or query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `password` or `roles[1]`.
    pub field: String,
    /// Why it is invalid.
    pub message: String,
}

/// `POST /api/v1/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// An email address or a phone number.
    pub login: String,
    /// The password.
    pub password: String,
    /// Binds the session to one of the user's registered devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// `POST /api/v1/auth/refresh` and `POST /api/v1/auth/logout`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh; each one is good for one use.
    pub refresh_token: String,
}

/// The tokens a login or refresh hands out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    /// A short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// A single-use token that buys the next pair.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Always `Bearer`.
    pub token_type: String,
}

/// One page of a list: the cursor convention of every list endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page, in the list's order.
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One document in a sync manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ManifestEntry {
    /// The automerge-repo document id.
    pub doc_id: String,
    /// The record type (`customer`, `follow_up`).
    #[serde(rename = "type")]
    pub kind: String,
    /// [`heads_digest`] of the server's copy: equal digests mean nothing changed.
    pub heads_digest: String,
}

/// `GET /api/v1/sync/manifest`: the documents a user may see, so that a reconnecting phone learns
/// in one round trip what changed and what it lost access to (anything it holds that the server
/// knows and that is not listed, it drops).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    /// The user the manifest is for.
    pub user_id: String,
    /// The id of the user's manifest document, which a connected client can keep open to have
    /// the same content pushed as it changes.
    pub doc_id: String,
    /// Every visible document, ordered by id.
    pub documents: Vec<ManifestEntry>,
}

/// SHA-256 (hex) of a document's heads (hex change hashes), sorted: what the manifest shows, and
/// what a device computes over its own copy to tell whether it is behind.
pub fn heads_digest(heads: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted = heads.to_vec();
    sorted.sort();
    Sha256::digest(sorted.join(",").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
