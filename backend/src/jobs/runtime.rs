//! The workers a process runs, and the cron schedules that feed the durable queue.
//!
//! A cron schedule does not run its handler directly: every process's scheduler pushes each tick
//! into the queue as a job keyed by the tick ([`QueueConfig::unique`]), so several processes on
//! one SurrealDB produce one job per tick, which exactly one worker claims.
//!
//! An apalis worker ends for good when its backend fails once (a heartbeat or a fetch the
//! store could not answer, after the store's own conflict retries). Each worker here is
//! supervised: it is built and started again after a pause that grows while it keeps failing,
//! so a passing fault of the store does not leave a queue without a worker until a restart.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use apalis::prelude::{BoxDynError, WorkerBuilder, WorkerBuilderExt};
use apalis_core::backend::ext::BackendExt;
use apalis_cron::{CronScheduler, Tick};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Job, Queue, QueueConfig};
use crate::config::JobsConfig;
use crate::platform::db::Db;

/// The hourly housekeeping tick's queue.
pub const HOUSEKEEPING: &str = "system.housekeeping";

/// A running worker: stop it and wait for it to hand back what it holds.
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops the worker: it finishes the job it is running and returns the ones it fetched but
    /// has not started.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The pause before a failed worker starts again the first time; it doubles at every failure
/// in a row, up to [`MAX_RESTART_PAUSE`].
const FIRST_RESTART_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause before a failed worker starts again.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(30);
/// A worker that ran this long before failing counts as healthy again: its next failure
/// pauses only [`FIRST_RESTART_PAUSE`].
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Runs the worker `run` starts (given the stop signal) until the handle stops it, starting it
/// again whenever it ends with an error.
fn supervise<F, Fut>(name: String, run: F) -> WorkerHandle
where
    F: Fn(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), apalis::prelude::WorkerError>> + Send + 'static,
{
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut pause = FIRST_RESTART_PAUSE;
        loop {
            let started = tokio::time::Instant::now();
            let Err(e) = run(stopped.clone()).await else {
                return;
            };
            if *stopped.borrow() {
                return;
            }
            if started.elapsed() >= HEALTHY_AFTER {
                pause = FIRST_RESTART_PAUSE;
            }
            tracing::error!(error = %e, worker = %name, ?pause, "a job worker stopped with an error; starting it again");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
            pause = (pause * 2).min(MAX_RESTART_PAUSE);
        }
    });
    WorkerHandle { stop, task }
}

/// A process-unique worker name: `queue@node`.
pub fn worker_name(queue: &str, node: &str) -> String {
    format!("{queue}@{node}")
}

/// A name for this process among the workers sharing the store.
pub fn node_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "outpost".into());
    let key = crate::platform::ids::new_key();
    format!("{host}-{}-{}", std::process::id(), &key[key.len() - 8..])
}

/// Runs `handler` for every tick of `schedule` (a six-field cron expression, seconds first),
/// through the durable queue `config.queue`.
pub fn spawn_cron<F, Fut>(
    db: &Db,
    mut config: QueueConfig,
    schedule: &str,
    worker: String,
    handler: F,
) -> Result<WorkerHandle, cron::error::Error>
where
    F: Fn(Tick) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxDynError>> + Send + 'static,
{
    let schedule = cron::Schedule::from_str(schedule)?;
    config.unique = true;
    let timeout = config.timeout;
    let db = db.clone();
    let name = worker.clone();
    Ok(supervise(name, move |stopped| {
        let queue = Queue::<Tick>::on(&db, config.clone()).polled();
        let backend = CronScheduler::new(schedule.clone()).pipe_to(queue);
        let handler = handler.clone();
        WorkerBuilder::new(worker.clone())
            .backend(backend)
            .timeout(timeout)
            .build(move |tick: Tick| handler.clone()(tick))
            .run_until(stop_signal(stopped))
    }))
}

