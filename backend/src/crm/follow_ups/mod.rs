//! Follow-up records (联系记录): visits, calls, messages and meetings, each a synced document.
//! Reads come from the projection, filtered by scope; writes go through the sync engine.

pub mod next_contact;

use autosurgeon::Text;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use outpost_mobile::api::{Page, Problem};
use outpost_mobile::records::follow_up::FollowUp as Document;
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::crm::records::{
    Projection, create_visible, double_option, list_visible, parse_doc_id, tombstone,
    update_visible, visible,
};
use crate::error::ApiError;
use crate::platform::db::Query;
use crate::platform::http::{ApiJson, ApiQuery, PageParams};
use crate::platform::ids;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_follow_ups, create_follow_up))
        .routes(routes!(get_follow_up, update_follow_up, delete_follow_up))
}

/// A follow-up projection row.
#[derive(Debug, Clone, SurrealValue)]
pub struct FollowUpRow {
    id: RecordId,
    customer: String,
    method: String,
    at: String,
    content: String,
    location: Option<String>,
    next_contact_at: Option<String>,
    owner: Option<String>,
    state: String,
    created_by: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A follow-up as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FollowUp {
    /// The automerge-repo document id.
    pub doc_id: String,
    /// The customer's document id.
    pub customer_doc_id: String,
    /// `visit`, `call`, `message` or `meeting`.
    pub method: String,
    /// When it happened (as the device recorded it).
    pub at: String,
    /// What was said and agreed.
    pub content: String,
    /// Where.
    pub location: Option<String>,
    /// When to contact the customer next.
    pub next_contact_at: Option<String>,
    /// Who logged it.
    pub owner_id: Option<String>,
    /// Created on the server.
    pub created_at: DateTime<Utc>,
    /// Last changed on the server.
    pub updated_at: DateTime<Utc>,
}

impl Projection for FollowUpRow {
    const TABLE: &'static str = "follow_up";
    const NAME: &'static str = "follow-up";
    fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
    fn state(&self) -> &str {
        &self.state
    }
}

impl From<FollowUpRow> for FollowUp {
    fn from(row: FollowUpRow) -> Self {
        Self {
            doc_id: ids::key_of(&row.id),
            customer_doc_id: row.customer,
            method: row.method,
            at: row.at,
            content: row.content,
            location: row.location,
            next_contact_at: row.next_contact_at,
            owner_id: row.owner,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Filters of the follow-up list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FollowUpFilter {
    /// Only follow-ups of this customer (document id).
    pub customer_doc_id: Option<String>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `POST /api/v1/follow-ups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFollowUp {
    /// The customer's document id.
    pub customer_doc_id: String,
    /// `visit`, `call`, `message` or `meeting`.
    pub method: String,
    /// When it happened, RFC 3339.
    pub at: String,
    /// What was said and agreed.
    #[serde(default)]
    pub content: String,
    /// Where.
    pub location: Option<String>,
    /// When to contact the customer next, RFC 3339.
    pub next_contact_at: Option<String>,
}

/// `PATCH /api/v1/follow-ups/{doc_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFollowUp {
    /// New method.
    pub method: Option<String>,
    /// New time.
    pub at: Option<String>,
    /// New content.
    pub content: Option<String>,
    /// New location, or `null`.
    #[serde(default, deserialize_with = "double_option")]
    pub location: Option<Option<String>>,
    /// New next contact time, or `null`.
    #[serde(default, deserialize_with = "double_option")]
    pub next_contact_at: Option<Option<String>>,
}

/// The follow-ups the caller may see, optionally of one customer.
#[utoipa::path(get, path = "/api/v1/follow-ups", tag = "follow-ups", params(FollowUpFilter),
    responses((status = 200, body = Page<FollowUp>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn list_follow_ups(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(filter): ApiQuery<FollowUpFilter>,
) -> Result<axum::Json<Page<FollowUp>>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let filter_query = Query::conditions().and_when(
        "customer = $customer",
        "customer",
        filter.customer_doc_id.clone(),
    );
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    };
    let page = list_visible::<FollowUpRow, FollowUp>(&state, &actor, filter_query, page, |f| {
        f.doc_id.clone()
    })
    .await?;
    Ok(axum::Json(page))
}

/// One follow-up.
#[utoipa::path(get, path = "/api/v1/follow-ups/{doc_id}", tag = "follow-ups",
    params(("doc_id" = String, Path, description = "The follow-up's document id")),
    responses((status = 200, body = FollowUp), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_follow_up(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<axum::Json<FollowUp>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let id = parse_doc_id(&doc_id)?;
    Ok(axum::Json(
        visible::<FollowUpRow, FollowUp>(&state, &actor, &id).await?,
    ))
}

/// Log a follow-up of a customer the caller may see.
#[utoipa::path(post, path = "/api/v1/follow-ups", tag = "follow-ups", request_body = CreateFollowUp,
    responses((status = 201, body = FollowUp), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_follow_up(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateFollowUp>,
) -> Result<(StatusCode, axum::Json<FollowUp>), ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let customer =
        crate::crm::customers::customer_reference(&state, &actor, &body.customer_doc_id).await?;
    let mut record = Document::new(customer.to_string(), &body.method, body.at);
    record.content = Text::with_value(body.content);
    record.location = body.location;
    record.next_contact_at = body.next_contact_at;
    let created = create_visible::<Document, FollowUpRow, FollowUp>(&state, &actor, record).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Change a follow-up.
#[utoipa::path(patch, path = "/api/v1/follow-ups/{doc_id}", tag = "follow-ups", request_body = UpdateFollowUp,
    params(("doc_id" = String, Path, description = "The follow-up's document id")),
    responses((status = 200, body = FollowUp), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update_follow_up(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<UpdateFollowUp>,
) -> Result<axum::Json<FollowUp>, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    let updated = update_visible::<Document, FollowUpRow, FollowUp>(&state, &actor, &id, |f| {
        if let Some(v) = body.method.clone() {
            f.method = v;
        }
        if let Some(v) = body.at.clone() {
            f.at = v;
        }
        if let Some(v) = body.content.clone() {
            outpost_mobile::records::set_text(&mut f.content, &v);
        }
        if let Some(v) = body.location.clone() {
            f.location = v;
        }
        if let Some(v) = body.next_contact_at.clone() {
            f.next_contact_at = v;
        }
    })
    .await?;
    Ok(axum::Json(updated))
}

/// Delete a follow-up (a tombstone every device syncs).
#[utoipa::path(delete, path = "/api/v1/follow-ups/{doc_id}", tag = "follow-ups",
    params(("doc_id" = String, Path, description = "The follow-up's document id")),
    responses((status = 204, description = "Deleted"), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn delete_follow_up(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    tombstone::<Document, FollowUpRow, FollowUp>(&state, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
