//! Documents, chunks, sync states, actor bindings and projections in SurrealDB.

use chrono::{DateTime, Utc};
use outpost_mobile::records::customer::Customer;
use outpost_mobile::records::event::Event;
use outpost_mobile::records::follow_up::FollowUp;
use outpost_mobile::records::read::hydrate;
use outpost_mobile::records::task::Task;
use outpost_mobile::records::{RecordType, ServerFields};
use outpost_sync::{Commit, DocumentId, StorageError, StoredDocument, SyncStorage};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use surrealdb::types::{Bytes, RecordId, SurrealValue};

use tokio::sync::{mpsc, oneshot};

use crate::platform::audit::AuditContext;
use crate::platform::db::Tx;
use crate::platform::db::{Db, DbError, Query};
use crate::platform::ids;

/// The longest list SurrealDB 3.3 turns `field INSIDE $list` into one index lookup per value
/// for (`MAX_IN_EXPANSION_SIZE` in its planner); a longer list scans the whole table, which
/// made loading a block of 256 documents read every stored chunk.
const MAX_INDEXED_IN: usize = 32;

/// A document whose next commit would make this many chunks is stored as one snapshot
/// instead. Fewer chunks load faster: automerge loads a lone snapshot directly, but a snapshot
/// followed by changes through its change-applying path, which for a customer took 150 µs
/// with one change after the snapshot, 300 µs with eight and 1.1 ms with 64, against 50-90 µs
/// compacted (`documents_bench`). But a compaction deletes the old chunks, and SurrealDB
/// 3.3.5 walks the whole catalog for every record it deletes (every table's field
/// definitions, a range read each, to find fields that may reference the record:
/// `table_may_have_incoming_references`; its per-transaction cache does not spare the next
/// record), about 0.8 ms each on a large store. At 4 and at 8, on a store of 1M customers that
/// had changed hands about ten times, assigning them back fell from about 230-300/s to 56-76/s,
/// that walk taking half the CPU or more; so compactions stay rare.
const COMPACT_AFTER_CHUNKS: i64 = 64;

/// [`SyncStorage`] over SurrealDB.
#[derive(Clone)]
pub struct SurrealSyncStorage {
    db: Db,
    clock: crate::platform::clock::Clock,
    commits: mpsc::UnboundedSender<PendingCommit>,
    reads: mpsc::UnboundedSender<PendingRead>,
    prefetched: std::sync::Arc<std::sync::Mutex<Prefetched>>,
    commit_stats: std::sync::Arc<CommitCounters>,
}

/// Counters of the group commits since start, for operators (`GET /api/v1/admin/sync`) and
/// benchmarks: whether changes wait on the store, and how well their commits are grouped.
#[derive(Default)]
struct CommitCounters {
    groups: AtomicU64,
    transactions: AtomicU64,
    retried_singly: AtomicU64,
    running_micros: AtomicU64,
    waiting_micros: AtomicU64,
}

/// What [`SurrealSyncStorage::commit_stats`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions run against the store: merged groups, and transactions run alone.
    pub groups: u64,
    /// Document commits answered: stored, or refused (a stale copy, an actor taken). A stored
    /// one was in exactly one successful group or ran alone.
    pub transactions: u64,
    /// Groups that failed as a whole and whose transactions were run one by one.
    pub retried_singly: u64,
    /// Time spent running the groups (statements and the store's commit), summed.
    pub running_micros: u64,
    /// Time from each commit's arrival to its result, summed over commits: the queue plus the
    /// run.
    pub waiting_micros: u64,
}

/// Pre-commit states read together with the documents they belong to, so the first commit
/// after a load needs no read of its own (a pool sweep returning a block of customers read
/// each row twice before). Loads and commits of a document both run under the engine's lock
/// on it, and every commit takes its document's entry out, so an entry always describes what
/// is stored; one older than [`PREFETCH_TTL`] is not trusted, since another node may have
/// written since.
#[derive(Default)]
struct Prefetched {
    states: std::collections::HashMap<String, (std::time::Instant, BeforeCommit)>,
}

