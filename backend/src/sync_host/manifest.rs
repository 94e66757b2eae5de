//! The sync manifest: every document a user may see, with a digest of its heads, so a
//! reconnecting phone learns in one round trip what changed and what it lost access to (anything
//! it holds that is not listed, it drops).

use axum::extract::State;
use outpost_mobile::api::{Manifest, ManifestEntry, Problem, heads_digest};
use surrealdb::types::SurrealValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use outpost_mobile::manifest::manifest_document_id;

use std::collections::HashSet;

use crate::crm::identity::access::{Actor, Permission, Scope, sees_full_phones};
use crate::error::ApiError;
use crate::platform::db::{Db, DbError, Query};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(manifest))
}

#[derive(Debug, SurrealValue)]
struct Row {
    doc_id: String,
    kind: String,
    heads: Option<Vec<String>>,
}

/// Every document `user_id` may sync, with the digest of its heads, ordered by id: the content
/// of the manifest, as a document and over REST. That is every document in `scope`, except
/// the customers whose phone numbers the user would see masked (see [`sees_full_phones`]):
/// those are read over REST. (Callers check `customer.read`.)
pub async fn visible_documents(
    db: &Db,
    user_id: &str,
    scope: &Scope,
    permissions: &HashSet<Permission>,
) -> Result<Vec<ManifestEntry>, DbError> {
    let holders: Vec<String> = match scope {
        Scope::All => Vec::new(),
        Scope::Owners(owners) => owners
            .iter()
            .map(|o| crate::crm::customers::owner_holder(o))
            .collect(),
    };
    let scope_is_all = matches!(scope, Scope::All);
    let scope = scope.filter("owner");
    // Phones in full: every customer in scope, or only the user's own. Outside an all-seeing
    // scope, the customers in scope are those its owners hold (`(holder, key)` finds them);
    // customers in a pool are read over REST through their pool.
    let customers = match (sees_full_phones(permissions, user_id, None), scope_is_all) {
        (true, true) => "state != 'deleted'".to_string(),
        (true, false) => "holder IN $scope_holders".to_string(),
        (false, _) => format!("holder = $my_holder AND {}", scope.condition),
    };
    let rows: Vec<Row> = Query::new(format!(
        "SELECT record::id(id) AS doc_id, 'customer' AS kind, (SELECT VALUE heads FROM ONLY type::record('sync_document', record::id($parent.id))) AS heads
           FROM customer WHERE {customers};
         SELECT record::id(id) AS doc_id, 'follow_up' AS kind, (SELECT VALUE heads FROM ONLY type::record('sync_document', record::id($parent.id))) AS heads
           FROM follow_up WHERE {cond} AND state != 'deleted';
         SELECT record::id(id) AS doc_id, 'task' AS kind, (SELECT VALUE heads FROM ONLY type::record('sync_document', record::id($parent.id))) AS heads
           FROM task WHERE {cond} AND state != 'deleted';
         SELECT record::id(id) AS doc_id, 'event' AS kind, (SELECT VALUE heads FROM ONLY type::record('sync_document', record::id($parent.id))) AS heads
           FROM event WHERE {events};
         ",
        cond = scope.condition,
        events = crate::crm::events::visible_sql(&scope.condition),
    ))
    .bind("scope_owners", scope.owners)
    .bind("me", user_id.to_string())
    .bind("scope_holders", holders)
    .bind("my_holder", crate::crm::customers::owner_holder(user_id))
    .run(db)
    .await
    .and_then(|mut r| {
        let mut rows: Vec<Row> = r.take(0)?;
        for index in 1..4 {
            let more: Vec<Row> = r.take(index)?;
            rows.extend(more);
        }
        Ok(rows)
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
    Ok(documents)
}

/// The caller's sync manifest. The same content is the user's manifest document (its id is
/// `doc_id`), which a connected client keeps open to have changes pushed.
#[utoipa::path(get, path = "/api/v1/sync/manifest", tag = "sync",
    responses((status = 200, body = Manifest), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn manifest(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<axum::Json<Manifest>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let documents =
        visible_documents(&state.db, &actor.user_id, &actor.scope, &actor.permissions).await?;
    Ok(axum::Json(Manifest {
        user_id: actor.user_id.clone(),
        doc_id: manifest_document_id(&actor.user_id).to_string(),
        documents,
    }))
}