/// Runs `handler` for every job of `J`, each run cut off after `config.timeout`.
pub fn spawn_worker<J, F, Fut, R>(
    db: &Db,
    config: QueueConfig,
    worker: String,
    handler: F,
) -> WorkerHandle
where
    J: Job + Unpin,
    F: Fn(J) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, BoxDynError>> + Send + 'static,
    R: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let timeout = config.timeout;
    let db = db.clone();
    let name = worker.clone();
    supervise(name, move |stopped| {
        let handler = handler.clone();
        WorkerBuilder::new(worker.clone())
            .backend(Queue::<J>::with_config(&db, config.clone()).polled())
            .timeout(timeout)
            .build(move |job: J| handler.clone()(job))
            .run_until(stop_signal(stopped))
    })
}

/// Resolves when the worker's handle asks it to stop.
async fn stop_signal(mut stopped: watch::Receiver<bool>) -> Result<(), std::io::Error> {
    let _ = stopped.wait_for(|stop| *stop).await;
    Ok(())
}

/// The queue settings of this process.
pub fn queue_config(queue: &str, jobs: &JobsConfig) -> QueueConfig {
    QueueConfig {
        heartbeat: Duration::from_secs(jobs.heartbeat_secs.max(1)),
        dead_after: Duration::from_secs(jobs.dead_after_secs.max(2)),
        ..QueueConfig::new(queue)
    }
}

/// Every worker of this process.
#[derive(Default)]
pub struct Runtime {
    workers: Vec<WorkerHandle>,
}

impl Runtime {
    /// Adds the cron job of `config.queue` on `schedule` (see [`spawn_cron`]). An empty
    /// schedule is a job the configuration turned off; one that does not parse is logged
    /// (`Config::load` refuses both mistakes before a server starts).
    fn add_cron<F, Fut>(
        &mut self,
        db: &Db,
        config: QueueConfig,
        schedule: &str,
        worker: String,
        handler: F,
    ) where
        F: Fn(Tick) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxDynError>> + Send + 'static,
    {
        let queue = config.queue.clone();
        if schedule.is_empty() {
            tracing::info!(queue, "this cron job is off: its schedule is empty");
            return;
        }
        match spawn_cron(db, config, schedule, worker, handler) {
            Ok(worker) => self.workers.push(worker),
            Err(e) => {
                tracing::error!(error = %e, queue, schedule, "a cron schedule does not parse")
            }
        }
    }