/// How long a prefetched pre-commit state is trusted.
const PREFETCH_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Most prefetched states kept (documents loaded but never changed leave theirs behind until
/// they expire).
const MAX_PREFETCHED: usize = 4096;

impl Prefetched {
    /// Keeps `states` after dropping the expired ones; beyond [`MAX_PREFETCHED`] the rest are
    /// not kept (their commits read for themselves).
    fn keep(&mut self, states: impl IntoIterator<Item = (String, BeforeCommit)>) {
        let now = std::time::Instant::now();
        self.states
            .retain(|_, (at, _)| now.duration_since(*at) < PREFETCH_TTL);
        for (id, state) in states {
            if self.states.len() >= MAX_PREFETCHED {
                break;
            }
            self.states.insert(id, (now, state));
        }
    }

    /// Takes the state of `id`, if one was read recently.
    fn take(&mut self, id: &str) -> Option<BeforeCommit> {
        let (at, state) = self.states.remove(id)?;
        (at.elapsed() < PREFETCH_TTL).then_some(state)
    }
}

/// One document's pre-commit read waiting for the next batched read.
struct PendingRead {
    id: String,
    customer: bool,
    done: oneshot::Sender<Result<BeforeCommit, String>>,
}

/// One document's transaction waiting for the group commit.
struct PendingCommit {
    tx: Tx,
    done: oneshot::Sender<Result<(), StorageError>>,
    /// When it was queued, for [`CommitStats::waiting_micros`].
    arrived: std::time::Instant,
}

/// Most transactions merged into one group commit. SurrealDB copies every bound value of a
/// query for each statement it runs, so a group's cost grows with the square of its size:
/// measured on the pool sweep, groups of 128 were 30% slower per document than groups of 32.
const MAX_GROUP: usize = 32;
/// Most pre-commit reads answered by one query.
const MAX_READS: usize = 64;
/// Group commits that run at once: while one waits for its fsync or runs its statements, the
/// next group is already being written.
const COMMITTERS: usize = 2;

impl SurrealSyncStorage {
    /// The search terms stored for customer `id` (none for one that has never had any).
    async fn stored_terms(&self, id: &str) -> Result<Vec<String>, StorageError> {
        #[derive(SurrealValue)]
        struct Stored {
            terms: Vec<String>,
        }
        let stored: Option<Stored> = Query::new("SELECT terms FROM ONLY $record")
            .bind("record", ids::record("customer_terms", id))
            .take(&self.db, 0)
            .await
            .map_err(failed)?;
        Ok(stored.map(|s| s.terms).unwrap_or_default())
    }

    /// Storage over `db`; `clock` stamps when follow-ups arrive.
    pub fn new(db: Db, clock: crate::platform::clock::Clock) -> Self {
        let (commits, queue) = mpsc::unbounded_channel();
        let queue = std::sync::Arc::new(tokio::sync::Mutex::new(queue));
        let commit_stats = std::sync::Arc::new(CommitCounters::default());
        for _ in 0..COMMITTERS {
            tokio::spawn(group_commits(
                db.clone(),
                queue.clone(),
                commit_stats.clone(),
            ));
        }
        let (reads, read_queue) = mpsc::unbounded_channel();
        tokio::spawn(batched_reads(db.clone(), read_queue));
        Self {
            db,
            clock,
            commits,
            reads,
            prefetched: std::sync::Arc::default(),
            commit_stats,
        }
    }

    /// The group commits since start.
    pub fn commit_stats(&self) -> CommitStats {
        let c = &self.commit_stats;
        CommitStats {
            groups: c.groups.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            retried_singly: c.retried_singly.load(Ordering::Relaxed),
            running_micros: c.running_micros.load(Ordering::Relaxed),
            waiting_micros: c.waiting_micros.load(Ordering::Relaxed),
        }
    }

    /// Moves the customer's follow-up clock (which the pool's return rules read) to a new
    /// follow-up. It counts from when it was made if it reached the server within the grace
    /// period of the customer's pool (a rep who worked offline is not punished), else from when
    /// it arrived; a follow-up dated in the future counts from now.
    async fn touch_follow_up_clock(&self, tx: &mut Tx, doc: &FollowUp) -> Result<(), DbError> {
        let grace_hours: Option<i64> = Query::new(
            "(SELECT VALUE grace_hours FROM ONLY type::record('pool', (SELECT VALUE pool FROM ONLY type::record('customer', $customer)) ?? '-'))",
        )
        .bind("customer", doc.customer.clone())
        .take(&self.db, 0)
        .await
        .unwrap_or(None);
        let now = self.clock.now();
        let grace = chrono::Duration::hours(grace_hours.unwrap_or(0).max(0));
        let effective = match optional_time(Some(&doc.at)) {
            Some(at) if at <= now && now - at <= grace => at,
            _ => now,
        };
        let customer = tx.bind(ids::record("customer", &doc.customer));
        let effective = tx.bind(effective);
        tx.push(format!(
            "UPDATE {customer} SET last_follow_up_at = {effective} WHERE last_follow_up_at = NONE OR last_follow_up_at < {effective} RETURN NONE"
        ));
        Ok(())
    }
}

/// The commit's record as `T`: the typed value the engine passed along, or else the document
/// hydrated.
fn typed<'c, T: RecordType>(commit: &Commit<'c>) -> Result<std::borrow::Cow<'c, T>, StorageError> {
    match commit.record.and_then(|r| r.downcast_ref::<T>()) {
        Some(record) => Ok(std::borrow::Cow::Borrowed(record)),
        None => hydrate(commit.document)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| StorageError::Failed(e.to_string())),
    }
}

fn failed(e: DbError) -> StorageError {
    StorageError::Failed(e.to_string())
}

/// A stored document as [`SyncStorage::load`] reads it.
#[derive(Debug, SurrealValue)]
struct LoadedDocument {
    kind: String,
    /// The incremental chunk count the document's row keeps.
    stored_chunks: Option<i64>,
    /// [`RANGED_CHUNKS`] when every chunk is in `document_chunk`.
    chunk_layout: Option<i64>,
    /// The chunks in `document_chunk`, in order.
    chunks: Vec<Bytes>,
}

/// A document's type and chunk count, as [`SyncStorage::load_many`] reads them.
#[derive(Debug, SurrealValue)]
struct DocumentKind {
    id: String,
    kind: String,
    chunks: Option<i64>,
    chunk_layout: Option<i64>,
}

/// The `chunk_layout` of a document whose chunks are all keyed `document_chunk:[document,
/// key]` (migration 0012); a document without it may still have chunks in `sync_chunk`.
const RANGED_CHUNKS: i64 = 2;

/// Sorts after every chunk key (a UUIDv7 in text form): the end of a document's chunk range.
const CHUNK_RANGE_END: &str = "~";

/// A new chunk of a document, as it is created.
#[derive(Debug, SurrealValue)]
struct ChunkRow {
    id: RecordId,
    bytes: Bytes,
}

/// The record of a new chunk of document `doc`: keys are time-ordered, so a document's chunks
/// are one range in the order they were stored.
fn chunk_record(doc: &str) -> RecordId {
    RecordId::new(
        "document_chunk",
        surrealdb::types::RecordIdKey::Array(surrealdb::types::Array::from(vec![
            surrealdb::types::Value::String(doc.to_string()),
            surrealdb::types::Value::String(ids::new_key()),
        ])),
    )
}

/// The statement reading the chunks of the documents bound as `$d0`, `$d1`, ... (`count` of
/// them) from `document_chunk`, in order: one range per document, no index.
fn ranged_chunks_sql(count: usize) -> String {
    let ranges: Vec<String> = (0..count)
        .map(|i| format!("document_chunk:[$d{i}]..[$d{i}, $chunk_end]"))
        .collect();
    format!(
        "SELECT record::id(id)[0] AS document, bytes FROM {} ORDER BY id",
        ranges.join(", ")
    )
}

/// One stored chunk of a document.
#[derive(Debug, SurrealValue)]
struct ChunkOf {
    document: String,
    bytes: Bytes,
}

/// The chunks stored before migration 0012 of the documents `keys`, grouped by document in
/// order: read through `sync_chunk`'s index, in lists short enough to stay index lookups.
async fn legacy_chunks(
    db: &Db,
    keys: &[String],
) -> Result<std::collections::HashMap<String, Vec<u8>>, StorageError> {
    let mut bytes: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
    if keys.is_empty() {
        return Ok(bytes);
    }
    let groups: Vec<&[String]> = keys.chunks(MAX_INDEXED_IN).collect();
    let sql: String = (0..groups.len())
        .map(|i| {
            format!(
                "SELECT document, bytes FROM sync_chunk WHERE document INSIDE $keys{i} ORDER BY id;"
            )
        })
        .collect();
    let query = groups
        .iter()
        .enumerate()
        .fold(Query::new(sql), |query, (i, group)| {
            query.bind(&format!("keys{i}"), group.to_vec())
        });
    let mut results = query.run(db).await.map_err(failed)?;
    for i in 0..groups.len() {
        let group: Vec<ChunkOf> = results.take(i).map_err(|e| failed(e.into()))?;
        for chunk in group {
            bytes
                .entry(chunk.document)
                .or_default()
                .extend_from_slice(&chunk.bytes);
        }
    }
    Ok(bytes)
}

