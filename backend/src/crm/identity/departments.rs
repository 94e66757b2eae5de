//! The department tree: create, rename, move (never under itself), delete when empty.

use axum::extract::State;
use axum::http::StatusCode;
use outpost_mobile::api::{Page, Problem};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::platform::db::Query;
use crate::platform::db::Tx;
use crate::platform::http::{ApiJson, ApiQuery, Order, PageParams, PathKey, fetch_page};
use crate::platform::ids;

use super::access::{Actor, Permission};
use super::model::{Department, DepartmentRow};
use super::validate;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_departments, create_department))
        .routes(routes!(
            get_department,
            update_department,
            delete_department
        ))
}

/// `POST /api/v1/departments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDepartment {
    /// Display name, unique among its siblings.
    pub name: String,
    /// Parent department.
    pub parent_id: String,
}

/// `PATCH /api/v1/departments/{id}`: rename and/or move.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDepartment {
    /// New name.
    pub name: Option<String>,
    /// New parent; must not be the department itself or one of its descendants.
    pub parent_id: Option<String>,
}

/// Loads a department or answers 404.
pub async fn load(state: &AppState, key: &str) -> Result<DepartmentRow, ApiError> {
    state
        .db
        .get("department", key)
        .await?
        .ok_or(ApiError::NotFound("department"))
}

async fn sibling_name_taken(
    state: &AppState,
    parent: Option<&str>,
    name: &str,
    except: Option<&str>,
) -> Result<bool, ApiError> {
    let taken: Vec<String> = Query::new(
        "SELECT VALUE record::id(id) FROM department WHERE parent = $parent AND string::lowercase(name) = string::lowercase($name)",
    )
    .bind("parent", parent.map(str::to_string))
    .bind("name", name.to_string())
    .take(&state.db, 0)
    .await?;
    Ok(taken.iter().any(|k| Some(k.as_str()) != except))
}

