//! The sync manifest: every document a user may see, with a digest of its heads, so a
//! reconnecting phone learns in one round trip what changed and what it lost access to (anything
//! it holds that is not listed, it drops).

use axum::extract::State;
use outpost_mobile::api::{Manifest, ManifestEntry, Problem, heads_digest};
use surrealdb::types::SurrealValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::error::ApiError;
use crate::platform::db::Query;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(manifest))
}

#[derive(Debug, SurrealValue)]
struct Row {
    doc_id: String,
    kind: String,
    heads: Option<Vec<String>>,
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
