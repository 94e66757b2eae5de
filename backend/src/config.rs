//! Configuration: built-in defaults, an optional `outpost.toml`, then `OUTPOST__SECTION__KEY`
//! environment overrides, then command-line flags.
//!
//! Every field has a default so that `outpost serve` runs with no file at all. Secrets are wrapped
//! in [`Secret`] so that printing the config (at start-up, in a panic) never shows them.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A string that must never appear in logs: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole configuration of one Outpost process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
pub struct Config {
    /// HTTP listener and request limits.
    pub server: ServerConfig,
    /// Where the data lives.
    pub database: DatabaseConfig,
    /// Tokens and password rules.
    pub auth: AuthConfig,
    /// What the first start creates in an empty store.
    pub bootstrap: BootstrapConfig,
    /// Logging.
    pub log: LogConfig,
    /// The sync engine.
    pub sync: SyncConfig,
    /// The job queue's workers.
    pub jobs: JobsConfig,
    /// Outgoing email (the notification email channel).
    pub email: EmailConfig,
}

/// Outgoing email over SMTP. With no `smtp_host` the email channel is off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server; empty turns email off.
    pub smtp_host: String,
    /// Its port.
    pub smtp_port: u16,
    /// The sender, e.g. `Outpost <crm@example.cn>`.
    pub from: String,
    /// SMTP login, if the server wants one.
    pub username: Option<String>,
    /// SMTP password.
    pub password: Option<Secret>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_host: String::new(),
            smtp_port: 25,
            from: "Outpost <outpost@localhost>".into(),
            username: None,
            password: None,
        }
    }
}

/// The job queue's workers in this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Whether `outpost serve` runs workers (turn off when `outpost worker` processes do).
    pub workers: bool,
    /// Seconds between a worker's heartbeats.
    pub heartbeat_secs: u64,
    /// Seconds without a heartbeat after which a worker's jobs go back to the queue.
    pub dead_after_secs: u64,
    /// When housekeeping runs (cron, six fields, seconds first; UTC).
    pub housekeeping_schedule: String,
    /// When the morning digest's sweep runs (cron, as above); each run sends the digest to the
    /// users whose local 08:00 has passed and who have not had today's. Empty: no digests.
    pub digest_schedule: String,
    /// When the public pool's return sweep runs (cron, as above). A store whose sweeps take
    /// minutes may want it less often. Empty: customers go back only when an admin runs the
    /// sweep (`POST /api/v1/pools/sweep`).
    pub pool_sweep_schedule: String,
}

impl JobsConfig {
    /// Checks every schedule, so that a typo stops the server at start instead of leaving a
    /// job that never runs.
    fn check_schedules(&self) -> Result<(), String> {
        use std::str::FromStr;
        for (key, schedule, may_be_off) in [
            ("housekeeping_schedule", &self.housekeeping_schedule, false),
            ("digest_schedule", &self.digest_schedule, true),
            ("pool_sweep_schedule", &self.pool_sweep_schedule, true),
        ] {
            if schedule.is_empty() && may_be_off {
                continue;
            }
            match cron::Schedule::from_str(schedule) {
                Err(e) => {
                    return Err(format!(
                        "jobs.{key}: `{schedule}` is not a cron expression of six fields, seconds first ({e})"
                    ));
                }
                Ok(parsed) if parsed.upcoming(chrono::Utc).next().is_none() => {
                    return Err(format!("jobs.{key}: `{schedule}` never fires"));
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: true,
            heartbeat_secs: 5,
            dead_after_secs: 30,
            housekeeping_schedule: "0 0 * * * *".into(),
            digest_schedule: crate::crm::digest::SCHEDULE.into(),
            pool_sweep_schedule: crate::crm::pool::returns::SCHEDULE.into(),
        }
    }
}

/// The sync engine's limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Documents kept in memory; idle ones beyond this are evicted, so memory stays flat as the
    /// number of documents grows.
    pub cache_documents: usize,
    /// Largest WebSocket frame accepted, in bytes.
    pub max_frame_bytes: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            cache_documents: 1000,
            max_frame_bytes: 8 * 1024 * 1024,
        }
    }
}

/// HTTP listener and request limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest customer import request (the file, as an upload form or base64 in JSON), in
    /// bytes; larger ones get 413. Files are much bigger than other requests, hence their own.
    pub max_import_bytes: usize,
    /// Seconds a request may take before it is answered with 408.
    pub request_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            max_import_bytes: 32 * 1024 * 1024,
            request_timeout_secs: 30,
        }
    }
}

