//! The sync engine: one instance per server process, shared by every connection.
//!
//! Every incoming sync message goes through the same pipeline: decode (size-capped), access gate,
//! apply to a fork of the document, check that each new change's actor belongs to the sending
//! device, hydrate the typed record and apply its field rules, then either merge (persist the
//! chunk and the projection in one transaction), merge plus a compensating server change, or
//! quarantine the document for that connection. Accepted changes are pushed to every other
//! connected peer that syncs the document.

mod manifest;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, AutoCommit};
use outpost_mobile::records::ServerFields;
use serde_bytes::ByteBuf;
use tokio::sync::{Mutex, mpsc};

use crate::DocumentId;
use crate::kinds::{Kinds, Rejection};
use crate::protocol::{self, Message, PROTOCOL_V1, PeerMetadata};
use crate::storage::{AccessGate, Commit, PeerIdentity, SyncStorage, TypedRecord};

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest frame accepted, in bytes; larger frames end the connection with an `error`.
    pub max_frame_bytes: usize,
    /// Documents kept in memory; idle ones beyond this are evicted.
    pub cache_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 8 * 1024 * 1024,
            cache_capacity: 1000,
        }
    }
}

/// What the engine sends down a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A CBOR frame.
    Frame(Vec<u8>),
    /// Close the connection (after the frames before it).
    Close,
}

/// A protocol violation that ends the connection; the engine has already queued the `error`
/// message and the close.
#[derive(Debug, thiserror::Error)]
#[error("protocol error: {0}")]
pub struct ProtocolError(pub String);

/// One connected peer, as the server sees it.
pub struct Connection {
    id: u64,
    identity: PeerIdentity,
    peer_id: Option<String>,
    metadata: PeerMetadata,
    tx: mpsc::UnboundedSender<Outgoing>,
    documents: HashSet<DocumentId>,
    quarantined: HashSet<DocumentId>,
}

impl Connection {
    /// The authenticated identity.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The peer id the client joined with.
    pub fn peer_id(&self) -> Option<&str> {
        self.peer_id.as_deref()
    }
}

struct PeerHandle {
    connection: u64,
    identity: PeerIdentity,
    tx: mpsc::UnboundedSender<Outgoing>,
}

#[derive(Default)]
struct DocEntry {
    loaded: bool,
    doc: Option<AutoCommit>,
    kind: String,
    /// Sync state per peer id syncing this document.
    states: HashMap<String, sync::State>,
}

struct Slot {
    entry: Arc<Mutex<DocEntry>>,
    last_used: u64,
}

struct Inner<S, G> {
    storage: S,
    gate: G,
    kinds: Kinds,
    config: EngineConfig,
    server_peer_id: String,
    server_actor: ActorId,
    docs: StdMutex<HashMap<DocumentId, Slot>>,
    peers: StdMutex<HashMap<String, PeerHandle>>,
    clock: AtomicU64,
    closing: tokio::sync::watch::Sender<bool>,
    /// The cache size at which the next eviction scan runs.
    next_scan: std::sync::atomic::AtomicUsize,
    /// Actor ids already bound, so each is checked against storage once.
    actors: StdMutex<HashMap<String, PeerIdentity>>,
    /// Manifest documents some connected peer syncs (refreshes are skipped when none).
    open_manifests: AtomicUsize,
    /// Wakes the manifest refresher.
    manifests_stale: Arc<tokio::sync::Notify>,
    /// Whether the manifest refresher task runs.
    refresher_started: AtomicBool,
    /// Documents read from storage one by one, and in batches ([`Engine::preload`]).
    loaded_singly: AtomicU64,
    loaded_in_batches: AtomicU64,
    /// Server changes made again because another node had changed the document.
    reloaded_stale: AtomicU64,
}

/// How many times a server change is tried on a document that other nodes keep changing.
const STALE_ATTEMPTS: usize = 5;

/// The engine; cheap to clone.
pub struct Engine<S, G> {
    inner: Arc<Inner<S, G>>,
}

impl<S, G> Clone for Engine<S, G> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn send(tx: &mpsc::UnboundedSender<Outgoing>, message: &Message) {
    let _ = tx.send(Outgoing::Frame(protocol::encode(message)));
}

