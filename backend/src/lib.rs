//! Outpost: an offline-first CRM backend for sales teams in the field.
//!
//! The binary is a thin shell around [`cli`]; tests and embedders start the server with
//! [`start`] on a listener of their choosing and stop it with [`Server::shutdown`].

pub mod app;
pub mod cli;
pub mod config;
pub mod crm;
pub mod error;
pub mod jobs;
pub mod platform;
pub mod sync_host;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The allocator of every program that links Outpost (the server, its tests and benchmarks).
/// SurrealDB allocates and frees many small values per statement; with glibc's malloc that was
/// a third of the CPU of an import or a pool sweep (measured with `perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether library errors capture backtraces in this process: `RUST_LIB_BACKTRACE`, or else
/// `RUST_BACKTRACE`, set to anything but `0`.
///
/// SurrealDB 3.3 uses errors for control flow: an `UPSERT` or `INSERT IGNORE` that meets an
/// existing record raises an `anyhow` error, which captures a backtrace when this holds. A pool
/// sweep spent 4% of its CPU in `Backtrace::capture` with `RUST_BACKTRACE=1` (as many container
/// images set), so the server warns at start; `RUST_LIB_BACKTRACE=0` keeps panics' backtraces
/// and drops these.
pub fn library_backtraces_on() -> bool {
    let on = |name: &str| std::env::var_os(name).map(|v| v != "0");
    on("RUST_LIB_BACKTRACE")
        .or_else(|| on("RUST_BACKTRACE"))
        .unwrap_or(false)
}

use crate::app::AppState;
use crate::config::Config;
use crate::crm::identity::auth::LoginLimiter;
use crate::crm::identity::bootstrap::{self, GeneratedAdmin};
use crate::platform::audit::AuditContext;
use crate::platform::auth::TokenKeys;
use crate::platform::db::{Db, DbError, MIGRATIONS, apply_migrations};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The first start could not create the company.
    #[error("cannot create the first admin: {0}")]
    Bootstrap(String),
    /// The listener failed.
    #[error("the HTTP listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the store, applies migrations and, on an empty store, creates the company and the first
/// admin. Shared by `serve` and the admin commands.
pub async fn open_store(config: &Config) -> Result<Db, StartError> {
    let db = Db::connect(&config.database).await?;
    apply_migrations(&db, MIGRATIONS).await?;
    Ok(db)
}

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The first admin's generated credentials, when this start created them.
    pub generated_admin: Option<GeneratedAdmin>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), StartError>>,
    db: Option<Db>,
}

impl Server {
    /// The server's store handle, for embedding and tests (drop it before the server stops, or
    /// an embedded store stays open).
    pub fn db(&self) -> Option<Db> {
        self.db.clone()
    }

    /// Stops accepting connections, lets in-flight requests finish, closes the store.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops.
    pub async fn wait(mut self) -> Result<(), StartError> {
        self.db.take();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(StartError::Io(std::io::Error::other(e))),
        }
    }
}

/// Starts the server on `listener`: store, migrations, first start, job workers, HTTP.
pub async fn start(config: Config, listener: TcpListener) -> Result<Server, StartError> {
    start_with_clock(config, listener, platform::clock::Clock::system()).await
}

/// [`start`] with the clock jobs and digests go by (tests move it forward instead of waiting).
pub async fn start_with_clock(
    config: Config,
    listener: TcpListener,
    clock: platform::clock::Clock,
) -> Result<Server, StartError> {
    let db = open_store(&config).await?;
    start_node(config, listener, clock, db).await
}

