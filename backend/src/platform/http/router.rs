//! The router: every route documented in the OpenAPI document, problem+json for every failure,
//! a request id on every request, log line and response.

use std::time::Duration;

use axum::Router;
use axum::body::to_bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use outpost_mobile::api::{PROBLEM_JSON, Problem};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, problem_response};
use crate::platform::db::migrations_current;

use super::idempotency::idempotency;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(title = "Outpost API", description = "Offline-first CRM for field sales teams"),
    modifiers(&BearerAuth),
    components(schemas(Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The router and its OpenAPI document, built from the same route list so that they cannot
/// disagree.
pub fn build(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::crm::identity::routes())
        .merge(crate::platform::audit::routes())
        .merge(crate::sync_host::routes::routes())
        .merge(crate::sync_host::manifest::routes())
        .merge(crate::sync_host::stats::routes())
        .merge(crate::jobs::routes::routes())
        .merge(crate::crm::customers::routes(
            state.config.server.max_import_bytes,
        ))
        .merge(crate::crm::pool::routes())
        .merge(crate::crm::follow_ups::routes())
        .merge(crate::crm::tasks::routes())
        .merge(crate::crm::events::routes())
        .merge(crate::crm::notifications::routes())
        .layer(middleware::from_fn_with_state(state.clone(), idempotency))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
        .split_for_parts();
    let openapi_text = serde_json::to_string(&openapi).unwrap_or_default();
    let router = api
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::Extension(OpenApiText(openapi_text.into())))
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn(problem_details))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(state.config.server.request_timeout_secs),
        ))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal("a handler panicked".into()).into_response()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state);
    (router, openapi)
}

#[derive(Clone)]
struct OpenApiText(std::sync::Arc<str>);

/// Turns every error response into problem+json with the request id as `instance`: axum's own
/// plain-text rejections (413 from the body limit, 408 from the timeout) included.
async fn problem_details(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, 256 * 1024).await.unwrap_or_default();
    let mut problem = match (is_problem, serde_json::from_slice::<Problem>(&bytes)) {
        (true, Ok(problem)) => problem,
        _ => match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(0).to_problem(),
            StatusCode::REQUEST_TIMEOUT => Problem {
                kind: crate::error::problem_type("timeout"),
                title: "Request timeout".into(),
                status: 408,
                detail: Some("the request took too long".into()),
                instance: None,
                errors: Vec::new(),
                extensions: serde_json::Map::new(),
            },
            _ => Problem {
                kind: crate::error::problem_type("http"),
                title: status.canonical_reason().unwrap_or("Error").into(),
                status: status.as_u16(),
                detail: Some(String::from_utf8_lossy(&bytes).into_owned()),
                instance: None,
                errors: Vec::new(),
                extensions: serde_json::Map::new(),
            },
        },
    };
    if problem.kind.ends_with(":payload-too-large") {
        problem.detail = Some("the request body is larger than the server accepts".into());
    }
    problem.instance = request_id.map(|id| format!("urn:outpost:request:{id}"));
    let mut rebuilt = problem_response(&problem);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *rebuilt.status_mut() = status;
    rebuilt
}

/// The health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// The store answers and every migration is applied.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let ready = state.db.ping().await && migrations_current(&state.db).await.unwrap_or(false);
    if ready {
        (StatusCode::OK, axum::Json(Health { status: "ok" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health {
                status: "unavailable",
            }),
        )
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json(
    axum::Extension(OpenApiText(text)): axum::Extension<OpenApiText>,
) -> Response {
    let mut response = text.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
