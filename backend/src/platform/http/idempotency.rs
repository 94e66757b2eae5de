//! `Idempotency-Key` on `POST` commands: the same key and body replays the stored response; the
//! same key with a different body is 422; a key still being processed is 409. Keys are scoped to
//! the caller and expire after 24 hours; a claim locks the key for one minute while its request runs.
//!
//! The key is claimed with a `CREATE` (which fails if it exists) before the handler runs, so two
//! concurrent duplicates cannot both run the command. A claim whose request crashed expires after
//! a short lock, so a retry is never blocked for good. Responses of 5xx are not stored: the
//! client may retry them. Nor are responses over 1 MiB (an import's dry-run report): a retry
//! runs again.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use surrealdb::types::SurrealValue;

use crate::app::AppState;
use crate::error::ApiError;
use crate::platform::db::{Db, DbError, Query};
use crate::platform::ids;

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";
/// Largest response stored for replay.
const MAX_STORED_BODY: usize = 1024 * 1024;

#[derive(Debug, SurrealValue)]
struct Stored {
    request_hash: String,
    status: Option<i64>,
    body: Option<String>,
    content_type: Option<String>,
    locked_until: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Middleware for the API router.
pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(IDEMPOTENCY_KEY) else {
        return next.run(request).await;
    };
    let Some(key) = raw_key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_string)
    else {
        return ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        )
        .into_response();
    };
    // Keys are scoped by the caller (the access token's subject; a token cannot be forged). Calls
    // without a valid token are not commands (login, refresh): their responses hold fresh
    // credentials, which must never be stored or replayed, so they run as they are.
    let (parts, body) = request.into_parts();
    let Some(caller) = crate::crm::identity::access::bearer_token(&parts)
        .and_then(|t| state.keys.verify(t).ok())
        .map(|c| c.sub)
    else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    // The body is read whole to hash it, up to the largest limit of any route (an import's);
    // the route's own limit still applies when its handler reads the body back.
    let limit = state
        .config
        .server
        .max_body_bytes
        .max(state.config.server.max_import_bytes);
    let bytes = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge(limit).into_response(),
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(&bytes);
    let request_hash = hex(&hasher.finalize());
    let record = ids::record(
        "idempotency",
        &hex(&Sha256::digest(format!("{caller}\u{0}{key}").as_bytes())),
    );

    match claim(&state, &record, &request_hash).await {
        Err(e) => return e.into_response(),
        Ok(Some(replay)) => return replay,
        Ok(None) => {}
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    match store(&state, &record, response).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Claims the key, or returns the replay (or the refusal) when it is taken.
async fn claim(
    state: &AppState,
    record: &surrealdb::types::RecordId,
    request_hash: &str,
) -> Result<Option<Response>, ApiError> {
    let existing: Option<Stored> = state.db.get("idempotency", &ids::key_of(record)).await?;
    let now = chrono::Utc::now();
    if let Some(stored) = existing.filter(|s| s.expires_at > now) {
        if stored.request_hash != request_hash {
            return Err(ApiError::IdempotencyKeyReused);
        }
        if let (Some(status), Some(body)) = (stored.status, stored.body) {
            let status = StatusCode::from_u16(u16::try_from(status).unwrap_or(200))
                .unwrap_or(StatusCode::OK);
            let mut response = (status, body).into_response();
            if let Some(ct) = stored
                .content_type
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            return Ok(Some(response));
        }
        if stored.locked_until > now {
            return Err(ApiError::IdempotencyInProgress);
        }
    }
    // Take the key over: either new, expired, or a claim whose request died. The condition makes
    // two concurrent claimers conflict, and exactly one wins.
    let claim = Query::new(
        "BEGIN TRANSACTION;
         LET $old = (SELECT * FROM ONLY $record);
         IF $old AND $old.expires_at > time::now() AND ($old.status != NONE OR $old.locked_until > time::now()) { THROW 'idempotency-taken' };
         UPSERT $record CONTENT { request_hash: $hash, status: NONE, body: NONE, content_type: NONE,
            locked_until: time::now() + 1m, expires_at: time::now() + 24h };
         COMMIT TRANSACTION;",
    )
    .bind("record", record.clone())
    .bind("hash", request_hash.to_string());
    let result = state.db.retry(|| claim.run(&state.db)).await;
    match result {
        Ok(_) => Ok(None),
        Err(e)
            if e.thrown_message()
                .is_some_and(|m| m.contains("idempotency-taken")) =>
        {
            Err(ApiError::IdempotencyInProgress)
        }
        Err(e) => Err(e.into()),
    }
}

/// Stores a finished response for replay (or releases the claim after a 5xx).
async fn store(
    state: &AppState,
    record: &surrealdb::types::RecordId,
    response: Response,
) -> Result<Response, ApiError> {
    let (mut parts, body) = response.into_parts();
    // The response was built in memory by the handler; reading it back cannot fail.
    let bytes: Bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot buffer a response: {e}")))?;
    // A 5xx is released so that the client may retry it. So is a response too large to keep
    // (an import's dry-run report for a big file): a retry runs the request again, which for
    // the only responses that grow so large (reports) is harmless.
    if parts.status.is_server_error() || bytes.len() > MAX_STORED_BODY {
        Query::new("DELETE $record")
            .bind("record", record.clone())
            .run(&state.db)
            .await?;
    } else {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Query::new(
            "UPDATE $record SET status = $status, body = $body, content_type = $content_type",
        )
        .bind("record", record.clone())
        .bind("status", i64::from(parts.status.as_u16()))
        .bind("body", String::from_utf8_lossy(&bytes).into_owned())
        .bind("content_type", content_type)
        .run(&state.db)
        .await?;
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Deletes expired keys; run periodically.
pub async fn purge_expired(db: &Db) -> Result<(), DbError> {
    Query::new("DELETE idempotency WHERE expires_at < time::now()")
        .run(db)
        .await?;
    Ok(())
}