impl<S: SyncStorage, G: AccessGate> Engine<S, G> {
    /// An engine over `storage`, answering as `server_peer_id`.
    pub fn new(
        storage: S,
        gate: G,
        server_peer_id: impl Into<String>,
        config: EngineConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                storage,
                gate,
                kinds: Kinds::default(),
                config,
                server_peer_id: server_peer_id.into(),
                server_actor: ActorId::random(),
                docs: StdMutex::new(HashMap::new()),
                peers: StdMutex::new(HashMap::new()),
                clock: AtomicU64::new(0),
                closing: tokio::sync::watch::channel(false).0,
                actors: StdMutex::new(HashMap::new()),
                next_scan: std::sync::atomic::AtomicUsize::new(0),
                open_manifests: AtomicUsize::new(0),
                manifests_stale: Arc::new(tokio::sync::Notify::new()),
                refresher_started: AtomicBool::new(false),
                loaded_singly: AtomicU64::new(0),
                loaded_in_batches: AtomicU64::new(0),
                reloaded_stale: AtomicU64::new(0),
            }),
        }
    }

    /// The server's peer id.
    pub fn server_peer_id(&self) -> &str {
        &self.inner.server_peer_id
    }

    /// The storage the engine writes to.
    pub fn storage(&self) -> &S {
        &self.inner.storage
    }

    /// The access gate the engine asks.
    pub fn gate(&self) -> &G {
        &self.inner.gate
    }

    /// Resolves when the server is shutting down; connection loops select on it.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Closes every connection (server shutdown).
    pub fn shutdown(&self) {
        self.inner.closing.send_replace(true);
        for peer in lock(&self.inner.peers).values() {
            let _ = peer.tx.send(Outgoing::Close);
        }
    }

    /// The largest frame accepted.
    pub fn max_frame_bytes(&self) -> usize {
        self.inner.config.max_frame_bytes
    }

    /// Ends a connection with an `error` message (for transport-level violations such as text
    /// frames, which the engine never sees).
    pub fn reject(&self, connection: &Connection, message: &str) -> ProtocolError {
        self.fail(connection, message)
    }

    /// How many peers are connected.
    pub fn connected_peers(&self) -> usize {
        lock(&self.inner.peers).len()
    }

    /// How many documents are in memory (for tests and metrics).
    pub fn cached_documents(&self) -> usize {
        lock(&self.inner.docs).len()
    }

    /// How many documents were read from storage one by one and how many in batches, since
    /// start: work over many documents (the pool sweep) should show in the second count.
    pub fn documents_loaded(&self) -> (u64, u64) {
        (
            self.inner.loaded_singly.load(Ordering::Relaxed),
            self.inner.loaded_in_batches.load(Ordering::Relaxed),
        )
    }

    /// How many server changes were made again, since start, because another node sharing the
    /// database had changed the document after this node loaded it.
    pub fn changes_redone(&self) -> u64 {
        self.inner.reloaded_stale.load(Ordering::Relaxed)
    }

    /// A new connection of an authenticated identity; frames for it go to `tx`.
    pub fn open(&self, identity: PeerIdentity, tx: mpsc::UnboundedSender<Outgoing>) -> Connection {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Connection {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            identity,
            peer_id: None,
            metadata: PeerMetadata::default(),
            tx,
            documents: HashSet::new(),
            quarantined: HashSet::new(),
        }
    }

    /// Forgets a closed connection.
    pub async fn close(&self, connection: &Connection) {
        if let Some(peer) = &connection.peer_id {
            let mut peers = lock(&self.inner.peers);
            if peers
                .get(peer)
                .is_some_and(|p| p.connection == connection.id)
            {
                peers.remove(peer);
            } else {
                return;
            }
        }
        let Some(peer) = &connection.peer_id else {
            return;
        };
        for id in &connection.documents {
            let entry = lock(&self.inner.docs)
                .get(id)
                .map(|slot| slot.entry.clone());
            if let Some(entry) = entry {
                // Sync states are saved when a peer leaves, not per message: losing one costs
                // a slower resync, never data.
                let state = {
                    let mut guard = entry.lock().await;
                    let state = guard.states.remove(peer);
                    if state.is_some()
                        && guard.states.is_empty()
                        && guard.kind == outpost_mobile::manifest::KIND
                    {
                        self.manifest_closed();
                    }
                    state
                };
                if let Some(state) = state {
                    self.save_sync_state(connection, id, &state).await;
                }
            }
        }
    }

    fn fail(&self, connection: &Connection, message: impl Into<String>) -> ProtocolError {
        let message = message.into();
        send(
            &connection.tx,
            &Message::Error {
                message: message.clone(),
                sender_id: Some(self.inner.server_peer_id.clone()),
                target_id: connection.peer_id.clone(),
            },
        );
        let _ = connection.tx.send(Outgoing::Close);
        ProtocolError(message)
    }

    /// Handles one frame from a connection.
    pub async fn receive(
        &self,
        connection: &mut Connection,
        frame: &[u8],
    ) -> Result<(), ProtocolError> {
        let message = protocol::decode(frame, self.inner.config.max_frame_bytes)
            .map_err(|e| self.fail(connection, e.to_string()))?;
        let Some(peer_id) = connection.peer_id.clone() else {
            return self.join(connection, message);
        };
        if message.sender_id() != Some(peer_id.as_str()) {
            return Err(self.fail(connection, "senderId does not match the peer that joined"));
        }
        match message {
            Message::Join { .. } => Err(self.fail(connection, "already joined")),
            Message::Leave { .. } => {
                let _ = connection.tx.send(Outgoing::Close);
                Ok(())
            }
            Message::Request {
                document_id, data, ..
            } => {
                self.sync(connection, &peer_id, &document_id, &data, true)
                    .await
            }
            Message::Sync {
                document_id, data, ..
            } => {
                self.sync(connection, &peer_id, &document_id, &data, false)
                    .await
            }
            Message::Ephemeral {
                document_id,
                count,
                session_id,
                data,
                ..
            } => {
                self.ephemeral(connection, &peer_id, &document_id, count, session_id, data)
                    .await;
                Ok(())
            }
            Message::DocUnavailable { .. }
            | Message::RemoteSubscriptionChange { .. }
            | Message::RemoteHeadsChanged { .. } => Ok(()),
            Message::Peer { .. } | Message::Error { .. } => {
                Err(self.fail(connection, "unexpected message from a client"))
            }
        }
    }

    fn join(&self, connection: &mut Connection, message: Message) -> Result<(), ProtocolError> {
        let Message::Join {
            sender_id,
            supported_protocol_versions,
            peer_metadata,
        } = message
        else {
            return Err(self.fail(connection, "the first message must be join"));
        };
        if let Some(versions) = &supported_protocol_versions
            && !versions.iter().any(|v| v == PROTOCOL_V1)
        {
            return Err(self.fail(connection, "unsupported protocol version"));
        }
        if sender_id.is_empty() || sender_id.len() > 256 {
            return Err(self.fail(connection, "invalid peer id"));
        }
        {
            let mut peers = lock(&self.inner.peers);
            if let Some(existing) = peers.get(&sender_id) {
                if existing.identity != connection.identity {
                    drop(peers);
                    return Err(
                        self.fail(connection, "this peer id belongs to another user or device")
                    );
                }
                // The same device reconnected: the old connection is stale.
                let _ = existing.tx.send(Outgoing::Close);
            }
            peers.insert(
                sender_id.clone(),
                PeerHandle {
                    connection: connection.id,
                    identity: connection.identity.clone(),
                    tx: connection.tx.clone(),
                },
            );
        }
        connection.peer_id = Some(sender_id.clone());
        connection.metadata = peer_metadata.unwrap_or_default();
        send(
            &connection.tx,
            &Message::Peer {
                sender_id: self.inner.server_peer_id.clone(),
                target_id: sender_id,
                selected_protocol_version: PROTOCOL_V1.into(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: Some(self.inner.server_peer_id.clone()),
                    is_ephemeral: false,
                }),
            },
        );
        Ok(())
    }

    fn unavailable(&self, connection: &Connection, peer_id: &str, document_id: &str) {
        send(
            &connection.tx,
            &Message::DocUnavailable {
                document_id: document_id.to_string(),
                sender_id: self.inner.server_peer_id.clone(),
                target_id: peer_id.to_string(),
            },
        );
    }

    /// The cache slot of a document, loading it from storage on first use.
    async fn entry(
        &self,
        id: &DocumentId,
    ) -> Result<Arc<Mutex<DocEntry>>, crate::storage::StorageError> {
        let tick = self.inner.clock.fetch_add(1, Ordering::Relaxed);
        let entry = {
            let mut docs = lock(&self.inner.docs);
            let slot = docs.entry(id.clone()).or_insert_with(|| Slot {
                entry: Arc::new(Mutex::new(DocEntry::default())),
                last_used: tick,
            });
            slot.last_used = tick;
            slot.entry.clone()
        };
        {
            let mut guard = entry.lock().await;
            if !guard.loaded {
                if let Some(stored) = self.inner.storage.load(id).await? {
                    self.inner.loaded_singly.fetch_add(1, Ordering::Relaxed);
                    guard.doc = Some(
                        outpost_mobile::records::load_document(&stored.bytes).map_err(|e| {
                            crate::storage::StorageError::Failed(format!(
                                "stored document {id} is corrupt: {e}"
                            ))
                        })?,
                    );
                    guard.kind = stored.kind;
                }
                guard.loaded = true;
            }
        }
        self.evict();
        Ok(entry)
    }

    /// Loads into the cache, in one storage round trip, those of `ids` that are not there yet:
    /// for work that changes many documents in a row (the pool sweep). Each new slot stays
    /// locked until its document is in, so nobody sees it half-loaded or loads it twice.
    pub async fn preload(&self, ids: &[DocumentId]) -> Result<(), crate::storage::StorageError> {
        let mut claimed = Vec::new();
        {
            let tick = self.inner.clock.fetch_add(1, Ordering::Relaxed);
            let mut docs = lock(&self.inner.docs);
            for id in ids {
                if docs.contains_key(id) {
                    continue;
                }
                let entry = Arc::new(Mutex::new(DocEntry::default()));
                let Ok(guard) = entry.clone().try_lock_owned() else {
                    continue;
                };
                docs.insert(
                    id.clone(),
                    Slot {
                        entry,
                        last_used: tick,
                    },
                );
                claimed.push((id.clone(), guard));
            }
        }
        if claimed.is_empty() {
            return Ok(());
        }
        let wanted: Vec<DocumentId> = claimed.iter().map(|(id, _)| id.clone()).collect();
        // A slot left unloaded (on error, or for a corrupt document) loads on its first use.
        let mut stored: HashMap<DocumentId, crate::storage::StoredDocument> = self
            .inner
            .storage
            .load_many(&wanted)
            .await?
            .into_iter()
            .collect();
        for (id, mut guard) in claimed {
            match stored.remove(&id) {
                Some(found) => {
                    if let Ok(doc) = outpost_mobile::records::load_document(&found.bytes) {
                        self.inner.loaded_in_batches.fetch_add(1, Ordering::Relaxed);
                        guard.doc = Some(doc);
                        guard.kind = found.kind;
                        guard.loaded = true;
                    }
                }
                None => guard.loaded = true,
            }
        }
        self.evict();
        Ok(())
    }

    /// Drops the least recently used idle documents beyond the cache capacity.
    fn evict(&self) {
        let capacity = self.inner.config.cache_capacity;
        let mut docs = lock(&self.inner.docs);
        // One scan evicts down to 90% of the capacity, and when documents are all in use, the
        // next scan waits until the cache has grown by another 10%: amortized O(1) per access.
        if docs.len() <= capacity || docs.len() < self.inner.next_scan.load(Ordering::Relaxed) {
            return;
        }
        let target = capacity - capacity / 10;
        let mut idle: Vec<(u64, DocumentId)> = docs
            .iter()
            .filter(|(_, slot)| {
                Arc::strong_count(&slot.entry) == 1
                    && slot.entry.try_lock().is_ok_and(|e| e.states.is_empty())
            })
            .map(|(id, slot)| (slot.last_used, id.clone()))
            .collect();
        idle.sort_unstable_by_key(|(last_used, _)| *last_used);
        let excess = docs.len().saturating_sub(target);
        for (_, id) in idle.into_iter().take(excess) {
            docs.remove(&id);
        }
        self.inner.next_scan.store(
            docs.len().max(capacity) + capacity / 10 + 1,
            Ordering::Relaxed,
        );
    }

    async fn sync_state(&self, connection: &Connection, id: &DocumentId) -> sync::State {
        if let Some(storage_id) = connection
            .metadata
            .storage_id
            .as_deref()
            .filter(|_| !connection.metadata.is_ephemeral)
            && let Ok(Some(bytes)) = self.inner.storage.load_sync_state(storage_id, id).await
            && let Ok(state) = sync::State::decode(&bytes)
        {
            return state;
        }
        sync::State::new()
    }

    async fn save_sync_state(&self, connection: &Connection, id: &DocumentId, state: &sync::State) {
        if let Some(storage_id) = connection
            .metadata
            .storage_id
            .as_deref()
            .filter(|_| !connection.metadata.is_ephemeral)
            && let Err(e) = self
                .inner
                .storage
                .save_sync_state(storage_id, id, state.encode())
                .await
        {
            tracing::warn!(error = %e, "cannot save a sync state");
        }
    }

    fn quarantine(&self, connection: &mut Connection, peer_id: &str, id: &DocumentId, why: &str) {
        tracing::warn!(document = %id, peer = peer_id, user = %connection.identity.user_id, reason = why, "document quarantined for this connection");
        connection.quarantined.insert(id.clone());
        self.unavailable(connection, peer_id, id.as_str());
    }

    async fn sync(
        &self,
        connection: &mut Connection,
        peer_id: &str,
        raw_id: &str,
        data: &ByteBuf,
        is_request: bool,
    ) -> Result<(), ProtocolError> {
        let Some(id) = DocumentId::parse(raw_id) else {
            self.unavailable(connection, peer_id, raw_id);
            return Ok(());
        };
        if connection.quarantined.contains(&id) {
            self.unavailable(connection, peer_id, raw_id);
            return Ok(());
        }
        let Ok(message) = sync::Message::decode(data) else {
            self.quarantine(connection, peer_id, &id, "undecodable sync message");
            return Ok(());
        };
        if self.is_own_manifest(connection, &id) {
            return self.sync_manifest(connection, peer_id, &id, message).await;
        }
        for _ in 1..STALE_ATTEMPTS {
            match self
                .sync_document(
                    connection,
                    peer_id,
                    raw_id,
                    &id,
                    message.clone(),
                    is_request,
                )
                .await?
            {
                Synced::Done => return Ok(()),
                Synced::Stale => {
                    self.inner.reloaded_stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Other nodes keep changing the document: leave the message unapplied (the peer
        // sends its changes again on its next sync).
        tracing::warn!(document = %id, "a document kept changing on other nodes; a sync message is left for the peer to resend");
        Ok(())
    }

    /// Applies one sync message to a (non-manifest) document: [`Synced::Stale`] when the store
    /// holds a newer version than this node's copy (then dropped, to be reloaded).
    async fn sync_document(
        &self,
        connection: &mut Connection,
        peer_id: &str,
        raw_id: &str,
        id: &DocumentId,
        message: sync::Message,
        is_request: bool,
    ) -> Result<Synced, ProtocolError> {
        let id = id.clone();
        let entry = match self.entry(&id).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(error = %e, document = %id, "cannot load a document");
                return Ok(Synced::Done);
            }
        };
        let mut guard = entry.lock().await;
        let exists = guard.doc.is_some();
        if exists && !self.inner.gate.may_read(&connection.identity, &id).await {
            // The same answer as for a document that does not exist.
            self.unavailable(connection, peer_id, raw_id);
            return Ok(Synced::Done);
        }
        let mut state = match guard.states.remove(peer_id) {
            Some(state) => state,
            None => self.sync_state(connection, &id).await,
        };
        let state_before = state.clone();
        let mut accepted = guard
            .doc
            .take()
            .unwrap_or_else(outpost_mobile::records::new_document);
        let before = accepted.get_heads();
        let mut proposed = accepted.fork();
        let outcome = self
            .admit(
                connection,
                &id,
                exists,
                &guard.kind,
                &mut accepted,
                &mut proposed,
                &mut state,
                message,
            )
            .await;
        match outcome {
            Admission::Unchanged => {
                if exists {
                    guard.doc = Some(accepted);
                } else if is_request {
                    self.unavailable(connection, peer_id, raw_id);
                    return Ok(Synced::Done);
                } else {
                    // The peer has a document we do not: answer with what we (do not) have so
                    // that it sends its changes.
                    if let Some(reply) = accepted.sync().generate_sync_message(&mut state) {
                        send(
                            &connection.tx,
                            &Message::Sync {
                                document_id: id.to_string(),
                                sender_id: self.inner.server_peer_id.clone(),
                                target_id: peer_id.to_string(),
                                data: ByteBuf::from(reply.encode()),
                            },
                        );
                    }
                    guard.states.insert(peer_id.to_string(), state);
                    connection.documents.insert(id.clone());
                    return Ok(Synced::Done);
                }
            }
            Admission::Accepted { kind } => {
                guard.kind = kind;
                guard.doc = Some(proposed);
            }
            Admission::Refused(reason) => {
                guard.doc = exists.then_some(accepted);
                self.quarantine(connection, peer_id, &id, &reason);
                return Ok(Synced::Done);
            }
            Admission::Failed => {
                guard.doc = exists.then_some(accepted);
                return Ok(Synced::Done);
            }
            Admission::Stale => {
                // Another node changed the document: reload it and apply the message again.
                guard.doc = None;
                guard.loaded = false;
                guard.states.insert(peer_id.to_string(), state_before);
                return Ok(Synced::Stale);
            }
        }
        connection.documents.insert(id.clone());
        guard.states.insert(peer_id.to_string(), state);
        let changed = guard.doc.as_mut().is_some_and(|d| d.get_heads() != before);
        self.push(&mut guard, &id, if changed { None } else { Some(peer_id) });
        if changed {
            self.manifests_stale();
        }
        Ok(Synced::Done)
    }

    /// Runs the validation pipeline on one sync message.
    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        connection: &Connection,
        id: &DocumentId,
        exists: bool,
        kind_name: &str,
        accepted: &mut AutoCommit,
        proposed: &mut AutoCommit,
        state: &mut sync::State,
        message: sync::Message,
    ) -> Admission {
        let before = accepted.get_heads();
        if let Err(e) = proposed.sync().receive_sync_message(state, message) {
            return Admission::Refused(format!("cannot apply the sync message: {e}"));
        }
        let changes = proposed.get_changes(&before);
        if changes.is_empty() {
            return Admission::Unchanged;
        }
        let actors: HashSet<String> = changes
            .iter()
            .map(|c| c.actor_id().to_hex_string())
            .collect();
        let mut new_actors = Vec::new();
        for actor in &actors {
            if *actor == self.inner.server_actor.to_hex_string() {
                return Admission::Refused("a change claims to be the server's".into());
            }
            match lock(&self.inner.actors).get(actor) {
                Some(owner) if *owner == connection.identity => {}
                Some(_) => {
                    return Admission::Refused(format!("actor {actor} belongs to another device"));
                }
                None => new_actors.push(actor.clone()),
            }
        }
        let kind = if exists {
            self.inner.kinds.get(kind_name)
        } else {
            self.inner.kinds.of(proposed)
        };
        let Some(kind) = kind else {
            return Admission::Refused("the document has no known type".into());
        };
        proposed.set_actor(self.inner.server_actor.clone());
        let previous_state = if exists {
            kind.server_fields(accepted).ok().map(|server| server.state)
        } else {
            None
        };
        let corrections = if exists {
            let deleted = previous_state.as_deref() == Some("deleted");
            if deleted {
                kind.restore(accepted, proposed).map(|()| {
                    vec![outpost_mobile::records::Violation::new(
                        "*",
                        "the record is deleted",
                    )]
                })
            } else if self.inner.gate.may_write(&connection.identity, id).await {
                kind.admit(Some(accepted), proposed, &ServerFields::default())
            } else {
                kind.restore(accepted, proposed).map(|()| {
                    vec![outpost_mobile::records::Violation::new(
                        "*",
                        "this user may read but not change the document",
                    )]
                })
            }
        } else {
            if !self
                .inner
                .gate
                .may_create(&connection.identity, kind.name())
                .await
            {
                return Admission::Refused(format!("may not create a {}", kind.name()));
            }
            let initial = ServerFields::created_by(&connection.identity.user_id);
            kind.admit(None, proposed, &initial)
        };
        let corrections = match corrections {
            Ok(c) => c,
            Err(Rejection::Malformed(why)) => return Admission::Refused(why),
            Err(Rejection::Invalid(violations)) => {
                return Admission::Refused(format!("invalid new document: {violations:?}"));
            }
        };
        let chunk = proposed.save_after(&before);
        let heads = proposed.get_heads().iter().map(|h| h.to_string()).collect();
        // Applied to this node's copy, the change is stored only if that copy is the latest.
        let based_on = exists.then(|| stored_form(&before));
        let commit = Commit {
            document_id: id,
            kind: kind.name(),
            created: !exists,
            chunk,
            document: proposed,
            record: None,
            previous: None,
            author: &connection.identity,
            corrections: &corrections,
            channel: "sync",
            request_id: None,
            bulk: false,
            heads,
            based_on,
            new_actors: new_actors.clone(),
            previous_state,
        };
        match self.inner.storage.commit(commit).await {
            Ok(()) => {
                let mut known = lock(&self.inner.actors);
                for actor in new_actors {
                    known.insert(actor, connection.identity.clone());
                }
            }
            Err(crate::storage::StorageError::ActorTaken(actor)) => {
                return Admission::Refused(format!("actor {actor} belongs to another device"));
            }
            Err(crate::storage::StorageError::Stale(_)) => return Admission::Stale,
            Err(e) => {
                tracing::error!(error = %e, document = %id, "cannot persist a change; the peer will resend it");
                return Admission::Failed;
            }
        }
        Admission::Accepted {
            kind: kind.name().to_string(),
        }
    }

    /// Sends a sync message to every peer syncing the document (or only `only`).
    fn push(&self, entry: &mut DocEntry, id: &DocumentId, only: Option<&str>) {
        let Some(doc) = entry.doc.as_mut() else {
            return;
        };
        let peers = lock(&self.inner.peers);
        for (peer, state) in entry.states.iter_mut() {
            if only.is_some_and(|o| o != peer) {
                continue;
            }
            let Some(handle) = peers.get(peer) else {
                continue;
            };
            if let Some(message) = doc.sync().generate_sync_message(state) {
                send(
                    &handle.tx,
                    &Message::Sync {
                        document_id: id.to_string(),
                        sender_id: self.inner.server_peer_id.clone(),
                        target_id: peer.clone(),
                        data: ByteBuf::from(message.encode()),
                    },
                );
            }
        }
    }

    async fn ephemeral(
        &self,
        connection: &Connection,
        peer_id: &str,
        raw_id: &str,
        count: u64,
        session_id: String,
        data: ByteBuf,
    ) {
        let Some(id) = DocumentId::parse(raw_id) else {
            return;
        };
        if !connection.documents.contains(&id) {
            return;
        }
        let Some(entry) = lock(&self.inner.docs).get(&id).map(|s| s.entry.clone()) else {
            return;
        };
        let subscribers: Vec<String> = entry
            .lock()
            .await
            .states
            .keys()
            .filter(|p| *p != peer_id)
            .cloned()
            .collect();
        let peers = lock(&self.inner.peers);
        for target in subscribers {
            if let Some(handle) = peers.get(&target) {
                send(
                    &handle.tx,
                    &Message::Ephemeral {
                        document_id: raw_id.to_string(),
                        sender_id: peer_id.to_string(),
                        target_id: target.clone(),
                        count,
                        session_id: session_id.clone(),
                        data: data.clone(),
                    },
                );
            }
        }
    }
}

