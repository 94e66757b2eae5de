//! Users: the directory (filtered by the actor's scope), administration, and the caller's own
//! account (`/me`).

use axum::extract::State;
use axum::http::StatusCode;
use outpost_mobile::api::{FieldError, Page, Problem};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::platform::audit::AuditContext;
use crate::platform::auth::{generate_password, hash_password, verify_password};
use crate::platform::db::Tx;
use crate::platform::db::{DbError, Query};
use crate::platform::http::{ApiJson, ApiQuery, Order, PageParams, PathKey, fetch_page};
use crate::platform::ids;

use super::access::{Actor, DataScope, Permission};
use super::auth::{SessionSelector, revoke_sessions_in};
use super::model::{Role, User, UserRow};
use super::validate;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(deactivate_user))
        .routes(routes!(activate_user))
        .routes(routes!(reset_password))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

/// The fields a new user needs.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login email; an email or a phone is required.
    pub email: Option<String>,
    /// Login phone; numbers without a country code are read as Chinese.
    pub phone: Option<String>,
    /// Display name.
    pub name: String,
    /// Department.
    pub department_id: String,
    /// Manager.
    pub manager_id: Option<String>,
    /// Roles.
    pub role_ids: Vec<String>,
    /// IANA time zone; defaults to `Asia/Shanghai`.
    pub time_zone: Option<String>,
    /// Initial password; when absent one is generated and returned once.
    pub password: Option<String>,
}

/// A created user, with the generated password when none was given.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// The generated initial password, shown this once.
    pub initial_password: Option<String>,
}

/// `PATCH /api/v1/users/{id}`; `null` clears `email`, `phone` or `manager_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New login email.
    #[serde(default, deserialize_with = "crate::crm::records::double_option")]
    pub email: Option<Option<String>>,
    /// New login phone.
    #[serde(default, deserialize_with = "crate::crm::records::double_option")]
    pub phone: Option<Option<String>>,
    /// New display name.
    pub name: Option<String>,
    /// New department.
    pub department_id: Option<String>,
    /// New manager, or `null` for none.
    #[serde(default, deserialize_with = "crate::crm::records::double_option")]
    pub manager_id: Option<Option<String>>,
    /// New roles.
    pub role_ids: Option<Vec<String>>,
    /// New time zone.
    pub time_zone: Option<String>,
}

