//! Devices: phones (and other clients) registered by their users, which sessions can be bound
//! to and which an admin can revoke. The sync engine binds peers to (user, device).

use axum::extract::State;
use axum::http::StatusCode;
use outpost_mobile::api::{FieldError, Page, Problem};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::platform::db::Query;
use crate::platform::db::Tx;
use crate::platform::http::{ApiJson, ApiQuery, Order, PageParams, PathKey, fetch_page};
use crate::platform::ids;

use super::access::{Actor, Permission};
use super::auth::{SessionSelector, revoke_sessions_in};
use super::model::{Device, DeviceRow};
use super::validate;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices, register_device))
        .routes(routes!(revoke_device))
}

/// The platforms a device can declare.
const PLATFORMS: [&str; 4] = ["ios", "android", "web", "other"];

/// `POST /api/v1/devices`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    /// Display name, e.g. "Li Lei's iPhone".
    pub name: String,
    /// `ios`, `android`, `web` or `other`.
    pub platform: String,
}

/// Filters of the device list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceFilter {
    /// Another user's devices (needs `device.manage`); default: the caller's own.
    pub user_id: Option<String>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Register a device for the caller. Log in again with its `device_id` to bind tokens to it.
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = RegisterDevice,
    responses((status = 201, body = Device), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn register_device(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<RegisterDevice>,
) -> Result<(StatusCode, axum::Json<Device>), ApiError> {
    let mut errors = Vec::new();
    let name = validate::display_name(&body.name)
        .map_err(|m| {
            errors.push(FieldError {
                field: "name".into(),
                message: m,
            })
        })
        .ok();
    let platform = body.platform.trim().to_lowercase();
    if !PLATFORMS.contains(&platform.as_str()) {
        errors.push(FieldError {
            field: "platform".into(),
            message: format!("must be one of {}", PLATFORMS.join(", ")),
        });
    }
    let Some(name) = name.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let key = ids::new_key();
    let mut tx = Tx::new();
    let id = tx.bind(ids::record("device", &key));
    let user = tx.bind(actor.user_id.clone());
    let name_b = tx.bind(name.clone());
    let platform_b = tx.bind(platform.clone());
    tx.push(format!("CREATE {id} SET user = {user}, name = {name_b}, platform = {platform_b}, created_at = time::now(), revoked_at = NONE"));
    tx.audit(
        &actor.audit(),
        "device.register",
        Some(("device", &key)),
        serde_json::json!({ "name": name, "platform": platform }),
    );
    tx.run(&state.db).await?;
    let row: Option<DeviceRow> = state.db.get("device", &key).await?;
    let row = row.ok_or_else(|| ApiError::Internal("device vanished after creation".into()))?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// The caller's devices, or another user's with `device.manage`.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceFilter),
    responses((status = 200, body = Page<Device>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn list_devices(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(filter): ApiQuery<DeviceFilter>,
) -> Result<axum::Json<Page<Device>>, ApiError> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .validate()?;
    let user = match &filter.user_id {
        Some(raw) => {
            let key = ids::parse_key(raw)?;
            if key != actor.user_id {
                actor.require(Permission::DeviceManage)?;
            }
            key
        }
        None => actor.user_id.clone(),
    };
    let filter = Query::new("user = $user").bind("user", user);
    let page = fetch_page::<DeviceRow, Device>(
        &state.db,
        "device",
        filter,
        &page,
        Order::OldestFirst,
        |d| d.id.clone(),
    )
    .await?;
    Ok(axum::Json(page))
}

/// Revoke a device: every session bound to it ends at once. Users may revoke their own devices;
/// revoking someone else's needs `device.manage`.
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = Device), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn revoke_device(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
) -> Result<axum::Json<Device>, ApiError> {
    let row: DeviceRow = state
        .db
        .get("device", &key)
        .await?
        .ok_or(ApiError::NotFound("device"))?;
    if row.user != actor.user_id && !actor.can(Permission::DeviceManage) {
        return Err(ApiError::NotFound("device"));
    }
    if row.revoked_at.is_none() {
        let mut tx = Tx::new();
        let id_b = tx.bind(ids::record("device", &key));
        tx.push(format!("UPDATE {id_b} SET revoked_at = time::now()"));
        revoke_sessions_in(
            &mut tx,
            &SessionSelector::Device(key.clone()),
            "device revoked",
        );
        tx.audit(
            &actor.audit(),
            "device.revoke",
            Some(("device", &key)),
            serde_json::json!({ "user_id": row.user }),
        );
        tx.run(&state.db).await?;
    }
    let row: Option<DeviceRow> = state.db.get("device", &key).await?;
    Ok(axum::Json(row.ok_or(ApiError::NotFound("device"))?.into()))
}
