//! `GET /api/v1/admin/sync`: what the sync engine holds right now, for operators.

use axum::extract::State;
use outpost_mobile::api::Problem;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::error::ApiError;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sync_stats))
}

/// The sync engine's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncStats {
    /// Documents held in memory (bounded by `sync.cache_documents`, plus those in use).
    pub cached_documents: usize,
    /// The configured bound.
    pub cache_capacity: usize,
    /// Connected peers.
    pub connected_peers: usize,
    /// Documents read from storage one at a time since start (a first use).
    pub documents_loaded_singly: u64,
    /// Documents read from storage in batches since start (work over many documents, such as
    /// the pool sweep, reads ahead this way; if this stays at zero, the batch read is failing
    /// and the log says why).
    pub documents_loaded_in_batches: u64,
    /// Server changes (commands, edits over REST, sweeps) made again since start because
    /// another node sharing the database had changed the document after this node loaded it.
    pub changes_redone: u64,
    /// Transactions run against the store since start: groups of document commits merged
    /// into one, and commits run alone (a group that fails is run again one by one).
    pub group_commits: u64,
    /// Document commits answered since start (stored, or refused because the document had
    /// changed on another node or a device's actor was taken); divided by `group_commits`, how
    /// well they group.
    pub document_commits: u64,
    /// Groups that failed as a whole (a document changed on another node, a device's actor
    /// taken) and were run again one commit at a time.
    pub group_commits_retried_singly: u64,
    /// Seconds spent running the group commits (their statements and the store's commit),
    /// summed: divided by `group_commits`, the mean time a group takes.
    pub group_commit_seconds: f64,
    /// Seconds document commits waited from their arrival to their result (queue and run),
    /// summed: divided by `document_commits`, what a change waits on the store.
    pub document_commit_wait_seconds: f64,
}

/// Sync engine statistics. Needs `system.read`.
#[utoipa::path(get, path = "/api/v1/admin/sync", tag = "sync",
    responses((status = 200, body = SyncStats), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn sync_stats(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<axum::Json<SyncStats>, ApiError> {
    actor.require(Permission::SystemRead)?;
    let (singly, in_batches) = state.sync.documents_loaded();
    let commits = state.sync.storage().commit_stats();
    Ok(axum::Json(SyncStats {
        group_commits: commits.groups,
        document_commits: commits.transactions,
        group_commits_retried_singly: commits.retried_singly,
        group_commit_seconds: commits.running_micros as f64 / 1e6,
        document_commit_wait_seconds: commits.waiting_micros as f64 / 1e6,
        documents_loaded_singly: singly,
        documents_loaded_in_batches: in_batches,
        changes_redone: state.sync.changes_redone(),
        cached_documents: state.sync.cached_documents(),
        cache_capacity: state.config.sync.cache_documents,
        connected_peers: state.sync.connected_peers(),
    }))
}