/// Why a server-side change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such document of that type.
    #[error("no such document")]
    NotFound,
    /// The change breaks field rules.
    #[error("the change breaks field rules: {0:?}")]
    Invalid(Vec<outpost_mobile::records::Violation>),
    /// The stored document does not have its type's shape.
    #[error("the stored document is malformed: {0}")]
    Malformed(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Who makes a server-side change, and through which channel.
#[derive(Debug, Clone)]
pub struct Author {
    /// The acting user and device.
    pub identity: PeerIdentity,
    /// `api`, `dingtalk`, `job`, ...
    pub channel: &'static str,
    /// The HTTP request, if any.
    pub request_id: Option<String>,
    /// Whether this is one change of bulk work the server does on many records at once (a
    /// pool sweep). Storage may then audit it in one entry with the other such changes of its
    /// batch, since each record keeps its own trail (a customer's custody history).
    pub bulk: bool,
}

impl<S: SyncStorage, G: AccessGate> Engine<S, G> {
    /// Creates a document on the server (REST, bots, jobs): validated, stamped with its server
    /// fields, persisted and projected like any synced change.
    pub async fn create<T: outpost_mobile::records::RecordType>(
        &self,
        author: &Author,
        record: T,
    ) -> Result<(DocumentId, T), ChangeError> {
        let id = DocumentId::generate();
        let created = self
            .create_as(author, &id, record)
            .await?
            .ok_or_else(|| ChangeError::Malformed("a fresh document id was taken".into()))?;
        Ok((id, created))
    }

    /// Creates a document under a chosen id (one derived from what causes it, so that a job
    /// running twice creates it once); `None` when a document with that id exists already.
    pub async fn create_as<T: outpost_mobile::records::RecordType>(
        &self,
        author: &Author,
        id: &DocumentId,
        mut record: T,
    ) -> Result<Option<T>, ChangeError> {
        let violations = record.validate();
        if !violations.is_empty() {
            return Err(ChangeError::Invalid(violations));
        }
        *record.server_mut() = ServerFields::created_by(&author.identity.user_id);
        let mut doc =
            outpost_mobile::records::new_document().with_actor(self.inner.server_actor.clone());
        autosurgeon::reconcile(&mut doc, &record)
            .map_err(|e| ChangeError::Malformed(e.to_string()))?;
        let entry = self.entry(id).await?;
        let mut guard = entry.lock().await;
        if guard.doc.is_some() {
            return Ok(None);
        }
        self.persist(author, id, &mut doc, &[], &record, None)
            .await?;
        guard.kind = T::KIND.to_string();
        guard.doc = Some(doc);
        self.manifests_stale();
        Ok(Some(record))
    }

    /// Changes a document on the server through the same validation, persistence, projection
    /// and fan-out as a synced change. `edit` gets the current record; unless
    /// `server_fields` is true, changing the server-owned fields is refused.
    ///
    /// The change is stored only if the document is still as this node has it. When another
    /// node sharing the database changed it meanwhile, the document is reloaded and `edit`
    /// runs again on what is stored now (so a decision such as "is this customer still in the
    /// pool?" is always made on the latest version).
    pub async fn update<T: outpost_mobile::records::RecordType>(
        &self,
        author: &Author,
        id: &DocumentId,
        server_fields: bool,
        mut edit: impl FnMut(&mut T),
    ) -> Result<T, ChangeError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.update_once(author, id, server_fields, &mut edit).await {
                Err(ChangeError::Storage(crate::storage::StorageError::Stale(_)))
                    if attempts < STALE_ATTEMPTS =>
                {
                    self.inner.reloaded_stale.fetch_add(1, Ordering::Relaxed);
                }
                done => return done,
            }
        }
    }

    /// One attempt of [`SyncEngine::update`].
    async fn update_once<T: outpost_mobile::records::RecordType>(
        &self,
        author: &Author,
        id: &DocumentId,
        server_fields: bool,
        edit: &mut impl FnMut(&mut T),
    ) -> Result<T, ChangeError> {
        let entry = self.entry(id).await?;
        let mut guard = entry.lock().await;
        if guard.doc.is_none() {
            // Not here when this node looked; another node may have created it since.
            if self.inner.storage.stored_heads(id).await?.is_some() {
                guard.loaded = false;
                return Err(crate::storage::StorageError::Stale(id.to_string()).into());
            }
            return Err(ChangeError::NotFound);
        }
        if guard.kind != T::KIND {
            return Err(ChangeError::NotFound);
        }
        let Some(current) = guard.doc.as_mut() else {
            return Err(ChangeError::NotFound);
        };
        let before: T = outpost_mobile::records::read::hydrate(current)
            .map_err(|e| ChangeError::Malformed(e.to_string()))?;
        let mut after = before.clone();
        edit(&mut after);
        if after == before {
            // Nothing to store, so the store cannot refuse an outdated copy: ask it, so that a
            // refusal or a no-op is not decided on a version another node has replaced.
            let heads = stored_form(&current.get_heads());
            if self
                .inner
                .storage
                .stored_heads(id)
                .await?
                .is_some_and(|stored| stored != heads)
            {
                guard.doc = None;
                guard.loaded = false;
                return Err(crate::storage::StorageError::Stale(id.to_string()).into());
            }
            return Ok(after);
        }
        if !server_fields && after.server() != before.server() {
            return Err(ChangeError::Invalid(vec![
                outpost_mobile::records::Violation::new("server", "is written by the server only"),
            ]));
        }
        let violations = after.validate();
        if !violations.is_empty() {
            return Err(ChangeError::Invalid(violations));
        }
        // The change is made in place (forking would copy the whole document). If it cannot
        // be stored, the cached copy is dropped and the next use reloads what was stored.
        let since = current.get_heads();
        current.set_actor(self.inner.server_actor.clone());
        if let Err(e) = after.reconcile_change(&before, current) {
            current.rollback();
            return Err(ChangeError::Malformed(e.to_string()));
        }
        let persisted = self
            .persist(author, id, current, &since, &after, Some(&before))
            .await;
        if let Err(e) = persisted {
            guard.doc = None;
            guard.loaded = false;
            return Err(e);
        }
        self.push(&mut guard, id, None);
        self.manifests_stale();
        Ok(after)
    }

    /// Stores the server's own change of `doc` since `since`: `record` is the document now,
    /// `previous` what it was (`None` for a new one).
    async fn persist<T: outpost_mobile::records::RecordType>(
        &self,
        author: &Author,
        id: &DocumentId,
        doc: &mut AutoCommit,
        since: &[automerge::ChangeHash],
        record: &T,
        previous: Option<&T>,
    ) -> Result<(), ChangeError> {
        let chunk = doc.save_after(since);
        let heads = doc.get_heads().iter().map(|h| h.to_string()).collect();
        let based_on = previous.map(|_| stored_form(since));
        self.inner
            .storage
            .commit(Commit {
                document_id: id,
                kind: T::KIND,
                created: previous.is_none(),
                chunk,
                document: doc,
                record: Some(record as &TypedRecord),
                previous: previous.map(|p| p as &TypedRecord),
                author: &author.identity,
                corrections: &[],
                channel: author.channel,
                request_id: author.request_id.as_deref(),
                bulk: author.bulk,
                heads,
                based_on,
                new_actors: Vec::new(),
                previous_state: previous.map(|p| p.server().state.clone()),
            })
            .await?;
        Ok(())
    }
}

enum Admission {
    Unchanged,
    Accepted {
        kind: String,
    },
    Refused(String),
    Failed,
    /// The store holds a newer version than the one the message was applied to.
    Stale,
}

/// Heads the way storage keeps them: hex, sorted.
fn stored_form(heads: &[automerge::ChangeHash]) -> Vec<String> {
    let mut heads: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
    heads.sort();
    heads
}

/// What applying a sync message to a document came to.
enum Synced {
    Done,
    /// This node's copy was out of date; it was dropped and the message can be applied again.
    Stale,
}
