//! Jobs and workers in SurrealDB: apalis-core's [`Persistence`] over the `job` and
//! `job_worker` tables, plus what admins do with jobs (list, retry, discard).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use apalis_core::backend::persistence::{Persistence, TaskEvent};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use chrono::{DateTime, Utc};
use serde::Serialize;
use surrealdb::types::{Bytes, RecordId, SurrealValue};
use utoipa::ToSchema;

use super::{JobError, JobOptions, Priority, QueueConfig};
use crate::platform::db::{Db, Query, Tx};
use crate::platform::ids;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its time or for a worker.
    Pending,
    /// Claimed by a worker.
    Running,
    /// Ran successfully.
    Done,
    /// Failed on its last allowed attempt; kept with its error.
    Failed,
    /// Dropped by an admin.
    Discarded,
}

impl JobStatus {
    /// The name stored in `job.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Discarded => "discarded",
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, SurrealValue)]
pub struct JobRow {
    /// `job:<key>`.
    pub id: RecordId,
    /// The queue.
    pub queue: String,
    /// JSON arguments.
    pub args: Bytes,
    /// `pending`, `running`, `done`, `failed` or `discarded`.
    pub status: String,
    /// 2 high, 1 normal, 0 low.
    pub priority: i64,
    /// Due time.
    pub run_at: DateTime<Utc>,
    /// Runs started so far.
    pub attempts: i64,
    /// Runs allowed.
    pub max_attempts: i64,
    /// The worker running it.
    pub lock_by: Option<String>,
    /// The last run's error.
    pub last_error: Option<String>,
    /// Enqueued.
    pub created_at: DateTime<Utc>,
    /// Finished.
    pub done_at: Option<DateTime<Utc>>,
}

/// Adds the `CREATE` of a job to `tx`; returns the job's key. With a `key`, a job that already
/// exists under it is left alone (the same job pushed twice exists once).
pub(crate) fn create_job(
    tx: &mut Tx,
    queue: &str,
    args: Vec<u8>,
    options: &JobOptions,
    key: Option<String>,
) -> String {
    let unique = key.is_some();
    let key = key.unwrap_or_else(ids::new_key);
    let record = tx.bind(ids::record("job", &key));
    let queue = tx.bind(queue.to_string());
    let args = tx.bind(Bytes::from(args));
    let priority = tx.bind(options.priority.level());
    let run_at = tx.bind(options.run_at.unwrap_or_else(Utc::now));
    let max_attempts = tx.bind(i64::from(options.max_attempts.max(1)));
    let create = format!(
        "CREATE {record} SET queue = {queue}, args = {args}, status = 'pending', priority = {priority}, run_at = {run_at}, attempts = 0, max_attempts = {max_attempts}, created_at = time::now()"
    );
    if unique {
        tx.push(format!("IF !record::exists({record}) {{ {create} }}"));
    } else {
        tx.push(create);
    }
    key
}

/// The key of a unique job: a UUID whose first 48 bits are its due time in milliseconds (so keys
/// sort like other jobs' v7 keys) and whose rest is a digest of its queue and arguments.
pub(crate) fn unique_key(queue: &str, args: &[u8], run_at: DateTime<Utc>) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(queue.as_bytes())
        .chain_update([0u8])
        .chain_update(args)
        .finalize();
    let mut bytes = [0u8; 16];
    let millis = u64::try_from(run_at.timestamp_millis()).unwrap_or(0);
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&digest[..10]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// Deletes jobs that finished (done or discarded) longer than `age` ago; failed jobs stay until
/// an admin retries or discards them.
pub(crate) async fn purge_finished(db: &Db, age: chrono::Duration) -> Result<(), JobError> {
    Query::new("DELETE job WHERE status IN ['done', 'discarded'] AND done_at < $before")
        .bind("before", Utc::now() - age)
        .run(db)
        .await?;
    Ok(())
}

