//! What every synced record's routes share: who the author of a change is, how engine refusals
//! read as API errors, and document ids in paths.

use outpost_mobile::api::FieldError;
use outpost_sync::{Author, ChangeError, DocumentId, PeerIdentity};

use crate::crm::identity::access::Actor;
use crate::error::ApiError;

/// The author of a change made over HTTP.
pub fn author(actor: &Actor) -> Author {
    Author {
        identity: PeerIdentity {
            user_id: actor.user_id.clone(),
            device_id: actor.device_id.clone(),
        },
        channel: "api",
        request_id: actor.request_id.clone(),
        bulk: false,
    }
}

/// Maps an engine refusal to the API's error; `kind` names the record in a 404.
pub fn change_error(kind: &'static str, e: ChangeError) -> ApiError {
    match e {
        ChangeError::NotFound => ApiError::NotFound(kind),
        ChangeError::Invalid(violations) => ApiError::Validation(
            violations
                .into_iter()
                .map(|v| FieldError {
                    field: v.field,
                    message: v.message,
                })
                .collect(),
        ),
        ChangeError::Malformed(why) => ApiError::Internal(why),
        ChangeError::Storage(outpost_sync::StorageError::Stale(_)) => ApiError::Conflict(format!(
            "the {kind} kept changing on other nodes while this change was made; try again"
        )),
        ChangeError::Storage(e) => ApiError::Internal(e.to_string()),
    }
}

/// A document id from a path: 400 unless it is one.
pub fn parse_doc_id(raw: &str) -> Result<DocumentId, ApiError> {
    DocumentId::parse(raw).ok_or_else(|| ApiError::InvalidId(raw.chars().take(64).collect()))
}

/// Tells "absent" (`None`) from "null" (`Some(None)`) in PATCH bodies.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// A projection row of a synced record: it has an owner and a state, which decide visibility.
pub trait Projection: surrealdb::types::SurrealValue {
    /// The projection table (also the document kind).
    const TABLE: &'static str;
    /// The record's name in a 404.
    const NAME: &'static str;
    /// The owning user.
    fn owner(&self) -> Option<&str>;
    /// `owned`, `pool` or `deleted`.
    fn state(&self) -> &str;
}

/// One record the actor may see (in scope, not deleted); otherwise the same 404 as missing.
pub async fn visible<R: Projection, T: From<R>>(
    state: &crate::app::AppState,
    actor: &Actor,
    id: &DocumentId,
) -> Result<T, ApiError> {
    let row: Option<R> = state.db.get(R::TABLE, id.as_str()).await?;
    match row {
        Some(row) if may_see(&row, actor) => Ok(row.into()),
        _ => Err(ApiError::NotFound(R::NAME)),
    }
}

/// Whether the actor may see a record: its owner is in the actor's scope and it is not deleted.
fn may_see<R: Projection>(row: &R, actor: &Actor) -> bool {
    row.owner().is_some_and(|o| actor.scope.contains(o)) && row.state() != "deleted"
}

/// The newest `n` records of `R` about `customer` that the actor may see, newest first: read
/// forward through the table's `(customer, timeline_key)` index, whose key is the record's
/// time as a [`crate::platform::ids::newest_first_key`] (a backward read of a time index
/// would cost the size of the store's in-memory table).
///
/// Visibility (scope, not deleted) is checked here rather than in the query: SurrealDB 3.3
/// applies a condition beside the index only after reading the whole index range, so a key
/// account with years of visits would be read whole for its newest hundred. A read that loses
/// rows to the check is widened until it has `n` or the customer has no more.
pub async fn newest_visible_about<R: Projection>(
    db: &crate::platform::db::Db,
    actor: &Actor,
    customer: &str,
    n: usize,
) -> Result<Vec<R>, crate::platform::db::DbError> {
    let query = crate::platform::db::Query::new(format!(
        "SELECT * FROM {} WHERE customer = $customer ORDER BY timeline_key ASC LIMIT $limit",
        R::TABLE
    ))
    .bind("customer", customer.to_string());
    let mut limit = n.max(1);
    loop {
        let rows: Vec<R> = query
            .clone()
            .bind("limit", i64::try_from(limit).unwrap_or(i64::MAX))
            .take(db, 0)
            .await?;
        let exhausted = rows.len() < limit;
        let visible: Vec<R> = rows
            .into_iter()
            .filter(|r| may_see(r, actor))
            .take(n)
            .collect();
        if visible.len() == n || exhausted {
            return Ok(visible);
        }
        limit = limit.saturating_mul(4);
    }
}

/// One page of the records the actor may see that also match `filter` (a condition and its
/// bindings), oldest first.
pub async fn list_visible<R: Projection, T: From<R>>(
    state: &crate::app::AppState,
    actor: &Actor,
    filter: crate::platform::db::Query,
    page: crate::platform::http::PageParams,
    id_of: impl Fn(&T) -> String,
) -> Result<outpost_mobile::api::Page<T>, ApiError> {
    let page = page.validate_any()?;
    let scope = actor.scope.filter("owner");
    let query = crate::platform::db::Query::conditions()
        .and(&scope.condition)
        .and("state != 'deleted'")
        .bind("scope_owners", scope.owners);
    let query = query.and_query(filter);
    Ok(crate::platform::http::fetch_page::<R, T>(
        &state.db,
        R::TABLE,
        query,
        &page,
        crate::platform::http::Order::OldestFirst,
        id_of,
    )
    .await?)
}

/// Creates a record through the sync engine and answers with its projection as the caller sees
/// it.
pub async fn create_visible<D, R, T>(
    state: &crate::app::AppState,
    actor: &Actor,
    record: D,
) -> Result<T, ApiError>
where
    D: outpost_mobile::records::RecordType,
    R: Projection,
    T: From<R>,
{
    let (id, _) = state
        .sync
        .create(&author(actor), record)
        .await
        .map_err(|e| change_error(R::NAME, e))?;
    visible::<R, T>(state, actor, &id).await
}

/// Changes a record the caller may see through the sync engine (server-owned fields stay as
/// they are) and answers with its projection as the caller sees it.
pub async fn update_visible<D, R, T>(
    state: &crate::app::AppState,
    actor: &Actor,
    id: &DocumentId,
    edit: impl FnMut(&mut D),
) -> Result<T, ApiError>
where
    D: outpost_mobile::records::RecordType,
    R: Projection,
    T: From<R>,
{
    visible::<R, T>(state, actor, id).await?;
    state
        .sync
        .update::<D>(&author(actor), id, false, edit)
        .await
        .map_err(|e| change_error(R::NAME, e))?;
    visible::<R, T>(state, actor, id).await
}

/// Deletes a record the caller may see: its document becomes a tombstone (state `deleted`)
/// that every device syncs.
pub async fn tombstone<D, R, T>(
    state: &crate::app::AppState,
    actor: &Actor,
    id: &DocumentId,
) -> Result<(), ApiError>
where
    D: outpost_mobile::records::RecordType,
    R: Projection,
    T: From<R>,
{
    visible::<R, T>(state, actor, id).await?;
    let user = actor.user_id.clone();
    state
        .sync
        .update::<D>(&author(actor), id, true, |record| {
            let server = record.server_mut();
            server.state = "deleted".into();
            server.updated_by = Some(user.clone());
            server.updated_at = Some(outpost_mobile::records::timestamp_now());
        })
        .await
        .map_err(|e| change_error(R::NAME, e))?;
    Ok(())
}
