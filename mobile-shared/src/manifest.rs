//! The manifest document: one per user, written by the server only, listing every document the
//! user may see with a digest of its heads. A client that keeps a sync connection open gets
//! manifest changes pushed like any document change (a record entered or left the user's scope,
//! or changed); the same content is served by `GET /api/v1/sync/manifest` for one-shot clients.
//!
//! Its document id is derived from the user id ([`manifest_document_id`]), so a client finds it
//! without asking; the server answers `doc-unavailable` to anyone but its user.

use std::collections::HashMap;

use autosurgeon::{Hydrate, Reconcile};

use crate::DocumentId;
use crate::api::ManifestEntry;

/// The `type` of a manifest document.
pub const KIND: &str = "manifest";

/// The document id of a user's manifest.
pub fn manifest_document_id(user_id: &str) -> DocumentId {
    DocumentId::derived(&format!("outpost manifest of {user_id}"))
}

/// The manifest document's content.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct ManifestDocument {
    /// Always `manifest`.
    #[autosurgeon(rename = "type", hydrate = "crate::records::text::string")]
    pub record_type: String,
    /// Whose manifest it is.
    #[autosurgeon(hydrate = "crate::records::text::string")]
    pub user_id: String,
    /// Every visible document, keyed by document id.
    pub documents: HashMap<String, ManifestItem>,
}

/// One visible document.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate)]
pub struct ManifestItem {
    /// Its record type.
    #[autosurgeon(rename = "type", hydrate = "crate::records::text::string")]
    pub kind: String,
    /// [`crate::api::heads_digest`] of the server's copy.
    #[autosurgeon(hydrate = "crate::records::text::string")]
    pub heads_digest: String,
}

impl ManifestDocument {
    /// The document for `user_id` listing `entries`.
    pub fn new(user_id: &str, entries: Vec<ManifestEntry>) -> Self {
        Self {
            record_type: KIND.into(),
            user_id: user_id.into(),
            documents: entries
                .into_iter()
                .map(|e| {
                    (
                        e.doc_id,
                        ManifestItem {
                            kind: e.kind,
                            heads_digest: e.heads_digest,
                        },
                    )
                })
                .collect(),
        }
    }
}