/// apalis-core persistence of one queue over SurrealDB.
///
/// Outcomes of finished runs are committed in groups: when the worker next claims jobs, on its
/// heartbeat, when a group reaches the batch size, and when it stops. A process that dies in
/// between runs those jobs again (at least once, as every handler must allow), in exchange for
/// one commit per batch instead of one per job.
#[derive(Debug, Clone)]
pub struct JobStore {
    db: Db,
    config: QueueConfig,
    /// Finished runs not yet committed: (sequence, worker that ran it, outcome). An entry
    /// leaves only once committed, so a flush cut off halfway loses nothing.
    outcomes: Arc<Mutex<Outcomes>>,
}

#[derive(Debug, Default)]
struct Outcomes {
    next: u64,
    pending: Vec<(u64, String, TaskResult<Vec<u8>>)>,
}

type TaskResult<T> = apalis_core::backend::TaskResult<T>;

/// SurrealQL for "this long ago".
fn ago(duration: std::time::Duration) -> String {
    format!("time::now() - {}ms", duration.as_millis())
}

impl JobStore {
    /// The store of the queue `config.queue`.
    pub fn new(db: Db, config: QueueConfig) -> Self {
        Self {
            db,
            config,
            outcomes: Arc::default(),
        }
    }

    /// Commits the outcomes gathered so far.
    pub(crate) async fn flush(&self) -> Result<(), JobError> {
        let snapshot = self
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .clone();
        let Some(last) = snapshot.last().map(|(seq, _, _)| *seq) else {
            return Ok(());
        };
        let mut by_worker: BTreeMap<String, Vec<TaskResult<Vec<u8>>>> = BTreeMap::new();
        for (_, worker, outcome) in snapshot {
            by_worker.entry(worker).or_default().push(outcome);
        }
        // Committing an outcome twice is harmless: each update requires the job to still be
        // running under the same worker.
        for (worker, outcomes) in by_worker {
            self.complete(outcomes, &worker).await?;
        }
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .retain(|(seq, _, _)| *seq > last);
        Ok(())
    }

    /// At a worker's close: commits what it finished, and returns the jobs it claimed but never
    /// started (a claim whose answer was dropped when the worker began to stop).
    pub(crate) async fn close(&self, worker: &str) -> Result<(), JobError> {
        self.flush().await?;
        let query = Query::new(
            "UPDATE job SET status = 'pending', lock_by = NONE, lock_at = NONE, attempts -= 1
               WHERE queue = $queue AND status = 'running' AND lock_by = $worker",
        )
        .bind("queue", self.config.queue.clone())
        .bind("worker", worker.to_string());
        self.db.retry(|| query.run(&self.db)).await?;
        Ok(())
    }

    /// Returns every job held by a worker that has stopped heartbeating (or by `worker`, when
    /// it starts again under the same name) to `pending`.
    async fn release_orphans(&self, restarted: Option<&str>) -> Result<(), JobError> {
        let query = Query::new(format!(
            "LET $dead = (SELECT VALUE record::id(id) FROM job_worker WHERE queue = $queue AND last_seen < {ago});
             UPDATE job SET status = 'pending', lock_by = NONE, lock_at = NONE
               WHERE queue = $queue AND status = 'running' AND (lock_by IN $dead OR lock_by = $restarted);",
            ago = ago(self.config.dead_after)
        ))
        .bind("queue", self.config.queue.clone())
        .bind("restarted", restarted.map(str::to_string));
        self.db.retry(|| query.run(&self.db)).await?;
        Ok(())
    }

