//! The SurrealDB handle, chosen by URL, with versioned migrations and a retry helper for
//! optimistic-transaction conflicts.
//!
//! Discipline for callers: every multi-statement write runs as one `BEGIN … COMMIT` query through
//! [`Db::write`] (or [`Db::retry`] around several calls), whose responses are always `.check()`ed,
//! so a failed statement is never silently ignored.

mod migrations;
mod tx;
mod watchdog;

use std::future::Future;
use std::time::Duration;

use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::engine::local::Db as Local;
use surrealdb::opt::auth::Root;
use surrealdb::types::QueryError;

pub use migrations::{MIGRATIONS, Migration, apply_migrations, migrations_current};
pub use tx::Tx;
pub use watchdog::{STORE_UNRESPONSIVE_EXIT_CODE, StoreWatchdog, exit_on_stall};

use crate::config::DatabaseConfig;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The store could not be opened or reached.
    #[error("cannot open the store at {url}: {source}")]
    Connect {
        /// The URL, without credentials.
        url: String,
        /// What SurrealDB said.
        source: Box<surrealdb::Error>,
    },
    /// Another process (usually a running server) holds the embedded store.
    #[error("the store at {0} is in use by another process; stop the running server first")]
    Locked(String),
    /// A query failed.
    #[error("query failed: {0}")]
    Query(Box<surrealdb::Error>),
    /// A migration failed; the store is left as it was before it.
    #[error("migration {version} ({name}) failed and was rolled back: {source}")]
    Migration {
        /// The migration's version number.
        version: u32,
        /// The migration's file name.
        name: String,
        /// What SurrealDB said.
        source: Box<surrealdb::Error>,
    },
    /// The store was migrated by a newer Outpost, or a recorded migration differs from ours.
    #[error("the store's schema does not match this build: {0}")]
    SchemaMismatch(String),
    /// A query returned something we did not expect.
    #[error("unexpected result: {0}")]
    Unexpected(String),
}

impl From<surrealdb::Error> for DbError {
    fn from(e: surrealdb::Error) -> Self {
        DbError::Query(Box::new(e))
    }
}

impl DbError {
    /// A transaction conflict that is worth retrying.
    pub fn is_conflict(&self) -> bool {
        match self {
            DbError::Query(e) => is_conflict(e),
            _ => false,
        }
    }

    /// The store could not be reached (rather than a query being wrong).
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Connect { .. } | DbError::Locked(_) => true,
            DbError::Query(e) => e.is_connection(),
            _ => false,
        }
    }

    /// A `THROW` from inside a query: a business rule refused the write.
    pub fn thrown_message(&self) -> Option<&str> {
        match self {
            DbError::Query(e) if e.is_thrown() => Some(e.message()),
            _ => None,
        }
    }

    /// A unique index refused a duplicate.
    pub fn is_duplicate(&self) -> bool {
        match self {
            DbError::Query(e) => e.is_already_exists() || e.message().contains("already contains"),
            _ => false,
        }
    }
}

fn is_conflict(e: &surrealdb::Error) -> bool {
    matches!(e.query_details(), Some(QueryError::TransactionConflict))
        || e.message()
            .to_ascii_lowercase()
            .contains("transaction conflict")
        || e.message().contains("read or write conflict")
}

/// How often and how patiently [`Db::retry`] retries a conflicting transaction.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Longest single delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 16,
            base_delay: Duration::from_millis(4),
            max_delay: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter" backoff: a random delay up to the exponential bound, so that writers that
    /// collided once do not collide again in lockstep.
    fn delay(&self, attempt: u32) -> Duration {
        let bound = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(rand::random::<u64>() % nanos)
    }
}

/// The one handle to the store, cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Client,
    retry_policy: RetryPolicy,
}

/// The SDK handle. An embedded `surrealkv://` store is opened by Outpost itself, because the
/// SDK's `connect` passes SurrealKV no settings and SurrealKV's own defaults take half the
/// machine's memory; every other URL goes through `Surreal<Any>`.
#[derive(Clone)]
enum Client {
    Any(Surreal<Any>),
    Local(Surreal<Local>),
}

/// Runs `$body` with `$client` bound to the SDK handle, whichever engine it is.
macro_rules! with_client {
    ($handle:expr, $client:ident => $body:expr) => {
        match $handle {
            Client::Any($client) => $body,
            Client::Local($client) => $body,
        }
    };
}