/// Filters of the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Only users of this department.
    pub department_id: Option<String>,
    /// Only active (`true`) or deactivated (`false`) users.
    pub active: Option<bool>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `POST /api/v1/me/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password now.
    pub current_password: String,
    /// The new password.
    pub new_password: String,
}

/// `POST /api/v1/users/{id}/reset-password`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    /// The new password; when absent one is generated and returned once.
    pub password: Option<String>,
}

/// The result of a reset.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordReset {
    /// The generated password, shown this once (absent when the admin chose one).
    pub password: Option<String>,
}

/// The caller: who they are and what they may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The user.
    pub user: User,
    /// Their roles.
    pub roles: Vec<Role>,
    /// The union of the roles' permissions.
    pub permissions: Vec<String>,
    /// The widest data scope among the roles.
    pub data_scope: DataScope,
    /// The session.
    pub session_id: String,
    /// The device the session is bound to.
    pub device_id: Option<String>,
}

/// Whether `key` is an active user (for references to colleagues: assignees, invitees).
pub async fn is_active(state: &AppState, key: &str) -> Result<bool, ApiError> {
    use surrealdb::types::SurrealValue;
    #[derive(Debug, SurrealValue)]
    struct Active {
        active: bool,
    }
    let row: Option<Active> = state.db.get("user", key).await?;
    Ok(row.is_some_and(|u| u.active))
}

/// Loads a user or answers 404.
pub async fn load(state: &AppState, key: &str) -> Result<UserRow, ApiError> {
    state
        .db
        .get("user", key)
        .await?
        .ok_or(ApiError::NotFound("user"))
}

/// Loads a user the actor may see; outside the scope is the same 404 as not existing.
async fn load_in_scope(state: &AppState, actor: &Actor, key: &str) -> Result<UserRow, ApiError> {
    if !actor.scope.contains(key) {
        return Err(ApiError::NotFound("user"));
    }
    load(state, key).await
}

struct Logins {
    email: Option<String>,
    phone: Option<String>,
}

fn parse_logins(email: Option<&str>, phone: Option<&str>, errors: &mut Vec<FieldError>) -> Logins {
    let mut field = |name: &str, r: Result<String, String>| match r {
        Ok(v) => Some(v),
        Err(message) => {
            errors.push(FieldError {
                field: name.into(),
                message,
            });
            None
        }
    };
    Logins {
        email: email.and_then(|e| field("email", validate::normalize_email(e))),
        phone: phone.and_then(|p| field("phone", validate::normalize_phone(p))),
    }
}

async fn check_references(
    state: &AppState,
    department: Option<&str>,
    roles: Option<&[String]>,
    errors: &mut Vec<FieldError>,
) -> Result<(Option<String>, Option<Vec<String>>), ApiError> {
    let department = match department {
        None => None,
        Some(raw) => match ids::parse_key(raw) {
            Ok(key)
                if state
                    .db
                    .get::<super::model::DepartmentRow>("department", &key)
                    .await?
                    .is_some() =>
            {
                Some(key)
            }
            _ => {
                errors.push(FieldError {
                    field: "department_id".into(),
                    message: "no such department".into(),
                });
                None
            }
        },
    };
    let roles = match roles {
        None => None,
        Some(raw) => {
            let mut keys = Vec::new();
            for (i, r) in raw.iter().enumerate() {
                let known = match ids::parse_key(r) {
                    Ok(key) => state
                        .db
                        .get::<super::model::RoleRow>("role", &key)
                        .await?
                        .map(|_| key),
                    Err(_) => None,
                };
                match known {
                    Some(key) if !keys.contains(&key) => keys.push(key),
                    Some(_) => {}
                    None => errors.push(FieldError {
                        field: format!("role_ids[{i}]"),
                        message: "no such role".into(),
                    }),
                }
            }
            Some(keys)
        }
    };
    Ok((department, roles))
}

/// Checks that `manager` exists and that making it `user`'s manager creates no cycle.
async fn check_manager(
    state: &AppState,
    user: Option<&str>,
    manager: &str,
    errors: &mut Vec<FieldError>,
) -> Result<Option<String>, ApiError> {
    let Ok(key) = ids::parse_key(manager) else {
        errors.push(FieldError {
            field: "manager_id".into(),
            message: "is not a user id".into(),
        });
        return Ok(None);
    };
    let mut cursor = Some(key.clone());
    for _ in 0..64 {
        let Some(current) = cursor else { break };
        if Some(current.as_str()) == user {
            errors.push(FieldError {
                field: "manager_id".into(),
                message: "would make the user their own manager".into(),
            });
            return Ok(None);
        }
        match state.db.get::<UserRow>("user", &current).await? {
            Some(row) => cursor = row.manager,
            None if current == key => {
                errors.push(FieldError {
                    field: "manager_id".into(),
                    message: "no such user".into(),
                });
                return Ok(None);
            }
            None => break,
        }
    }
    Ok(Some(key))
}

/// Adds the creation of a user with its login rows to `tx`; a duplicate login makes the
/// transaction fail with a `THROW 'login-taken:…'`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_user_in(
    tx: &mut Tx,
    key: &str,
    name: &str,
    email: Option<&str>,
    phone: Option<&str>,
    department: &str,
    manager: Option<&str>,
    roles: &[String],
    time_zone: &str,
    password_hash: &str,
) {
    let id = tx.bind(ids::record("user", key));
    let fields = [
        ("email", tx.bind(email.map(str::to_string))),
        ("phone", tx.bind(phone.map(str::to_string))),
        ("name", tx.bind(name.to_string())),
        ("department", tx.bind(department.to_string())),
        ("manager", tx.bind(manager.map(str::to_string))),
        ("roles", tx.bind(roles.to_vec())),
        ("time_zone", tx.bind(time_zone.to_string())),
        ("password_hash", tx.bind(password_hash.to_string())),
    ]
    .map(|(f, b)| format!("{f} = {b}"))
    .join(", ");
    tx.push(format!("CREATE {id} SET {fields}, active = true, created_at = time::now(), updated_at = time::now()"));
    for login in [email, phone].into_iter().flatten() {
        claim_login_in(tx, login, key);
    }
}

fn claim_login_in(tx: &mut Tx, login: &str, user: &str) {
    let login_b = tx.bind(ids::record("login", login));
    let user_b = tx.bind(user.to_string());
    let message = tx.bind(format!("login-taken:{login}"));
    tx.push(format!(
        "IF (SELECT VALUE user FROM ONLY {login_b}) NOT IN [NONE, {user_b}] {{ THROW {message} }}"
    ));
    tx.push(format!("UPSERT {login_b} SET user = {user_b}"));
}

fn login_taken(e: DbError) -> ApiError {
    match e
        .thrown_message()
        .and_then(|m| m.split_once("login-taken:"))
        .map(|(_, l)| l.to_string())
    {
        Some(login) => {
            let field = if login.contains('@') {
                "email"
            } else {
                "phone"
            };
            ApiError::Conflict(format!("another user already logs in with this {field}"))
        }
        None => e.into(),
    }
}

/// The users the caller may see (their data scope), in creation order.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserFilter),
    responses((status = 200, body = Page<User>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn list_users(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(filter): ApiQuery<UserFilter>,
) -> Result<axum::Json<Page<User>>, ApiError> {
    actor.require(Permission::UserRead)?;
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .validate()?;
    let department = filter
        .department_id
        .as_deref()
        .map(ids::parse_key)
        .transpose()?;
    let scope = actor.scope.filter("record::id(id)");
    let filter = Query::conditions()
        .and(&scope.condition)
        .bind("scope_owners", scope.owners)
        .and_when("department = $department", "department", department)
        .and_when("active = $active", "active", filter.active);
    let page =
        fetch_page::<UserRow, User>(&state.db, "user", filter, &page, Order::OldestFirst, |u| {
            u.id.clone()
        })
        .await?;
    Ok(axum::Json(page))
}

/// One user within the caller's scope.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = User), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_user(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
) -> Result<axum::Json<User>, ApiError> {
    actor.require(Permission::UserRead)?;
    Ok(axum::Json(
        load_in_scope(&state, &actor, &key).await?.into(),
    ))
}

/// Create a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_user(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, axum::Json<CreatedUser>), ApiError> {
    actor.require(Permission::UserManage)?;
    let mut errors = Vec::new();
    let name = validate::display_name(&body.name)
        .map_err(|m| {
            errors.push(FieldError {
                field: "name".into(),
                message: m,
            })
        })
        .ok();
    let logins = parse_logins(body.email.as_deref(), body.phone.as_deref(), &mut errors);
    if body.email.is_none() && body.phone.is_none() {
        errors.push(FieldError {
            field: "email".into(),
            message: "an email or a phone number is required to log in".into(),
        });
    }
    let time_zone = validate::time_zone(body.time_zone.as_deref().unwrap_or("Asia/Shanghai"))
        .map_err(|m| {
            errors.push(FieldError {
                field: "time_zone".into(),
                message: m,
            })
        })
        .ok();
    if let Some(p) = &body.password
        && let Err(m) = validate::password(p, state.config.auth.min_password_length)
    {
        errors.push(FieldError {
            field: "password".into(),
            message: m,
        });
    }
    let (department, roles) = check_references(
        &state,
        Some(&body.department_id),
        Some(&body.role_ids),
        &mut errors,
    )
    .await?;
    let manager = match &body.manager_id {
        Some(m) => check_manager(&state, None, m, &mut errors).await?,
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (Some(name), Some(time_zone), Some(department), Some(roles)) =
        (name, time_zone, department, roles)
    else {
        return Err(ApiError::Internal(
            "validation passed without values".into(),
        ));
    };
    let generated = body.password.is_none().then(generate_password);
    let password = body
        .password
        .clone()
        .or_else(|| generated.clone())
        .unwrap_or_default();
    let hash = hash_password(password).await?;
    let key = ids::new_key();
    let mut tx = Tx::new();
    create_user_in(
        &mut tx,
        &key,
        &name,
        logins.email.as_deref(),
        logins.phone.as_deref(),
        &department,
        manager.as_deref(),
        &roles,
        &time_zone,
        &hash,
    );
    tx.audit(
        &actor.audit(),
        "user.create",
        Some(("user", &key)),
        serde_json::json!({
            "name": name, "email": logins.email, "phone": logins.phone, "department_id": department,
            "manager_id": manager, "role_ids": roles, "time_zone": time_zone,
        }),
    );
    tx.run(&state.db).await.map_err(login_taken)?;
    let user = load(&state, &key).await?.into();
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedUser {
            user,
            initial_password: generated,
        }),
    ))
}

/// Change a user's logins, name, department, manager, roles or time zone.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = User), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update_user(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<axum::Json<User>, ApiError> {
    actor.require(Permission::UserManage)?;
    let current = load(&state, &key).await?;
    let mut errors = Vec::new();
    let name = body.name.as_deref().and_then(|n| {
        validate::display_name(n)
            .map_err(|m| {
                errors.push(FieldError {
                    field: "name".into(),
                    message: m,
                })
            })
            .ok()
    });
    let logins = parse_logins(
        body.email.as_ref().and_then(|e| e.as_deref()),
        body.phone.as_ref().and_then(|p| p.as_deref()),
        &mut errors,
    );
    let email = match &body.email {
        None => current.email.clone(),
        Some(None) => None,
        Some(Some(_)) => logins.email.clone(),
    };
    let phone = match &body.phone {
        None => current.phone.clone(),
        Some(None) => None,
        Some(Some(_)) => logins.phone.clone(),
    };
    if email.is_none() && phone.is_none() && errors.is_empty() {
        errors.push(FieldError {
            field: "email".into(),
            message: "a user needs an email or a phone number to log in".into(),
        });
    }
    let time_zone = body.time_zone.as_deref().and_then(|t| {
        validate::time_zone(t)
            .map_err(|m| {
                errors.push(FieldError {
                    field: "time_zone".into(),
                    message: m,
                })
            })
            .ok()
    });
    let (department, roles) = check_references(
        &state,
        body.department_id.as_deref(),
        body.role_ids.as_deref(),
        &mut errors,
    )
    .await?;
    let manager = match &body.manager_id {
        None => current.manager.clone(),
        Some(None) => None,
        Some(Some(m)) => check_manager(&state, Some(&key), m, &mut errors).await?,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let updated = UserRow {
        email: email.clone(),
        phone: phone.clone(),
        name: name.unwrap_or(current.name.clone()),
        department: department.unwrap_or(current.department.clone()),
        manager,
        roles: roles.unwrap_or(current.roles.clone()),
        time_zone: time_zone.unwrap_or(current.time_zone.clone()),
        ..current.clone()
    };
    let mut tx = Tx::new();
    let id_b = tx.bind(ids::record("user", &key));
    for old in [&current.email, &current.phone].into_iter().flatten() {
        if Some(old) != email.as_ref() && Some(old) != phone.as_ref() {
            let login_b = tx.bind(ids::record("login", old));
            tx.push(format!("DELETE {login_b}"));
        }
    }
    for login in [&email, &phone].into_iter().flatten() {
        claim_login_in(&mut tx, login, &key);
    }
    let fields = [
        ("email", tx.bind(updated.email.clone())),
        ("phone", tx.bind(updated.phone.clone())),
        ("name", tx.bind(updated.name.clone())),
        ("department", tx.bind(updated.department.clone())),
        ("manager", tx.bind(updated.manager.clone())),
        ("roles", tx.bind(updated.roles.clone())),
        ("time_zone", tx.bind(updated.time_zone.clone())),
    ]
    .map(|(f, b)| format!("{f} = {b}"))
    .join(", ");
    tx.push(format!(
        "UPDATE {id_b} SET {fields}, updated_at = time::now()"
    ));
    let before = serde_json::to_value(User::from(current)).unwrap_or_default();
    let after = serde_json::to_value(User::from(updated)).unwrap_or_default();
    tx.audit(
        &actor.audit(),
        "user.update",
        Some(("user", &key)),
        changed_fields(&before, &after),
    );
    tx.run(&state.db).await.map_err(login_taken)?;
    crate::sync_host::scopes_changed(&state);
    Ok(axum::Json(load(&state, &key).await?.into()))
}

/// `{field: {from, to}}` for every field that differs.
fn changed_fields(before: &serde_json::Value, after: &serde_json::Value) -> serde_json::Value {
    let mut changes = serde_json::Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (field, new) in a {
            let old = b.get(field).cloned().unwrap_or(serde_json::Value::Null);
            if &old != new && field != "updated_at" {
                changes.insert(field.clone(), serde_json::json!({ "from": old, "to": new }));
            }
        }
    }
    serde_json::Value::Object(changes)
}

/// Deactivate a user: they can no longer log in, and every session and device of theirs is
/// revoked at once.
#[utoipa::path(post, path = "/api/v1/users/{id}/deactivate", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = User), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn deactivate_user(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
) -> Result<axum::Json<User>, ApiError> {
    actor.require(Permission::UserManage)?;
    load(&state, &key).await?;
    if key == actor.user_id {
        return Err(ApiError::Conflict("you cannot deactivate yourself".into()));
    }
    let mut tx = Tx::new();
    let id_b = tx.bind(ids::record("user", &key));
    let key_b = tx.bind(key.clone());
    tx.push(format!(
        "UPDATE {id_b} SET active = false, updated_at = time::now()"
    ));
    revoke_sessions_in(
        &mut tx,
        &SessionSelector::User(key.clone()),
        "user deactivated",
    );
    tx.push(format!(
        "UPDATE device SET revoked_at = time::now() WHERE user = {key_b} AND revoked_at = NONE"
    ));
    tx.audit(
        &actor.audit(),
        "user.deactivate",
        Some(("user", &key)),
        serde_json::json!({ "sessions": "revoked", "devices": "revoked" }),
    );
    tx.run(&state.db).await?;
    crate::sync_host::scopes_changed(&state);
    Ok(axum::Json(load(&state, &key).await?.into()))
}

/// Let a deactivated user log in again (their old devices stay revoked).
#[utoipa::path(post, path = "/api/v1/users/{id}/activate", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = User), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn activate_user(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
) -> Result<axum::Json<User>, ApiError> {
    actor.require(Permission::UserManage)?;
    load(&state, &key).await?;
    let mut tx = Tx::new();
    let id_b = tx.bind(ids::record("user", &key));
    tx.push(format!(
        "UPDATE {id_b} SET active = true, updated_at = time::now()"
    ));
    tx.audit(
        &actor.audit(),
        "user.activate",
        Some(("user", &key)),
        serde_json::json!({}),
    );
    tx.run(&state.db).await?;
    crate::sync_host::scopes_changed(&state);
    Ok(axum::Json(load(&state, &key).await?.into()))
}

/// Set a new password for a user (given, or generated and shown once) and end their sessions.
#[utoipa::path(post, path = "/api/v1/users/{id}/reset-password", tag = "users", request_body = ResetPassword,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = PasswordReset), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn reset_password(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
    ApiJson(body): ApiJson<ResetPassword>,
) -> Result<axum::Json<PasswordReset>, ApiError> {
    actor.require(Permission::UserManage)?;
    load(&state, &key).await?;
    if let Some(p) = &body.password {
        validate::password(p, state.config.auth.min_password_length)
            .map_err(|m| ApiError::invalid_field("password", m))?;
    }
    let generated = body.password.is_none().then(generate_password);
    let hash = hash_password(
        body.password
            .clone()
            .or_else(|| generated.clone())
            .unwrap_or_default(),
    )
    .await?;
    set_password(
        &state,
        &actor.audit(),
        &key,
        &hash,
        SessionSelector::User(key.clone()),
        "user.reset_password",
    )
    .await?;
    Ok(axum::Json(PasswordReset {
        password: generated,
    }))
}

async fn set_password(
    state: &AppState,
    ctx: &AuditContext,
    key: &str,
    hash: &str,
    revoke: SessionSelector,
    action: &str,
) -> Result<(), ApiError> {
    let mut tx = Tx::new();
    let id_b = tx.bind(ids::record("user", key));
    let hash_b = tx.bind(hash.to_string());
    tx.push(format!(
        "UPDATE {id_b} SET password_hash = {hash_b}, updated_at = time::now()"
    ));
    revoke_sessions_in(&mut tx, &revoke, "password changed");
    tx.audit(
        ctx,
        action,
        Some(("user", key)),
        serde_json::json!({ "sessions": "revoked" }),
    );
    tx.run(&state.db).await?;
    Ok(())
}

/// Who am I: the caller's user, roles, permissions and data scope.
#[utoipa::path(get, path = "/api/v1/me", tag = "users",
    responses((status = 200, body = Me), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn me(actor: Actor) -> Result<axum::Json<Me>, ApiError> {
    let mut permissions: Vec<String> = actor
        .permissions
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    permissions.sort();
    Ok(axum::Json(Me {
        user: actor.user.clone().into(),
        roles: actor.roles.iter().cloned().map(Role::from).collect(),
        permissions,
        data_scope: actor.data_scope,
        session_id: actor.session_id.clone(),
        device_id: actor.device_id.clone(),
    }))
}

/// Change one's own password; every other session of the user ends.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "users", request_body = ChangePassword,
    responses((status = 204, description = "Changed"), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn change_password(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    if !verify_password(
        body.current_password.clone(),
        actor.user.password_hash.clone(),
    )
    .await
    {
        return Err(ApiError::invalid_field("current_password", "is wrong"));
    }
    validate::password(&body.new_password, state.config.auth.min_password_length)
        .map_err(|m| ApiError::invalid_field("new_password", m))?;
    let hash = hash_password(body.new_password.clone()).await?;
    set_password(
        &state,
        &actor.audit(),
        &actor.user_id,
        &hash,
        SessionSelector::UserExcept(actor.user_id.clone(), actor.session_id.clone()),
        "user.change_password",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
