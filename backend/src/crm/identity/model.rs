//! Identity records as stored and as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::ToSchema;

use crate::platform::ids;

use super::access::DataScope;

/// A department row.
#[derive(Debug, Clone, SurrealValue)]
pub struct DepartmentRow {
    /// Record id.
    pub id: RecordId,
    /// Display name.
    pub name: String,
    /// Parent department key; `None` for the root.
    pub parent: Option<String>,
    /// Keys of all ancestors, root first.
    pub ancestors: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A department as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Department {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Parent department; absent for the root.
    pub parent_id: Option<String>,
    /// Ancestors' ids, root first.
    pub ancestor_ids: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<DepartmentRow> for Department {
    fn from(row: DepartmentRow) -> Self {
        Self {
            id: ids::key_of(&row.id),
            name: row.name,
            parent_id: row.parent,
            ancestor_ids: row.ancestors,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A role row.
#[derive(Debug, Clone, SurrealValue)]
pub struct RoleRow {
    /// Record id.
    pub id: RecordId,
    /// Unique name.
    pub name: String,
    /// One of the [`DataScope`] names.
    pub data_scope: String,
    /// Permission names.
    pub permissions: Vec<String>,
    /// Created by the first start; cannot be deleted.
    pub builtin: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A role as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Role {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// How much data its holders see.
    pub data_scope: DataScope,
    /// Permissions it grants.
    pub permissions: Vec<String>,
    /// Created by the first start; cannot be deleted.
    pub builtin: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<RoleRow> for Role {
    fn from(row: RoleRow) -> Self {
        Self {
            id: ids::key_of(&row.id),
            name: row.name,
            data_scope: DataScope::parse(&row.data_scope).unwrap_or(DataScope::Own),
            permissions: row.permissions,
            builtin: row.builtin,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A user row.
#[derive(Debug, Clone, SurrealValue)]
pub struct UserRow {
    /// Record id.
    pub id: RecordId,
    /// Login email, lower-case.
    pub email: Option<String>,
    /// Login phone, normalized.
    pub phone: Option<String>,
    /// Display name.
    pub name: String,
    /// Department key.
    pub department: String,
    /// Manager's user key.
    pub manager: Option<String>,
    /// Role keys.
    pub roles: Vec<String>,
    /// IANA time zone.
    pub time_zone: String,
    /// May log in.
    pub active: bool,
    /// Argon2 PHC string.
    pub password_hash: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Id.
    pub id: String,
    /// Login email.
    pub email: Option<String>,
    /// Login phone.
    pub phone: Option<String>,
    /// Display name.
    pub name: String,
    /// Department.
    pub department_id: String,
    /// Manager.
    pub manager_id: Option<String>,
    /// Roles.
    pub role_ids: Vec<String>,
    /// IANA time zone for reminders and digests.
    pub time_zone: String,
    /// May log in.
    pub active: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: ids::key_of(&row.id),
            email: row.email,
            phone: row.phone,
            name: row.name,
            department_id: row.department,
            manager_id: row.manager,
            role_ids: row.roles,
            time_zone: row.time_zone,
            active: row.active,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A session row: one refresh-token family.
#[derive(Debug, Clone, SurrealValue)]
pub struct SessionRow {
    /// Record id.
    pub id: RecordId,
    /// User key.
    pub user: String,
    /// Device key, when bound.
    pub device: Option<String>,
    /// Started.
    pub created_at: DateTime<Utc>,
    /// Refresh tokens of this family stop working then.
    pub expires_at: DateTime<Utc>,
    /// Ended.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it ended.
    pub revoke_reason: Option<String>,
}

/// A device row.
#[derive(Debug, Clone, SurrealValue)]
pub struct DeviceRow {
    /// Record id.
    pub id: RecordId,
    /// Owner's user key.
    pub user: String,
    /// Display name, e.g. "Li Lei's iPhone".
    pub name: String,
    /// `ios`, `android`, `web`, `other`.
    pub platform: String,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A device as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Device {
    /// Id; pass as `device_id` when logging in to bind the session to it.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// `ios`, `android`, `web` or `other`.
    pub platform: String,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Revoked; a revoked device's tokens stop working at once.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<DeviceRow> for Device {
    fn from(row: DeviceRow) -> Self {
        Self {
            id: ids::key_of(&row.id),
            user_id: row.user,
            name: row.name,
            platform: row.platform,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}
