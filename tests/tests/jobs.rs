//! The job queue: apalis workers over jobs stored in SurrealDB. Claims are exactly-once, killed
//! workers' jobs come back, failures back off and are kept, nothing queued is lost on restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use apalis::prelude::{BoxDynError, WorkerBuilder};
use chrono::Utc;
use outpost::config::Config;
use outpost::jobs::{Job, JobOptions, JobRow, Queue, QueueConfig, enqueue, enqueue_in};
use outpost::platform::db::{Db, MIGRATIONS, Query, Tx, apply_migrations, await_store_closed};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Notify, oneshot};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Count {
    n: u32,
}

impl Job for Count {
    const QUEUE: &'static str = "test.count";
}

async fn store(url: &str) -> (Db, Config) {
    let config = Config::for_database(url);
    let db = Db::connect(&config.database).await.unwrap();
    apply_migrations(&db, MIGRATIONS).await.unwrap();
    (db, config)
}

fn quick(queue: &str) -> QueueConfig {
    QueueConfig {
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_millis(800),
        poll: Duration::from_millis(20),
        backoff: Duration::from_millis(40),
        ..QueueConfig::new(queue)
    }
}

async fn jobs(db: &Db) -> Vec<JobRow> {
    Query::new("SELECT * FROM job ORDER BY created_at")
        .take(db, 0)
        .await
        .unwrap()
}

/// Waits (up to a minute) until `done` says so, waking on `notify`.
async fn until(notify: &Notify, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !done() {
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    })
    .await
    .expect("in time");
}

/// A job's name and when its run started.
type Run = (String, chrono::DateTime<Utc>);

#[derive(Default)]
struct Tracker {
    running: Mutex<HashSet<u32>>,
    runs: Mutex<HashMap<u32, u32>>,
    overlaps: Mutex<Vec<u32>>,
    notify: Notify,
}

