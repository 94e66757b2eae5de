//! Each user's manifest document: served on request, written by the server only, and refreshed
//! for every connected peer that has it open whenever a document changes or the host says that
//! scopes changed (a department move, a new role). Refreshes are coalesced: a burst of commits
//! costs one refresh per open manifest.

use std::sync::atomic::Ordering;
use std::time::Duration;

use automerge::sync::{self, SyncDoc};
use outpost_mobile::manifest::{self, ManifestDocument};

use super::{DocEntry, Engine, lock};
use crate::storage::{AccessGate, Commit, PeerIdentity, SyncStorage};
use crate::{Connection, DocumentId, ProtocolError};

/// How long a refresh waits for more changes to coalesce.
const COALESCE: Duration = Duration::from_millis(200);

impl<S: SyncStorage, G: AccessGate> Engine<S, G> {
    /// Says that the documents users may see may have changed (a commit, a department move, a
    /// role change): every open manifest is refreshed shortly.
    pub fn manifests_stale(&self) {
        if self.inner.open_manifests.load(Ordering::Relaxed) > 0 {
            self.inner.manifests_stale.notify_one();
        }
    }

    /// Whether `id` is the manifest of the connection's user.
    pub(super) fn is_own_manifest(&self, connection: &Connection, id: &DocumentId) -> bool {
        *id == manifest::manifest_document_id(&connection.identity.user_id)
    }

    /// A sync message for the peer's own manifest. The manifest is read-only: a peer that sends
    /// changes to it is cut off from it.
    pub(super) async fn sync_manifest(
        &self,
        connection: &mut Connection,
        peer_id: &str,
        id: &DocumentId,
        message: sync::Message,
    ) -> Result<(), ProtocolError> {
        self.start_manifest_refresher();
        let entry = match self.entry(id).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(error = %e, "cannot load a manifest");
                return Ok(());
            }
        };
        let mut guard = entry.lock().await;
        self.refresh_manifest(&mut guard, id, &connection.identity)
            .await;
        if guard.doc.is_none() {
            self.unavailable(connection, peer_id, id.as_str());
            return Ok(());
        }
        let state = match guard.states.remove(peer_id) {
            Some(state) => state,
            None => self.sync_state(connection, id).await,
        };
        // Try the message on a fork: a peer may only acknowledge, never change, its manifest.
        let Some(doc) = guard.doc.as_mut() else {
            return Ok(());
        };
        let mut probe = doc.fork();
        let mut probed = state.clone();
        let applied = probe.sync().receive_sync_message(&mut probed, message);
        let read_only = probe.get_heads() == doc.get_heads();
        if applied.is_err() || !read_only {
            drop(guard);
            self.quarantine(
                connection,
                peer_id,
                id,
                "the manifest is written by the server only",
            );
            return Ok(());
        }
        let state = probed;
        if guard.states.is_empty() {
            self.inner.open_manifests.fetch_add(1, Ordering::Relaxed);
        }
        guard.states.insert(peer_id.to_string(), state);
        connection.documents.insert(id.clone());
        self.push(&mut guard, id, Some(peer_id));
        Ok(())
    }

    /// Brings a manifest document up to date with what its user may see now; persists and
    /// returns whether it changed.
    async fn refresh_manifest(
        &self,
        guard: &mut DocEntry,
        id: &DocumentId,
        identity: &PeerIdentity,
    ) -> bool {
        let entries = match self.inner.gate.visible_documents(identity).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(error = %e, user = %identity.user_id, "cannot list a user's documents");
                return false;
            }
        };
        let content = ManifestDocument::new(&identity.user_id, entries);
        let created = guard.doc.is_none();
        let mut doc = guard
            .doc
            .take()
            .unwrap_or_else(outpost_mobile::records::new_document);
        doc.set_actor(self.inner.server_actor.clone());
        let before = doc.get_heads();
        if let Err(e) = autosurgeon::reconcile(&mut doc, &content) {
            tracing::error!(error = %e, "cannot write a manifest");
            guard.doc = (!created).then_some(doc);
            return false;
        }
        if doc.get_heads() == before {
            guard.doc = Some(doc);
            return false;
        }
        let chunk = doc.save_after(&before);
        let heads = doc.get_heads().iter().map(ToString::to_string).collect();
        let commit = Commit {
            document_id: id,
            kind: manifest::KIND,
            created,
            chunk,
            document: &doc,
            record: None,
            previous: None,
            author: identity,
            corrections: &[],
            channel: "sync",
            request_id: None,
            bulk: false,
            heads,
            based_on: None,
            previous_state: None,
            new_actors: Vec::new(),
        };
        if let Err(e) = self.inner.storage.commit(commit).await {
            tracing::error!(error = %e, "cannot persist a manifest");
            if created {
                return false;
            }
            // Keep serving the last persisted version.
            guard.doc = self
                .inner
                .storage
                .load(id)
                .await
                .ok()
                .flatten()
                .and_then(|stored| outpost_mobile::records::load_document(&stored.bytes).ok());
            return false;
        }
        guard.kind = manifest::KIND.to_string();
        guard.doc = Some(doc);
        true
    }

    /// Refreshes every manifest a connected peer has open, and pushes what changed.
    pub async fn refresh_open_manifests(&self) {
        let identities: Vec<PeerIdentity> = {
            let peers = lock(&self.inner.peers);
            let mut seen = std::collections::HashSet::new();
            peers
                .values()
                .filter(|p| seen.insert(p.identity.user_id.clone()))
                .map(|p| p.identity.clone())
                .collect()
        };
        for identity in identities {
            let id = manifest::manifest_document_id(&identity.user_id);
            let entry = lock(&self.inner.docs).get(&id).map(|s| s.entry.clone());
            let Some(entry) = entry else {
                continue;
            };
            let mut guard = entry.lock().await;
            if guard.states.is_empty() {
                continue;
            }
            if self.refresh_manifest(&mut guard, &id, &identity).await {
                self.push(&mut guard, &id, None);
            }
        }
    }

    /// Starts (once) the task that refreshes open manifests after changes, coalescing bursts.
    fn start_manifest_refresher(&self) {
        if self.inner.refresher_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let notified = match weak.upgrade() {
                    Some(inner) => {
                        let stale = inner.manifests_stale.clone();
                        drop(inner);
                        stale
                    }
                    None => return,
                };
                notified.notified().await;
                tokio::time::sleep(COALESCE).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                Engine { inner }.refresh_open_manifests().await;
            }
        });
    }

    /// A manifest nobody has open any more stops being refreshed.
    pub(super) fn manifest_closed(&self) {
        let _ = self
            .inner
            .open_manifests
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}
