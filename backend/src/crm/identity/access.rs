//! Who is asking and what they may see: the [`Actor`] of every request, its permissions and its
//! data [`Scope`].
//!
//! This is the one place where roles, the department tree and the manager chain are turned into
//! a filter; every read path applies [`Scope::filter`] instead of deciding on its own.

use std::collections::{BTreeSet, HashSet};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::ApiError;
use crate::platform::audit::AuditContext;
use crate::platform::db::{Db, DbError, Query};
use crate::platform::http::{ClientAddress, RequestId};
use crate::platform::ids;

use super::model::{DeviceRow, RoleRow, SessionRow, UserRow};

/// Every permission a role can grant. Routes check these; nothing checks a role's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// See users within the data scope.
    UserRead,
    /// Create, edit, deactivate users and reset their passwords.
    UserManage,
    /// Create, rename, move and delete departments.
    DepartmentManage,
    /// Create and edit roles.
    RoleManage,
    /// See and revoke other users' devices.
    DeviceManage,
    /// Read the audit log.
    AuditRead,
    /// Read customers within the data scope.
    CustomerRead,
    /// Create and edit customers within the data scope.
    CustomerWrite,
    /// Export customers.
    CustomerExport,
    /// Configure the public pool's rules.
    PoolConfigure,
    /// See customers' phone numbers unmasked on customers one does not own.
    CustomerPhoneFull,
    /// Assign customers to reps and transfer them between reps.
    CustomerAssign,
    /// See the server's operational state (sync engine statistics, the job queue).
    SystemRead,
    /// Operate the server: retry and discard jobs.
    SystemManage,
}

impl Permission {
    /// Every permission, in catalogue order.
    pub const ALL: [Permission; 14] = [
        Permission::UserRead,
        Permission::UserManage,
        Permission::DepartmentManage,
        Permission::RoleManage,
        Permission::DeviceManage,
        Permission::AuditRead,
        Permission::CustomerRead,
        Permission::CustomerWrite,
        Permission::CustomerExport,
        Permission::PoolConfigure,
        Permission::CustomerPhoneFull,
        Permission::CustomerAssign,
        Permission::SystemRead,
        Permission::SystemManage,
    ];

    /// The stable name used in roles and error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Permission::UserRead => "user.read",
            Permission::UserManage => "user.manage",
            Permission::DepartmentManage => "department.manage",
            Permission::RoleManage => "role.manage",
            Permission::DeviceManage => "device.manage",
            Permission::AuditRead => "audit.read",
            Permission::CustomerRead => "customer.read",
            Permission::CustomerWrite => "customer.write",
            Permission::CustomerExport => "customer.export",
            Permission::PoolConfigure => "pool.configure",
            Permission::CustomerPhoneFull => "customer.phone_full",
            Permission::CustomerAssign => "customer.assign",
            Permission::SystemRead => "system.read",
            Permission::SystemManage => "system.manage",
        }
    }

    /// Parses a stable name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// How much of the company's data a role sees, from narrowest to widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataScope {
    /// Only records the user owns.
    Own,
    /// The user's and those of everyone below them in the manager chain.
    OwnAndSubordinates,
    /// Everyone's in the user's department.
    Department,
    /// Everyone's in the user's department and all departments below it.
    DepartmentAndChildren,
    /// The whole company.
    All,
}

impl DataScope {
    /// The stored name.
    pub const fn name(self) -> &'static str {
        match self {
            DataScope::Own => "own",
            DataScope::OwnAndSubordinates => "own_and_subordinates",
            DataScope::Department => "department",
            DataScope::DepartmentAndChildren => "department_and_children",
            DataScope::All => "all",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            DataScope::Own,
            DataScope::OwnAndSubordinates,
            DataScope::Department,
            DataScope::DepartmentAndChildren,
            DataScope::All,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// The resolved data scope of an actor: which owners' records it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    All,
    /// Records owned by one of these users (keys).
    Owners(BTreeSet<String>),
}

/// A scope turned into a SurrealQL condition and the binding it refers to.
#[derive(Debug, Clone)]
pub struct ScopeFilter {
    /// A condition to AND into a `WHERE` clause; `true` for [`Scope::All`].
    pub condition: String,
    /// The value of `$scope_owners` (empty for [`Scope::All`]).
    pub owners: Vec<String>,
}

impl Scope {
    /// The condition restricting `owner_field` (an expression yielding the owner's user key) to
    /// this scope. Bind [`ScopeFilter::owners`] as `$scope_owners`.
    pub fn filter(&self, owner_field: &str) -> ScopeFilter {
        match self {
            Scope::All => ScopeFilter {
                condition: "true".into(),
                owners: Vec::new(),
            },
            Scope::Owners(owners) => ScopeFilter {
                condition: format!("{owner_field} IN $scope_owners"),
                owners: owners.iter().cloned().collect(),
            },
        }
    }

