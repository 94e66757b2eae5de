//! A guard against a store that stops answering.
//!
//! SurrealKV 0.21 (the embedded engine of SurrealDB 3.3.5) can deadlock. A range read takes
//! the in-memory tables' locks before the table manifest's, while a memtable flush or a
//! merge takes the manifest's first (`surrealkv` 0.21.4: `Snapshot::collect_iter_state`
//! against `flush_immutable_to_sst` and the compactor; 1.x takes them in one order). When the
//! two meet, the flush holds the manifest forever, every read and write of the store waits
//! behind it, and the server answers nothing. It happened once, 13 minutes into a follow-up
//! load at 1M customers, after many such loads had passed. Nothing inside the
//! process can undo it: the threads are parked on the engine's own locks.
//!
//! So the server watches its store. A task reads it every few seconds; a plain thread, which
//! needs neither the async runtime nor the store, checks that some read came back within
//! `database.stall_exit_secs`, and otherwise ends the process with
//! [`STORE_STALLED_EXIT_CODE`] so that its supervisor (systemd `Restart=on-failure`, a
//! container's restart policy) starts it again. Every committed transaction is in the
//! store's write-ahead log, and jobs that were running are handed out again once their
//! heartbeat lapses, so a restart loses nothing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{Db, migrations_current};

/// The exit status of a server that ended itself because its store stopped answering
/// (`EX_TEMPFAIL`: try again).
pub const STORE_STALLED_EXIT_CODE: i32 = 75;

/// Watches that the store keeps answering, and calls its `on_stall` once when it does not.
/// Stops when dropped (or [`StoreWatchdog::stop`]ped).
pub struct StoreWatchdog {
    stopped: Arc<AtomicBool>,
    probe: Option<JoinHandle<()>>,
}

impl StoreWatchdog {
    /// Watches `db` with the read `/readyz` makes (the applied migrations: a range read of a
    /// small table, which waits like any other when the engine is stuck). Must be called
    /// inside a Tokio runtime.
    pub fn for_store(
        db: &Db,
        stall: Duration,
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
            stall,
            on_stall,
        )
    }

    /// Runs `probe` again and again (pausing between rounds) and calls `on_stall` with the
    /// time since the last round finished, once, when that time passes `stall`. Must be
    /// called inside a Tokio runtime.
    pub fn spawn<P, F>(
        mut probe: P,
        stall: Duration,
        on_stall: impl FnOnce(Duration) + Send + 'static,
    ) -> Self
    where
        P: FnMut() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let started = Instant::now();
        let last_answer_ms = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        // About ten rounds per allowed stall: at most ten a second, at least one per 10 s.
        let pause = (stall / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let probe = tokio::spawn({
            let last_answer_ms = last_answer_ms.clone();
            async move {
                loop {
                    probe().await;
                    last_answer_ms.store(millis_since(started), Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
            }
        });
        let check_every = (stall / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let watching = stopped.clone();
        let spawned = std::thread::Builder::new()
            .name("store-watchdog".into())
            .spawn(move || {
                while !watching.load(Ordering::Relaxed) {
                    std::thread::sleep(check_every);
                    let since_answer = Duration::from_millis(
                        millis_since(started)
                            .saturating_sub(last_answer_ms.load(Ordering::Relaxed)),
                    );
                    // The round in flight may be the slow one, so the wait counts from the
                    // end of the last round (or the start), and the pause between rounds is
                    // allowed on top.
                    if since_answer > stall + pause && !watching.load(Ordering::Relaxed) {
                        on_stall(since_answer);
                        return;
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the store watchdog's thread; running without it");
        }
        Self {
            stopped,
            probe: Some(probe),
        }
    }

    /// Stops watching and waits until the probe has let go of the store (a store handle it
    /// still held would keep an embedded store open after the server stops).
    pub async fn stop(mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        if let Some(probe) = self.probe.take() {
            probe.abort();
            let _ = probe.await;
        }
    }
}

impl Drop for StoreWatchdog {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        if let Some(probe) = &self.probe {
            probe.abort();
        }
    }
}

/// Milliseconds from `start` until now, at least 1 (0 means "never answered").
fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What a server does when its store stops answering: say why, then end the process so
/// that its supervisor restarts it.
pub fn exit_on_stall(since_answer: Duration) {
    tracing::error!(
        seconds = since_answer.as_secs(),
        "the store has not answered a read for {} s; exiting with status {} so that the \
         supervisor restarts the server (committed work is kept in the store's log)",
        since_answer.as_secs(),
        STORE_STALLED_EXIT_CODE
    );
    eprintln!(
        "outpost: the store has not answered a read for {} s; exiting with status {}",
        since_answer.as_secs(),
        STORE_STALLED_EXIT_CODE
    );
    std::process::exit(STORE_STALLED_EXIT_CODE);
}
