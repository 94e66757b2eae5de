//! The job queue: apalis 1.0 workers over jobs stored in SurrealDB, so the embedded default needs
//! no second database and a job can be enqueued in the same transaction as the write that
//! causes it ([`enqueue_in`]).
//!
//! - A worker claims due jobs (higher [`Priority`] first, then oldest due time) in one
//!   transaction that only succeeds for jobs still pending; concurrent claimers conflict and
//!   retry, so a job is claimed by exactly one worker. Each priority is read from its own range
//!   of the `(queue, status, priority, run_at)` index in due order, so a claim costs the same
//!   however long the backlog.
//! - A failed run goes back to `pending` with an exponential backoff until its attempts are used
//!   up; then it stays `failed` with its error, for an admin to retry or discard.
//! - Workers heartbeat; the jobs of a worker whose heartbeat is older than
//!   [`QueueConfig::dead_after`] return to `pending` (a killed process, an aborted task).
//! - A worker shutting down returns the jobs it had fetched but not started.

pub mod routes;
pub mod runtime;
mod store;

use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::codec::Codec;
use apalis_core::backend::finalize::Durable;
use apalis_core::backend::persistence::{Persisted, TaskPersistLayer};
use apalis_core::backend::{Backend, BackendConfig, WireFormatBackend};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::platform::db::{Db, DbError, Tx};
pub use store::{JobRow, JobStatus, JobStore};

/// A kind of job: its arguments, and the queue that carries them.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The queue's name, e.g. `reminder`.
    const QUEUE: &'static str;
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Arguments or a result did not encode or decode.
    #[error("job data: {0}")]
    Codec(#[from] serde_json::Error),
    /// A worker asked to return jobs it did not hold.
    #[error("{returned} of {asked} jobs could be returned to the queue")]
    ReturnMismatch {
        /// How many the worker returned.
        asked: usize,
        /// How many were still its own.
        returned: u64,
    },
}

/// How a queue's workers behave.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The queue's name.
    pub queue: String,
    /// How many due jobs a worker claims at once.
    pub batch: usize,
    /// How often a worker says it is alive (and looks for dead workers' jobs).
    pub heartbeat: Duration,
    /// How long without a heartbeat until a worker counts as dead.
    pub dead_after: Duration,
    /// How often an idle worker looks for due jobs.
    pub poll: Duration,
    /// The delay before the first retry; doubles with each attempt.
    pub backoff: Duration,
    /// The longest delay between retries.
    pub backoff_max: Duration,
    /// The longest a run may take; a run cut off counts as a failed attempt. Applied by the
    /// workers [`runtime`] starts.
    pub timeout: Duration,
    /// What "now" is when deciding which jobs are due.
    pub clock: crate::platform::clock::Clock,
    /// Jobs pushed through the apalis sink are keyed by their queue and arguments, so the same
    /// job pushed twice (a cron tick from two processes) exists once.
    pub unique: bool,
}

impl QueueConfig {
    /// Defaults for `queue`.
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            batch: 10,
            heartbeat: Duration::from_secs(5),
            dead_after: Duration::from_secs(30),
            poll: Duration::from_millis(200),
            backoff: Duration::from_secs(2),
            backoff_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(300),
            clock: crate::platform::clock::Clock::system(),
            unique: false,
        }
    }

    /// The delay before retrying a job that has failed `attempts` times.
    pub fn backoff_after(&self, attempts: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
            .min(self.backoff_max)
    }
}

/// How urgent a job is: three lanes, each claimed in due order before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    /// After everything else that is due.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before everything else that is due.
    High,
}

impl Priority {
    /// The stored value (higher runs first).
    pub fn level(self) -> i64 {
        match self {
            Self::Low => 0,
            Self::Normal => 1,
            Self::High => 2,
        }
    }
}

/// When and how a job runs.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Not before this time; `None`: now.
    pub run_at: Option<DateTime<Utc>>,
    /// Which lane.
    pub priority: Priority,
    /// Runs in all, the first included, before the job is kept as failed.
    pub max_attempts: u32,
    /// The same job (queue, arguments and due time) enqueued again is not added twice.
    pub unique: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            run_at: None,
            priority: Priority::Normal,
            max_attempts: 5,
            unique: false,
        }
    }
}

impl JobOptions {
    /// Runs at `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        Self {
            run_at: Some(at),
            ..Self::default()
        }
    }

    /// Runs after `delay`.
    pub fn after(delay: Duration) -> Self {
        Self::at(Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
    }
}

/// Adds a job to `tx`: it exists exactly when the rest of the transaction commits. Returns the
/// job's id.
pub fn enqueue_in<J: Job>(tx: &mut Tx, job: &J, options: &JobOptions) -> Result<String, JobError> {
    let args = serde_json::to_vec(job)?;
    let key = options
        .unique
        .then(|| store::unique_key(J::QUEUE, &args, options.run_at.unwrap_or_default()));
    Ok(store::create_job(tx, J::QUEUE, args, options, key))
}