/// Starts a node over a store that is already open and migrated (another node's
/// [`Server::db`]): several nodes on one database, the way several `outpost` processes share
/// a SurrealDB cluster, each with its own sync engine, document cache and locks. Tests run
/// several nodes in one process this way.
pub async fn start_node(
    config: Config,
    listener: TcpListener,
    clock: platform::clock::Clock,
    db: Db,
) -> Result<Server, StartError> {
    let generated_admin = bootstrap::bootstrap(
        &db,
        &config,
        &config.bootstrap.admin_email,
        "Administrator",
        None,
        &AuditContext::system("system"),
    )
    .await
    .map_err(|e| StartError::Bootstrap(e.to_string()))?;
    let secret = bootstrap::signing_secret(&db, &config).await?;
    let sync = sync_host::engine(&db, &config.sync, clock.clone()).await?;
    let state = AppState {
        sync,
        db,
        keys: TokenKeys::from_secret(secret.as_bytes()),
        login_limiter: Arc::new(LoginLimiter::new(&config.auth)),
        config: Arc::new(config),
        clock,
        rep_locks: crm::pool::commands::RepLocks::default(),
    };
    let (router, _) = platform::http::router::build(state.clone());
    let db_handle = state.db.clone();
    let database = state.config.database.clone();
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let workers = state.config.jobs.workers.then(|| {
        jobs::runtime::Runtime::start(&state.db, &state.config, &state.sync, &state.clock)
    });
    let sync_for_shutdown = state.sync.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = shutdown_rx.await;
            // Upgraded sync connections are not requests; end them so that they let go of
            // the store.
            sync_for_shutdown.shutdown();
        })
        .await;
        if let Some(workers) = workers {
            workers.shutdown().await;
        }
        drop(state);
        platform::db::await_store_closed(&database).await;
        tracing::info!("server stopped; store closed");
        served.map_err(StartError::Io)
    });
    tracing::info!(%addr, "outpost is listening");
    Ok(Server {
        addr,
        generated_admin,
        shutdown: Some(shutdown_tx),
        task,
        db: Some(db_handle),
    })
}

/// Runs the server until `shutdown` resolves (the binary passes SIGINT/SIGTERM).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let database = config.database.clone();
    let server = start(config, listener).await?;
    if let Some(admin) = &server.generated_admin {
        print_generated_admin(admin);
    }
    let watchdog = watch_store(server.db.as_ref(), &database);
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    if let Some(watchdog) = watchdog {
        watchdog.stop().await;
    }
    server.shutdown().await
}

/// Starts the store watchdog of `serve` and `worker` over an embedded store, unless
/// `unresponsive_exit_secs` is 0. A remote SurrealDB server is left to its own operators: an
/// outage of it should not make every node exit at once.
fn watch_store(
    db: Option<&Db>,
    config: &config::DatabaseConfig,
) -> Option<platform::db::StoreWatchdog> {
    let watched = config.embedded_dir().is_some() && config.unresponsive_exit_secs > 0;
    let db = db.filter(|_| watched)?;
    Some(platform::db::StoreWatchdog::for_store(
        db,
        std::time::Duration::from_secs(config.unresponsive_exit_secs),
        platform::db::exit_on_stall,
    ))
}

/// Prints generated credentials once, to stdout and nowhere else (not to the log).
pub fn print_generated_admin(admin: &GeneratedAdmin) {
    println!(
        "\n  First start: created the first admin.\n    login:    {}\n    password: {}\n  \
         This password is shown only now. Log in and change it (POST /api/v1/me/password).\n",
        admin.email, admin.password
    );
}

/// Runs job workers without HTTP until `shutdown` resolves (`outpost worker`), for deployments
/// that separate them from the API nodes.
pub async fn run_workers(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let db = open_store(&config).await?;
    let clock = platform::clock::Clock::system();
    let engine = sync_host::engine(&db, &config.sync, clock.clone()).await?;
    let workers = jobs::runtime::Runtime::start(&db, &config, &engine, &clock);
    let watchdog = watch_store(Some(&db), &config.database);
    shutdown.await;
    tracing::info!("shutting down: letting workers finish or return their jobs");
    if let Some(watchdog) = watchdog {
        watchdog.stop().await;
    }
    workers.shutdown().await;
    drop(engine);
    drop(db);
    platform::db::await_store_closed(&config.database).await;
    Ok(())
}