/// Opens an embedded SurrealKV store at `url` with its memory capped by `config`, doing what
/// the SDK's `connect` does: the version check, the bootstrap, then the maintenance tasks.
async fn open_surrealkv(
    url: &str,
    config: &DatabaseConfig,
) -> Result<Surreal<Local>, surrealdb::Error> {
    use surrealdb_engine_local::Datastore;
    const MIB: u64 = 1024 * 1024;
    let settings = surrealdb_cnf::ConfigMap::empty()
        .with_key_value(
            "surrealkv_block_cache_capacity",
            (config.cache_mib.max(16) * MIB).to_string(),
        )
        .with_key_value(
            "surrealkv_max_memtable_size",
            (config.memtable_mib.max(16) * MIB).to_string(),
        )
        .with_key_value(
            "surrealkv_block_size",
            (config.block_kib.clamp(1, 1024) * 1024).to_string(),
        );
    fn failed(e: impl std::fmt::Display) -> surrealdb::Error {
        surrealdb::Error::internal(e.to_string())
    }
    let datastore = Datastore::builder()
        .with_config(settings)
        .without_maintenance_tasks()
        .build_with_path(url)
        .await
        .map_err(failed)?;
    datastore.check_version().await.map_err(failed)?;
    datastore.bootstrap().await.map_err(failed)?;
    datastore.start_maintenance_tasks();
    Surreal::<Local>::unstable_from_datastore(datastore, None).await
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

impl Db {
    /// Opens the store named by `config.url`, signs in for a server, selects namespace and
    /// database (defining them first on a server, which wants that before first use).
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, DbError> {
        let url = config.url.clone();
        let connect_err = |source| DbError::Connect {
            url: config.url.clone(),
            source: Box::new(source),
        };
        // An embedded store is locked by one process; a handle of this process that was just
        // dropped releases it a moment later, so wait briefly before giving up.
        let mut waited = Duration::ZERO;
        let embedded = config.embedded_dir().is_some();
        let inner = loop {
            let opened = if embedded {
                open_surrealkv(&url, config).await.map(Client::Local)
            } else {
                surrealdb::engine::any::connect(url.as_str())
                    .await
                    .map(Client::Any)
            };
            match opened {
                Ok(inner) => break inner,
                Err(e)
                    if e.message().contains("already locked")
                        && waited < Duration::from_secs(5) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    waited += Duration::from_millis(50);
                }
                Err(e) if e.message().contains("already locked") => {
                    return Err(DbError::Locked(config.url.clone()));
                }
                Err(e) => return Err(connect_err(e)),
            }
        };
        let remote = config.url.starts_with("ws") || config.url.starts_with("http");
        with_client!(&inner, client => Self::select_database(client, config, remote).await)
            .map_err(connect_err)?;
        Ok(Self {
            inner,
            retry_policy: RetryPolicy::default(),
        })
    }

    /// Signs in to a server and selects (on a server, first defines) namespace and database.
    async fn select_database<C: surrealdb::Connection>(
        inner: &Surreal<C>,
        config: &DatabaseConfig,
        remote: bool,
    ) -> Result<(), surrealdb::Error> {
        if remote {
            if let (Some(username), Some(password)) = (&config.username, &config.password) {
                inner
                    .signin(Root {
                        username: username.clone(),
                        password: password.expose().to_string(),
                    })
                    .await?;
            }
            inner
                .query(format!(
                    "DEFINE NAMESPACE IF NOT EXISTS `{ns}`; USE NS `{ns}`; DEFINE DATABASE IF NOT EXISTS `{db}`;",
                    ns = config.namespace,
                    db = config.database
                ))
                .await
                .and_then(|r| r.check())?;
        }
        inner
            .use_ns(config.namespace.clone())
            .use_db(config.database.clone())
            .await?;
        Ok(())
    }

    /// Sends `sql` with its bindings and returns the unchecked responses (see [`check`]).
    pub async fn send(
        &self,
        sql: &str,
        bindings: &[(String, surrealdb::types::Value)],
    ) -> Result<surrealdb::IndexedResults, surrealdb::Error> {
        let started = std::time::Instant::now();
        let result = with_client!(&self.inner, client => {
            let mut query = client.query(sql);
            for (name, value) in bindings {
                query = query.bind((name.clone(), value.clone()));
            }
            query.await
        });
        // Statement timings, for finding the query behind a slow request or a busy idle server:
        // `RUST_LOG=outpost::platform::db=debug`.
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1_000.0,
            sql = %sql.split_whitespace().collect::<Vec<_>>().join(" "),
            "statement"
        );
        result
    }

    /// Runs `op` until it succeeds, fails with something other than a transaction conflict, or
    /// runs out of attempts. `op` must be a whole transaction, safe to run again from scratch.
    pub async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, DbError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if e.is_conflict() && attempt + 1 < self.retry_policy.max_attempts => {
                    tracing::debug!(attempt, "transaction conflict; retrying");
                    tokio::time::sleep(self.retry_policy.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Whether the store answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.send("RETURN 1", &[])
            .await
            .and_then(|r| r.check())
            .is_ok()
    }
}