/// Enqueues a job on its own.
pub async fn enqueue<J: Job>(db: &Db, job: &J, options: &JobOptions) -> Result<String, JobError> {
    let mut tx = Tx::new();
    let id = enqueue_in(&mut tx, job, options)?;
    tx.run(db).await?;
    Ok(id)
}

/// JSON for arguments and results: readable in the store and by admins.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for JsonCodec {
    type Error = serde_json::Error;
    type Compact = Vec<u8>;

    fn encode(&self, value: &T) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(value)
    }

    fn decode(&self, value: &Vec<u8>) -> Result<T, serde_json::Error> {
        serde_json::from_slice(value)
    }
}

/// The apalis backend of one queue: give it to `WorkerBuilder::backend`, then
/// `.build(handler)` where the handler takes `J` and returns `Result<R, E>` with `R: Serialize`.
pub struct Queue<J> {
    persisted: Persisted<JobStore>,
    config: QueueConfig,
    codec: JsonCodec,
    /// The final commit of finished runs' outcomes, while the worker closes.
    closing: Option<futures_util::future::BoxFuture<'static, Result<(), JobError>>>,
    _job: PhantomData<fn() -> J>,
}

impl<J> Clone for Queue<J> {
    fn clone(&self) -> Self {
        Self {
            persisted: self.persisted.clone(),
            config: self.config.clone(),
            codec: self.codec,
            closing: None,
            _job: PhantomData,
        }
    }
}

impl<J: Job> Queue<J> {
    /// The queue of `J` over `db`, with default settings.
    pub fn new(db: &Db) -> Self {
        Self::with_config(db, QueueConfig::new(J::QUEUE))
    }

    /// The queue of `J` with other settings (the queue name is always `J::QUEUE`).
    pub fn with_config(db: &Db, mut config: QueueConfig) -> Self {
        config.queue = J::QUEUE.to_string();
        Self::on(db, config)
    }
}

impl<J> Queue<J> {
    /// A queue named by `config.queue` carrying `J`, for argument types that are not a [`Job`]
    /// (such as apalis-cron's ticks).
    pub fn on(db: &Db, config: QueueConfig) -> Self {
        Self {
            persisted: Persisted::new(JobStore::new(db.clone(), config.clone())),
            config,
            codec: JsonCodec,
            closing: None,
            _job: PhantomData,
        }
    }

    /// Wrapped so that an idle worker looks for due jobs every [`QueueConfig::poll`].
    pub fn polled(
        self,
    ) -> apalis_core::backend::ext::poll_strategy::PollWith<
        Self,
        apalis_core::backend::ext::poll_strategy::IntervalStrategy,
    > {
        use apalis_core::backend::ext::BackendExt;
        let every = self.config.poll;
        self.poll_with_interval(every)
    }
}

/// Tasks pushed into the queue (by `pipe_to`, e.g. from a cron schedule) are stored as jobs.
impl<J> futures_util::Sink<Task<Vec<u8>>> for Queue<J> {
    type Error = JobError;

    fn poll_ready(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), JobError>> {
        std::pin::Pin::new(&mut self.get_mut().persisted).poll_ready(cx)
    }

    fn start_send(self: std::pin::Pin<&mut Self>, task: Task<Vec<u8>>) -> Result<(), JobError> {
        std::pin::Pin::new(&mut self.get_mut().persisted).start_send(task)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), JobError>> {
        std::pin::Pin::new(&mut self.get_mut().persisted).poll_flush(cx)
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), JobError>> {
        std::pin::Pin::new(&mut self.get_mut().persisted).poll_close(cx)
    }
}

impl<J> Backend for Queue<J> {
    type Task = Task<Vec<u8>>;
    type Error = JobError;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), JobError>> {
        self.persisted.poll_ready(cx, worker, self.config.heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, JobError>>> {
        // apalis-core 1.0 panics (`unreachable!`) when `poll_next` finds a heartbeat in flight,
        // which a slow store under load makes happen: seen once in a 100k-customer benchmark,
        // where it killed that queue's worker. Driving `poll_ready` first finishes any
        // heartbeat or event batch; in the fetching states it is a no-op.
        match self.persisted.poll_ready(cx, worker, self.config.heartbeat) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {}
        }
        self.persisted.poll_next(cx, worker)
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), JobError>> {
        if self.closing.is_none() {
            match self.persisted.poll_close(cx, worker) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let store = (*self.persisted).clone();
            let name = worker.name().to_string();
            self.closing = Some(Box::pin(async move { store.close(&name).await }));
        }
        match self.closing.as_mut().map(|f| f.as_mut().poll(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            Some(Poll::Ready(result)) => {
                self.closing = None;
                Poll::Ready(result)
            }
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<J> BackendConfig for Queue<J> {
    type Args = J;
    type Id = String;
    type Kind = Durable;
    type Config = QueueConfig;
    type Layer = TaskPersistLayer<JsonCodec, Vec<u8>>;

    fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        self.persisted
            .layer(JsonCodec, self.config.batch)
            .persist_results(true)
    }
}

impl<J> WireFormatBackend for Queue<J> {
    type Codec = JsonCodec;
    type Compact = Vec<u8>;

    fn codec(&self) -> &JsonCodec {
        &self.codec
    }
}
