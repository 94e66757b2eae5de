//! The public customer pool (公海): pools with their members and admins, the rules per customer
//! level, the ownership commands (claim, assign, release, transfer) and the return sweep.
//!
//! Ownership is a server-owned part of the customer document (its `server.owner` and
//! `custody`), changed only by these commands through the sync engine: the projection, the
//! history entry, the audit entry and the owners' manifests change together.

pub mod commands;
pub mod returns;

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use outpost_mobile::api::Problem;
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::error::ApiError;
use crate::platform::db::{DbError, Query};
use crate::platform::http::ApiJson;
use crate::platform::ids;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pools, create_pool))
        .routes(routes!(get_pool, update_pool))
        .routes(routes!(returns::preview))
        .routes(routes!(returns::sweep_now))
        .routes(routes!(commands::claim))
        .routes(routes!(commands::assign))
        .routes(routes!(commands::release))
        .routes(routes!(commands::transfer))
}

/// The longest period a rule may name (ten years).
pub const MAX_RULE_DAYS: u32 = 3650;

/// The rules of one customer level in a pool. Every rule is optional; absent means "no limit".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LevelRules {
    /// Return to the pool after this many days without a follow-up.
    pub return_without_follow_up_days: Option<u32>,
    /// Return after this many days since the claim without a deal (a won opportunity or a
    /// signed order, once those modules exist).
    pub return_without_deal_days: Option<u32>,
    /// Most customers of this pool one rep may own.
    pub max_owned: Option<u32>,
    /// Most claims from this pool per rep per day (the rep's local day).
    pub max_claims_per_day: Option<u32>,
    /// Days during which the previous owner cannot claim a released or returned customer back.
    pub cooldown_days: Option<u32>,
    /// Warn the owner this many days before a return (notification and morning digest).
    pub warn_days_before: Option<u32>,
}

