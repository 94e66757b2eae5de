//! `/api/v1/admin/jobs`: what operators see of the queue, and what they do with failed jobs.

use axum::extract::State;
use chrono::{DateTime, Utc};
use outpost_mobile::api::{Page, Problem};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{JobRow, JobStatus};
use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::error::ApiError;
use crate::platform::db::{Query, Tx};
use crate::platform::http::{ApiQuery, Order, PageParams, PathKey, fetch_page};
use crate::platform::ids;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(retry_job))
        .routes(routes!(discard_job))
}

/// A job as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Id.
    pub id: String,
    /// The queue.
    pub queue: String,
    /// `pending`, `running`, `done`, `failed` or `discarded`.
    pub status: String,
    /// The arguments.
    pub args: serde_json::Value,
    /// Higher runs first.
    pub priority: i64,
    /// Due time.
    pub run_at: DateTime<Utc>,
    /// Runs started.
    pub attempts: i64,
    /// Runs allowed.
    pub max_attempts: i64,
    /// The worker running it.
    pub worker: Option<String>,
    /// The last run's error.
    pub last_error: Option<String>,
    /// Enqueued.
    pub created_at: DateTime<Utc>,
    /// Finished (done, failed for good, discarded).
    pub done_at: Option<DateTime<Utc>>,
}

impl From<JobRow> for JobView {
    fn from(row: JobRow) -> Self {
        Self {
            id: ids::key_of(&row.id),
            queue: row.queue,
            status: row.status,
            args: serde_json::from_slice(&row.args).unwrap_or(serde_json::Value::Null),
            priority: row.priority,
            run_at: row.run_at,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            worker: row.lock_by,
            last_error: row.last_error,
            created_at: row.created_at,
            done_at: row.done_at,
        }
    }
}

/// Filters of the job list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// `pending`, `running`, `done`, `failed` or `discarded`.
    pub status: Option<String>,
    /// One queue only.
    pub queue: Option<String>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const STATUSES: [JobStatus; 5] = [
    JobStatus::Pending,
    JobStatus::Running,
    JobStatus::Done,
    JobStatus::Failed,
    JobStatus::Discarded,
];

/// Jobs, newest first; e.g. `?status=failed` for the ones that need an operator. Needs
/// `system.read`.
#[utoipa::path(get, path = "/api/v1/admin/jobs", tag = "jobs", params(JobFilter),
    responses((status = 200, body = Page<JobView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_jobs(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(filter): ApiQuery<JobFilter>,
) -> Result<axum::Json<Page<JobView>>, ApiError> {
    actor.require(Permission::SystemRead)?;
    if let Some(status) = &filter.status
        && !STATUSES.iter().any(|s| s.as_str() == status)
    {
        return Err(ApiError::invalid_field(
            "status",
            "must be pending, running, done, failed or discarded",
        ));
    }
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    }
    .validate()?;
    let condition = Query::conditions()
        .and_when("status = $status", "status", filter.status)
        .and_when("queue = $queue", "queue", filter.queue);
    let page = fetch_page::<JobRow, JobView>(
        &state.db,
        "job",
        condition,
        &page,
        Order::NewestFirst,
        |j| j.id.clone(),
    )
    .await?;
    Ok(axum::Json(page))
}

/// Changes a failed or discarded job's status in one conditional statement, audited.
async fn rescue(
    state: &AppState,
    actor: &Actor,
    key: &str,
    action: &str,
    assignment: &str,
) -> Result<JobView, ApiError> {
    actor.require(Permission::SystemManage)?;
    let current: Option<JobRow> = state.db.get("job", key).await?;
    let current = current.ok_or(ApiError::NotFound("job"))?;
    let mut tx = Tx::new();
    let record = tx.bind(ids::record("job", key));
    let throw = tx.bind(format!("job-not-failed:{}", current.status));
    tx.push(format!(
        "IF (SELECT VALUE status FROM ONLY {record}) NOT IN ['failed', 'discarded'] {{ THROW {throw} }}"
    ));
    tx.push(format!("UPDATE {record} SET {assignment}"));
    tx.audit(
        &actor.audit(),
        action,
        Some(("job", key)),
        serde_json::json!({ "queue": current.queue, "was": current.status }),
    );
    match tx.run(&state.db).await {
        Ok(_) => {}
        Err(e)
            if e.thrown_message()
                .is_some_and(|m| m.contains("job-not-failed:")) =>
        {
            return Err(ApiError::Conflict(format!(
                "only failed or discarded jobs can be retried or discarded; this one is {}",
                current.status
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let row: Option<JobRow> = state.db.get("job", key).await?;
    Ok(row.ok_or(ApiError::NotFound("job"))?.into())
}

/// Runs a failed (or discarded) job again now, with a fresh set of attempts. Needs
/// `system.manage`.
#[utoipa::path(post, path = "/api/v1/admin/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn retry_job(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
) -> Result<axum::Json<JobView>, ApiError> {
    rescue(
        &state,
        &actor,
        &key,
        "job.retry",
        "status = 'pending', attempts = 0, run_at = time::now(), done_at = NONE, lock_by = NONE, lock_at = NONE",
    )
    .await
    .map(axum::Json)
}

/// Gives up on a failed job for good (it stays listed as `discarded`). Needs `system.manage`.
#[utoipa::path(post, path = "/api/v1/admin/jobs/{id}/discard", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn discard_job(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
) -> Result<axum::Json<JobView>, ApiError> {
    rescue(
        &state,
        &actor,
        &key,
        "job.discard",
        "status = 'discarded', done_at = time::now()",
    )
    .await
    .map(axum::Json)
}
