//! Roles: a data scope plus a set of permissions from the catalogue.

use axum::extract::State;
use axum::http::StatusCode;
use outpost_mobile::api::{FieldError, Page, Problem};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::platform::db::Tx;
use crate::platform::db::{DbError, Query};
use crate::platform::http::{ApiJson, ApiQuery, Order, PageParams, PathKey, fetch_page};
use crate::platform::ids;

use super::access::{Actor, DataScope, Permission};
use super::model::{Role, RoleRow};
use super::validate;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_roles, create_role))
        .routes(routes!(update_role, delete_role))
}

/// `POST /api/v1/roles`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    /// Unique name.
    pub name: String,
    /// How much data holders see.
    pub data_scope: DataScope,
    /// Permission names, e.g. `customer.read`.
    pub permissions: Vec<String>,
}

/// `PATCH /api/v1/roles/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRole {
    /// New name.
    pub name: Option<String>,
    /// New data scope.
    pub data_scope: Option<DataScope>,
    /// New permission set (replaces the old one).
    pub permissions: Option<Vec<String>>,
}

fn check_permissions(names: &[String]) -> Result<Vec<String>, ApiError> {
    let errors: Vec<FieldError> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| Permission::parse(n).is_none())
        .map(|(i, n)| FieldError {
            field: format!("permissions[{i}]"),
            message: format!("`{n}` is not a permission"),
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    Ok(names)
}

async fn load(state: &AppState, key: &str) -> Result<RoleRow, ApiError> {
    state
        .db
        .get("role", key)
        .await?
        .ok_or(ApiError::NotFound("role"))
}

fn duplicate_name(e: DbError) -> ApiError {
    if e.is_duplicate() {
        ApiError::Conflict("a role with this name exists".into())
    } else {
        e.into()
    }
}

/// Every role.
#[utoipa::path(get, path = "/api/v1/roles", tag = "roles", params(PageParams),
    responses((status = 200, body = Page<Role>), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn list_roles(
    State(state): State<AppState>,
    _actor: Actor,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Role>>, ApiError> {
    let page = params.validate()?;
    let page = fetch_page::<RoleRow, Role>(
        &state.db,
        "role",
        Query::conditions(),
        &page,
        Order::OldestFirst,
        |r| r.id.clone(),
    )
    .await?;
    Ok(axum::Json(page))
}

/// Create a role.
#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", request_body = CreateRole,
    responses((status = 201, body = Role), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_role(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateRole>,
) -> Result<(StatusCode, axum::Json<Role>), ApiError> {
    actor.require(Permission::RoleManage)?;
    let name =
        validate::display_name(&body.name).map_err(|m| ApiError::invalid_field("name", m))?;
    let permissions = check_permissions(&body.permissions)?;
    let key = ids::new_key();
    let mut tx = Tx::new();
    let id = tx.bind(ids::record("role", &key));
    let name_b = tx.bind(name.clone());
    let scope_b = tx.bind(body.data_scope.name().to_string());
    let perms_b = tx.bind(permissions.clone());
    tx.push(format!(
        "CREATE {id} SET name = {name_b}, data_scope = {scope_b}, permissions = {perms_b}, builtin = false, created_at = time::now(), updated_at = time::now()"
    ));
    tx.audit(&actor.audit(), "role.create", Some(("role", &key)), serde_json::json!({ "name": name, "data_scope": body.data_scope, "permissions": permissions }));
    tx.run(&state.db).await.map_err(duplicate_name)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(load(&state, &key).await?.into()),
    ))
}

/// Change a role's name, data scope or permissions; holders see the change on their next request.
#[utoipa::path(patch, path = "/api/v1/roles/{id}", tag = "roles", request_body = UpdateRole,
    params(("id" = String, Path, description = "Role id")),
    responses((status = 200, body = Role), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update_role(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
    ApiJson(body): ApiJson<UpdateRole>,
) -> Result<axum::Json<Role>, ApiError> {
    actor.require(Permission::RoleManage)?;
    let current = load(&state, &key).await?;
    let name = body
        .name
        .as_deref()
        .map(validate::display_name)
        .transpose()
        .map_err(|m| ApiError::invalid_field("name", m))?
        .unwrap_or(current.name.clone());
    let permissions = match &body.permissions {
        Some(p) => check_permissions(p)?,
        None => current.permissions.clone(),
    };
    let data_scope = body
        .data_scope
        .map_or(current.data_scope.clone(), |s| s.name().to_string());
    if current.builtin
        && current.name == "admin"
        && (data_scope != "all" || permissions.len() != Permission::ALL.len())
    {
        return Err(ApiError::Conflict(
            "the built-in admin role always has every permission and sees everything".into(),
        ));
    }
    let mut tx = Tx::new();
    let id_b = tx.bind(ids::record("role", &key));
    let name_b = tx.bind(name.clone());
    let scope_b = tx.bind(data_scope.clone());
    let perms_b = tx.bind(permissions.clone());
    tx.push(format!("UPDATE {id_b} SET name = {name_b}, data_scope = {scope_b}, permissions = {perms_b}, updated_at = time::now()"));
    tx.audit(
        &actor.audit(),
        "role.update",
        Some(("role", &key)),
        serde_json::json!({
            "name": { "from": current.name, "to": name },
            "data_scope": { "from": current.data_scope, "to": data_scope },
            "permissions": { "from": current.permissions, "to": permissions },
        }),
    );
    tx.run(&state.db).await.map_err(duplicate_name)?;
    crate::sync_host::scopes_changed(&state);
    Ok(axum::Json(load(&state, &key).await?.into()))
}

/// Delete a role that is not built in and that no user holds.
#[utoipa::path(delete, path = "/api/v1/roles/{id}", tag = "roles",
    params(("id" = String, Path, description = "Role id")),
    responses((status = 204, description = "Deleted"), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn delete_role(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
) -> Result<StatusCode, ApiError> {
    actor.require(Permission::RoleManage)?;
    let current = load(&state, &key).await?;
    if current.builtin {
        return Err(ApiError::Conflict(
            "built-in roles cannot be deleted".into(),
        ));
    }
    let mut tx = Tx::new();
    let id_b = tx.bind(ids::record("role", &key));
    let key_b = tx.bind(key.clone());
    tx.push(format!("IF count(SELECT id FROM user WHERE roles CONTAINS {key_b} LIMIT 1) > 0 {{ THROW 'role-in-use' }}"));
    tx.push(format!("DELETE {id_b}"));
    tx.audit(
        &actor.audit(),
        "role.delete",
        Some(("role", &key)),
        serde_json::json!({ "name": current.name }),
    );
    match tx.run(&state.db).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(e)
            if e.thrown_message()
                .is_some_and(|m| m.contains("role-in-use")) =>
        {
            Err(ApiError::Conflict("users still hold this role".into()))
        }
        Err(e) => Err(e.into()),
    }
}
