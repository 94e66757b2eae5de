//! The access gate of sync connections: the same [`Access`] and [`Scope`] as every HTTP read
//! path, applied to documents through their projection's owner.
//!
//! [`Scope`]: crate::crm::identity::access::Scope

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_mobile::api::ManifestEntry;
use outpost_sync::{AccessGate, DocumentId, PeerIdentity, StorageError};
use surrealdb::types::SurrealValue;

use crate::crm::identity::access::{Access, Permission, sees_full_phones};
use crate::platform::db::{Db, Query};

/// Who holds a document: its owner, and for an event its attendees.
struct Holders {
    kind: String,
    owner: Option<String>,
    attendees: Vec<String>,
}

impl Holders {
    /// Whether the document can be served to `identity` as it is stored. A document cannot be
    /// masked (its history holds every value), so a customer whose phone numbers the field
    /// rules would mask for this reader is not synced to them at all; they read it over REST.
    fn served_in_full(&self, access: &Access, identity: &PeerIdentity) -> bool {
        self.kind != "customer"
            || sees_full_phones(
                &access.permissions,
                &identity.user_id,
                self.owner.as_deref(),
            )
    }
}

/// [`AccessGate`] backed by the identity module.
#[derive(Clone)]
pub struct ScopeGate {
    db: Db,
    /// Access per user, reused for a few seconds: a sync burst asks many times a second, while a
    /// role or department change may take that long to reach open connections.
    cache: Arc<Mutex<HashMap<String, CachedAccess>>>,
}

/// A user's access and when it was worked out (`None`: unknown or deactivated user).
type CachedAccess = (Instant, Option<Access>);

/// How long a user's access is reused by open sync connections.
const ACCESS_TTL: Duration = Duration::from_secs(5);

impl ScopeGate {
    /// A gate over `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Who a document belongs to and who is invited to it (from its projection), if the
    /// document exists.
    async fn holders(&self, id: &DocumentId) -> Option<Holders> {
        let kind: Option<String> = Query::new("(SELECT VALUE kind FROM ONLY $doc)")
            .bind(
                "doc",
                crate::platform::ids::record("sync_document", id.as_str()),
            )
            .take(&self.db, 0)
            .await
            .ok()?;
        let kind = kind?;
        match kind.as_str() {
            "customer" | "follow_up" | "task" => {
                #[derive(Debug, SurrealValue)]
                struct Owner {
                    owner: Option<String>,
                }
                let row: Option<Owner> = self.db.get(&kind, id.as_str()).await.ok()?;
                row.map(|r| Holders {
                    kind: kind.clone(),
                    owner: r.owner,
                    attendees: Vec::new(),
                })
            }
            "event" => {
                #[derive(Debug, SurrealValue)]
                struct EventHolders {
                    owner: Option<String>,
                    attendee_ids: Vec<String>,
                }
                let row: Option<EventHolders> = self.db.get("event", id.as_str()).await.ok()?;
                row.map(|r| Holders {
                    kind: kind.clone(),
                    owner: r.owner,
                    attendees: r.attendee_ids,
                })
            }
            _ => None,
        }
    }

    /// Whether `owner` shares their calendar with `user`.
    async fn shares_calendar(&self, owner: &str, user: &str) -> bool {
        let share: Option<String> = Query::new("(SELECT VALUE owner FROM ONLY $share)")
            .bind(
                "share",
                crate::platform::ids::record("calendar_share", &format!("{owner}:{user}")),
            )
            .take(&self.db, 0)
            .await
            .ok()
            .flatten();
        share.is_some()
    }

    /// Forgets every cached access: roles, departments or managers changed, and open
    /// connections must see the new scopes now rather than after the cache expires.
    pub fn forget_access(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    async fn access(&self, identity: &PeerIdentity) -> Option<Access> {
        if let Some((at, access)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&identity.user_id)
            && at.elapsed() < ACCESS_TTL
        {
            return access.clone();
        }
        let access = match Access::of_user(&self.db, &identity.user_id).await {
            Ok(found) => found.map(|(_, access)| access),
            Err(e) => {
                tracing::error!(error = %e, "cannot work out a sync peer's access");
                return None;
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < ACCESS_TTL);
        }
        cache.insert(identity.user_id.clone(), (Instant::now(), access.clone()));
        access
    }
}

impl AccessGate for ScopeGate {
    async fn may_read(&self, identity: &PeerIdentity, id: &DocumentId) -> bool {
        let (Some(access), Some(holders)) = (self.access(identity).await, self.holders(id).await)
        else {
            return false;
        };
        if !access.permissions.contains(&Permission::CustomerRead)
            || !holders.served_in_full(&access, identity)
        {
            return false;
        }
        let Some(owner) = holders.owner else {
            return false;
        };
        access.scope.contains(&owner)
            || holders.attendees.contains(&identity.user_id)
            || holders.kind == "event" && self.shares_calendar(&owner, &identity.user_id).await
    }

    async fn may_write(&self, identity: &PeerIdentity, id: &DocumentId) -> bool {
        // Only the owner's scope writes: attendees and colleagues a calendar is shared with read.
        let (Some(access), Some(holders)) = (self.access(identity).await, self.holders(id).await)
        else {
            return false;
        };
        access.permissions.contains(&Permission::CustomerRead)
            && access.permissions.contains(&Permission::CustomerWrite)
            && holders.served_in_full(&access, identity)
            && holders
                .owner
                .is_some_and(|owner| access.scope.contains(&owner))
    }

    async fn may_create(&self, identity: &PeerIdentity, _kind: &str) -> bool {
        self.access(identity)
            .await
            .is_some_and(|a| a.permissions.contains(&Permission::CustomerWrite))
    }

    async fn visible_documents(
        &self,
        identity: &PeerIdentity,
    ) -> Result<Vec<ManifestEntry>, StorageError> {
        match self.access(identity).await {
            Some(access) if access.permissions.contains(&Permission::CustomerRead) => {
                super::manifest::visible_documents(
                    &self.db,
                    &identity.user_id,
                    &access.scope,
                    &access.permissions,
                )
                .await
                .map_err(|e| StorageError::Failed(e.to_string()))
            }
            _ => Ok(Vec::new()),
        }
    }
}
