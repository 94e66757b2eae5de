//! The Outpost server's sync engine.
//!
//! It will speak automerge-repo's protocol v1, gate access by the actor's scope, validate and
//! merge incoming changes and fan them out to connected peers, reaching storage through traits it
//! defines. The offline-sync issue fills it in; the foundation only reserves its place in the
//! workspace so that the dependency direction `mobile-shared <- sync <- backend` is fixed early.
