//! The audit log: who did what to which record, when, through which channel and device.
//!
//! Mutations add their entry to the same transaction as the change (see [`Tx::audit`]), so there
//! is never a change without its entry or an entry without its change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::ToSchema;

use crate::platform::db::{Db, DbError, Tx};
use crate::platform::ids;

/// Who is acting and from where, as the audit log records it.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    /// The acting user's key; `None` for the system or an anonymous caller.
    pub actor: Option<String>,
    /// `api`, `cli`, `system`, `sync`, and later `dingtalk`, `wecom`.
    pub channel: String,
    /// The device the request came from, when the session is bound to one.
    pub device: Option<String>,
    /// The request id, to join the entry with the logs.
    pub request_id: Option<String>,
    /// The client's address.
    pub address: Option<String>,
}

impl AuditContext {
    /// Context for work done by the server itself or from the command line.
    pub fn system(channel: &str) -> Self {
        Self {
            channel: channel.to_string(),
            ..Self::default()
        }
    }
}

/// The value of every entry's `list` field (see [`AuditRow::list`]).
const WHOLE_LOG: &str = "all";

/// A row of the audit table as stored.
#[derive(Debug, Clone, SurrealValue)]
pub struct AuditRow {
    /// Record id.
    pub id: RecordId,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (user key).
    pub actor: Option<String>,
    /// What, e.g. `user.create`.
    pub action: String,
    /// Which kind of record.
    pub target_kind: Option<String>,
    /// Which record (its key).
    pub target_id: Option<String>,
    /// Through which channel.
    pub channel: String,
    /// From which device.
    pub device: Option<String>,
    /// Which request.
    pub request_id: Option<String>,
    /// From which address.
    pub address: Option<String>,
    /// What changed, as JSON text.
    pub summary: String,
    /// The id as a [`ids::newest_first_key_of`]: the log and each of its filters are read
    /// newest first by going forward through an index that ends in this key.
    pub newest: Option<String>,
    /// Always `all`: the first field of the `(list, newest)` index that orders the whole log.
    /// SurrealDB 3.3 reads an index **range** in batches of 1,000 entries (and fetches their
    /// records) whatever the limit, but stops at the limit when the range follows an equality
    /// on a compound index's first fields; a newest page of 50 read 1,000 entries without it.
    pub list: Option<String>,
}

/// An audit entry as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Entry id.
    pub id: String,
    /// When, RFC 3339 UTC.
    pub at: DateTime<Utc>,
    /// The acting user's id; absent for the system.
    pub actor_id: Option<String>,
    /// What, e.g. `user.create`, `auth.login_failed`.
    pub action: String,
    /// Which kind of record, e.g. `user`.
    pub target_kind: Option<String>,
    /// Which record.
    pub target_id: Option<String>,
    /// `api`, `cli`, `system`, ...
    pub channel: String,
    /// The device, when known.
    pub device_id: Option<String>,
    /// The request id, when the change came over HTTP.
    pub request_id: Option<String>,
    /// The client address, when known.
    pub address: Option<String>,
    /// What changed.
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            id: ids::key_of(&row.id),
            at: row.at,
            actor_id: row.actor,
            action: row.action,
            target_kind: row.target_kind,
            target_id: row.target_id,
            channel: row.channel,
            device_id: row.device,
            request_id: row.request_id,
            address: row.address,
            summary: serde_json::from_str(&row.summary).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// One transaction's share of an audit entry that the transactions of a group commit write
/// together (see [`Tx::audit_in_bulk`]).
#[derive(Debug, Clone)]
pub struct BulkItem {
    ctx: AuditContext,
    action: String,
    target: (String, String),
    item: serde_json::Value,
}

impl BulkItem {
    /// Whether `other` belongs to the same entry: same actor, channel, device, request,
    /// action and target.
    fn shares_entry_with(&self, other: &BulkItem) -> bool {
        self.action == other.action
            && self.target == other.target
            && self.ctx.actor == other.ctx.actor
            && self.ctx.channel == other.ctx.channel
            && self.ctx.device == other.ctx.device
            && self.ctx.request_id == other.ctx.request_id
            && self.ctx.address == other.ctx.address
    }
}

/// The audit rows of `items`: one per group of items that share an entry, its summary
/// `{ "count": n, "items": [...] }` in the order the items were added.
pub(crate) fn bulk_rows(items: &[BulkItem]) -> Vec<surrealdb::types::Value> {
    let mut entries: Vec<(&BulkItem, Vec<serde_json::Value>)> = Vec::new();
    for item in items {
        match entries
            .iter_mut()
            .find(|(first, _)| first.shares_entry_with(item))
        {
            Some((_, list)) => list.push(item.item.clone()),
            None => entries.push((item, vec![item.item.clone()])),
        }
    }
    entries
        .into_iter()
        .map(|(first, list)| {
            entry_row(
                &first.ctx,
                &first.action,
                Some((&first.target.0, &first.target.1)),
                serde_json::json!({ "count": list.len(), "items": list }),
            )
            .into_value()
        })
        .collect()
}