/// A pool as stored.
#[derive(Debug, Clone, SurrealValue)]
pub struct PoolRow {
    id: RecordId,
    name: String,
    member_users: Vec<String>,
    member_departments: Vec<String>,
    admins: Vec<String>,
    grace_hours: i64,
    /// Rules per level, as JSON.
    rules: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A pool as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    /// Id.
    pub id: String,
    /// Name, unique.
    pub name: String,
    /// Users who may claim from it.
    pub member_user_ids: Vec<String>,
    /// Departments whose users (including sub-departments) may claim from it.
    pub member_department_ids: Vec<String>,
    /// Users who configure it (besides holders of `pool.configure`).
    pub admin_ids: Vec<String>,
    /// Hours a follow-up made offline may take to reach the server and still count from when
    /// it was made; the sweep also waits this long past a deadline before returning.
    pub grace_hours: u32,
    /// Rules per customer level (`A` to `D`); `*` applies to levels without their own.
    pub rules: BTreeMap<String, LevelRules>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

impl From<PoolRow> for Pool {
    fn from(row: PoolRow) -> Self {
        Self {
            id: ids::key_of(&row.id),
            name: row.name,
            member_user_ids: row.member_users,
            member_department_ids: row.member_departments,
            admin_ids: row.admins,
            grace_hours: u32::try_from(row.grace_hours).unwrap_or(0),
            rules: serde_json::from_str(&row.rules).unwrap_or_default(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl Pool {
    /// The rules for a customer of `level`.
    pub fn rules_for(&self, level: Option<&str>) -> LevelRules {
        level
            .and_then(|l| self.rules.get(l))
            .or_else(|| self.rules.get("*"))
            .cloned()
            .unwrap_or_default()
    }

    /// The grace period.
    pub fn grace(&self) -> chrono::Duration {
        chrono::Duration::hours(i64::from(self.grace_hours))
    }

    /// Whether `actor` configures this pool.
    pub fn may_configure(&self, actor: &Actor) -> bool {
        actor.can(Permission::PoolConfigure) || self.admin_ids.contains(&actor.user_id)
    }

    /// Whether `user` may claim from this pool: a member user, or in a member department or
    /// below it.
    pub async fn has_member(&self, state: &AppState, user: &str) -> Result<bool, DbError> {
        if self.member_user_ids.iter().any(|u| u == user) {
            return Ok(true);
        }
        if self.member_department_ids.is_empty() {
            return Ok(false);
        }
        let member: Option<bool> = Query::new(
            "LET $d = (SELECT VALUE department FROM ONLY type::record('user', $user));
             RETURN $d != NONE AND ($d IN $departments OR array::len(array::intersect((SELECT VALUE ancestors FROM ONLY type::record('department', $d)) ?? [], $departments)) > 0);",
        )
        .bind("user", user.to_string())
        .bind("departments", self.member_department_ids.clone())
        .take(&state.db, 1)
        .await?;
        Ok(member.unwrap_or(false))
    }

    /// Whether `actor` may claim from this pool.
    pub async fn may_claim(&self, state: &AppState, actor: &Actor) -> Result<bool, DbError> {
        self.has_member(state, &actor.user_id).await
    }
}

/// A pool by id, or a 422 on `field` when there is none (ids in bodies and queries).
pub async fn require_pool(state: &AppState, id: &str, field: &str) -> Result<Pool, ApiError> {
    find_pool(state, id)
        .await?
        .ok_or_else(|| ApiError::invalid_field(field, "no such pool"))
}

/// A pool by id.
pub async fn find_pool(state: &AppState, id: &str) -> Result<Option<Pool>, ApiError> {
    if uuid::Uuid::try_parse(id).is_err() {
        return Ok(None);
    }
    let row: Option<PoolRow> = state.db.get("pool", id).await?;
    Ok(row.map(Pool::from))
}

/// `POST /api/v1/pools` and `PATCH /api/v1/pools/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolInput {
    /// Name.
    pub name: Option<String>,
    /// Member users.
    pub member_user_ids: Option<Vec<String>>,
    /// Member departments.
    pub member_department_ids: Option<Vec<String>>,
    /// Admins.
    pub admin_ids: Option<Vec<String>>,
    /// Grace hours (default 24).
    pub grace_hours: Option<u32>,
    /// Rules per level (`A` to `D`, or `*`).
    pub rules: Option<BTreeMap<String, LevelRules>>,
}

async fn validate(state: &AppState, input: &PoolInput) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Some(name) = &input.name
        && (name.trim().is_empty() || name.chars().count() > 100)
    {
        errors.push(outpost_mobile::api::FieldError {
            field: "name".into(),
            message: "must be 1 to 100 characters".into(),
        });
    }
    if let Some(rules) = &input.rules {
        for (level, r) in rules {
            for (name, value) in [
                (
                    "return_without_follow_up_days",
                    r.return_without_follow_up_days,
                ),
                ("return_without_deal_days", r.return_without_deal_days),
                ("cooldown_days", r.cooldown_days),
                ("warn_days_before", r.warn_days_before),
            ] {
                if value.is_some_and(|v| v == 0 || v > MAX_RULE_DAYS) {
                    errors.push(outpost_mobile::api::FieldError {
                        field: format!("rules.{level}.{name}"),
                        message: format!("must be between 1 and {MAX_RULE_DAYS} days"),
                    });
                }
            }
            for (name, value) in [
                ("max_owned", r.max_owned),
                ("max_claims_per_day", r.max_claims_per_day),
            ] {
                if value.is_some_and(|v| v > 1_000_000) {
                    errors.push(outpost_mobile::api::FieldError {
                        field: format!("rules.{level}.{name}"),
                        message: "must be at most 1000000".into(),
                    });
                }
            }
            if level != "*" && !outpost_mobile::records::customer::LEVELS.contains(&level.as_str())
            {
                errors.push(outpost_mobile::api::FieldError {
                    field: format!("rules.{level}"),
                    message: "levels are A, B, C, D or *".into(),
                });
            }
        }
    }
    if input.grace_hours.is_some_and(|g| g > 24 * 30) {
        errors.push(outpost_mobile::api::FieldError {
            field: "grace_hours".into(),
            message: "must be at most 720".into(),
        });
    }
    for (field, users) in [
        ("member_user_ids", &input.member_user_ids),
        ("admin_ids", &input.admin_ids),
    ] {
        if let Some(users) = users {
            let known: Vec<String> =
                Query::new("SELECT VALUE record::id(id) FROM user WHERE record::id(id) IN $ids")
                    .bind("ids", users.clone())
                    .take(&state.db, 0)
                    .await?;
            for (i, user) in users.iter().enumerate() {
                if !known.contains(user) {
                    errors.push(outpost_mobile::api::FieldError {
                        field: format!("{field}[{i}]"),
                        message: "no such user".into(),
                    });
                }
            }
        }
    }
    if let Some(departments) = &input.member_department_ids {
        let known: Vec<String> =
            Query::new("SELECT VALUE record::id(id) FROM department WHERE record::id(id) IN $ids")
                .bind("ids", departments.clone())
                .take(&state.db, 0)
                .await?;
        for (i, d) in departments.iter().enumerate() {
            if !known.contains(d) {
                errors.push(outpost_mobile::api::FieldError {
                    field: format!("member_department_ids[{i}]"),
                    message: "no such department".into(),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Creates a pool.
#[utoipa::path(post, path = "/api/v1/pools", tag = "pool", request_body = PoolInput,
    responses((status = 201, body = Pool), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_pool(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<PoolInput>,
) -> Result<(StatusCode, axum::Json<Pool>), ApiError> {
    actor.require(Permission::PoolConfigure)?;
    if input.name.is_none() {
        return Err(ApiError::invalid_field("name", "is required"));
    }
    validate(&state, &input).await?;
    let id = ids::new_key();
    let mut tx = crate::platform::db::Tx::new();
    let record = tx.bind(ids::record("pool", &id));
    let name = tx.bind(input.name.clone().unwrap_or_default().trim().to_string());
    let users = tx.bind(input.member_user_ids.clone().unwrap_or_default());
    let departments = tx.bind(input.member_department_ids.clone().unwrap_or_default());
    let admins = tx.bind(input.admin_ids.clone().unwrap_or_default());
    let grace = tx.bind(i64::from(input.grace_hours.unwrap_or(24)));
    let rules = tx
        .bind(serde_json::to_string(&input.rules.clone().unwrap_or_default()).unwrap_or_default());
    tx.push(format!(
        "CREATE {record} SET name = {name}, member_users = {users}, member_departments = {departments}, admins = {admins}, grace_hours = {grace}, rules = {rules}, created_at = time::now(), updated_at = time::now()"
    ));
    tx.audit(
        &actor.audit(),
        "pool.create",
        Some(("pool", &id)),
        serde_json::json!({ "name": input.name }),
    );
    tx.run(&state.db).await.map_err(|e| {
        if e.is_duplicate() {
            ApiError::Conflict("a pool with this name exists".into())
        } else {
            e.into()
        }
    })?;
    let pool = find_pool(&state, &id)
        .await?
        .ok_or(ApiError::NotFound("pool"))?;
    Ok((StatusCode::CREATED, axum::Json(pool)))
}

/// Changes a pool (its admins or holders of `pool.configure`).
#[utoipa::path(patch, path = "/api/v1/pools/{id}", tag = "pool", request_body = PoolInput,
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 200, body = Pool), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update_pool(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiJson(input): ApiJson<PoolInput>,
) -> Result<axum::Json<Pool>, ApiError> {
    let pool = find_pool(&state, &id)
        .await?
        .ok_or(ApiError::NotFound("pool"))?;
    if !pool.may_configure(&actor) {
        return Err(ApiError::Forbidden("pool.configure"));
    }
    validate(&state, &input).await?;
    let mut tx = crate::platform::db::Tx::new();
    let record = tx.bind(ids::record("pool", &id));
    let mut sets = vec!["updated_at = time::now()".to_string()];
    if let Some(name) = &input.name {
        sets.push(format!("name = {}", tx.bind(name.trim().to_string())));
    }
    if let Some(v) = &input.member_user_ids {
        sets.push(format!("member_users = {}", tx.bind(v.clone())));
    }
    if let Some(v) = &input.member_department_ids {
        sets.push(format!("member_departments = {}", tx.bind(v.clone())));
    }
    if let Some(v) = &input.admin_ids {
        sets.push(format!("admins = {}", tx.bind(v.clone())));
    }
    if let Some(v) = input.grace_hours {
        sets.push(format!("grace_hours = {}", tx.bind(i64::from(v))));
    }
    if let Some(v) = &input.rules {
        let json = tx.bind(serde_json::to_string(v).unwrap_or_default());
        sets.push(format!("rules = {json}"));
    }
    tx.push(format!("UPDATE {record} SET {}", sets.join(", ")));
    tx.audit(
        &actor.audit(),
        "pool.update",
        Some(("pool", &id)),
        serde_json::json!({ "rules": input.rules, "grace_hours": input.grace_hours }),
    );
    tx.run(&state.db).await.map_err(|e| {
        if e.is_duplicate() {
            ApiError::Conflict("a pool with this name exists".into())
        } else {
            e.into()
        }
    })?;
    let pool = find_pool(&state, &id)
        .await?
        .ok_or(ApiError::NotFound("pool"))?;
    Ok(axum::Json(pool))
}

/// The pools the caller belongs to or configures.
#[utoipa::path(get, path = "/api/v1/pools", tag = "pool",
    responses((status = 200, body = Vec<Pool>), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn list_pools(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<axum::Json<Vec<Pool>>, ApiError> {
    let rows: Vec<PoolRow> = Query::new("SELECT * FROM pool ORDER BY name")
        .take(&state.db, 0)
        .await?;
    let mut out = Vec::new();
    for pool in rows.into_iter().map(Pool::from) {
        if pool.may_configure(&actor) || pool.may_claim(&state, &actor).await? {
            out.push(pool);
        }
    }
    Ok(axum::Json(out))
}

/// One pool the caller belongs to or configures.
#[utoipa::path(get, path = "/api/v1/pools/{id}", tag = "pool",
    params(("id" = String, Path, description = "Pool id")),
    responses((status = 200, body = Pool), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_pool(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::Json<Pool>, ApiError> {
    match find_pool(&state, &id).await? {
        Some(pool) if pool.may_configure(&actor) || pool.may_claim(&state, &actor).await? => {
            Ok(axum::Json(pool))
        }
        _ => Err(ApiError::NotFound("pool")),
    }
}