    async fn complete(
        &self,
        results: Vec<TaskResult<Vec<u8>>>,
        worker: &str,
    ) -> Result<(), JobError> {
        #[derive(Debug, SurrealValue)]
        struct Attempts {
            key: String,
            attempts: i64,
            max_attempts: i64,
        }
        let (succeeded, failed): (Vec<_>, Vec<_>) =
            results.into_iter().partition(|r| r.result.is_ok());
        let mut tx = Tx::new();
        let worker_b = tx.bind(worker.to_string());
        // Successes: one statement for the whole batch.
        if !succeeded.is_empty() {
            let mut records = Vec::with_capacity(succeeded.len());
            let mut outputs = Vec::with_capacity(succeeded.len());
            for result in succeeded {
                records.push(ids::record("job", &result.task_id.to_string()));
                outputs.push(Bytes::from(result.result.unwrap_or_default()));
            }
            let records = tx.bind(records);
            let outputs = tx.bind(outputs);
            tx.push(format!(
                "FOR $i IN 0..array::len({records}) {{ UPDATE {records}[$i] SET status = 'done', result = {outputs}[$i], done_at = time::now(), lock_by = NONE, lock_at = NONE, last_error = NONE WHERE status = 'running' AND lock_by = {worker_b} }}"
            ));
        }
        // Failures: back to the queue after a backoff, or kept as failed once out of attempts.
        if !failed.is_empty() {
            let records: Vec<RecordId> = failed
                .iter()
                .map(|r| ids::record("job", &r.task_id.to_string()))
                .collect();
            let attempts: Vec<Attempts> =
                Query::new("SELECT record::id(id) AS key, attempts, max_attempts FROM $records")
                    .bind("records", records)
                    .take(&self.db, 0)
                    .await?;
            for result in failed {
                let key = result.task_id.to_string();
                let Some(row) = attempts.iter().find(|a| a.key == key) else {
                    continue;
                };
                let record = tx.bind(ids::record("job", &key));
                let error = tx.bind(result.result.err().unwrap_or_default());
                if row.attempts >= row.max_attempts {
                    tx.push(format!(
                        "UPDATE {record} SET status = 'failed', last_error = {error}, done_at = time::now(), lock_by = NONE, lock_at = NONE WHERE status = 'running' AND lock_by = {worker_b}"
                    ));
                } else {
                    let delay = self
                        .config
                        .backoff_after(u32::try_from(row.attempts).unwrap_or(u32::MAX));
                    let run_at = tx.bind(
                        self.config.clock.now()
                            + chrono::Duration::from_std(delay).unwrap_or_default(),
                    );
                    tx.push(format!(
                        "UPDATE {record} SET status = 'pending', run_at = {run_at}, last_error = {error}, lock_by = NONE, lock_at = NONE WHERE status = 'running' AND lock_by = {worker_b}"
                    ));
                }
            }
        }
        tx.run(&self.db).await?;
        Ok(())
    }
}

