//! Merging two customers: the survivor gains the loser's phones, emails, tags and contacts; the
//! loser's follow-ups, tasks, events and history move to the survivor; the loser becomes a
//! tombstone pointing at the survivor. A dry run shows all of it first. A merge is recorded
//! with exactly what moved, so an undo within 30 days puts back only that, keeping every edit
//! made since. Every step goes through the sync engine and is idempotent, so a merge that
//! crashed half-way finishes when it is asked again.

use axum::extract::State;
use chrono::{DateTime, Utc};
use outpost_mobile::api::Problem;
use outpost_mobile::records::customer::Customer as Document;
use outpost_mobile::records::event::Event;
use outpost_mobile::records::follow_up::FollowUp;
use outpost_mobile::records::task::Task;
use outpost_sync::DocumentId;
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::ToSchema;

use super::{Customer, CustomerRow};
use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::crm::records::{author, change_error, parse_doc_id, visible};
use crate::error::ApiError;
use crate::platform::db::Query;
use crate::platform::http::ApiJson;
use crate::platform::ids;

/// How long a merge can be undone.
const UNDO_DAYS: i64 = 30;

/// `POST /api/v1/customers/{doc_id}/merge`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The customer merged away (it becomes a tombstone pointing at the survivor).
    pub other_doc_id: String,
    /// Only show what would happen.
    #[serde(default)]
    pub dry_run: bool,
}

/// A record that moves to the survivor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Moved {
    /// `follow_up`, `task` or `event`.
    pub kind: String,
    /// Its document id.
    pub doc_id: String,
}

/// What the survivor gains.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Added {
    /// Phones.
    pub phones: Vec<String>,
    /// Emails.
    pub emails: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Contact ids.
    pub contact_ids: Vec<String>,
}

/// The result (or, for a dry run, the plan) of a merge.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MergeOutcome {
    /// The merge's id, for undo (absent on a dry run).
    pub merge_id: Option<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The survivor, as it is after the merge (or would be).
    pub survivor: Customer,
    /// The customer merged away.
    pub loser_doc_id: String,
    /// What the survivor gains.
    pub added: Added,
    /// The records that move.
    pub moved: Vec<Moved>,
    /// History entries that move.
    pub history_entries: usize,
    /// Until when the merge can be undone.
    pub undo_until: Option<DateTime<Utc>>,
}

#[derive(Debug, SurrealValue)]
struct Linked {
    kind: String,
    doc_id: String,
}

#[derive(Debug, SurrealValue)]
struct MergeRow {
    id: RecordId,
    survivor: String,
    loser: String,
    loser_state: String,
    moved: Vec<serde_json::Value>,
    added: serde_json::Value,
    history: Vec<String>,
    at: DateTime<Utc>,
    undone_at: Option<DateTime<Utc>>,
}

fn plan(survivor: &Document, loser: &Document) -> (Document, Added) {
    let mut merged = survivor.clone();
    let mut added = Added::default();
    for phone in &loser.phones {
        if !merged.phones.contains(phone) {
            merged.phones.push(phone.clone());
            added.phones.push(phone.clone());
        }
    }
    for email in &loser.emails {
        if !merged.emails.contains(email) {
            merged.emails.push(email.clone());
            added.emails.push(email.clone());
        }
    }
    for tag in &loser.tags {
        if !merged.tags.contains(tag) {
            merged.tags.push(tag.clone());
            added.tags.push(tag.clone());
        }
    }
    for contact in &loser.contacts {
        if !merged.contacts.iter().any(|c| c.id == contact.id) {
            merged.contacts.push(contact.clone());
            added.contact_ids.push(contact.id.clone());
        }
    }
    if merged.credit_code.is_none() {
        merged.credit_code = loser.credit_code.clone();
    }
    (merged, added)
}

