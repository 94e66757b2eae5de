//! The one error type of the HTTP API and its mapping to RFC 9457 problem+json.
//!
//! Every handler returns `Result<_, ApiError>`; every variant says what went wrong and maps to
//! exactly one status and one stable problem `type`. Storage failures are logged with the request
//! id and answered with a bland 500/503 that leaks nothing.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_mobile::api::{FieldError, PROBLEM_JSON, Problem};

use crate::platform::db::DbError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON syntax, a bad query string, a bad header.
    #[error("{0}")]
    BadRequest(String),
    /// A path or body id is not an Outpost id at all.
    #[error("`{0}` is not a valid id")]
    InvalidId(String),
    /// No valid credentials, or the credentials were revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// Wrong login or password; deliberately does not say which.
    #[error("wrong login or password")]
    InvalidCredentials,
    /// The actor lacks a permission.
    #[error("this needs the `{0}` permission")]
    Forbidden(&'static str),
    /// The actor may not do this to this record, for a reason other than a missing permission.
    #[error("{0}")]
    NotAllowed(String),
    /// The record does not exist, or is outside the actor's scope (the same answer, on purpose).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// No route serves this path.
    #[error("no route serves this path")]
    RouteNotFound,
    /// The route exists but not for this method.
    #[error("this route does not accept this method")]
    MethodNotAllowed,
    /// The request conflicts with the current state (a duplicate, a non-empty department, a cycle).
    #[error("{0}")]
    Conflict(String),
    /// Creating this record would likely duplicate existing ones; the candidates are in the
    /// problem's `candidates` member, and the caller may confirm to create it anyway.
    #[error("this looks like a customer that exists already; confirm to create it anyway")]
    Duplicate(serde_json::Value),
    /// Someone else owns the customer (a lost claim, a stale assign); `owner_id` says who.
    #[error("{message}")]
    AlreadyOwned {
        /// What happened.
        message: String,
        /// Who owns it now (absent if out of the caller's sight).
        owner_id: Option<String>,
    },
    /// A pool rule refuses this (a cap, a cool-down, the daily claim limit).
    #[error("{0}")]
    PoolRule(String),
    /// The body parsed but some fields are invalid.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// The body is larger than the configured limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body is not JSON.
    #[error("expected a body of type application/json")]
    UnsupportedMediaType,
    /// Too many attempts; try again after this many seconds.
    #[error("too many attempts; try again in {0} s")]
    RateLimited(u64),
    /// The `Idempotency-Key` was used before with a different request.
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// A request with this `Idempotency-Key` is still running.
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInProgress,
    /// The store failed; details go to the log only.
    #[error("storage failure")]
    Storage(#[from] DbError),
    /// A bug; details go to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 with a single bad field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// Status, stable slug and title of the problem.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            InvalidId(_) => (StatusCode::BAD_REQUEST, "invalid-id", "Invalid id"),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "Invalid credentials",
            ),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotAllowed(_) => (StatusCode::FORBIDDEN, "not-allowed", "Not allowed"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            RouteNotFound => (StatusCode::NOT_FOUND, "route-not-found", "No such route"),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Duplicate(_) => (StatusCode::CONFLICT, "duplicate", "Likely duplicate"),
            AlreadyOwned { .. } => (StatusCode::CONFLICT, "already-owned", "Already owned"),
            PoolRule(_) => (StatusCode::CONFLICT, "pool-rule", "Refused by a pool rule"),
            Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid fields",
            ),
            PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
            ),
            IdempotencyInProgress => (
                StatusCode::CONFLICT,
                "idempotency-in-progress",
                "Request in progress",
            ),
            Storage(e) if e.is_unavailable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Storage(_) | Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The problem body, without the request id (added by the middleware that knows it).
    pub fn to_problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let errors = match self {
            ApiError::Validation(errors) => errors.clone(),
            _ => Vec::new(),
        };
        let detail = match self {
            ApiError::Storage(_) | ApiError::Internal(_) => {
                "something went wrong on the server; the request id identifies it in the logs"
                    .to_string()
            }
            other => other.to_string(),
        };
        let mut extensions = serde_json::Map::new();
        match self {
            ApiError::Duplicate(candidates) => {
                extensions.insert("candidates".into(), candidates.clone());
            }
            ApiError::AlreadyOwned { owner_id, .. } => {
                extensions.insert("owner_id".into(), serde_json::json!(owner_id));
            }
            _ => {}
        }
        Problem {
            kind: problem_type(slug),
            title: title.into(),
            status: status.as_u16(),
            detail: Some(detail),
            instance: None,
            errors,
            extensions,
        }
    }
}

/// The stable `type` URI of a problem slug.
pub fn problem_type(slug: &str) -> String {
    format!("urn:outpost:problem:{slug}")
}

/// Renders a problem as a response with the problem+json media type.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Storage(e) => tracing::error!(error = %e, "storage failure"),
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            _ => {}
        }
        let mut response = problem_response(&self.to_problem());
        if let ApiError::RateLimited(secs) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
