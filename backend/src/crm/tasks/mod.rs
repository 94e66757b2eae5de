//! Tasks: things to do by a time, each a synced document, with reminders through the job queue.
//! Reads come from the projection, filtered by scope; writes go through the sync engine.

pub mod reminders;

use autosurgeon::Text;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use outpost_mobile::api::{Page, Problem};
use outpost_mobile::records::task::Task as Document;
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
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(get_task, update_task, delete_task))
}

/// A task projection row.
#[derive(Debug, Clone, SurrealValue)]
pub struct TaskRow {
    id: RecordId,
    title: String,
    notes: String,
    due_at: Option<String>,
    customer: Option<String>,
    assignee: Option<String>,
    status: String,
    reminders: Vec<i64>,
    owner: Option<String>,
    state: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Task {
    /// The automerge-repo document id.
    pub doc_id: String,
    /// What to do.
    pub title: String,
    /// Details.
    pub notes: String,
    /// When it is due, RFC 3339.
    pub due_at: Option<String>,
    /// The customer's document id.
    pub customer_doc_id: Option<String>,
    /// Who does it.
    pub assignee_id: Option<String>,
    /// `open`, `done` or `cancelled`.
    pub status: String,
    /// Reminders, in minutes before the due time.
    pub reminders: Vec<i64>,
    /// Who owns the record.
    pub owner_id: Option<String>,
    /// Created on the server.
    pub created_at: DateTime<Utc>,
    /// Last changed on the server.
    pub updated_at: DateTime<Utc>,
}

impl Projection for TaskRow {
    const TABLE: &'static str = "task";
    const NAME: &'static str = "task";
    fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
    fn state(&self) -> &str {
        &self.state
    }
}

impl From<TaskRow> for Task {
    fn from(row: TaskRow) -> Self {
        Self {
            doc_id: ids::key_of(&row.id),
            title: row.title,
            notes: row.notes,
            due_at: row.due_at,
            customer_doc_id: row.customer,
            assignee_id: row.assignee,
            status: row.status,
            reminders: row.reminders,
            owner_id: row.owner,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Filters of the task list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskFilter {
    /// `open`, `done` or `cancelled`.
    pub status: Option<String>,
    /// Only tasks of this customer (document id).
    pub customer_doc_id: Option<String>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `POST /api/v1/tasks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// What to do.
    pub title: String,
    /// Details.
    #[serde(default)]
    pub notes: String,
    /// When it is due, RFC 3339.
    pub due_at: Option<String>,
    /// The customer's document id.
    pub customer_doc_id: Option<String>,
    /// Who does it (a user id); default: the caller.
    pub assignee_id: Option<String>,
    /// Reminders, in minutes before the due time.
    #[serde(default)]
    pub reminders: Vec<i64>,
}

/// `PATCH /api/v1/tasks/{doc_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    /// New title.
    pub title: Option<String>,
    /// New notes.
    pub notes: Option<String>,
    /// New due time, or `null`.
    #[serde(default, deserialize_with = "double_option")]
    pub due_at: Option<Option<String>>,
    /// New assignee, or `null`.
    #[serde(default, deserialize_with = "double_option")]
    pub assignee_id: Option<Option<String>>,
    /// `open`, `done` or `cancelled`.
    pub status: Option<String>,
    /// New reminders.
    pub reminders: Option<Vec<i64>>,
}

/// An assignee must be an active user the caller can see.
async fn check_assignee(state: &AppState, actor: &Actor, id: &str) -> Result<(), ApiError> {
    if crate::crm::identity::users::is_active(state, id).await? && actor.scope.contains(id) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "assignee_id",
            "is not an active user in your scope",
        ))
    }
}

/// The tasks the caller may see.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(TaskFilter),
    responses((status = 200, body = Page<Task>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn list_tasks(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(filter): ApiQuery<TaskFilter>,
) -> Result<axum::Json<Page<Task>>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let filter_query = Query::conditions()
        .and_when("status = $status", "status", filter.status.clone())
        .and_when(
            "customer = $customer",
            "customer",
            filter.customer_doc_id.clone(),
        );
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    };
    let page =
        list_visible::<TaskRow, Task>(&state, &actor, filter_query, page, |t| t.doc_id.clone())
            .await?;
    Ok(axum::Json(page))
}

/// One task.
#[utoipa::path(get, path = "/api/v1/tasks/{doc_id}", tag = "tasks",
    params(("doc_id" = String, Path, description = "The task's document id")),
    responses((status = 200, body = Task), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_task(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<axum::Json<Task>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let id = parse_doc_id(&doc_id)?;
    Ok(axum::Json(
        visible::<TaskRow, Task>(&state, &actor, &id).await?,
    ))
}

/// Create a task; its reminders are planned at once.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", request_body = CreateTask,
    responses((status = 201, body = Task), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_task(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateTask>,
) -> Result<(StatusCode, axum::Json<Task>), ApiError> {
    actor.require(Permission::CustomerWrite)?;
    if let Some(customer) = &body.customer_doc_id {
        crate::crm::customers::customer_reference(&state, &actor, customer).await?;
    }
    let assignee = body.assignee_id.unwrap_or_else(|| actor.user_id.clone());
    check_assignee(&state, &actor, &assignee).await?;
    let mut record = Document::new(body.title);
    record.notes = Text::with_value(body.notes);
    record.due_at = body.due_at;
    record.customer = body.customer_doc_id;
    record.assignee = Some(assignee);
    record.reminders = body.reminders;
    let created = create_visible::<Document, TaskRow, Task>(&state, &actor, record).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Change a task: reschedule it (its reminders are planned again), complete or cancel it (its
/// reminders are dropped), reassign it.
#[utoipa::path(patch, path = "/api/v1/tasks/{doc_id}", tag = "tasks", request_body = UpdateTask,
    params(("doc_id" = String, Path, description = "The task's document id")),
    responses((status = 200, body = Task), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update_task(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<UpdateTask>,
) -> Result<axum::Json<Task>, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    if let Some(Some(assignee)) = &body.assignee_id {
        check_assignee(&state, &actor, assignee).await?;
    }
    let updated = update_visible::<Document, TaskRow, Task>(&state, &actor, &id, |t| {
        if let Some(v) = body.title.clone() {
            t.title = v;
        }
        if let Some(v) = body.notes.clone() {
            outpost_mobile::records::set_text(&mut t.notes, &v);
        }
        if let Some(v) = body.due_at.clone() {
            t.due_at = v;
        }
        if let Some(v) = body.assignee_id.clone() {
            t.assignee = v;
        }
        if let Some(v) = body.status.clone() {
            t.status = v;
        }
        if let Some(v) = body.reminders.clone() {
            t.reminders = v;
        }
    })
    .await?;
    Ok(axum::Json(updated))
}

/// Delete a task (a tombstone every device syncs; its reminders are dropped).
#[utoipa::path(delete, path = "/api/v1/tasks/{doc_id}", tag = "tasks",
    params(("doc_id" = String, Path, description = "The task's document id")),
    responses((status = 204, description = "Deleted"), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn delete_task(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    tombstone::<Document, TaskRow, Task>(&state, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