async fn document(state: &AppState, id: &DocumentId) -> Result<Document, ApiError> {
    let mut current: Option<Document> = None;
    state
        .sync
        .update::<Document>(&author_system(), id, false, |doc| {
            current = Some(doc.clone())
        })
        .await
        .map_err(|e| change_error("customer", e))?;
    current.ok_or(ApiError::NotFound("customer"))
}

fn author_system() -> outpost_sync::Author {
    outpost_sync::Author {
        identity: outpost_sync::PeerIdentity {
            user_id: "system".into(),
            device_id: None,
        },
        channel: "api",
        request_id: None,
        bulk: false,
    }
}

async fn linked(state: &AppState, loser: &str) -> Result<Vec<Moved>, ApiError> {
    let rows: Vec<Linked> = Query::new(
        "SELECT 'follow_up' AS kind, record::id(id) AS doc_id FROM follow_up WHERE customer = $c AND state != 'deleted';
         SELECT 'task' AS kind, record::id(id) AS doc_id FROM task WHERE customer = $c AND state != 'deleted';
         SELECT 'event' AS kind, record::id(id) AS doc_id FROM event WHERE customer = $c AND state != 'deleted';",
    )
    .bind("c", loser.to_string())
    .run(&state.db)
    .await
    .and_then(|mut r| {
        let mut all: Vec<Linked> = r.take(0)?;
        let tasks: Vec<Linked> = r.take(1)?;
        let events: Vec<Linked> = r.take(2)?;
        all.extend(tasks);
        all.extend(events);
        Ok(all)
    })?;
    Ok(rows
        .into_iter()
        .map(|r| Moved {
            kind: r.kind,
            doc_id: r.doc_id,
        })
        .collect())
}

/// The keys of a customer's history entries.
async fn history_of(state: &AppState, customer: &str) -> Result<Vec<String>, ApiError> {
    Ok(super::history::keys(&state.db, customer).await?)
}

/// Points one record at `customer`, unless it points elsewhere than `from` by now.
async fn repoint(
    state: &AppState,
    actor: &Actor,
    moved: &Moved,
    from: &str,
    to: &str,
) -> Result<(), ApiError> {
    let Some(id) = DocumentId::parse(&moved.doc_id) else {
        return Ok(());
    };
    let author = author(actor);
    let result = match moved.kind.as_str() {
        "follow_up" => state
            .sync
            .update::<FollowUp>(&author, &id, false, |d| {
                if d.customer == from {
                    d.customer = to.to_string();
                }
            })
            .await
            .map(|_| ()),
        "task" => state
            .sync
            .update::<Task>(&author, &id, false, |d| {
                if d.customer.as_deref() == Some(from) {
                    d.customer = Some(to.to_string());
                }
            })
            .await
            .map(|_| ()),
        "event" => state
            .sync
            .update::<Event>(&author, &id, false, |d| {
                if d.customer.as_deref() == Some(from) {
                    d.customer = Some(to.to_string());
                }
            })
            .await
            .map(|_| ()),
        _ => Ok(()),
    };
    match result {
        Ok(()) | Err(outpost_sync::ChangeError::NotFound) => Ok(()),
        Err(e) => Err(change_error("customer", e)),
    }
}