/// The whole department tree, in creation order, one page at a time.
#[utoipa::path(get, path = "/api/v1/departments", tag = "departments",
    params(PageParams),
    responses((status = 200, description = "Departments", body = Page<Department>), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn list_departments(
    State(state): State<AppState>,
    _actor: Actor,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Department>>, ApiError> {
    let page = params.validate()?;
    let page = fetch_page::<DepartmentRow, Department>(
        &state.db,
        "department",
        Query::conditions(),
        &page,
        Order::OldestFirst,
        |d| d.id.clone(),
    )
    .await?;
    Ok(axum::Json(page))
}

/// One department.
#[utoipa::path(get, path = "/api/v1/departments/{id}", tag = "departments",
    params(("id" = String, Path, description = "Department id")),
    responses((status = 200, body = Department), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_department(
    State(state): State<AppState>,
    _actor: Actor,
    PathKey(key): PathKey,
) -> Result<axum::Json<Department>, ApiError> {
    Ok(axum::Json(load(&state, &key).await?.into()))
}

/// Create a department under a parent.
#[utoipa::path(post, path = "/api/v1/departments", tag = "departments",
    request_body = CreateDepartment,
    responses((status = 201, body = Department), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_department(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateDepartment>,
) -> Result<(StatusCode, axum::Json<Department>), ApiError> {
    actor.require(Permission::DepartmentManage)?;
    let name =
        validate::display_name(&body.name).map_err(|m| ApiError::invalid_field("name", m))?;
    let parent_key = ids::parse_key(&body.parent_id)
        .map_err(|_| ApiError::invalid_field("parent_id", "is not a department id"))?;
    let parent = match load(&state, &parent_key).await {
        Err(ApiError::NotFound(_)) => {
            return Err(ApiError::invalid_field("parent_id", "no such department"));
        }
        other => other?,
    };
    if sibling_name_taken(&state, Some(&parent_key), &name, None).await? {
        return Err(ApiError::Conflict(format!(
            "`{name}` already has a sibling of that name"
        )));
    }
    let key = ids::new_key();
    let mut ancestors = parent.ancestors.clone();
    ancestors.push(parent_key.clone());
    let mut tx = Tx::new();
    let id = tx.bind(ids::record("department", &key));
    let name_b = tx.bind(name.clone());
    let parent_b = tx.bind(Some(parent_key.clone()));
    let ancestors_b = tx.bind(ancestors);
    tx.push(format!(
        "CREATE {id} SET name = {name_b}, parent = {parent_b}, ancestors = {ancestors_b}, created_at = time::now(), updated_at = time::now()"
    ));
    tx.audit(
        &actor.audit(),
        "department.create",
        Some(("department", &key)),
        serde_json::json!({ "name": name, "parent_id": parent_key }),
    );
    tx.run(&state.db).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(load(&state, &key).await?.into()),
    ))
}

/// Rename a department or move it under another parent (with its whole subtree).
#[utoipa::path(patch, path = "/api/v1/departments/{id}", tag = "departments",
    params(("id" = String, Path, description = "Department id")),
    request_body = UpdateDepartment,
    responses((status = 200, body = Department), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update_department(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
    ApiJson(body): ApiJson<UpdateDepartment>,
) -> Result<axum::Json<Department>, ApiError> {
    actor.require(Permission::DepartmentManage)?;
    let current = load(&state, &key).await?;
    let name = body
        .name
        .as_deref()
        .map(validate::display_name)
        .transpose()
        .map_err(|m| ApiError::invalid_field("name", m))?
        .unwrap_or_else(|| current.name.clone());
    let mut tx = Tx::new();
    let id_b = tx.bind(ids::record("department", &key));
    let name_b = tx.bind(name.clone());
    let mut parent_key = current.parent.clone();
    if let Some(raw_parent) = &body.parent_id {
        let new_parent_key = ids::parse_key(raw_parent)
            .map_err(|_| ApiError::invalid_field("parent_id", "is not a department id"))?;
        if current.parent.is_none() {
            return Err(ApiError::Conflict(
                "the root department cannot be moved".into(),
            ));
        }
        let new_parent = match load(&state, &new_parent_key).await {
            Err(ApiError::NotFound(_)) => {
                return Err(ApiError::invalid_field("parent_id", "no such department"));
            }
            other => other?,
        };
        if new_parent_key == key || new_parent.ancestors.contains(&key) {
            return Err(ApiError::Conflict(
                "a department cannot be moved under itself or one of its descendants".into(),
            ));
        }
        let mut new_ancestors = new_parent.ancestors.clone();
        new_ancestors.push(new_parent_key.clone());
        // Every descendant's ancestors start with the moved department's old ancestors; swap
        // that prefix for the new one, in the same transaction. The guard re-checks the cycle
        // against the data as the transaction sees it, in case of a concurrent move.
        let new_parent_b = tx.bind(ids::record("department", &new_parent_key));
        let key_b = tx.bind(key.clone());
        let old_len = tx.bind(current.ancestors.len() as i64);
        let new_anc_b = tx.bind(new_ancestors.clone());
        let parent_b = tx.bind(Some(new_parent_key.clone()));
        tx.push(format!("IF (SELECT VALUE ancestors FROM ONLY {new_parent_b}) CONTAINS {key_b} {{ THROW 'department-cycle' }}"));
        tx.push(format!(
            "UPDATE department SET ancestors = array::concat({new_anc_b}, array::slice(ancestors, {old_len})), updated_at = time::now() WHERE ancestors CONTAINS {key_b}"
        ));
        tx.push(format!(
            "UPDATE {id_b} SET parent = {parent_b}, ancestors = {new_anc_b}"
        ));
        parent_key = Some(new_parent_key);
    }
    if sibling_name_taken(&state, parent_key.as_deref(), &name, Some(&key)).await? {
        return Err(ApiError::Conflict(format!(
            "`{name}` already has a sibling of that name"
        )));
    }
    tx.push(format!(
        "UPDATE {id_b} SET name = {name_b}, updated_at = time::now()"
    ));
    tx.audit(
        &actor.audit(),
        "department.update",
        Some(("department", &key)),
        serde_json::json!({
            "name": { "from": current.name, "to": name },
            "parent_id": { "from": current.parent, "to": parent_key },
        }),
    );
    match tx.run(&state.db).await {
        Err(e)
            if e.thrown_message()
                .is_some_and(|m| m.contains("department-cycle")) =>
        {
            return Err(ApiError::Conflict(
                "a department cannot be moved under itself or one of its descendants".into(),
            ));
        }
        other => other?,
    };
    let row = load(&state, &key).await?;
    crate::sync_host::scopes_changed(&state);
    Ok(axum::Json(row.into()))
}

/// Delete a department that has no sub-departments and no users.
#[utoipa::path(delete, path = "/api/v1/departments/{id}", tag = "departments",
    params(("id" = String, Path, description = "Department id")),
    responses((status = 204, description = "Deleted"), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn delete_department(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
) -> Result<StatusCode, ApiError> {
    actor.require(Permission::DepartmentManage)?;
    let current = load(&state, &key).await?;
    if current.parent.is_none() {
        return Err(ApiError::Conflict(
            "the root department cannot be deleted".into(),
        ));
    }
    let mut tx = Tx::new();
    let id_b = tx.bind(ids::record("department", &key));
    let key_b = tx.bind(Some(key.clone()));
    let key_plain = tx.bind(key.clone());
    tx.push(format!("IF count(SELECT id FROM department WHERE parent = {key_b} LIMIT 1) > 0 {{ THROW 'department-has-children' }}"));
    tx.push(format!("IF count(SELECT id FROM user WHERE department = {key_plain} LIMIT 1) > 0 {{ THROW 'department-has-users' }}"));
    tx.push(format!("DELETE {id_b}"));
    tx.audit(
        &actor.audit(),
        "department.delete",
        Some(("department", &key)),
        serde_json::json!({ "name": current.name }),
    );
    match tx.run(&state.db).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(e) => match e.thrown_message() {
            Some(m) if m.contains("department-has-children") => Err(ApiError::Conflict(
                "the department still has sub-departments".into(),
            )),
            Some(m) if m.contains("department-has-users") => {
                Err(ApiError::Conflict("the department still has users".into()))
            }
            _ => Err(e.into()),
        },
    }
}
