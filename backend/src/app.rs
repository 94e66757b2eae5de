//! The state every handler shares.

use std::sync::Arc;

use crate::config::Config;
use crate::crm::identity::auth::LoginLimiter;
use crate::platform::auth::TokenKeys;
use crate::platform::db::Db;

/// Shared, cheaply cloned application state.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub db: Db,
    /// The configuration the process started with.
    pub config: Arc<Config>,
    /// Access-token keys.
    pub keys: TokenKeys,
    /// Failed-login throttling.
    pub login_limiter: Arc<LoginLimiter>,
    /// The sync engine.
    pub sync: crate::sync_host::SyncEngine,
    /// The time jobs and digests go by.
    pub clock: crate::platform::clock::Clock,
    /// Serializes one rep's pool commands, so that the caps they check hold.
    pub rep_locks: crate::crm::pool::commands::RepLocks,
}