impl Persistence for JobStore {
    type Compact = Vec<u8>;
    type Response = Vec<u8>;
    type Error = JobError;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), JobError> {
        let query = Query::new(
            "UPSERT $worker SET queue = $queue, started_at = time::now(), last_seen = time::now()",
        )
        .bind("worker", ids::record("job_worker", worker.name()))
        .bind("queue", self.config.queue.clone());
        self.db.retry(|| query.run(&self.db)).await?;
        self.release_orphans(Some(worker.name())).await
    }

    async fn heartbeat(&mut self, worker: &WorkerContext) -> Result<(), JobError> {
        // Liveness first: a flush slowed by conflicts must not make a live worker look dead,
        // or its running jobs would be handed to another worker and run twice.
        let query = Query::new("UPDATE $worker SET last_seen = time::now()")
            .bind("worker", ids::record("job_worker", worker.name()));
        self.db.retry(|| query.run(&self.db)).await?;
        self.flush().await?;
        self.release_orphans(None).await
    }

    async fn fetch_next(&mut self, worker: &WorkerContext) -> Result<Vec<Task<Vec<u8>>>, JobError> {
        self.flush().await?;
        // Candidates: the first due jobs of each lane, read in order from the index (no sort of
        // the backlog). Workers that all took the very first ones would all conflict, so each
        // takes a random subset of the candidates, higher lanes first.
        let lane = |level: i64| {
            format!(
                "(SELECT id, priority FROM job WHERE queue = $queue AND status = 'pending' AND priority = {level} AND run_at <= $now ORDER BY run_at ASC LIMIT $candidates)"
            )
        };
        let candidates = Query::new(format!(
            "array::concat({high}, {normal}, {low})",
            high = lane(Priority::High.level()),
            normal = lane(Priority::Normal.level()),
            low = lane(Priority::Low.level()),
        ))
        .bind("queue", self.config.queue.clone())
        .bind("candidates", (self.config.batch * 4) as i64);
        let worker_name = worker.name().to_string();
        let clock = self.config.clock.clone();
        // One statement, so one transaction: a job claimed by a concurrent worker fails the
        // `status = 'pending'` check or conflicts, and the whole claim is tried again.
        let claim = || async {
            #[derive(Debug, SurrealValue)]
            struct Candidate {
                id: RecordId,
                priority: i64,
            }
            let mut found: Vec<Candidate> = candidates
                .clone()
                .bind("now", clock.now())
                .take(&self.db, 0)
                .await?;
            {
                use rand::seq::SliceRandom;
                found.shuffle(&mut rand::rng());
            }
            found.sort_by_key(|c| std::cmp::Reverse(c.priority));
            let chosen: Vec<RecordId> = found
                .into_iter()
                .take(self.config.batch)
                .map(|c| c.id)
                .collect();
            if chosen.is_empty() {
                return Ok(Vec::new());
            }
            Query::new(
                "UPDATE $chosen SET status = 'running', lock_by = $worker, lock_at = time::now(), attempts += 1
                   WHERE status = 'pending' RETURN AFTER",
            )
            .bind("chosen", chosen)
            .bind("worker", worker_name.clone())
            .take(&self.db, 0)
            .await
        };
        let mut rows: Vec<JobRow> = self.db.retry(claim).await?;
        rows.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)));
        Ok(rows
            .into_iter()
            .map(|row| {
                TaskBuilder::new(row.args.to_vec())
                    .task_id(TaskId::from_string(ids::key_of(&row.id)))
                    .attempt(usize::try_from(row.attempts).unwrap_or(0))
                    .max_attempts(usize::try_from(row.max_attempts).unwrap_or(1))
                    .lock_by(Some(worker.name().to_string()))
                    .build()
            })
            .collect())
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Vec<u8>>>,
        worker: &WorkerContext,
    ) -> Result<u64, JobError> {
        self.flush().await?;
        let records: Vec<RecordId> = tasks
            .iter()
            .filter_map(|t| t.ctx().task_id())
            .map(|id| ids::record("job", &id.to_string()))
            .collect();
        // Never started: the claim's attempt does not count.
        let query = Query::new(
            "UPDATE $records SET status = 'pending', lock_by = NONE, lock_at = NONE, attempts -= 1 WHERE status = 'running' AND lock_by = $worker RETURN VALUE id",
        )
        .bind("records", records)
        .bind("worker", worker.name().to_string());
        let returned: Vec<RecordId> = self.db.retry(|| query.take(&self.db, 0)).await?;
        let returned = returned.len() as u64;
        if returned as usize != tasks.len() {
            return Err(JobError::ReturnMismatch {
                asked: tasks.len(),
                returned,
            });
        }
        Ok(returned)
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<Vec<u8>>>,
        worker: &WorkerContext,
    ) -> Result<(), JobError> {
        let results: Vec<_> = events
            .into_iter()
            .filter_map(|event| match event {
                TaskEvent::Complete(result) => Some(result),
                _ => None,
            })
            .collect();
        let gathered = {
            let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
            for result in results {
                let seq = outcomes.next;
                outcomes.next += 1;
                outcomes
                    .pending
                    .push((seq, worker.name().to_string(), result));
            }
            outcomes.pending.len()
        };
        if gathered >= self.config.batch || worker.is_shutting_down() || !worker.is_running() {
            self.flush().await?;
        }
        Ok(())
    }

    async fn push_tasks(&mut self, tasks: Vec<Task<Vec<u8>>>) -> Result<(), JobError> {
        let mut tx = Tx::new();
        for task in tasks {
            let run_at = task
                .ctx()
                .run_at()
                .and_then(|secs| DateTime::<Utc>::from_timestamp(i64::try_from(secs).ok()?, 0));
            let priority = match task.ctx().priority() {
                Some(0) => Priority::Low,
                Some(p) if p > 1 => Priority::High,
                _ => Priority::Normal,
            };
            let options = JobOptions {
                run_at,
                unique: self.config.unique,
                priority,
                max_attempts: task
                    .ctx()
                    .max_attempts()
                    .map_or(JobOptions::default().max_attempts, |m| m as u32),
            };
            let key = self.config.unique.then(|| {
                unique_key(
                    &self.config.queue,
                    &task.args,
                    options.run_at.unwrap_or_default(),
                )
            });
            create_job(&mut tx, &self.config.queue, task.args, &options, key);
        }
        tx.run(&self.db).await?;
        Ok(())
    }
}