/// Where the data lives: a SurrealDB URL and, for a server, its credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `surrealkv://DIR` (embedded default), `mem://` (tests) or `ws://HOST:PORT` (a SurrealDB server).
    pub url: String,
    /// SurrealDB namespace.
    pub namespace: String,
    /// SurrealDB database; one company per database.
    pub database: String,
    /// Root user for a `ws://` server.
    pub username: Option<String>,
    /// Root password for a `ws://` server.
    pub password: Option<Secret>,
    /// MiB of read cache the embedded store (`surrealkv://`) may keep. Left alone, SurrealKV
    /// takes half the machine's memory minus 1 GiB. A bigger cache buys less than it costs: at
    /// 1M customers, 4096 once made a 100,000-customer pool sweep about 14% faster (135-144 s
    /// against 158-167 s), and on today's smaller store layout 1024 made no clear difference
    /// (69.3 s against a median of 70.6 s): a cached block is still copied whole for every
    /// point read, and SurrealDB's index upkeep costs the same with any cache.
    pub cache_mib: u64,
    /// MiB of writes the embedded store buffers in memory before flushing them to disk. One
    /// transaction must fit (a group commit or an import batch is a few MiB); left alone,
    /// SurrealKV takes up to 1 GiB. Every fourth flush starts a merge that rewrites the next
    /// level whole (SurrealKV 0.21 writes one file per merge), so a small memtable costs a
    /// large store dearly: at 100k customers, 128 MiB made a 90k-customer pool sweep 20% slower than
    /// 512 MiB, and its peak memory higher (the merges allocate).
    pub memtable_mib: u64,
    /// KiB per block of the embedded store's files: the unit it reads from disk and caches.
    /// Applies to files written from then on, so a store loaded with another size moves over
    /// as its merges rewrite it. SurrealKV 0.21 copies the whole block for every point read
    /// that reaches a file (`Block::iter` clones it), and a pool sweep is mostly point reads
    /// (the documents it changes and SurrealDB's own index upkeep), so small blocks pay off:
    /// against SurrealKV's own 64 KiB, 4 KiB swept 100k customers in a median 53.3 s against
    /// 63.3 s at a quarter of the scale (250k customers, 750k follow-ups), and at 1M
    /// customers loaded in 46 min against 65, settled after opening as fast, and swept in
    /// 65-91 s against 125-142 s with the rep's pinyin search p99 at 21-50 ms against
    /// 54-80; with 280,000 follow-ups added, 102-116 s against 119-158 s, the pinyin p99 at
    /// 44-65 ms against 99-117 (see the README, after the customer benchmark). 16 KiB once
    /// left a 1M store merging for 15 minutes after its load; 4 KiB did not.
    pub block_kib: u64,
    /// Seconds an embedded store (`surrealkv://`) may go without answering a read before
    /// `outpost serve` or `outpost worker` ends itself (exit status 75) for its supervisor to
    /// restart it; 0 never does. The check allows a tenth more (at most 10 s) between its
    /// reads. SurrealKV 0.21 can deadlock between a range read and a memtable flush, after
    /// which nothing in the process answers again (see `platform::db::watchdog`). A read that
    /// takes over a quarter of this is logged as a warning.
    pub unresponsive_exit_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "surrealkv://data".into(),
            namespace: "outpost".into(),
            database: "main".into(),
            username: None,
            password: None,
            cache_mib: 256,
            memtable_mib: 512,
            block_kib: 4,
            unresponsive_exit_secs: 120,
        }
    }
}

impl DatabaseConfig {
    /// The directory of an embedded SurrealKV store (`surrealkv://DIR`), or `None` for any
    /// other engine: what decides how the store is opened, closed and watched.
    pub fn embedded_dir(&self) -> Option<&str> {
        self.url.strip_prefix("surrealkv://")
    }
}

/// Tokens, password rules and login throttling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC key for access tokens. When absent, a random key is generated on first start and
    /// kept in the store, so tokens survive restarts without any configuration.
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in days.
    pub refresh_token_ttl_days: u64,
    /// Failed logins allowed per account within the window before 429.
    pub max_failed_logins_per_account: u32,
    /// Failed logins allowed per client address within the window before 429.
    pub max_failed_logins_per_address: u32,
    /// The sliding window for both login limits, in seconds.
    pub failed_login_window_secs: u64,
    /// Shortest password accepted.
    pub min_password_length: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_days: 30,
            max_failed_logins_per_account: 5,
            max_failed_logins_per_address: 30,
            failed_login_window_secs: 15 * 60,
            min_password_length: 10,
        }
    }
}

/// What the first start against an empty store creates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapConfig {
    /// The company's name.
    pub company_name: String,
    /// Login of the first admin.
    pub admin_email: String,
    /// Name of the root department.
    pub root_department: String,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            company_name: "My Company".into(),
            admin_email: "admin@outpost.local".into(),
            root_department: "Head Office".into(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info,outpost=debug`; `RUST_LOG` wins when set.
    pub filter: String,
    /// `json` for one JSON object per line, anything else for human-readable lines.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info,surrealdb=warn,surrealkv=warn".into(),
            format: "text".into(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Config {
    /// Loads defaults, then `path` if it exists, then `OUTPOST__SECTION__KEY` variables.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .merge(Env::prefixed("OUTPOST__").split("__"))
            .extract::<Config>()
            .map_err(|e| ConfigError(Box::new(e)))
            .and_then(|config| {
                config
                    .jobs
                    .check_schedules()
                    .map_err(|message| ConfigError(Box::new(figment::Error::from(message))))?;
                Ok(config)
            })
    }

    /// A configuration for tests and tools: defaults with the given database URL.
    pub fn for_database(url: impl Into<String>) -> Self {
        let mut config = Config::default();
        config.database.url = url.into();
        config
    }
}
