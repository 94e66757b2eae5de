//! The Outpost server's sync engine.
//!
//! It speaks automerge-repo's protocol v1 ([`protocol`]), names documents the way automerge-repo
//! does ([`document_id`]), and (as the offline-sync issue proceeds) gates access by the actor's
//! scope, validates and merges incoming changes, and fans them out to connected peers, reaching
//! storage through traits it defines. It knows no HTTP routes and no SQL.

pub mod engine;
pub mod kinds;
pub mod storage;

/// The wire protocol and document ids live in `outpost-mobile`, which phones share.
pub use outpost_mobile::{document_id, protocol};

pub use engine::{Author, ChangeError, Connection, Engine, EngineConfig, Outgoing, ProtocolError};
pub use outpost_mobile::DocumentId;
pub use storage::{
    AccessGate, Commit, PeerIdentity, StorageError, StoredDocument, SyncStorage, TypedRecord,
};