/// A new entry's row.
fn entry_row(
    ctx: &AuditContext,
    action: &str,
    target: Option<(&str, &str)>,
    summary: serde_json::Value,
) -> AuditRow {
    let key = ids::new_key();
    AuditRow {
        newest: ids::newest_first_key_of(&key),
        list: Some(WHOLE_LOG.to_string()),
        id: ids::record("audit", &key),
        at: Utc::now(),
        actor: ctx.actor.clone(),
        action: action.to_string(),
        target_kind: target.map(|(kind, _)| kind.to_string()),
        target_id: target.map(|(_, key)| key.to_string()),
        channel: ctx.channel.clone(),
        device: ctx.device.clone(),
        request_id: ctx.request_id.clone(),
        address: ctx.address.clone(),
        summary: summary.to_string(),
    }
}

impl Tx {
    /// Adds `item` to an audit entry that this transaction shares with the others of its
    /// group commit that add items with the same context, action and target: one entry
    /// listing them all. For a bulk change by the server (a pool sweep returning thousands of
    /// customers), where an entry per record costs a sixth of the work and each record keeps
    /// its own trail elsewhere (a customer's custody history). Run alone, the transaction
    /// writes an entry with its one item.
    pub fn audit_in_bulk(
        &mut self,
        ctx: &AuditContext,
        action: &str,
        target: (&str, &str),
        item: serde_json::Value,
    ) -> &mut Self {
        self.add_bulk_audit(BulkItem {
            ctx: ctx.clone(),
            action: action.to_string(),
            target: (target.0.to_string(), target.1.to_string()),
            item,
        })
    }

    /// Adds the audit entry of this change.
    pub fn audit(
        &mut self,
        ctx: &AuditContext,
        action: &str,
        target: Option<(&str, &str)>,
        summary: serde_json::Value,
    ) -> &mut Self {
        let row = entry_row(ctx, action, target, summary);
        self.create("audit", row.into_value())
    }
}

/// Appends one audit entry on its own, for events that change nothing else (a failed login).
pub async fn record(
    db: &Db,
    ctx: &AuditContext,
    action: &str,
    target: Option<(&str, &str)>,
    summary: serde_json::Value,
) -> Result<(), DbError> {
    let mut tx = Tx::new();
    tx.audit(ctx, action, target, summary);
    tx.run(db).await.map(|_| ())
}

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only entries about this kind of record, e.g. `user`.
    pub target_kind: Option<String>,
    /// Only entries about this record.
    pub target_id: Option<String>,
    /// Only entries by this user.
    pub actor_id: Option<String>,
    /// Only entries of this action, e.g. `customer.claim`.
    pub action: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<crate::app::AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(list_audit))
}

/// The audit log, newest first, filtered by target, actor and time. Needs `audit.read`.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilter),
    responses((status = 200, body = outpost_mobile::api::Page<AuditEntry>), (status = 400, body = outpost_mobile::api::Problem), (status = 403, body = outpost_mobile::api::Problem)),
    security(("bearer" = [])))]
async fn list_audit(
    axum::extract::State(state): axum::extract::State<crate::app::AppState>,
    actor: crate::crm::identity::access::Actor,
    crate::platform::http::ApiQuery(filter): crate::platform::http::ApiQuery<AuditFilter>,
) -> Result<axum::Json<outpost_mobile::api::Page<AuditEntry>>, crate::error::ApiError> {
    actor.require(crate::crm::identity::access::Permission::AuditRead)?;
    let page = crate::platform::http::PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .validate()?;
    // Only the filters given become conditions, so a record's or a user's entries are read
    // from the `audit_target_newest` or `audit_actor_newest` index, not found by scanning
    // the log; without either, the `(list, newest)` index orders the whole log.
    let whole_log = filter.target_id.is_none() && filter.actor_id.is_none();
    let filter = crate::platform::db::Query::conditions()
        .and_when(
            "list = $whole_log",
            "whole_log",
            whole_log.then(|| WHOLE_LOG.to_string()),
        )
        .and_when(
            "target_kind = $target_kind",
            "target_kind",
            filter.target_kind.clone(),
        )
        .and_when(
            "target_id = $target_id",
            "target_id",
            filter.target_id.clone(),
        )
        .and_when("actor = $actor", "actor", filter.actor_id.clone())
        .and_when("action = $action", "action", filter.action.clone())
        .and_when("at >= $from", "from", filter.from)
        .and_when("at < $to", "to", filter.to);
    let page = crate::platform::http::fetch_page::<AuditRow, AuditEntry>(
        &state.db,
        "audit",
        filter,
        &page,
        crate::platform::http::Order::NewestFirstByKey,
        |e| e.id.clone(),
    )
    .await?;
    Ok(axum::Json(page))
}