    /// Starts the built-in workers: housekeeping (expired idempotency keys, finished jobs older
    /// than a week; hourly by default), the morning digest's quarter-hourly sweep, task
    /// and event reminders, notification delivery, and the tasks that follow-ups' next contact times
    /// become.
    pub fn start(
        db: &Db,
        config: &crate::config::Config,
        engine: &crate::sync_host::SyncEngine,
        clock: &crate::platform::clock::Clock,
    ) -> Self {
        let jobs = &config.jobs;
        let queue_config = |queue: &str| QueueConfig {
            clock: clock.clone(),
            ..self::queue_config(queue, jobs)
        };
        let node = node_name();
        let mut runtime = Self::default();
        let housekeeping_db = db.clone();
        runtime.add_cron(
            db,
            queue_config(HOUSEKEEPING),
            &jobs.housekeeping_schedule,
            worker_name(HOUSEKEEPING, &node),
            move |_tick: Tick| {
                let db = housekeeping_db.clone();
                async move {
                    crate::platform::http::idempotency::purge_expired(&db)
                        .await
                        .map_err(|e| BoxDynError::from(e.to_string()))?;
                    super::store::purge_finished(&db, chrono::Duration::days(7))
                        .await
                        .map_err(|e| BoxDynError::from(e.to_string()))?;
                    Ok(())
                }
            },
        );
        let reminder_db = db.clone();
        runtime.workers.push(spawn_worker(
            db,
            queue_config(crate::crm::tasks::reminders::TaskReminder::QUEUE),
            worker_name(crate::crm::tasks::reminders::TaskReminder::QUEUE, &node),
            move |job: crate::crm::tasks::reminders::TaskReminder| {
                let db = reminder_db.clone();
                async move {
                    crate::crm::tasks::reminders::remind(&db, &job)
                        .await
                        .map_err(|e| BoxDynError::from(e.to_string()))?;
                    Ok::<_, BoxDynError>(())
                }
            },
        ));
        let (digest_db, digest_clock) = (db.clone(), clock.clone());
        runtime.add_cron(
            db,
            queue_config(crate::crm::digest::QUEUE),
            &jobs.digest_schedule,
            worker_name(crate::crm::digest::QUEUE, &node),
            move |_tick: Tick| {
                let (db, clock) = (digest_db.clone(), digest_clock.clone());
                async move {
                    crate::crm::digest::sweep(&db, clock.now())
                        .await
                        .map_err(|e| BoxDynError::from(e.to_string()))?;
                    Ok(())
                }
            },
        );
        let (returns_db, returns_engine, returns_clock) =
            (db.clone(), engine.clone(), clock.clone());
        runtime.add_cron(
            db,
            queue_config(crate::crm::pool::returns::QUEUE),
            &jobs.pool_sweep_schedule,
            worker_name(crate::crm::pool::returns::QUEUE, &node),
            move |_tick: Tick| {
                let (db, engine, clock) = (
                    returns_db.clone(),
                    returns_engine.clone(),
                    returns_clock.clone(),
                );
                async move {
                    let report = crate::crm::pool::returns::sweep(&engine, &db, clock.now())
                        .await
                        .map_err(|e| BoxDynError::from(e.to_string()))?;
                    tracing::info!(
                        returned = report.returned,
                        warned = report.warned,
                        "pool sweep"
                    );
                    Ok(())
                }
            },
        );
        let event_db = db.clone();
        runtime.workers.push(spawn_worker(
            db,
            queue_config(crate::crm::events::reminders::EventReminder::QUEUE),
            worker_name(crate::crm::events::reminders::EventReminder::QUEUE, &node),
            move |job: crate::crm::events::reminders::EventReminder| {
                let db = event_db.clone();
                async move {
                    crate::crm::events::reminders::remind(&db, &job)
                        .await
                        .map_err(|e| BoxDynError::from(e.to_string()))?;
                    Ok::<_, BoxDynError>(())
                }
            },
        ));
        let (deliver_db, channels) = (
            db.clone(),
            crate::crm::notifications::delivery::Channels::from_config(config),
        );
        runtime.workers.push(spawn_worker(
            db,
            queue_config(crate::crm::notifications::delivery::Deliver::QUEUE),
            worker_name(crate::crm::notifications::delivery::Deliver::QUEUE, &node),
            move |job: crate::crm::notifications::delivery::Deliver| {
                let (db, channels) = (deliver_db.clone(), channels.clone());
                async move {
                    crate::crm::notifications::delivery::deliver(&db, &channels, &job).await?;
                    Ok::<_, BoxDynError>(())
                }
            },
        ));
        let (next_db, next_engine) = (db.clone(), engine.clone());
        runtime.workers.push(spawn_worker(
            db,
            queue_config(crate::crm::follow_ups::next_contact::NextContact::QUEUE),
            worker_name(
                crate::crm::follow_ups::next_contact::NextContact::QUEUE,
                &node,
            ),
            move |job: crate::crm::follow_ups::next_contact::NextContact| {
                let (db, engine) = (next_db.clone(), next_engine.clone());
                async move {
                    crate::crm::follow_ups::next_contact::schedule(&engine, &db, &job).await?;
                    Ok::<_, BoxDynError>(())
                }
            },
        ));
        tracing::info!(%node, workers = runtime.workers.len(), "job workers started");
        runtime
    }

    /// Stops every worker and waits for them.
    pub async fn shutdown(self) {
        for worker in self.workers {
            worker.stop().await;
        }
    }
}
