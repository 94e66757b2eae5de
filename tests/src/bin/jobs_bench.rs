//! Job queue benchmark: jobs/s through the SurrealDB queue (enqueue, then claim, run and
//! complete), with 1 and 4 workers, on `mem://` and on `surrealkv://` (fsync per commit), and the
//! latency from a job's due time to the start of its run. Prints a table. Run it optimized:
//!
//! ```sh
//! cargo run --release -p outpost-tests --bin jobs_bench -- --jobs 5000
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::BoxDynError;
use chrono::Utc;
use outpost::config::Config;
use outpost::jobs::runtime::{WorkerHandle, spawn_worker};
use outpost::jobs::{Job, JobOptions, QueueConfig, enqueue_in};
use outpost::platform::db::{Db, MIGRATIONS, Tx, apply_migrations, await_store_closed};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    due_ms: i64,
}

impl Job for Work {
    const QUEUE: &'static str = "bench.work";
}

struct Run {
    done: AtomicUsize,
    lateness: Mutex<Vec<i64>>,
}

fn config() -> QueueConfig {
    QueueConfig {
        batch: 50,
        poll: Duration::from_millis(50),
        ..QueueConfig::new(Work::QUEUE)
    }
}

fn workers(db: &Db, count: usize, run: &Arc<Run>) -> Vec<WorkerHandle> {
    (0..count)
        .map(|w| {
            let run = run.clone();
            spawn_worker(db, config(), format!("bench-{w}"), move |work: Work| {
                let run = run.clone();
                async move {
                    let late = Utc::now().timestamp_millis() - work.due_ms;
                    run.lateness.lock().await.push(late);
                    run.done.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, BoxDynError>(())
                }
            })
        })
        .collect()
}

async fn wait_for(run: &Run, target: usize) {
    while run.done.load(Ordering::SeqCst) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn enqueue_all(db: &Db, jobs: usize, due_in: impl Fn(usize) -> chrono::Duration) {
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(500) {
        let mut tx = Tx::new();
        for i in chunk {
            let due = Utc::now() + due_in(*i);
            enqueue_in(
                &mut tx,
                &Work {
                    due_ms: due.timestamp_millis(),
                },
                &JobOptions::at(due),
            )
            .unwrap();
        }
        tx.run(db).await.unwrap();
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Row {
    store: &'static str,
    workers: usize,
    enqueue_per_s: f64,
    complete_per_s: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: usize = std::env::args()
        .skip_while(|a| a != "--jobs")
        .nth(1)
        .map_or(5000, |v| v.parse().expect("--jobs N"));
    let mut rows = Vec::new();
    let mut latency = Vec::new();
    for store in ["mem", "surrealkv"] {
        for count in [1, 4] {
            let dir = tempfile::tempdir().unwrap();
            let url = if store == "mem" {
                "mem://".to_string()
            } else {
                format!("surrealkv://{}", dir.path().join("data").display())
            };
            let config = Config::for_database(&url);
            let db = Db::connect(&config.database).await.unwrap();
            apply_migrations(&db, MIGRATIONS).await.unwrap();

            // Throughput: a backlog of due jobs, enqueued, then drained.
            let started = Instant::now();
            enqueue_all(&db, jobs, |_| chrono::Duration::zero()).await;
            let enqueue_secs = started.elapsed().as_secs_f64();
            let run = Arc::new(Run {
                done: AtomicUsize::new(0),
                lateness: Mutex::new(Vec::new()),
            });
            let started = Instant::now();
            let handles = workers(&db, count, &run);
            wait_for(&run, jobs).await;
            let drain_secs = started.elapsed().as_secs_f64();
            rows.push(Row {
                store,
                workers: count,
                enqueue_per_s: jobs as f64 / enqueue_secs,
                complete_per_s: jobs as f64 / drain_secs,
            });

            // Latency: jobs due over the next few seconds, 100 per second, with idle workers.
            if count == 4 {
                let spread = 300;
                run.lateness.lock().await.clear();
                enqueue_all(&db, spread, |i| {
                    chrono::Duration::milliseconds(500 + (i as i64) * 10)
                })
                .await;
                wait_for(&run, jobs + spread).await;
                let mut late = run.lateness.lock().await.clone();
                late.sort_unstable();
                latency.push((store, percentile(&late, 0.5), percentile(&late, 0.99)));
            }
            for handle in handles {
                handle.stop().await;
            }
            drop(db);
            await_store_closed(&config.database).await;
        }
    }

    println!("jobs_bench: {jobs} jobs per run, workers poll every 50 ms, claim 50 at a time");
    println!("| store | workers | enqueue jobs/s | claim+run+complete jobs/s |");
    println!("| --- | --- | --- | --- |");
    for row in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} |",
            row.store, row.workers, row.enqueue_per_s, row.complete_per_s
        );
    }
    println!();
    println!("| store (4 workers, 300 jobs due over 3 s) | due-to-start p50 | p99 |");
    println!("| --- | --- | --- |");
    for (store, p50, p99) in latency {
        println!("| {store} | {p50} ms | {p99} ms |");
    }
}