/// What a commit needs to know of the stored document and its projection before it writes:
/// read once, under the engine's lock on the document, so nothing else changes them meanwhile.
#[derive(Debug, Default)]
struct BeforeCommit {
    /// Incremental chunks stored so far (none for a new document).
    chunks: Option<i64>,
    /// Whether some chunks may still be in `sync_chunk` (stored before migration 0012).
    legacy_chunks: bool,
    /// What the customer projection held (none for other kinds and new customers).
    customer: Option<PreviousCustomer>,
}

fn state_key(storage_id: &str, id: &DocumentId) -> String {
    Sha256::digest(format!("{storage_id}\u{0}{id}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_time(value: Option<&str>) -> DateTime<Utc> {
    value
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
}

/// The projection row of a customer document.
#[derive(Debug, SurrealValue)]
struct CustomerRow {
    name: String,
    kind: String,
    level: Option<String>,
    industry: Option<String>,
    source: Option<String>,
    phones: Vec<String>,
    emails: Vec<String>,
    address: Option<String>,
    tags: Vec<String>,
    notes: String,
    contacts: String,
    owner: Option<String>,
    state: String,
    created_by: Option<String>,
    credit_code: Option<String>,
    company_key: String,
    phone_keys: Vec<String>,
    email_keys: Vec<String>,
    pool: Option<String>,
    owned_since: Option<DateTime<Utc>>,
    previous_owner: Option<String>,
    released_at: Option<DateTime<Utc>>,
    merged_into: Option<String>,
    custody_changed_at: Option<String>,
    list_key: String,
    list_key_newest: String,
    /// Whether the customer is in the lists at all (not deleted or merged away). An
    /// all-seeing caller's list walks `(listed, key)`: unlike the state, this does not change
    /// when a customer changes hands, so a claim, a return or a sweep of 100,000 neither
    /// moves the customer's entry there nor leaves a delete marker for the list to step over.
    listed: bool,
    /// Who holds it (see [`crate::crm::customers::holder`]): the one field a change of hands
    /// moves in the list order.
    holder: Option<String>,
}

/// A change of hands a customer commit carries, to record in its history.
struct CustodyChange {
    action: String,
    reason: Option<String>,
    by: Option<String>,
    at: DateTime<Utc>,
    at_text: String,
    pool: Option<String>,
    to_owner: Option<String>,
}

/// A row of the customer search index: one term of one customer.
#[derive(Debug, SurrealValue)]
struct TermRow {
    id: RecordId,
}

/// The index row of `term` for customer `doc`.
fn term_record(term: &str, doc: &str) -> RecordId {
    RecordId::new(
        "customer_term",
        surrealdb::types::RecordIdKey::Array(surrealdb::types::Array::from(vec![
            surrealdb::types::Value::String(term.to_string()),
            surrealdb::types::Value::String(doc.to_string()),
        ])),
    )
}

fn optional_time(value: Option<&str>) -> Option<DateTime<Utc>> {
    value
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What search and duplicate detection derive from a customer's name, phones, emails and
/// contacts. Deriving them (pinyin, phone parsing) is the dearest part of projecting a
/// customer, so a change that leaves those fields alone reuses what the projection holds.
#[derive(Debug)]
struct SearchKeys {
    company_key: String,
    phone_keys: Vec<String>,
    email_keys: Vec<String>,
    /// The search terms to store, or `None` when they are unchanged and already stored.
    terms: Option<Vec<String>>,
}

impl SearchKeys {
    /// Derives the keys of `doc`.
    fn of(doc: &Customer) -> Self {
        use crate::crm::customers::keys;
        let searchable = keys::Searchable {
            name: &doc.name,
            phones: doc
                .phones
                .iter()
                .chain(doc.contacts.iter().flat_map(|c| c.phones.iter()))
                .map(String::as_str)
                .collect(),
            emails: doc
                .emails
                .iter()
                .chain(doc.contacts.iter().flat_map(|c| c.emails.iter()))
                .map(String::as_str)
                .collect(),
            contact_names: doc.contacts.iter().map(|c| c.name.as_str()).collect(),
        };
        let mut phone_keys: Vec<String> = searchable
            .phones
            .iter()
            .flat_map(|p| keys::phone_keys(p))
            .collect();
        phone_keys.sort();
        phone_keys.dedup();
        let mut email_keys: Vec<String> = searchable
            .emails
            .iter()
            .map(|e| keys::email_key(e))
            .collect();
        email_keys.sort();
        email_keys.dedup();
        Self {
            company_key: keys::company_key(&doc.name),
            phone_keys,
            email_keys,
            // A tombstone leaves the search index.
            terms: Some(if doc.server().state == "deleted" {
                Vec::new()
            } else {
                keys::terms(&searchable)
            }),
        }
    }

    /// The keys of `doc`, reused from what the projection holds when every field they come
    /// from is unchanged there, so a change from any channel (a phone's edit of the notes, a
    /// claim, a return) derives nothing. Reused terms are left where they are, unless the row
    /// still holds them from before they had their own table, in which case they move there.
    /// `contacts` is the row's contacts as [`contacts_json`] writes them.
    fn reuse_or_derive(doc: &Customer, contacts: &str, stored: &PreviousCustomer) -> Self {
        let deleted = |state: &str| state == "deleted";
        let unchanged = stored.name.as_deref() == Some(doc.name.as_str())
            && stored.phones.as_deref() == Some(doc.phones.as_slice())
            && stored.emails.as_deref() == Some(doc.emails.as_slice())
            && stored.contacts.as_deref() == Some(contacts)
            && stored.state.as_deref().map(deleted) == Some(deleted(&doc.server().state));
        match (&stored.company_key, &stored.phone_keys, &stored.email_keys) {
            (Some(company_key), Some(phone_keys), Some(email_keys)) if unchanged => Self {
                company_key: company_key.clone(),
                phone_keys: phone_keys.clone(),
                email_keys: email_keys.clone(),
                terms: stored.terms_in_row.clone(),
            },
            _ => Self::of(doc),
        }
    }
}

/// A customer's contacts as its projection row holds them (a JSON array).
fn contacts_json(doc: &Customer) -> String {
    let contacts: Vec<serde_json::Value> = doc
        .contacts
        .iter()
        .map(|c| serde_json::json!({ "id": c.id, "name": c.name, "title": c.title, "phones": c.phones, "emails": c.emails }))
        .collect();
    serde_json::Value::Array(contacts).to_string()
}

impl CustomerRow {
    /// The projection row of `doc`, with its contacts (see [`contacts_json`]) and search keys.
    fn project(doc: &Customer, contacts: String, keys: SearchKeys) -> Self {
        let server = doc.server();
        Self {
            credit_code: doc.credit_code.clone(),
            company_key: keys.company_key,
            phone_keys: keys.phone_keys,
            email_keys: keys.email_keys,
            pool: doc.custody.pool.clone(),
            owned_since: optional_time(doc.custody.owned_since.as_deref()),
            previous_owner: doc.custody.previous_owner.clone(),
            released_at: optional_time(doc.custody.released_at.as_deref()),
            merged_into: doc.custody.merged_into.clone(),
            custody_changed_at: doc.custody.changed_at.clone(),
            list_key: String::new(),
            list_key_newest: String::new(),
            listed: server.state != "deleted",
            holder: crate::crm::customers::holder(
                &server.state,
                server.owner.as_deref(),
                doc.custody.pool.as_deref(),
            ),
            name: doc.name.clone(),
            kind: doc.kind.clone(),
            level: doc.level.clone(),
            industry: doc.industry.clone(),
            source: doc.source.clone(),
            phones: doc.phones.clone(),
            emails: doc.emails.clone(),
            address: doc.address.clone(),
            tags: doc.tags.clone(),
            notes: doc.notes.as_str().to_string(),
            contacts,
            owner: server.owner.clone(),
            state: server.state.clone(),
            created_by: server.created_by.clone(),
        }
    }
}

/// The projection row of a follow-up document.
#[derive(Debug, SurrealValue)]
struct FollowUpRow {
    customer: String,
    method: String,
    /// When it happened, as the device wrote it (with the device's offset).
    at: String,
    /// The same instant in UTC, which is what orders a customer's follow-ups.
    occurred: Option<DateTime<Utc>>,
    /// `occurred` and the id as a [`ids::newest_first_key`]: the customer's newest follow-ups
    /// are the first entries of the `(customer, timeline_key)` index (one without a time
    /// sorts as the oldest).
    timeline_key: String,
    content: String,
    location: Option<String>,
    next_contact_at: Option<String>,
    owner: Option<String>,
    state: String,
    created_by: Option<String>,
}

impl From<&FollowUp> for FollowUpRow {
    fn from(doc: &FollowUp) -> Self {
        let server = doc.server();
        Self {
            customer: doc.customer.clone(),
            method: doc.method.clone(),
            at: doc.at.clone(),
            occurred: DateTime::parse_from_rfc3339(&doc.at)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            timeline_key: String::new(),
            content: doc.content.as_str().to_string(),
            location: doc.location.clone(),
            next_contact_at: doc.next_contact_at.clone(),
            owner: server.owner.clone(),
            state: server.state.clone(),
            created_by: server.created_by.clone(),
        }
    }
}

/// The projection row of a task document.
#[derive(Debug, SurrealValue)]
struct TaskRow {
    title: String,
    notes: String,
    due_at: Option<String>,
    customer: Option<String>,
    assignee: Option<String>,
    status: String,
    reminders: Vec<i64>,
    owner: Option<String>,
    state: String,
    created_by: Option<String>,
    /// Creation time and id as a [`ids::newest_first_key`], for a customer's newest tasks.
    timeline_key: String,
}

impl From<&Task> for TaskRow {
    fn from(doc: &Task) -> Self {
        let server = doc.server();
        Self {
            title: doc.title.clone(),
            notes: doc.notes.as_str().to_string(),
            due_at: doc.due_at.clone(),
            customer: doc.customer.clone(),
            assignee: doc.assignee.clone(),
            status: doc.status.clone(),
            reminders: doc.reminders.clone(),
            owner: server.owner.clone(),
            state: server.state.clone(),
            created_by: server.created_by.clone(),
            timeline_key: String::new(),
        }
    }
}

/// An attendee as the projection keeps it.
#[derive(Debug, SurrealValue)]
struct AttendeeRow {
    user: String,
    response: String,
}

/// The projection row of an event document.
#[derive(Debug, SurrealValue)]
struct EventRow {
    title: String,
    notes: String,
    starts_at: String,
    ends_at: String,
    starts: Option<DateTime<Utc>>,
    ends: Option<DateTime<Utc>>,
    /// `starts` and the id as a [`ids::newest_first_key`], for a customer's latest events.
    timeline_key: String,
    all_day: bool,
    location: Option<String>,
    customer: Option<String>,
    attendees: Vec<AttendeeRow>,
    attendee_ids: Vec<String>,
    visibility: String,
    reminders: Vec<i64>,
    owner: Option<String>,
    state: String,
    created_by: Option<String>,
}

impl From<&Event> for EventRow {
    fn from(doc: &Event) -> Self {
        let server = doc.server();
        let time = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        Self {
            title: doc.title.clone(),
            notes: doc.notes.as_str().to_string(),
            starts_at: doc.starts_at.clone(),
            ends_at: doc.ends_at.clone(),
            starts: time(&doc.starts_at),
            ends: time(&doc.ends_at),
            timeline_key: String::new(),
            all_day: doc.all_day,
            location: doc.location.clone(),
            customer: doc.customer.clone(),
            attendees: doc
                .attendees
                .iter()
                .map(|a| AttendeeRow {
                    user: a.user.clone(),
                    response: a.response.clone(),
                })
                .collect(),
            attendee_ids: doc.attendees.iter().map(|a| a.user.clone()).collect(),
            visibility: doc.visibility.clone(),
            reminders: doc.reminders.clone(),
            owner: server.owner.clone(),
            state: server.state.clone(),
            created_by: server.created_by.clone(),
        }
    }
}

impl SurrealSyncStorage {
    /// The pre-commit states read with their documents.
    fn prefetched(&self) -> std::sync::MutexGuard<'_, Prefetched> {
        self.prefetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored chunk count and (for a customer) what the projection held before this
    /// commit. Documents committing at the same time are read together, in one query.
    async fn before_commit(&self, kind: &str, id: &str) -> Result<BeforeCommit, StorageError> {
        if let Some(state) = self.prefetched().take(id) {
            return Ok(state);
        }
        let (done, result) = oneshot::channel();
        self.reads
            .send(PendingRead {
                id: id.to_string(),
                customer: kind == Customer::KIND,
                done,
            })
            .map_err(|_| StorageError::Failed("the store is shutting down".into()))?;
        result
            .await
            .map_err(|_| StorageError::Failed("the pre-commit read was dropped".into()))?
            .map_err(StorageError::Failed)
    }
}

/// A document's stored chunk count, as the batched pre-commit read returns it.
#[derive(Debug, SurrealValue)]
struct ChunkCount {
    id: String,
    chunks: Option<i64>,
    chunk_layout: Option<i64>,
}

/// Answers pre-commit reads in batches: whatever has queued while the previous batch was read
/// is read by the next single query (two statements, each over record ids), so a burst of
/// commits (an import, a pool sweep) costs one round trip per batch rather than per document.
async fn batched_reads(db: Db, mut queue: mpsc::UnboundedReceiver<PendingRead>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_READS {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let documents: Vec<RecordId> = batch
            .iter()
            .map(|r| ids::record("sync_document", &r.id))
            .collect();
        let customers: Vec<RecordId> = batch
            .iter()
            .filter(|r| r.customer)
            .map(|r| ids::record(Customer::KIND, &r.id))
            .collect();
        let read = async {
            let mut results = Query::new(
                format!("SELECT record::id(id) AS id, chunks, chunk_layout FROM $documents; {PREVIOUS_CUSTOMER} FROM $customers;"),
            )
            .bind("documents", documents)
            .bind("customers", customers)
            .run(&db)
            .await?;
            let chunks: Vec<ChunkCount> = results.take(0)?;
            let customers: Vec<PreviousCustomer> = results.take(1)?;
            Ok::<_, DbError>((chunks, customers))
        };
        match read.await {
            Ok((chunks, customers)) => {
                let mut chunks: std::collections::HashMap<String, ChunkCount> =
                    chunks.into_iter().map(|c| (c.id.clone(), c)).collect();
                let mut customers: std::collections::HashMap<String, PreviousCustomer> = customers
                    .into_iter()
                    .filter_map(|c| Some((c.id.clone()?, c)))
                    .collect();
                for pending in batch {
                    let stored = chunks.remove(&pending.id);
                    let before = BeforeCommit {
                        legacy_chunks: stored
                            .as_ref()
                            .is_some_and(|c| c.chunk_layout != Some(RANGED_CHUNKS)),
                        chunks: stored.and_then(|c| c.chunks),
                        customer: customers.remove(&pending.id),
                    };
                    let _ = pending.done.send(Ok(before));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for pending in batch {
                    let _ = pending.done.send(Err(message.clone()));
                }
            }
        }
    }
}

/// The projection fields of [`PreviousCustomer`], selected (followed by `FROM ...`).
const PREVIOUS_CUSTOMER: &str = "SELECT record::id(id) AS id, name, phones, emails, contacts, state, terms AS terms_in_row, company_key, phone_keys, email_keys, owner, custody_changed_at";

/// What the customer projection held before a commit.
#[derive(Debug, Default, SurrealValue)]
struct PreviousCustomer {
    /// The customer's key (read in batches, to tell the rows apart).
    id: Option<String>,
    /// Search terms a row projected before migration 0010 still holds; they move to
    /// `customer_terms` at the row's next change, which unsets them in the row.
    terms_in_row: Option<Vec<String>>,
    /// What the search keys were derived from, to tell whether they still hold.
    name: Option<String>,
    phones: Option<Vec<String>>,
    emails: Option<Vec<String>>,
    contacts: Option<String>,
    state: Option<String>,
    company_key: Option<String>,
    phone_keys: Option<Vec<String>>,
    email_keys: Option<Vec<String>>,
    owner: Option<String>,
    custody_changed_at: Option<String>,
}

impl SyncStorage for SurrealSyncStorage {
    async fn load(&self, id: &DocumentId) -> Result<Option<StoredDocument>, StorageError> {
        // One round trip: the document's type and its chunks in order, and what its next
        // commit needs to know (see [`Prefetched`]).
        let mut results = Query::new(format!(
            "SELECT kind, chunks AS stored_chunks, chunk_layout, (SELECT VALUE bytes FROM document_chunk:[$d0]..[$d0, $chunk_end] ORDER BY id) AS chunks FROM ONLY $record; {PREVIOUS_CUSTOMER} FROM ONLY $customer;"
        ))
        .bind("d0", id.to_string())
        .bind("chunk_end", CHUNK_RANGE_END)
        .bind("record", ids::record("sync_document", id.as_str()))
        .bind("customer", ids::record(Customer::KIND, id.as_str()))
        .run(&self.db)
        .await
        .map_err(failed)?;
        let document: Option<LoadedDocument> = results.take(0).map_err(|e| failed(e.into()))?;
        let customer: Option<PreviousCustomer> = results.take(1).map_err(|e| failed(e.into()))?;
        let Some(document) = document else {
            return Ok(None);
        };
        let legacy = document.chunk_layout != Some(RANGED_CHUNKS);
        let before = BeforeCommit {
            chunks: document.stored_chunks,
            legacy_chunks: legacy,
            customer: customer.filter(|_| document.kind == Customer::KIND),
        };
        self.prefetched().keep([(id.to_string(), before)]);
        // Chunks stored before migration 0012 come first: every later one is ranged.
        let mut bytes = if legacy {
            legacy_chunks(&self.db, &[id.to_string()])
                .await?
                .remove(id.as_str())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for chunk in &document.chunks {
            bytes.extend_from_slice(chunk);
        }
        Ok(Some(StoredDocument {
            kind: document.kind,
            bytes,
        }))
    }

    async fn load_many(
        &self,
        ids: &[DocumentId],
    ) -> Result<Vec<(DocumentId, StoredDocument)>, StorageError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<RecordId> = ids
            .iter()
            .map(|id| ids::record("sync_document", id.as_str()))
            .collect();
        let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
        // One round trip: the documents' kinds, what their commits need, and their chunks in
        // order, one key range per document (no index). Documents from before migration 0012
        // take a second round trip for the chunks they still have in `sync_chunk`.
        let customers: Vec<RecordId> = ids
            .iter()
            .map(|id| ids::record(Customer::KIND, id.as_str()))
            .collect();
        let sql = format!(
            "SELECT record::id(id) AS id, kind, chunks, chunk_layout FROM $records; {PREVIOUS_CUSTOMER} FROM $customers; {};",
            ranged_chunks_sql(keys.len())
        );
        let query = keys.iter().enumerate().fold(
            Query::new(sql)
                .bind("records", records)
                .bind("customers", customers)
                .bind("chunk_end", CHUNK_RANGE_END),
            |query, (i, key)| query.bind(&format!("d{i}"), key.clone()),
        );
        let mut results = query.run(&self.db).await.map_err(failed)?;
        let kinds: Vec<DocumentKind> = results.take(0).map_err(|e| failed(e.into()))?;
        let previous: Vec<PreviousCustomer> = results.take(1).map_err(|e| failed(e.into()))?;
        let chunks: Vec<ChunkOf> = results.take(2).map_err(|e| failed(e.into()))?;
        let mut previous: std::collections::HashMap<String, PreviousCustomer> = previous
            .into_iter()
            .filter_map(|c| Some((c.id.clone()?, c)))
            .collect();
        let legacy: Vec<String> = kinds
            .iter()
            .filter(|d| d.chunk_layout != Some(RANGED_CHUNKS))
            .map(|d| d.id.clone())
            .collect();
        // Chunks stored before migration 0012 come first: every later one is ranged.
        let mut bytes = legacy_chunks(&self.db, &legacy).await?;
        for chunk in chunks {
            bytes
                .entry(chunk.document)
                .or_default()
                .extend_from_slice(&chunk.bytes);
        }
        let mut states = Vec::with_capacity(kinds.len());
        let loaded = kinds
            .into_iter()
            .filter_map(|d| {
                let bytes = bytes.remove(&d.id)?;
                let id = DocumentId::parse(&d.id)?;
                let before = BeforeCommit {
                    chunks: d.chunks,
                    legacy_chunks: d.chunk_layout != Some(RANGED_CHUNKS),
                    customer: previous.remove(&d.id).filter(|_| d.kind == Customer::KIND),
                };
                states.push((d.id, before));
                Some((
                    id,
                    StoredDocument {
                        kind: d.kind,
                        bytes,
                    },
                ))
            })
            .collect();
        self.prefetched().keep(states);
        Ok(loaded)
    }

    async fn commit(&self, commit: Commit<'_>) -> Result<(), StorageError> {
        let id = commit.document_id.to_string();
        let mut follow_on_jobs = Tx::new();
        let mut new_terms: Option<Vec<String>> = None;
        let mut custody_change: Option<CustodyChange> = None;
        let before = self.before_commit(commit.kind, &id).await?;
        let customer_existed = before.customer.is_some();
        let previous_customer = before.customer.unwrap_or_default();
        // A manifest is the server's own bookkeeping: stored, but neither projected nor custody_audited.
        let projected: Option<(surrealdb::types::Value, ServerFields)> = match commit.kind {
            Customer::KIND => {
                let doc = typed::<Customer>(&commit)?;
                let contacts = contacts_json(&doc);
                let mut keys = SearchKeys::reuse_or_derive(&doc, &contacts, &previous_customer);
                new_terms = keys.terms.take();
                let mut row = CustomerRow::project(&doc, contacts, keys);
                let created = parse_time(doc.server().created_at.as_deref());
                row.list_key = format!(
                    "{}|{id}",
                    created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                );
                row.list_key_newest = ids::newest_first_key(created, &id);
                if let (Some(action), Some(at_text)) =
                    (&doc.custody.action, &doc.custody.changed_at)
                {
                    custody_change = Some(CustodyChange {
                        action: action.clone(),
                        reason: doc.custody.reason.clone(),
                        by: doc.custody.changed_by.clone(),
                        at: parse_time(Some(at_text)),
                        at_text: at_text.clone(),
                        pool: doc.custody.pool.clone(),
                        to_owner: doc.server().owner.clone(),
                    });
                }
                Some((row.into_value(), doc.server().clone()))
            }
            FollowUp::KIND => {
                let doc = typed::<FollowUp>(&commit)?;
                crate::crm::follow_ups::next_contact::plan(&mut follow_on_jobs, &id, &doc)
                    .map_err(|e| StorageError::Failed(e.to_string()))?;
                if commit.created && doc.server().state != "deleted" {
                    self.touch_follow_up_clock(&mut follow_on_jobs, &doc)
                        .await
                        .map_err(failed)?;
                }
                let mut row = FollowUpRow::from(&*doc);
                row.timeline_key =
                    ids::newest_first_key(row.occurred.unwrap_or(DateTime::UNIX_EPOCH), &id);
                Some((row.into_value(), doc.server().clone()))
            }
            Task::KIND => {
                let doc = typed::<Task>(&commit)?;
                // Reminders are planned in the same transaction as the change that sets them.
                crate::crm::tasks::reminders::plan(&mut follow_on_jobs, &id, &doc)
                    .map_err(|e| StorageError::Failed(e.to_string()))?;
                let mut row = TaskRow::from(&*doc);
                let created = parse_time(doc.server().created_at.as_deref());
                row.timeline_key = ids::newest_first_key(created, &id);
                Some((row.into_value(), doc.server().clone()))
            }
            Event::KIND => {
                let doc = typed::<Event>(&commit)?;
                crate::crm::events::reminders::plan(&mut follow_on_jobs, &id, &doc)
                    .map_err(|e| StorageError::Failed(e.to_string()))?;
                let mut row = EventRow::from(&*doc);
                row.timeline_key =
                    ids::newest_first_key(row.starts.unwrap_or(DateTime::UNIX_EPOCH), &id);
                Some((row.into_value(), doc.server().clone()))
            }
            outpost_mobile::manifest::KIND => None,
            other => return Err(StorageError::Failed(format!("no projection for {other}"))),
        };
        let compact = before.chunks.unwrap_or(0) + 1 >= COMPACT_AFTER_CHUNKS;

        let mut tx = Tx::new();
        tx.extend(follow_on_jobs);
        let doc_record = tx.bind(ids::record("sync_document", &id));
        let kind = tx.bind(commit.kind.to_string());
        let chunk = |bytes: Vec<u8>| ChunkRow {
            id: chunk_record(&id),
            bytes: Bytes::from(bytes),
        };
        if let Some(based_on) = &commit.based_on {
            // A change made on this node's copy is stored only if the document is still that
            // copy; otherwise another node changed it (the engine reloads and applies it
            // again).
            tx.expect(
                ids::record("sync_document", &id),
                "heads",
                based_on.clone(),
                format!("{STALE_DOCUMENT}{id}"),
            );
        }
        let mut heads = commit.heads.clone();
        heads.sort();
        let heads_b = tx.bind(heads);
        if compact {
            let snapshot = commit.document.clone().save();
            // The old chunks go first (a document from before migration 0012 also has some in
            // `sync_chunk`); the snapshot is created after every statement, and from now on
            // all the document's chunks are ranged.
            let id_b = tx.bind(id.clone());
            let end = tx.bind(CHUNK_RANGE_END);
            tx.push(format!(
                "DELETE document_chunk:[{id_b}]..[{id_b}, {end}] RETURN NONE"
            ));
            if before.legacy_chunks {
                tx.push(format!(
                    "DELETE sync_chunk WHERE document = {id_b} RETURN NONE"
                ));
            }
            tx.create("document_chunk", chunk(snapshot).into_value());
            tx.push(format!(
                "UPDATE {doc_record} SET chunks = 1, chunk_layout = {RANGED_CHUNKS}, heads = {heads_b}, updated_at = time::now() RETURN NONE"
            ));
        } else {
            tx.create("document_chunk", chunk(commit.chunk).into_value());
            // A new document has every chunk ranged; one from before migration 0012 keeps
            // its mark absent until its compaction.
            if before.chunks.is_some() {
                // The document is stored (its rows are never deleted), so this is an
                // `UPDATE`: an `UPSERT` of an existing record first tries to create it, reads
                // the key, fails, and only then updates (SurrealDB 3.3 `doc/store.rs`).
                tx.push(format!(
                    "UPDATE {doc_record} SET chunks = chunks + 1, heads = {heads_b}, updated_at = time::now() RETURN NONE"
                ));
            } else {
                tx.push(format!(
                    "UPSERT {doc_record} SET kind = {kind}, chunks = (chunks ?? 0) + 1, chunk_layout = {RANGED_CHUNKS}, heads = {heads_b}, created_at = created_at ?? time::now(), updated_at = time::now() RETURN NONE"
                ));
            }
        }
        if let Some((row, server)) = projected {
            let projection = tx.bind(ids::record(commit.kind, &id));
            let created_at = tx.bind(parse_time(server.created_at.as_deref()));
            // A change of hands is custody_audited as itself (`customer.claim`, `customer.return`, ...)
            // rather than also as a generic update (a creation or deletion still is).
            let mut custody_audited = false;
            if let Some(change) = custody_change {
                // A new change of hands (each is stamped with its time) goes into the history
                // and the audit log in the same transaction as the ownership it sets.
                let from_owner = previous_customer.owner.clone();
                if previous_customer.custody_changed_at.as_deref() != Some(change.at_text.as_str())
                {
                    tx.record_custody(crate::crm::customers::history::NewEntry {
                        customer: id.clone(),
                        change: crate::crm::customers::view::HistoryEntry {
                            action: change.action.clone(),
                            from_owner: from_owner.clone(),
                            to_owner: change.to_owner.clone(),
                            by: change.by.clone(),
                            pool: change.pool.clone(),
                            reason: change.reason.clone(),
                            at: change.at,
                        },
                    });
                    let ctx = AuditContext {
                        actor: change.by.clone().or(Some(commit.author.user_id.clone())),
                        channel: commit.channel.to_string(),
                        device: commit.author.device_id.clone(),
                        request_id: commit.request_id.map(str::to_string),
                        address: None,
                    };
                    match (&change.pool, commit.bulk, change.action.as_str()) {
                        // A pool sweep's returns (bulk work) share one `pool.return` entry per
                        // group commit, on the pool, listing each customer: an entry per
                        // return cost a sixth of a 100,000-customer sweep. Each customer's
                        // own trail is its custody history, written just above.
                        (Some(pool), true, "return") => {
                            tx.audit_in_bulk(
                                &ctx,
                                "pool.return",
                                ("pool", pool.as_str()),
                                serde_json::json!({ "customer_id": id, "from_owner": from_owner, "reason": change.reason, "heads": commit.heads }),
                            );
                        }
                        _ => {
                            tx.audit(
                                &ctx,
                                &format!("customer.{}", change.action),
                                Some((Customer::KIND, &id)),
                                serde_json::json!({ "from_owner": from_owner, "to_owner": change.to_owner, "pool": change.pool, "reason": change.reason, "via": commit.channel, "heads": commit.heads }),
                            );
                        }
                    }
                    custody_audited = true;
                }
            }
            if commit.kind == Customer::KIND {
                // The search index follows the projection: terms that went away are deleted,
                // new ones added, in the same transaction. A change that leaves the name,
                // phones, emails and contacts alone (a claim, a return, a level) touches none
                // of it: the terms live in their own row so that such a change neither reads
                // nor rewrites them.
                if let Some(current) = new_terms {
                    let stored = match (customer_existed, &previous_customer.terms_in_row) {
                        (_, Some(in_row)) => in_row.clone(),
                        (false, None) => Vec::new(),
                        (true, None) => self.stored_terms(&id).await?,
                    };
                    let previous: std::collections::HashSet<&String> = stored.iter().collect();
                    let current_set: std::collections::HashSet<&String> = current.iter().collect();
                    let gone: Vec<RecordId> = previous
                        .difference(&current_set)
                        .map(|term| term_record(term, &id))
                        .collect();
                    let new: Vec<TermRow> = current_set
                        .difference(&previous)
                        .map(|term| TermRow {
                            id: term_record(term, &id),
                        })
                        .collect();
                    // Unchanged terms already in their own row (a phone's edit of the notes
                    // derives them again) are not written again.
                    let unchanged = gone.is_empty() && new.is_empty();
                    if !gone.is_empty() {
                        let gone = tx.bind(gone);
                        tx.push(format!("DELETE {gone}"));
                    }
                    if !new.is_empty() {
                        let new = tx.bind(new);
                        tx.push(format!(
                            "INSERT IGNORE INTO customer_term {new} RETURN NONE"
                        ));
                    }
                    if !unchanged || previous_customer.terms_in_row.is_some() || !customer_existed {
                        let terms_record = tx.bind(ids::record("customer_terms", &id));
                        let terms_b = tx.bind(current);
                        tx.push(format!(
                            "UPSERT {terms_record} SET terms = {terms_b} RETURN NONE"
                        ));
                    }
                }
                // The fields derived from other records (the follow-up and deal clocks) are
                // not in the row, so a merge keeps them.
                // A row read before this commit exists still (projection rows are never
                // deleted), and is updated rather than upserted (see the document's row above).
                let row_b = tx.bind(row);
                let write = if customer_existed { "UPDATE" } else { "UPSERT" };
                tx.push(format!(
                    "{write} {projection} MERGE object::extend({row_b}, {{ created_at: {created_at}, updated_at: time::now() }}) RETURN NONE"
                ));
                if previous_customer.terms_in_row.is_some() {
                    // A write keeps a field the schema no longer defines; the terms have just
                    // moved to `customer_terms`, so the row's copy goes.
                    tx.push(format!("UPDATE {projection} UNSET terms RETURN NONE"));
                }
            } else {
                let row_b = tx.bind(row);
                tx.push(format!(
                    "UPSERT {projection} CONTENT object::extend({row_b}, {{ created_at: {created_at}, updated_at: time::now() }}) RETURN NONE"
                ));
            }
            let ctx = AuditContext {
                actor: Some(commit.author.user_id.clone()),
                channel: commit.channel.to_string(),
                device: commit.author.device_id.clone(),
                request_id: commit.request_id.map(str::to_string),
                address: None,
            };
            let action = if commit.created {
                "create"
            } else if server.state == "deleted"
                && commit.previous_state.as_deref() != Some("deleted")
            {
                "delete"
            } else {
                "update"
            };
            if !(custody_audited && action == "update") {
                tx.audit(
                    &ctx,
                    &format!("{}.{action}", commit.kind),
                    Some((commit.kind, &id)),
                    serde_json::json!({ "via": commit.channel, "heads": commit.heads }),
                );
            }
            if !commit.corrections.is_empty() {
                tx.audit(
                    &ctx,
                    "sync.corrected",
                    Some((commit.kind, &id)),
                    serde_json::json!({ "corrections": commit.corrections.iter().map(|c| serde_json::json!({ "field": c.field, "reason": c.message })).collect::<Vec<_>>() }),
                );
            }
        }
        for actor in &commit.new_actors {
            let record = tx.bind(ids::record("sync_actor", actor));
            let user = tx.bind(commit.author.user_id.clone());
            let device = tx.bind(commit.author.device_id.clone());
            let taken = tx.bind(format!("actor-taken:{actor}"));
            tx.push(format!(
                "IF (SELECT * FROM ONLY {record}) AND ((SELECT VALUE user FROM ONLY {record}) != {user} OR (SELECT VALUE device FROM ONLY {record}) != {device}) {{ THROW {taken} }}"
            ));
            tx.push(format!("UPSERT {record} SET user = {user}, device = {device}, created_at = created_at ?? time::now() RETURN NONE"));
        }
        let (done, result) = oneshot::channel();
        self.commits
            .send(PendingCommit {
                tx,
                done,
                arrived: std::time::Instant::now(),
            })
            .map_err(|_| StorageError::Failed("the store is shutting down".into()))?;
        result
            .await
            .map_err(|_| StorageError::Failed("the group commit was dropped".into()))?
    }

    async fn stored_heads(&self, id: &DocumentId) -> Result<Option<Vec<String>>, StorageError> {
        // One row per existing document; the first (and only) is its heads.
        Query::new("SELECT VALUE heads FROM $doc")
            .bind("doc", ids::record("sync_document", id.as_str()))
            .take(&self.db, 0)
            .await
            .map_err(failed)
    }

    async fn load_sync_state(
        &self,
        storage_id: &str,
        id: &DocumentId,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let bytes: Option<Bytes> = Query::new("(SELECT VALUE bytes FROM ONLY $state)")
            .bind(
                "state",
                ids::record("sync_state", &state_key(storage_id, id)),
            )
            .take(&self.db, 0)
            .await
            .map_err(failed)?;
        Ok(bytes.map(|b| b.to_vec()))
    }

    async fn save_sync_state(
        &self,
        storage_id: &str,
        id: &DocumentId,
        state: Vec<u8>,
    ) -> Result<(), StorageError> {
        Query::new("UPSERT $state SET bytes = $bytes, updated_at = time::now()")
            .bind(
                "state",
                ids::record("sync_state", &state_key(storage_id, id)),
            )
            .bind("bytes", Bytes::from(state))
            .run(&self.db)
            .await
            .map_err(failed)?;
        Ok(())
    }
}

/// What a commit throws when the document is not the version its change was made on.
const STALE_DOCUMENT: &str = "stale-document:";

/// Commits queued document transactions in groups: whatever has queued while the previous group
/// was being written goes into the next single transaction, so many documents share one fsync.
/// If a group fails, its members are retried one by one, so one bad document fails alone.
async fn group_commits(
    db: Db,
    queue: std::sync::Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<PendingCommit>>>,
    stats: std::sync::Arc<CommitCounters>,
) {
    let micros =
        |since: std::time::Instant| u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
    let answer = |pending: PendingCommit, result: Result<(), StorageError>| {
        stats.transactions.fetch_add(1, Ordering::Relaxed);
        stats
            .waiting_micros
            .fetch_add(micros(pending.arrived), Ordering::Relaxed);
        let _ = pending.done.send(result);
    };
    loop {
        let group = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            group
        };
        if group.len() > 1 {
            let mut merged = Tx::new();
            for pending in &group {
                merged.extend(pending.tx.clone());
            }
            let started = std::time::Instant::now();
            let result = merged.run(&db).await;
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats
                .running_micros
                .fetch_add(micros(started), Ordering::Relaxed);
            if result.is_ok() {
                for pending in group {
                    answer(pending, Ok(()));
                }
                continue;
            }
            stats.retried_singly.fetch_add(1, Ordering::Relaxed);
        }
        for pending in group {
            let started = std::time::Instant::now();
            let result = pending.tx.run(&db).await.map(|_| ()).map_err(|e| {
                let thrown = e.thrown_message();
                if let Some((_, actor)) = thrown.and_then(|m| m.split_once("actor-taken:")) {
                    StorageError::ActorTaken(actor.to_string())
                } else if let Some((_, doc)) = thrown.and_then(|m| m.split_once(STALE_DOCUMENT)) {
                    StorageError::Stale(doc.to_string())
                } else {
                    failed(e)
                }
            });
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats
                .running_micros
                .fetch_add(micros(started), Ordering::Relaxed);
            answer(pending, result);
        }
    }
}