impl Tracker {
    fn total(&self) -> usize {
        self.runs
            .lock()
            .unwrap()
            .values()
            .map(|n| *n as usize)
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_run_a_thousand_jobs_each_exactly_once() {
    let (db, _) = store("mem://").await;
    for batch in 0..10 {
        let mut tx = Tx::new();
        for n in batch * 100..(batch + 1) * 100 {
            enqueue_in(&mut tx, &Count { n }, &JobOptions::default()).unwrap();
        }
        tx.run(&db).await.unwrap();
    }
    let tracker = Arc::new(Tracker::default());
    let mut stops = Vec::new();
    let mut workers = Vec::new();
    for w in 0..4 {
        let tracker = tracker.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        // Generous liveness: this test is about claims, and on a loaded 2-core machine a
        // heartbeat can be late by more than `quick`'s 800 ms, which would (rightly) hand a
        // live worker's jobs to another and run them twice.
        let config = QueueConfig {
            dead_after: Duration::from_secs(30),
            ..quick(Count::QUEUE)
        };
        let worker = WorkerBuilder::new(format!("count-{w}"))
            .backend(Queue::<Count>::with_config(&db, config).polled())
            .build(move |job: Count| {
                let tracker = tracker.clone();
                async move {
                    if !tracker.running.lock().unwrap().insert(job.n) {
                        tracker.overlaps.lock().unwrap().push(job.n);
                    }
                    tokio::task::yield_now().await;
                    tracker.running.lock().unwrap().remove(&job.n);
                    *tracker.runs.lock().unwrap().entry(job.n).or_default() += 1;
                    tracker.notify.notify_waiters();
                    Ok::<_, BoxDynError>(())
                }
            });
        workers.push(tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
            Ok::<(), std::io::Error>(())
        })));
    }
    until(&tracker.notify, || tracker.total() >= 1000).await;
    for stop in stops {
        let _ = stop.send(());
    }
    for worker in workers {
        worker.await.unwrap().unwrap();
    }

    let runs = tracker.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1000, "every job ran");
    assert!(runs.values().all(|n| *n == 1), "none ran twice");
    assert!(tracker.overlaps.lock().unwrap().is_empty());
    let rows = jobs(&db).await;
    assert!(
        rows.iter().all(|j| j.status == "done" && j.attempts == 1),
        "all done on their first attempt"
    );
    let claimed_by: HashSet<String> = Query::new("SELECT VALUE record::id(id) FROM job_worker")
        .take::<Vec<String>>(&db, 0)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(claimed_by.len(), 4, "four workers registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_runs_again_after_the_heartbeat_timeout() {
    let (db, _) = store("mem://").await;
    enqueue(&db, &Count { n: 7 }, &JobOptions::default())
        .await
        .unwrap();

    // Worker A takes the job and hangs; its task is aborted, with no clean shutdown.
    let started = Arc::new(Notify::new());
    let started_a = started.clone();
    let a = WorkerBuilder::new("hangs")
        .backend(Queue::<Count>::with_config(&db, quick(Count::QUEUE)).polled())
        .build(move |_job: Count| {
            let started = started_a.clone();
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, BoxDynError>(())
            }
        });
    let a = tokio::spawn(a.run());
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("A started the job");
    a.abort();
    let _ = a.await;
    let row = &jobs(&db).await[0];
    assert_eq!(row.status, "running");
    assert_eq!(row.lock_by.as_deref(), Some("hangs"));

    // Worker B finds A dead once A's heartbeat is older than `dead_after`, and runs the job.
    let tracker = Arc::new(Tracker::default());
    let tracker_b = tracker.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let b = WorkerBuilder::new("survivor")
        .backend(Queue::<Count>::with_config(&db, quick(Count::QUEUE)).polled())
        .build(move |job: Count| {
            let tracker = tracker_b.clone();
            async move {
                *tracker.runs.lock().unwrap().entry(job.n).or_default() += 1;
                tracker.notify.notify_waiters();
                Ok::<_, BoxDynError>(())
            }
        });
    let b = tokio::spawn(b.run_until(async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    }));
    until(&tracker.notify, || tracker.total() == 1).await;
    let _ = stop.send(());
    b.await.unwrap().unwrap();
    let row = &jobs(&db).await[0];
    assert_eq!(row.status, "done");
    assert_eq!(row.attempts, 2, "the killed run counts as an attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_then_stay_failed_and_priorities_and_due_times_are_kept() {
    let (db, _) = store("mem://").await;
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Step {
        name: String,
    }
    impl Job for Step {
        const QUEUE: &'static str = "test.step";
    }
    let later = Utc::now() + chrono::Duration::milliseconds(1500);
    let mut tx = Tx::new();
    enqueue_in(
        &mut tx,
        &Step { name: "low".into() },
        &JobOptions::default(),
    )
    .unwrap();
    enqueue_in(
        &mut tx,
        &Step {
            name: "high".into(),
        },
        &JobOptions {
            priority: outpost::jobs::Priority::High,
            ..JobOptions::default()
        },
    )
    .unwrap();
    enqueue_in(
        &mut tx,
        &Step {
            name: "later".into(),
        },
        &JobOptions::at(later),
    )
    .unwrap();
    enqueue_in(
        &mut tx,
        &Step {
            name: "broken".into(),
        },
        &JobOptions {
            max_attempts: 3,
            ..JobOptions::default()
        },
    )
    .unwrap();
    tx.run(&db).await.unwrap();

    let seen: Arc<Mutex<Vec<Run>>> = Arc::default();
    let notify = Arc::new(Notify::new());
    let (seen_w, notify_w) = (seen.clone(), notify.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let config = QueueConfig {
        batch: 1,
        ..quick(Step::QUEUE)
    };
    let worker = WorkerBuilder::new("steps")
        .backend(Queue::<Step>::with_config(&db, config).polled())
        .build(move |step: Step| {
            let (seen, notify) = (seen_w.clone(), notify_w.clone());
            async move {
                seen.lock().unwrap().push((step.name.clone(), Utc::now()));
                notify.notify_waiters();
                if step.name == "broken" {
                    return Err::<(), BoxDynError>("the printer is on fire".into());
                }
                Ok(())
            }
        });
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    }));
    until(&notify, || {
        let seen = seen.lock().unwrap();
        seen.iter().filter(|(n, _)| n == "broken").count() == 3
            && seen.iter().any(|(n, _)| n == "later")
    })
    .await;
    // The failure is recorded after the handler returns.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    worker.await.unwrap().unwrap();

    let seen = seen.lock().unwrap().clone();
    let order: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    let high = order.iter().position(|n| *n == "high").unwrap();
    let low = order.iter().position(|n| *n == "low").unwrap();
    assert!(high < low, "higher priority first: {order:?}");
    let later_ran = seen.iter().find(|(n, _)| n == "later").unwrap().1;
    assert!(later_ran >= later, "not before its time");
    let broken: Vec<_> = seen
        .iter()
        .filter(|(n, _)| n == "broken")
        .map(|(_, at)| *at)
        .collect();
    assert!(
        broken[2] - broken[1] >= broken[1] - broken[0],
        "the delay between retries grows: {broken:?}"
    );
    assert!(broken[1] - broken[0] >= chrono::Duration::milliseconds(40));

    let rows = jobs(&db).await;
    let failed = rows
        .iter()
        .find(|j| j.status == "failed")
        .expect("kept as failed");
    assert_eq!(failed.attempts, 3);
    assert_eq!(failed.last_error.as_deref(), Some("the printer is on fire"));
    assert_eq!(rows.iter().filter(|j| j.status == "done").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_survive_a_restart_on_surrealkv() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    {
        let (db, config) = store(&url).await;
        for n in 0..20 {
            enqueue(&db, &Count { n }, &JobOptions::default())
                .await
                .unwrap();
        }
        drop(db);
        await_store_closed(&config.database).await;
    }
    let (db, _) = store(&url).await;
    assert_eq!(jobs(&db).await.len(), 20, "every queued job is still there");
    let tracker = Arc::new(Tracker::default());
    let tracker_w = tracker.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = WorkerBuilder::new("after-restart")
        .backend(Queue::<Count>::with_config(&db, quick(Count::QUEUE)).polled())
        .build(move |job: Count| {
            let tracker = tracker_w.clone();
            async move {
                *tracker.runs.lock().unwrap().entry(job.n).or_default() += 1;
                tracker.notify.notify_waiters();
                Ok::<_, BoxDynError>(())
            }
        });
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    }));
    until(&tracker.notify, || tracker.total() == 20).await;
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
    assert_eq!(tracker.runs.lock().unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_failed_jobs_and_retries_or_discards_them() {
    use outpost_tests::TestServer;
    use reqwest::StatusCode;

    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    server.user(&admin, "rep@x.cn", &root, None, &[&rep]).await;
    let rep_token = server.token_of("rep@x.cn").await;
    let db = server.db();

    let once = JobOptions {
        max_attempts: 1,
        ..JobOptions::default()
    };
    let first = enqueue(&db, &Count { n: 1 }, &once).await.unwrap();
    let second = enqueue(&db, &Count { n: 2 }, &once).await.unwrap();

    // A worker that fails everything until told otherwise.
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tracker = Arc::new(Tracker::default());
    let (healthy_w, tracker_w) = (healthy.clone(), tracker.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    // This test is about failures, not dead workers: a worker counted dead after 800 ms
    // without a heartbeat (`quick`), which a loaded machine can miss, would have its jobs
    // run again.
    let patient = QueueConfig {
        heartbeat: Duration::from_secs(1),
        dead_after: Duration::from_secs(60),
        ..quick(Count::QUEUE)
    };
    let worker = WorkerBuilder::new("flaky")
        .backend(Queue::<Count>::with_config(&db, patient).polled())
        .build(move |job: Count| {
            let (healthy, tracker) = (healthy_w.clone(), tracker_w.clone());
            async move {
                *tracker.runs.lock().unwrap().entry(job.n).or_default() += 1;
                tracker.notify.notify_waiters();
                if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok::<_, BoxDynError>(())
                } else {
                    Err("the mail server said no".into())
                }
            }
        });
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    }));
    let failed_count = || async {
        server
            .get("/api/v1/admin/jobs?status=failed", &admin)
            .await
            .body["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        while failed_count().await < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both jobs fail");

    let list = server.get("/api/v1/admin/jobs?status=failed", &admin).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let item = &list.body["items"][0];
    assert_eq!(item["status"], "failed");
    assert_eq!(item["last_error"], "the mail server said no");
    assert_eq!(item["queue"], Count::QUEUE);
    assert!(item["args"]["n"].is_number(), "{item:?}");
    assert_eq!(
        server
            .get("/api/v1/admin/jobs?status=failed", &rep_token)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let bad = server.get("/api/v1/admin/jobs?status=melted", &admin).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Retry one once the cause is fixed; discard the other.
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let retried = server
        .post(
            &format!("/api/v1/admin/jobs/{first}/retry"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{:?}", retried.body);
    assert_eq!(retried.body["status"], "pending");
    assert_eq!(retried.body["attempts"], 0);
    let discarded = server
        .post(
            &format!("/api/v1/admin/jobs/{second}/discard"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(discarded.body["status"], "discarded");
    until(&tracker.notify, || {
        tracker
            .runs
            .lock()
            .unwrap()
            .get(&1)
            .is_some_and(|runs| *runs >= 2)
    })
    .await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let done = server.get("/api/v1/admin/jobs?status=done", &admin).await;
            if done.body["items"].as_array().is_some_and(|i| i.len() == 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the retried job ran to completion");
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
    assert_eq!(
        tracker.runs.lock().unwrap().get(&2),
        Some(&1),
        "a discarded job does not run again"
    );

    // Only failed or discarded jobs can be retried; unknown ids are 404s; retrying needs
    // `system.manage`.
    let again = server
        .post(
            &format!("/api/v1/admin/jobs/{first}/retry"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    let missing = server
        .post(
            &format!(
                "/api/v1/admin/jobs/{}/retry",
                outpost::platform::ids::new_key()
            ),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let by_rep = server
        .post(
            &format!("/api/v1/admin/jobs/{second}/retry"),
            &rep_token,
            json!({}),
        )
        .await;
    assert_eq!(by_rep.status, StatusCode::FORBIDDEN);
    let audit = server
        .get(
            &format!("/api/v1/audit?target_kind=job&target_id={first}"),
            &admin,
        )
        .await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["job.retry"], "{:?}", audit.body);
    drop(db);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_tick_fires_once_across_two_worker_sets_on_one_store() {
    use apalis_cron::Tick;
    use outpost::jobs::runtime::spawn_cron;

    let (db, _) = store("mem://").await;
    let ticks: Arc<Mutex<HashMap<u64, Vec<String>>>> = Arc::default();
    let notify = Arc::new(Notify::new());
    let mut sets = Vec::new();
    for set in ["node-a", "node-b"] {
        let (ticks, notify) = (ticks.clone(), notify.clone());
        let name = set.to_string();
        sets.push(
            spawn_cron(
                &db,
                quick("test.every-second"),
                "* * * * * *",
                format!("tick@{set}"),
                move |tick: Tick| {
                    let (ticks, notify, name) = (ticks.clone(), notify.clone(), name.clone());
                    async move {
                        ticks
                            .lock()
                            .unwrap()
                            .entry(tick.get_timestamp())
                            .or_default()
                            .push(name);
                        notify.notify_waiters();
                        Ok(())
                    }
                },
            )
            .unwrap(),
        );
    }
    until(&notify, || ticks.lock().unwrap().len() >= 3).await;
    for set in sets {
        set.stop().await;
    }
    let ticks = ticks.lock().unwrap().clone();
    for (at, runs) in &ticks {
        assert_eq!(runs.len(), 1, "tick {at} ran once: {runs:?}");
    }
    let rows: Vec<JobRow> = Query::new("SELECT * FROM job WHERE queue = 'test.every-second'")
        .take(&db, 0)
        .await
        .unwrap();
    let mut stored: Vec<String> = rows
        .iter()
        .map(|r| String::from_utf8_lossy(&r.args).to_string())
        .collect();
    let before = stored.len();
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), before, "one job per tick in the store");
    assert!(before >= ticks.len());
}

#[tokio::test]
async fn outpost_worker_runs_without_http_and_releases_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let config = Config::for_database(&url);
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(outpost::run_workers(config.clone(), async move {
        let _ = stopped.await;
    }));
    // Give the workers time to register themselves (they do so on their first poll).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!running.is_finished(), "it runs until told to stop");
    let _ = stop.send(());
    running.await.unwrap().expect("clean stop");
    // The store is released: it opens again, and holds the worker's registration.
    let (db, _) = store(&url).await;
    let workers: Vec<String> = Query::new("SELECT VALUE record::id(id) FROM job_worker")
        .take(&db, 0)
        .await
        .unwrap();
    assert!(
        workers
            .iter()
            .any(|w| w.starts_with("system.housekeeping@")),
        "{workers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_timeout_fails_and_a_stopping_worker_finishes_its_job() {
    use outpost::jobs::runtime::spawn_worker;

    let (db, _) = store("mem://").await;
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Nap {
        millis: u64,
    }
    impl Job for Nap {
        const QUEUE: &'static str = "test.nap";
    }
    let endless = enqueue(
        &db,
        &Nap { millis: 3_600_000 },
        &JobOptions {
            max_attempts: 2,
            ..JobOptions::default()
        },
    )
    .await
    .unwrap();
    let started = Arc::new(Notify::new());
    let started_w = started.clone();
    let config = QueueConfig {
        timeout: Duration::from_millis(300),
        ..quick(Nap::QUEUE)
    };
    let worker = spawn_worker(&db, config, "napper".into(), move |nap: Nap| {
        let started = started_w.clone();
        async move {
            started.notify_one();
            tokio::time::sleep(Duration::from_millis(nap.millis)).await;
            Ok::<_, BoxDynError>(())
        }
    });
    let status_of = |key: String| {
        let db = db.clone();
        async move {
            let row: Option<JobRow> = db.get("job", &key).await.unwrap();
            row.unwrap()
        }
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        while status_of(endless.clone()).await.status != "failed" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the endless job is cut off twice");
    let row = status_of(endless.clone()).await;
    assert_eq!(row.attempts, 2);
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out"),
        "{:?}",
        row.last_error
    );

    // A worker told to stop in the middle of a job finishes it first.
    let short = enqueue(&db, &Nap { millis: 250 }, &JobOptions::default())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while status_of(short.clone()).await.status != "running" {
            started.notified().await;
        }
    })
    .await
    .expect("the short job starts");
    worker.stop().await;
    assert_eq!(status_of(short).await.status, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_store_fails_starts_again_and_runs_the_jobs_that_follow() {
    use outpost::jobs::runtime::spawn_worker;

    let (db, _) = store("mem://").await;
    // The store refuses to update the worker registry: the worker registers, then its first
    // heartbeat fails, which ends an apalis worker for good.
    Query::new(
        "DEFINE EVENT store_down ON job_worker WHEN $event = 'UPDATE' THEN { THROW 'the store is down' }",
    )
    .run(&db)
    .await
    .unwrap();
    let tracker = Arc::new(Tracker::default());
    let tracker_w = tracker.clone();
    let worker = spawn_worker(
        &db,
        quick(Count::QUEUE),
        "fragile".into(),
        move |job: Count| {
            let tracker = tracker_w.clone();
            async move {
                *tracker.runs.lock().unwrap().entry(job.n).or_default() += 1;
                tracker.notify.notify_waiters();
                Ok::<_, BoxDynError>(())
            }
        },
    );
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let registered: Option<surrealdb::types::Value> =
                Query::new("(SELECT VALUE started_at FROM ONLY job_worker:fragile)")
                    .take(&db, 0)
                    .await
                    .unwrap();
            if registered.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the worker registers");
    // Ten heartbeat periods with the store refusing them.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The fault passes; a job queued now is run by the worker started again.
    Query::new("REMOVE EVENT store_down ON job_worker")
        .run(&db)
        .await
        .unwrap();
    enqueue(&db, &Count { n: 7 }, &JobOptions::default())
        .await
        .unwrap();
    until(&tracker.notify, || {
        tracker.runs.lock().unwrap().get(&7) == Some(&1)
    })
    .await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let statuses: Vec<String> =
                Query::new("SELECT VALUE status FROM job WHERE queue = $queue")
                    .bind("queue", Count::QUEUE)
                    .take(&db, 0)
                    .await
                    .unwrap();
            if statuses == ["done"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the job is recorded as done");
    worker.stop().await;
}
