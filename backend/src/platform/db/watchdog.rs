//! A guard against an embedded store that stops answering.
//!
//! SurrealKV 0.21 (the embedded engine of SurrealDB 3.3.5) can deadlock. A range read holds
//! the in-memory tables' locks while it takes the table manifest's, and a memtable flush or a
//! merge holds the manifest's while it takes the in-memory tables' (`surrealkv` 0.21.4:
//! `Snapshot::collect_iter_state` against `flush_immutable_to_sst` and the compactor's
//! `update_manifest`; 1.x takes them in one order). When the two meet, every later read and
//! write of the store waits behind them and the server answers nothing. It happened once, 13
//! minutes into a follow-up load at 1M customers, after many such loads had passed. Nothing
//! inside the process can undo it: the threads are parked on the engine's own locks.
//!
//! So `serve` and `worker` watch an embedded store. A task reads it every few seconds; a plain
//! thread, which needs neither the async runtime nor the store, checks that some read came
//! back within `database.unresponsive_exit_secs`, and otherwise ends the process with
//! [`STORE_UNRESPONSIVE_EXIT_CODE`] so that its supervisor (systemd `Restart=on-failure`, a
//! container's restart policy) starts it again. With SurrealDB's default of syncing every
//! commit, every committed transaction is in the store's log, and jobs that were running are
//! handed out again once their heartbeat lapses, so a restart loses nothing.
//!
//! The watchdog stops before a graceful shutdown drains the server, so a deadlock during the
//! drain is left to the supervisor's stop timeout.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{Db, migrations_current};

/// The exit status of a server that ended itself because its store stopped answering
/// (`EX_TEMPFAIL`: try again).
pub const STORE_UNRESPONSIVE_EXIT_CODE: i32 = 75;

/// The watchdog is watching.
const WATCHING: u8 = 0;
/// It was stopped; it will not fire.
const STOPPED: u8 = 1;
/// It fired.
const FIRED: u8 = 2;

/// Watches that the store keeps answering, and calls its `on_stall` once when it does not.
/// Never fires once dropped or [`StoreWatchdog::stop`]ped.
pub struct StoreWatchdog {
    state: Arc<AtomicU8>,
    probe: Option<JoinHandle<()>>,
    watcher: Option<Thread>,
}

impl StoreWatchdog {
    /// Watches `db` with the read `/readyz` makes (the applied migrations: a range read of a
    /// small table, which waits like any other when the engine is stuck). Must be called
    /// inside a Tokio runtime.
    pub fn for_store(
        db: &Db,
        allowance: Duration,
        on_stall: impl FnOnce(Duration) + Send + 'static,
    ) -> Self {
        let db = db.clone();
        Self::spawn(
            move || {
                let db = db.clone();
                async move {
                    // An error is still an answer: the store is reachable and not stuck.
                    let _ = migrations_current(&db).await;
                }
            },
            allowance,
            on_stall,
        )
    }

    /// Runs `probe` again and again, pausing between rounds, and calls `on_stall` once with
    /// the time since the last round finished (or since the start) when that time passes
    /// `allowance` plus the pause. Must be called inside a Tokio runtime.
    pub fn spawn<P, F>(
        mut probe: P,
        allowance: Duration,
        on_stall: impl FnOnce(Duration) + Send + 'static,
    ) -> Self
    where
        P: FnMut() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let started = Instant::now();
        let last_answer_ms = Arc::new(AtomicU64::new(0));
        let state = Arc::new(AtomicU8::new(WATCHING));
        // About ten rounds per allowance: at most ten a second, at least one per 10 s.
        let pause = (allowance / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
        // A round in flight may be the slow one, so the wait counts from the end of the last
        // round, and the pause between rounds is allowed on top.
        let limit = allowance.saturating_add(pause);
        let probe = tokio::spawn({
            let last_answer_ms = last_answer_ms.clone();
            async move {
                loop {
                    let round = Instant::now();
                    probe().await;
                    let took = round.elapsed();
                    if took > limit / 4 {
                        tracing::warn!(
                            millis = took.as_millis() as u64,
                            "the store was slow to answer the watchdog's read"
                        );
                    }
                    last_answer_ms.store(millis_since(started), Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
            }
        });
        let check_every = (allowance / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let watching = state.clone();
        let spawned = std::thread::Builder::new()
            .name("store-watchdog".into())
            .spawn(move || {
                // When the whole process was frozen (SIGSTOP, a paused container, a debugger),
                // the clock ran on while the probe could not: count from the thaw instead.
                let mut counting_from_ms = 0;
                let mut last_check = Instant::now();
                while watching.load(Ordering::Acquire) == WATCHING {
                    std::thread::park_timeout(check_every);
                    if last_check.elapsed() > check_every * 5 + Duration::from_secs(1) {
                        counting_from_ms = millis_since(started);
                    }
                    last_check = Instant::now();
                    let answered = last_answer_ms.load(Ordering::Relaxed).max(counting_from_ms);
                    let since_answer =
                        Duration::from_millis(millis_since(started).saturating_sub(answered));
                    if since_answer > limit
                        && watching
                            .compare_exchange(WATCHING, FIRED, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                    {
                        on_stall(since_answer);
                        return;
                    }
                }
            });
        let watcher = match spawned {
            Ok(handle) => Some(handle.thread().clone()),
            Err(error) => {
                tracing::warn!(%error, "cannot start the store watchdog's thread; running without it");
                None
            }
        };
        Self {
            state,
            probe: Some(probe),
            watcher,
        }
    }

    /// Stops watching and waits until the probe has let go of the store (a store handle it
    /// still held would keep an embedded store open after the server stops).
    pub async fn stop(mut self) {
        self.disarm();
        if let Some(probe) = self.probe.take() {
            probe.abort();
            let _ = probe.await;
        }
    }

    /// Makes sure the watchdog never fires from now on, and wakes its thread to end.
    fn disarm(&mut self) {
        let _ = self
            .state
            .compare_exchange(WATCHING, STOPPED, Ordering::AcqRel, Ordering::Acquire);
        if let Some(watcher) = &self.watcher {
            watcher.unpark();
        }
    }
}

impl Drop for StoreWatchdog {
    fn drop(&mut self) {
        self.disarm();
        if let Some(probe) = &self.probe {
            probe.abort();
        }
    }
}

/// Milliseconds from `start` until now.
fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a server does when its store stops answering: say why, then end the process so
/// that its supervisor restarts it.
pub fn exit_on_stall(since_answer: Duration) {
    // stderr first: a log pipe nobody drains must not keep the process from exiting.
    eprintln!(
        "outpost: the store has not answered a read for {} s; exiting with status {} for the \
         supervisor to restart the server",
        since_answer.as_secs(),
        STORE_UNRESPONSIVE_EXIT_CODE
    );
    tracing::error!(
        seconds = since_answer.as_secs(),
        status = STORE_UNRESPONSIVE_EXIT_CODE,
        "the store stopped answering; exiting for the supervisor to restart the server"
    );
    std::process::exit(STORE_UNRESPONSIVE_EXIT_CODE);
}
