//! What the engine needs from storage and from the permission system, as traits the server
//! implements (over SurrealDB and its `Scope`).

use std::future::Future;

use automerge::AutoCommit;
use outpost_mobile::api::ManifestEntry;
use outpost_mobile::records::Violation;

use crate::DocumentId;

/// Who is on the other end of a connection: the authenticated user and device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The user's id.
    pub user_id: String,
    /// The device's id, when the session is bound to one.
    pub device_id: Option<String>,
}

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store failed.
    #[error("storage failed: {0}")]
    Failed(String),
    /// A change was written with an actor id that belongs to another user or device.
    #[error("actor {0} belongs to another device")]
    ActorTaken(String),
    /// The document is no longer what the change was made on: another node changed it since
    /// this one loaded it.
    #[error("document {0} was changed elsewhere since it was loaded")]
    Stale(String),
}

/// A document as stored: its type and its bytes (a snapshot followed by incremental chunks,
/// which `AutoCommit::load` reads as one).
#[derive(Debug, Clone)]
pub struct StoredDocument {
    /// The record type.
    pub kind: String,
    /// Automerge bytes.
    pub bytes: Vec<u8>,
}

/// A typed record (`outpost_mobile::records::RecordType`) passed through a [`Commit`]; storage
/// downcasts it to the type the commit's kind names.
pub type TypedRecord = dyn std::any::Any + Send + Sync;

/// One accepted change of one document, to persist atomically with its projection.
pub struct Commit<'a> {
    /// Which document.
    pub document_id: &'a DocumentId,
    /// Its record type.
    pub kind: &'a str,
    /// Whether the document is new.
    pub created: bool,
    /// The new changes, as an incremental automerge chunk.
    pub chunk: Vec<u8>,
    /// The document after the change, to project into queryable rows.
    pub document: &'a AutoCommit,
    /// The typed record after the change, when the caller has it (the server's own changes):
    /// storage projects it without hydrating the document again.
    pub record: Option<&'a TypedRecord>,
    /// The typed record before the change, when the caller has it: storage can tell which
    /// derived values (search terms) need recomputing.
    pub previous: Option<&'a TypedRecord>,
    /// Who sent the change.
    pub author: &'a PeerIdentity,
    /// Server corrections made to the author's change, for the audit log.
    pub corrections: &'a [Violation],
    /// Where the change came from: `sync`, `api`, ...
    pub channel: &'a str,
    /// The HTTP request that made the change, if any.
    pub request_id: Option<&'a str>,
    /// Part of bulk server work (see [`crate::Author::bulk`]): may be audited with the other
    /// such changes of its batch in one entry.
    pub bulk: bool,
    /// The document's heads after the change, hex-encoded (for manifests).
    pub heads: Vec<String>,
    /// For a change the server made on its cached copy: that copy's heads before the change
    /// (hex, sorted). Storage refuses the commit with [`StorageError::Stale`] unless the stored
    /// heads are these, so a node whose copy is out of date (another node sharing the database
    /// changed the document) cannot decide on it or project it; the engine reloads and makes
    /// the change again.
    pub based_on: Option<Vec<String>>,
    /// The record's state (`owned`, `pool`, `deleted`) before the change; `None` when created.
    pub previous_state: Option<String>,
    /// Actor ids (hex) this change introduces for its author: bound to the author in the same
    /// transaction, which fails with [`StorageError::ActorTaken`] if one belongs to someone else.
    pub new_actors: Vec<String>,
}

/// Persistence of documents, projections and per-peer sync state. Manifest documents
/// (`outpost_mobile::manifest::KIND`) are committed like any other but have no projection.
pub trait SyncStorage: Send + Sync + 'static {
    /// Loads a document.
    fn load(
        &self,
        id: &DocumentId,
    ) -> impl Future<Output = Result<Option<StoredDocument>, StorageError>> + Send;

    /// Loads several documents at once (those that exist), for work that touches many: one
    /// round trip instead of one per document.
    fn load_many(
        &self,
        ids: &[DocumentId],
    ) -> impl Future<Output = Result<Vec<(DocumentId, StoredDocument)>, StorageError>> + Send {
        async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(stored) = self.load(id).await? {
                    out.push((id.clone(), stored));
                }
            }
            Ok(out)
        }
    }

    /// Persists a chunk and updates the record's projection in one transaction.
    fn commit(&self, commit: Commit<'_>) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The heads (hex, sorted) of a document as stored, if it exists: whether a cached copy is
    /// still the latest (another node sharing the database may have changed it).
    fn stored_heads(
        &self,
        id: &DocumentId,
    ) -> impl Future<Output = Result<Option<Vec<String>>, StorageError>> + Send;

    /// The saved sync state of a storage id for a document.
    fn load_sync_state(
        &self,
        storage_id: &str,
        id: &DocumentId,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StorageError>> + Send;

    /// Saves the sync state of a storage id for a document.
    fn save_sync_state(
        &self,
        storage_id: &str,
        id: &DocumentId,
        state: Vec<u8>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// Who may see and change which documents.
pub trait AccessGate: Send + Sync + 'static {
    /// Whether `identity` may read (and sync) an existing document.
    fn may_read(
        &self,
        identity: &PeerIdentity,
        id: &DocumentId,
    ) -> impl Future<Output = bool> + Send;

    /// Whether `identity` may change an existing document it can read.
    fn may_write(
        &self,
        identity: &PeerIdentity,
        id: &DocumentId,
    ) -> impl Future<Output = bool> + Send;

    /// Whether `identity` may create a document of `kind`.
    fn may_create(&self, identity: &PeerIdentity, kind: &str) -> impl Future<Output = bool> + Send;

    /// Every document `identity` may see, with the digest of its heads: the content of the
    /// user's manifest.
    fn visible_documents(
        &self,
        identity: &PeerIdentity,
    ) -> impl Future<Output = Result<Vec<ManifestEntry>, StorageError>> + Send;
}