    /// Whether a record owned by `owner` is visible.
    pub fn contains(&self, owner: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Owners(owners) => owners.contains(owner),
        }
    }

    /// Works out the scope of a user with `data_scope` from the department tree and the manager
    /// chain as they are now.
    pub async fn resolve(db: &Db, user: &UserRow, data_scope: DataScope) -> Result<Self, DbError> {
        let me = ids::key_of(&user.id);
        let owners: BTreeSet<String> = match data_scope {
            DataScope::All => return Ok(Scope::All),
            DataScope::Own => BTreeSet::from([me]),
            DataScope::OwnAndSubordinates => {
                let mut seen = BTreeSet::from([me.clone()]);
                let mut frontier = vec![me];
                // The manager graph is kept acyclic on write; the bound guards a corrupt store.
                for _ in 0..64 {
                    if frontier.is_empty() {
                        break;
                    }
                    let next: Vec<String> = Query::new(
                        "SELECT VALUE record::id(id) FROM user WHERE manager IN $frontier",
                    )
                    .bind("frontier", frontier)
                    .take(db, 0)
                    .await?;
                    frontier = next
                        .into_iter()
                        .filter(|k| seen.insert(k.clone()))
                        .collect();
                }
                seen
            }
            DataScope::Department => {
                let members: Vec<String> = Query::new(
                    "SELECT VALUE record::id(id) FROM user WHERE department = $department",
                )
                .bind("department", user.department.clone())
                .take(db, 0)
                .await?;
                members.into_iter().chain([me]).collect()
            }
            DataScope::DepartmentAndChildren => {
                let members: Vec<String> = Query::new(
                    "LET $departments = array::union([$department], \
                        (SELECT VALUE record::id(id) FROM department WHERE ancestors CONTAINS $department));
                     SELECT VALUE record::id(id) FROM user WHERE department IN $departments;",
                )
                .bind("department", user.department.clone())
                .take(db, 1)
                .await?;
                members.into_iter().chain([me]).collect()
            }
        };
        Ok(Scope::Owners(owners))
    }
}

/// The authenticated caller of a request: user, roles, permissions, device and data scope.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The user's key.
    pub user_id: String,
    /// The user as stored.
    pub user: UserRow,
    /// The user's roles.
    pub roles: Vec<RoleRow>,
    /// The union of the roles' permissions.
    pub permissions: HashSet<Permission>,
    /// The widest data scope among the roles.
    pub data_scope: DataScope,
    /// What that data scope resolves to right now.
    pub scope: Scope,
    /// The session the access token belongs to.
    pub session_id: String,
    /// The device the session is bound to.
    pub device_id: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The client address.
    pub address: Option<String>,
}

impl Actor {
    /// Fails with 403 unless the actor has `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(&permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(permission.name()))
        }
    }

    /// Whether the actor has `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// Whether the actor sees a customer owned by `owner` with its phone numbers in full.
    pub fn sees_full_phones(&self, owner: Option<&str>) -> bool {
        sees_full_phones(&self.permissions, &self.user_id, owner)
    }

    /// The audit context of changes this actor makes over HTTP.
    pub fn audit(&self) -> AuditContext {
        AuditContext {
            actor: Some(self.user_id.clone()),
            channel: "api".into(),
            device: self.device_id.clone(),
            request_id: self.request_id.clone(),
            address: self.address.clone(),
        }
    }
}

/// The field rule on phone numbers, in the one place every read path asks it: a customer's
/// phones (its own and its contacts') are shown in full to its owner and to holders of
/// `customer.phone_full`, and masked for everyone else in scope. REST masks them; sync, which
/// cannot mask a document's history, serves such a customer's document only to those who see
/// it in full.
pub fn sees_full_phones(
    permissions: &HashSet<Permission>,
    user_id: &str,
    owner: Option<&str>,
) -> bool {
    owner == Some(user_id) || permissions.contains(&Permission::CustomerPhoneFull)
}

#[derive(Debug, SurrealValue)]
struct ActorRows {
    user: Option<UserRow>,
    session: Option<SessionRow>,
    device: Option<DeviceRow>,
    roles: Vec<RoleRow>,
}

/// The bearer token of a request, if any.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What a user may do and see, worked out from their roles: shared by HTTP requests and sync
/// connections.
#[derive(Debug, Clone)]
pub struct Access {
    /// The union of the roles' permissions.
    pub permissions: HashSet<Permission>,
    /// The widest data scope among the roles.
    pub data_scope: DataScope,
    /// What that data scope resolves to right now.
    pub scope: Scope,
}

