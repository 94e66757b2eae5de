//! Customers as the API reads them: projections of the synced customer documents, filtered by
//! the actor's scope. (Writes go through the sync engine; REST writes come with the next step.)

use axum::extract::State;
use chrono::{DateTime, Utc};
use outpost_mobile::api::{Page, Problem};
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::error::ApiError;
use crate::platform::db::Query;
use crate::platform::http::{ApiQuery, Order, PageParams, fetch_page};
use crate::platform::ids;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_customers))
        .routes(routes!(get_customer))
}

/// A customer projection row.
#[derive(Debug, Clone, SurrealValue)]
pub struct CustomerRow {
    id: RecordId,
    name: String,
    kind: String,
    level: Option<String>,
    industry: Option<String>,
    source: Option<String>,
    phones: Vec<String>,
    emails: Vec<String>,
    address: Option<String>,
    tags: Vec<String>,
    notes: String,
    contacts: String,
    owner: Option<String>,
    state: String,
    created_by: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A customer as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    /// The automerge-repo document id; open `automerge:<doc_id>` with any automerge-repo client.
    pub doc_id: String,
    /// Company or person name.
    pub name: String,
    /// `company` or `person`.
    pub kind: String,
    /// `A` to `D`.
    pub level: Option<String>,
    /// Industry.
    pub industry: Option<String>,
    /// Lead source.
    pub source: Option<String>,
    /// Phone numbers.
    pub phones: Vec<String>,
    /// Email addresses.
    pub emails: Vec<String>,
    /// Postal address.
    pub address: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Notes.
    pub notes: String,
    /// Contacts.
    #[schema(value_type = Vec<Object>)]
    pub contacts: serde_json::Value,
    /// Owning user; absent while in the pool.
    pub owner_id: Option<String>,
    /// `owned`, `pool` or `deleted`.
    pub state: String,
    /// Creator.
    pub created_by: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        Self {
            doc_id: ids::key_of(&row.id),
            name: row.name,
            kind: row.kind,
            level: row.level,
            industry: row.industry,
            source: row.source,
            phones: row.phones,
            emails: row.emails,
            address: row.address,
            tags: row.tags,
            notes: row.notes,
            contacts: serde_json::from_str(&row.contacts)
                .unwrap_or(serde_json::Value::Array(Vec::new())),
            owner_id: row.owner,
            state: row.state,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Filters of the customer list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerFilter {
    /// Only customers of this owner.
    pub owner_id: Option<String>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The customers the caller may see.
#[utoipa::path(get, path = "/api/v1/customers", tag = "customers", params(CustomerFilter),
    responses((status = 200, body = Page<Customer>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn list_customers(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(filter): ApiQuery<CustomerFilter>,
) -> Result<axum::Json<Page<Customer>>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .validate_any()?;
    let scope = actor.scope.filter("owner");
    let query = Query::new(format!(
        "{} AND state != 'deleted' AND ($owner = NONE OR owner = $owner)",
        scope.condition
    ))
    .bind("scope_owners", scope.owners)
    .bind("owner", filter.owner_id.clone());
    let page = fetch_page::<CustomerRow, Customer>(
        &state.db,
        "customer",
        query,
        &page,
        Order::OldestFirst,
        |c| c.doc_id.clone(),
    )
    .await?;
    Ok(axum::Json(page))
}

/// One customer the caller may see, by document id.
#[utoipa::path(get, path = "/api/v1/customers/{doc_id}", tag = "customers",
    params(("doc_id" = String, Path, description = "The customer's document id")),
    responses((status = 200, body = Customer), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_customer(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<axum::Json<Customer>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let id = outpost_sync::DocumentId::parse(&doc_id)
        .ok_or_else(|| ApiError::InvalidId(doc_id.chars().take(64).collect()))?;
    let row: Option<CustomerRow> = state.db.get("customer", id.as_str()).await?;
    match row {
        Some(row)
            if row
                .owner
                .as_deref()
                .is_some_and(|o| actor.scope.contains(o))
                && row.state != "deleted" =>
        {
            Ok(axum::Json(row.into()))
        }
        _ => Err(ApiError::NotFound("customer")),
    }
}