/// Like the SDK's `check`, but for a transaction reports the statement that actually failed
/// rather than the first statement that "was not executed due to a failed transaction".
pub fn check(
    mut response: surrealdb::IndexedResults,
) -> Result<surrealdb::IndexedResults, surrealdb::Error> {
    let errors = response.take_errors();
    if errors.is_empty() {
        return Ok(response);
    }
    let mut errors: Vec<(usize, surrealdb::Error)> = errors.into_iter().collect();
    errors.sort_by_key(|(index, _)| *index);
    let cause = errors
        .iter()
        .position(|(_, e)| {
            !e.message()
                .contains("not executed due to a failed transaction")
        })
        .unwrap_or(0);
    Err(errors.swap_remove(cause).1)
}

/// Waits until the embedded store at `config.url` has been shut down after its last handle was
/// dropped (SurrealDB closes it in the background), so that the process exits, or the store is
/// reopened, only once everything is on disk. Other engines return at once.
pub async fn await_store_closed(config: &DatabaseConfig) {
    let Some(dir) = config.embedded_dir() else {
        return;
    };
    let lock_path = std::path::Path::new(dir.split('?').next().unwrap_or(dir)).join("LOCK");
    for _ in 0..200 {
        let released = std::fs::File::open(&lock_path)
            .map(|file| file.try_lock().is_ok())
            .unwrap_or(true);
        if released {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(path = %lock_path.display(), "the store did not close within 10 s");
}

/// A statement (or several) with its bindings, run and checked in one call, so that no caller
/// forgets `.check()` or repeats the error plumbing.
#[derive(Clone)]
pub struct Query {
    sql: String,
    bindings: Vec<(String, surrealdb::types::Value)>,
}

impl Query {
    /// A query; bind its `$names` with [`Query::bind`].
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            bindings: Vec::new(),
        }
    }

    /// Binds `$name`.
    pub fn bind(mut self, name: &str, value: impl surrealdb::types::SurrealValue) -> Self {
        self.bindings.push((name.to_string(), value.into_value()));
        self
    }

    /// An empty condition, built up with [`Query::and`] and [`Query::and_when`]; it matches
    /// everything until a clause is added.
    pub fn conditions() -> Self {
        Self::new("")
    }

    /// Adds `clause` to this condition with AND (a `true` condition is replaced, not extended,
    /// so the planner sees only the clauses that narrow).
    pub fn and(mut self, clause: &str) -> Self {
        let grouped = |sql: &str| {
            if sql.contains(" OR ") {
                format!("({sql})")
            } else {
                sql.to_string()
            }
        };
        self.sql = match (self.sql.trim(), clause.trim()) {
            (_, "" | "true") => self.sql,
            ("" | "true", _) => grouped(clause),
            (sql, _) => format!("{} AND {}", grouped(sql), grouped(clause)),
        };
        self
    }

    /// Adds another condition, with its bindings, with AND.
    pub fn and_query(self, other: Query) -> Self {
        let clause = other.sql.clone();
        let mut out = self.and(&clause);
        out.bindings.extend(other.bindings);
        out
    }

    /// Adds `clause` with AND and binds `value` as `$name`, only when a value is given. A list
    /// filter the request leaves out must not reach the query as `($x = NONE OR x = $x)`: the
    /// planner cannot serve that from an index, so every filtered page would scan the table
    /// from its end until the page filled (all of it, for a record with a few audit entries).
    pub fn and_when<V: surrealdb::types::SurrealValue>(
        self,
        clause: &str,
        name: &str,
        value: Option<V>,
    ) -> Self {
        match value {
            Some(value) => self.and(clause).bind(name, value),
            None => self,
        }
    }

    /// The SurrealQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Moves this query's bindings onto `other` (for queries that embed this one's text).
    pub fn rebind(self, mut other: Query) -> Query {
        other.bindings.extend(self.bindings);
        other
    }

    /// Runs the query and fails on the first statement that failed.
    pub async fn run(&self, db: &Db) -> Result<surrealdb::IndexedResults, DbError> {
        Ok(check(db.send(&self.sql, &self.bindings).await?)?)
    }

    /// Runs the query and takes the result of statement `index`.
    pub async fn take<T>(&self, db: &Db, index: usize) -> Result<T, DbError>
    where
        T: surrealdb::types::SurrealValue,
        usize: surrealdb::opt::QueryResult<T>,
    {
        Ok(self.run(db).await?.take(index)?)
    }
}

impl Db {
    /// One record by table and key.
    pub async fn get<T: surrealdb::types::SurrealValue>(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<T>, DbError> {
        let record = crate::platform::ids::record(table, key);
        Ok(with_client!(&self.inner, client => client.select(record).await)?)
    }
}