impl Access {
    /// Works out the access of `user` holding `roles`.
    pub async fn of(db: &Db, user: &UserRow, roles: &[RoleRow]) -> Result<Self, DbError> {
        let permissions: HashSet<Permission> = roles
            .iter()
            .flat_map(|r| r.permissions.iter())
            .filter_map(|p| Permission::parse(p))
            .collect();
        let data_scope = roles
            .iter()
            .filter_map(|r| DataScope::parse(&r.data_scope))
            .max()
            .unwrap_or(DataScope::Own);
        let scope = Scope::resolve(db, user, data_scope).await?;
        Ok(Self {
            permissions,
            data_scope,
            scope,
        })
    }

    /// The access of an active user by id; `None` for an unknown or deactivated user.
    pub async fn of_user(db: &Db, user_id: &str) -> Result<Option<(UserRow, Self)>, DbError> {
        #[derive(Debug, SurrealValue)]
        struct Rows {
            user: Option<UserRow>,
            roles: Vec<RoleRow>,
        }
        let rows: Option<Rows> = Query::new(
            "LET $u = (SELECT * FROM ONLY $user);
             RETURN { user: $u, roles: IF $u THEN (SELECT * FROM role WHERE record::id(id) IN $u.roles) ELSE [] END };",
        )
        .bind("user", ids::record("user", user_id))
        .take(db, 1)
        .await?;
        let Some(Rows {
            user: Some(user),
            roles,
        }) = rows
        else {
            return Ok(None);
        };
        if !user.active {
            return Ok(None);
        }
        let access = Self::of(db, &user, &roles).await?;
        Ok(Some((user, access)))
    }
}

impl Actor {
    /// Authenticates an access token: signature, expiry, and that user, session and device are
    /// all still live.
    pub async fn authenticate(
        state: &AppState,
        token: &str,
        request_id: Option<String>,
        address: Option<String>,
    ) -> Result<Self, ApiError> {
        let claims = state.keys.verify(token)?;
        let revoked = || ApiError::Unauthorized("the session has ended; log in again".into());
        let user_id = ids::parse_key(&claims.sub).map_err(|_| revoked())?;
        let session_id = ids::parse_key(&claims.sid).map_err(|_| revoked())?;
        let device_key = claims
            .dev
            .as_deref()
            .map(ids::parse_key)
            .transpose()
            .map_err(|_| revoked())?;

        let rows: Option<ActorRows> = Query::new(
            "LET $u = (SELECT * FROM ONLY $user);
             RETURN {
                user: $u,
                session: (SELECT * FROM ONLY $sess),
                device: IF $device THEN (SELECT * FROM ONLY $device) ELSE NONE END,
                roles: IF $u THEN (SELECT * FROM role WHERE record::id(id) IN $u.roles) ELSE [] END,
             };",
        )
        .bind("user", ids::record("user", &user_id))
        .bind("sess", ids::record("session", &session_id))
        .bind(
            "device",
            device_key.as_ref().map(|d| ids::record("device", d)),
        )
        .take(&state.db, 1)
        .await?;
        let rows = rows.ok_or_else(revoked)?;
        let user = rows.user.ok_or_else(revoked)?;
        let session = rows.session.ok_or_else(revoked)?;
        if !user.active {
            return Err(ApiError::Unauthorized("this account is deactivated".into()));
        }
        if session.revoked_at.is_some() || session.user != user_id {
            return Err(revoked());
        }
        if device_key.is_some() {
            match &rows.device {
                Some(device) if device.revoked_at.is_none() && device.user == user_id => {}
                _ => {
                    return Err(ApiError::Unauthorized(
                        "this device has been revoked".into(),
                    ));
                }
            }
        }
        let Access {
            permissions,
            data_scope,
            scope,
        } = Access::of(&state.db, &user, &rows.roles).await?;
        Ok(Actor {
            user_id,
            user,
            roles: rows.roles,
            permissions,
            data_scope,
            scope,
            session_id,
            device_id: device_key,
            request_id,
            address,
        })
    }
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)
            .ok_or_else(|| {
                ApiError::Unauthorized("this needs `Authorization: Bearer <access token>`".into())
            })?
            .to_string();
        let RequestId(request_id) = RequestId::from_request_parts(parts, state)
            .await
            .unwrap_or_default();
        let ClientAddress(address) = ClientAddress::from_request_parts(parts, state)
            .await
            .unwrap_or_default();
        Actor::authenticate(state, &token, request_id, address).await
    }
}