/// Merges `other_doc_id` into this customer (both must be visible to the caller), or shows
/// what that would do.
#[utoipa::path(post, path = "/api/v1/customers/{doc_id}/merge", tag = "customers", request_body = MergeRequest,
    params(("doc_id" = String, Path, description = "The surviving customer's document id")),
    responses((status = 200, body = MergeOutcome), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn merge_customers(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<MergeRequest>,
) -> Result<axum::Json<MergeOutcome>, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let survivor_id = parse_doc_id(&doc_id)?;
    let loser_id = DocumentId::parse(&body.other_doc_id)
        .ok_or_else(|| ApiError::invalid_field("other_doc_id", "is not a document id"))?;
    if survivor_id == loser_id {
        return Err(ApiError::invalid_field(
            "other_doc_id",
            "a customer cannot be merged into itself",
        ));
    }
    visible::<CustomerRow, Customer>(&state, &actor, &survivor_id).await?;
    // A merge of this pair that was cut short (a crash, a timeout) is finished, not redone.
    let unfinished: Option<MergeRow> = Query::new(
        "(SELECT * FROM customer_merge WHERE survivor = $survivor AND loser = $loser AND undone_at = NONE LIMIT 1)[0]",
    )
    .bind("survivor", survivor_id.to_string())
    .bind("loser", loser_id.to_string())
    .take(&state.db, 0)
    .await?;
    if unfinished.is_none() {
        visible::<CustomerRow, Customer>(&state, &actor, &loser_id)
            .await
            .map_err(|_| ApiError::invalid_field("other_doc_id", "no such customer"))?;
    }
    let survivor = document(&state, &survivor_id).await?;
    let loser = document(&state, &loser_id).await?;
    let (merged, added) = plan(&survivor, &loser);
    if body.dry_run {
        let moved = linked(&state, loser_id.as_str()).await?;
        let history = history_of(&state, loser_id.as_str()).await?;
        let mut preview: Customer =
            visible::<CustomerRow, Customer>(&state, &actor, &survivor_id).await?;
        preview.phones = merged.phones.clone();
        preview.emails = merged.emails.clone();
        preview.tags = merged.tags.clone();
        preview.credit_code = merged.credit_code.clone();
        preview.contacts = serde_json::Value::Array(
            merged
                .contacts
                .iter()
                .map(|c| serde_json::json!({ "id": c.id, "name": c.name, "title": c.title, "phones": c.phones, "emails": c.emails }))
                .collect(),
        );
        return Ok(axum::Json(MergeOutcome {
            merge_id: None,
            dry_run: true,
            survivor: preview.for_actor(&actor),
            loser_doc_id: loser_id.to_string(),
            added,
            moved,
            history_entries: history.len(),
            undo_until: None,
        }));
    }
    let now = state.clock.now();
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let me = actor.user_id.clone();
    let survivor_key = survivor_id.to_string();
    let (merge_id, added) = match unfinished {
        Some(row) => (
            ids::key_of(&row.id),
            serde_json::from_value::<Added>(row.added).unwrap_or_default(),
        ),
        None => {
            // The merge record comes first: it is the plan a crashed merge resumes and undo
            // reads. Then the loser is claimed under its lock: of two concurrent merges of it,
            // one wins.
            let merge_id = ids::new_key();
            Query::new(
                "CREATE $merge SET survivor = $survivor, loser = $loser, loser_state = $loser_state, moved = [], added = $added, history = [], by = $by, at = $at, undone_at = NONE",
            )
            .bind("merge", ids::record("customer_merge", &merge_id))
            .bind("survivor", survivor_key.clone())
            .bind("loser", loser_id.to_string())
            .bind("loser_state", loser.server.state.clone())
            .bind("added", serde_json::to_value(&added).unwrap_or_default())
            .bind("by", actor.user_id.clone())
            .bind("at", now)
            .run(&state.db)
            .await?;
            let mut outcome: Result<(), ApiError> = Ok(());
            let claimed = state
                .sync
                .update::<Document>(&author(&actor), &loser_id, true, |doc| {
                    // Decided again if another node changed the customer meanwhile.
                    outcome = Ok(());
                    if doc.server.state == "deleted" || doc.custody.merged_into.is_some() {
                        outcome = Err(ApiError::Conflict(
                            "that customer was merged or deleted meanwhile".into(),
                        ));
                        return;
                    }
                    doc.server.state = "deleted".into();
                    doc.server.updated_by = Some(me.clone());
                    doc.server.updated_at = Some(at.clone());
                    doc.custody.merged_into = Some(survivor_key.clone());
                    doc.custody.action = Some("merge".into());
                    doc.custody.reason = Some(format!("merged into {survivor_key}"));
                    doc.custody.changed_by = Some(me.clone());
                    doc.custody.changed_at = Some(at.clone());
                })
                .await
                .map_err(|e| change_error("customer", e));
            if let Err(e) = claimed.and(outcome) {
                Query::new("DELETE $merge")
                    .bind("merge", ids::record("customer_merge", &merge_id))
                    .run(&state.db)
                    .await?;
                return Err(e);
            }
            (merge_id, added)
        }
    };
    // The survivor gains exactly what the plan recorded (a union: running it twice is the same).
    let mut survivor_gone = false;
    state
        .sync
        .update::<Document>(&author(&actor), &survivor_id, false, |doc| {
            survivor_gone = doc.server.state == "deleted";
            if survivor_gone {
                return;
            }
            let mut extra = loser.clone();
            extra.phones = added.phones.clone();
            extra.emails = added.emails.clone();
            extra.tags = added.tags.clone();
            extra.contacts.retain(|c| added.contact_ids.contains(&c.id));
            let (next, _) = plan(doc, &extra);
            doc.phones = next.phones;
            doc.emails = next.emails;
            doc.tags = next.tags;
            doc.contacts = next.contacts;
            doc.credit_code = next.credit_code;
        })
        .await
        .map_err(|e| change_error("customer", e))?;
    if survivor_gone {
        // The survivor was merged away meanwhile: the loser comes back as it was.
        let loser_state = loser.server.state.clone();
        state
            .sync
            .update::<Document>(&author(&actor), &loser_id, true, |doc| {
                doc.server.state = loser_state.clone();
                doc.custody.merged_into = None;
                doc.custody.action = Some("unmerge".into());
                doc.custody.reason = Some("the survivor was merged away meanwhile".into());
                doc.custody.changed_by = Some(me.clone());
                doc.custody.changed_at = Some(
                    state
                        .clock
                        .now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                );
            })
            .await
            .map_err(|e| change_error("customer", e))?;
        Query::new("DELETE $merge")
            .bind("merge", ids::record("customer_merge", &merge_id))
            .run(&state.db)
            .await?;
        return Err(ApiError::Conflict(
            "the surviving customer was merged or deleted meanwhile".into(),
        ));
    }
    // What still points at the loser moves, and is recorded before it moves.
    let moved = linked(&state, loser_id.as_str()).await?;
    let history = history_of(&state, loser_id.as_str()).await?;
    Query::new(
        "UPDATE $merge SET moved = array::union(moved, $moved), history = array::union(history, $history)",
    )
    .bind("merge", ids::record("customer_merge", &merge_id))
    .bind("moved", serde_json::to_value(&moved).unwrap_or_default())
    .bind("history", history.clone())
    .run(&state.db)
    .await?;
    for m in &moved {
        repoint(&state, &actor, m, loser_id.as_str(), survivor_id.as_str()).await?;
    }
    super::history::move_entries(&state.db, &history, loser_id.as_str(), survivor_id.as_str())
        .await?;
    let row: Option<MergeRow> = state.db.get("customer_merge", &merge_id).await?;
    let row = row.ok_or(ApiError::NotFound("merge"))?;
    let moved: Vec<Moved> = row
        .moved
        .iter()
        .filter_map(|m| serde_json::from_value(m.clone()).ok())
        .collect();
    crate::platform::audit::record(
        &state.db,
        &actor.audit(),
        "customer.merge",
        Some(("customer", survivor_id.as_str())),
        serde_json::json!({ "merge_id": merge_id, "loser": loser_id.to_string(), "moved": moved.len() }),
    )
    .await?;
    let survivor_view = visible::<CustomerRow, Customer>(&state, &actor, &survivor_id)
        .await?
        .for_actor(&actor);
    Ok(axum::Json(MergeOutcome {
        merge_id: Some(merge_id),
        dry_run: false,
        survivor: survivor_view,
        loser_doc_id: loser_id.to_string(),
        added,
        moved,
        history_entries: row.history.len(),
        undo_until: Some(row.at + chrono::Duration::days(UNDO_DAYS)),
    }))
}

