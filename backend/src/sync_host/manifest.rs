//! The sync manifest: every document a user may see, with a digest of its heads, so a
//! reconnecting phone learns in one round trip what changed and what it lost access to (anything
//! it holds that is not listed, it drops).

use axum::extract::State;
use outpost_mobile::api::Problem;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use surrealdb::types::SurrealValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::error::ApiError;
use crate::platform::db::Query;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(manifest))
}

/// One document in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ManifestEntry {
    /// The automerge-repo document id.
    pub doc_id: String,
    /// The record type (`customer`, `follow_up`).
    #[serde(rename = "type")]
    pub kind: String,
    /// SHA-256 of the document's sorted heads: equal digests mean nothing changed.
    pub heads_digest: String,
}

/// The documents a user may see.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    /// The user the manifest is for.
    pub user_id: String,
    /// Every visible document, ordered by id.
    pub documents: Vec<ManifestEntry>,
}

#[derive(Debug, SurrealValue)]
struct Row {
    doc_id: String,
    kind: String,
    heads: Option<Vec<String>>,
}

/// Digest of a document's heads as the manifest shows it.
pub fn heads_digest(heads: &[String]) -> String {
    let mut sorted = heads.to_vec();
    sorted.sort();
    Sha256::digest(sorted.join(",").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The caller's sync manifest.
#[utoipa::path(get, path = "/api/v1/sync/manifest", tag = "sync",
    responses((status = 200, body = Manifest), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn manifest(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<axum::Json<Manifest>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let scope = actor.scope.filter("owner");
    let rows: Vec<Row> = Query::new(format!(
        "SELECT record::id(id) AS doc_id, 'customer' AS kind, (SELECT VALUE heads FROM ONLY type::record('sync_document', record::id($parent.id))) AS heads
           FROM customer WHERE {cond} AND state != 'deleted';
         SELECT record::id(id) AS doc_id, 'follow_up' AS kind, (SELECT VALUE heads FROM ONLY type::record('sync_document', record::id($parent.id))) AS heads
           FROM follow_up WHERE {cond} AND state != 'deleted';
         ",
        cond = scope.condition
    ))
    .bind("scope_owners", scope.owners)
    .run(&state.db)
    .await
    .and_then(|mut r| {
        let mut customers: Vec<Row> = r.take(0)?;
        let follow_ups: Vec<Row> = r.take(1)?;
        customers.extend(follow_ups);
        Ok(customers)
    })?;
    let mut documents: Vec<ManifestEntry> = rows
        .into_iter()
        .map(|r| ManifestEntry {
            heads_digest: heads_digest(&r.heads.unwrap_or_default()),
            doc_id: r.doc_id,
            kind: r.kind,
        })
        .collect();
    documents.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
    Ok(axum::Json(Manifest {
        user_id: actor.user_id.clone(),
        documents,
    }))
}
