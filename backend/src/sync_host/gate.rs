//! The access gate of sync connections: the same [`Access`] and [`Scope`] as every HTTP read
//! path, applied to documents through their projection's owner.
//!
//! [`Scope`]: crate::crm::identity::access::Scope

use outpost_sync::{AccessGate, DocumentId, PeerIdentity};
use surrealdb::types::SurrealValue;

use crate::crm::identity::access::{Access, Permission};
use crate::platform::db::{Db, Query};

/// [`AccessGate`] backed by the identity module.
#[derive(Clone)]
pub struct ScopeGate {
    db: Db,
}

impl ScopeGate {
    /// A gate over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The owner of a document (from its projection), if the document exists.
    async fn owner(&self, id: &DocumentId) -> Option<Option<String>> {
        #[derive(Debug, SurrealValue)]
        struct Owner {
            owner: Option<String>,
        }
        let kind: Option<String> = Query::new("(SELECT VALUE kind FROM ONLY $doc)")
            .bind(
                "doc",
                crate::platform::ids::record("sync_document", id.as_str()),
            )
            .take(&self.db, 0)
            .await
            .ok()?;
        let kind = kind?;
        if !["customer", "follow_up"].contains(&kind.as_str()) {
            return None;
        }
        let row: Option<Owner> = self.db.get(&kind, id.as_str()).await.ok()?;
        row.map(|r| r.owner)
    }

    async fn access(&self, identity: &PeerIdentity) -> Option<Access> {
        match Access::of_user(&self.db, &identity.user_id).await {
            Ok(found) => found.map(|(_, access)| access),
            Err(e) => {
                tracing::error!(error = %e, "cannot work out a sync peer's access");
                None
            }
        }
    }
}

impl AccessGate for ScopeGate {
    async fn may_read(&self, identity: &PeerIdentity, id: &DocumentId) -> bool {
        let (Some(access), Some(owner)) = (self.access(identity).await, self.owner(id).await)
        else {
            return false;
        };
        access.permissions.contains(&Permission::CustomerRead)
            && owner.is_some_and(|owner| access.scope.contains(&owner))
    }

    async fn may_write(&self, identity: &PeerIdentity, id: &DocumentId) -> bool {
        self.may_read(identity, id).await
            && self
                .access(identity)
                .await
                .is_some_and(|a| a.permissions.contains(&Permission::CustomerWrite))
    }

    async fn may_create(&self, identity: &PeerIdentity, _kind: &str) -> bool {
        self.access(identity)
            .await
            .is_some_and(|a| a.permissions.contains(&Permission::CustomerWrite))
    }
}