/// Undoes a merge within 30 days: the loser comes back as it was, the records that moved go
/// back (unless moved again since), and the survivor loses exactly what the merge added.
#[utoipa::path(post, path = "/api/v1/customer-merges/{merge_id}/undo", tag = "customers",
    params(("merge_id" = String, Path, description = "The merge's id")),
    responses((status = 200, body = Customer), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn undo_merge(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(merge_id): axum::extract::Path<String>,
) -> Result<axum::Json<Customer>, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    if uuid::Uuid::try_parse(&merge_id).is_err() {
        return Err(ApiError::InvalidId(merge_id.chars().take(64).collect()));
    }
    let row: Option<MergeRow> = state.db.get("customer_merge", &merge_id).await?;
    let row = row.ok_or(ApiError::NotFound("merge"))?;
    let survivor_id = DocumentId::parse(&row.survivor).ok_or(ApiError::NotFound("merge"))?;
    let loser_id = DocumentId::parse(&row.loser).ok_or(ApiError::NotFound("merge"))?;
    visible::<CustomerRow, Customer>(&state, &actor, &survivor_id)
        .await
        .map_err(|_| ApiError::NotFound("merge"))?;
    if row.undone_at.is_some() {
        return Err(ApiError::Conflict("this merge was undone already".into()));
    }
    let now = state.clock.now();
    if now > row.at + chrono::Duration::days(UNDO_DAYS) {
        return Err(ApiError::Conflict(format!(
            "a merge can be undone for {UNDO_DAYS} days; this one is older"
        )));
    }
    let added: Added = serde_json::from_value(row.added.clone()).unwrap_or_default();
    let moved: Vec<Moved> = row
        .moved
        .iter()
        .filter_map(|m| serde_json::from_value(m.clone()).ok())
        .collect();
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let me = actor.user_id.clone();
    let survivor_key = survivor_id.to_string();
    let loser_state = row.loser_state.clone();
    state
        .sync
        .update::<Document>(&author(&actor), &loser_id, true, |doc| {
            if doc.custody.merged_into.as_deref() != Some(survivor_key.as_str()) {
                return;
            }
            doc.server.state = loser_state.clone();
            doc.server.updated_by = Some(me.clone());
            doc.server.updated_at = Some(at.clone());
            doc.custody.merged_into = None;
            doc.custody.action = Some("unmerge".into());
            doc.custody.reason = Some(format!("merge into {survivor_key} undone"));
            doc.custody.changed_by = Some(me.clone());
            doc.custody.changed_at = Some(at.clone());
        })
        .await
        .map_err(|e| change_error("customer", e))?;
    state
        .sync
        .update::<Document>(&author(&actor), &survivor_id, false, |doc| {
            doc.phones.retain(|p| !added.phones.contains(p));
            doc.emails.retain(|e| !added.emails.contains(e));
            doc.tags.retain(|t| !added.tags.contains(t));
            doc.contacts.retain(|c| !added.contact_ids.contains(&c.id));
        })
        .await
        .map_err(|e| change_error("customer", e))?;
    for m in &moved {
        repoint(&state, &actor, m, survivor_id.as_str(), loser_id.as_str()).await?;
    }
    // Moving back twice is harmless: an entry no longer in the survivor's history stays.
    super::history::move_entries(
        &state.db,
        &row.history,
        survivor_id.as_str(),
        loser_id.as_str(),
    )
    .await?;
    Query::new("UPDATE $merge SET undone_at = $now")
        .bind("merge", row.id.clone())
        .bind("now", now)
        .run(&state.db)
        .await?;
    crate::platform::audit::record(
        &state.db,
        &actor.audit(),
        "customer.unmerge",
        Some(("customer", loser_id.as_str())),
        serde_json::json!({ "merge_id": merge_id, "survivor": survivor_id.to_string() }),
    )
    .await?;
    let loser_view = visible::<CustomerRow, Customer>(&state, &actor, &loser_id)
        .await?
        .for_actor(&actor);
    Ok(axum::Json(loser_view))
}
