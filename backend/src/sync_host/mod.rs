//! Plugs SurrealDB and the permission system into the sync engine, and serves `GET /sync`.

pub mod gate;
pub mod manifest;
pub mod routes;
pub mod stats;
pub mod storage;

use outpost_sync::{Engine, EngineConfig};

use crate::platform::db::{Db, DbError, Query};

/// The engine as the server runs it.
pub type SyncEngine = Engine<storage::SurrealSyncStorage, gate::ScopeGate>;

/// Builds the engine over `db`, answering as the store's stable sync peer id (created on first
/// use), so that phones' saved sync states stay valid across restarts.
pub async fn engine(
    db: &Db,
    config: &crate::config::SyncConfig,
    clock: crate::platform::clock::Clock,
) -> Result<SyncEngine, DbError> {
    let candidate = format!("outpost-{}", crate::platform::ids::new_key());
    let query = Query::new(
        "(UPSERT setting:sync_peer_id SET value = value ?? $candidate RETURN AFTER).value",
    )
    .bind("candidate", candidate);
    let peer_id: Option<String> = db.retry(|| query.take(db, 0)).await?;
    let peer_id = peer_id.ok_or_else(|| DbError::Unexpected("no sync peer id".into()))?;
    Ok(Engine::new(
        storage::SurrealSyncStorage::new(db.clone(), clock),
        gate::ScopeGate::new(db.clone()),
        peer_id,
        EngineConfig {
            max_frame_bytes: config.max_frame_bytes,
            cache_capacity: config.cache_documents.max(1),
        },
    ))
}

/// Who sees what changed outside any document (a user moved department, got another manager or
/// role, was deactivated; a role's scope changed): open sync connections pick up the new scopes
/// at once, and open manifest documents are refreshed.
pub fn scopes_changed(state: &crate::app::AppState) {
    state.sync.gate().forget_access();
    state.sync.manifests_stale();
}
