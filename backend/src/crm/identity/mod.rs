//! Identity: the company, departments, users, roles, devices, and who may do what.

pub mod access;
pub mod auth;
pub mod bootstrap;
pub mod departments;
pub mod devices;
pub mod model;
pub mod roles;
pub mod users;
pub mod validate;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// Every identity route.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::routes())
        .merge(departments::routes())
        .merge(roles::routes())
        .merge(users::routes())
        .merge(devices::routes())
}
