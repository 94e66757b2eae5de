//! Customer benchmark: loads customers through the real import path (dry run + commit: automerge
//! documents, projections, search terms) and follow-ups through the REST write path into
//! `surrealkv://`, then times the list, searches (name prefix, pinyin, initials, phone), a rep's
//! owner-scoped list and search, the 360 view, and a pool sweep that returns a block of
//! customers at once, then the same queries again right after the sweep (before the store's
//! merges have dropped the index entries it moved). Prints tables with latency percentiles and
//! memory. Run it optimized:
//!
//! ```sh
//! cargo run --release -p outpost-tests --bin customers_bench -- --customers 1000000 --follow-ups 3 --returns 100000
//! ```
//!
//! `--data DIR --load-only` keeps the loaded store in `DIR`; `--data COPY` on a copy of it then
//! runs only the queries and the sweep (which changes the store). Both are timed only once the
//! process has gone idle: SurrealKV merges what a load or a reopen left, in the background, on
//! the same cores.
//!
//! `--reassign` on a kept store that was swept before assigns the returned customers back to
//! the users the load gave them to (REST, timed) before the queries, so the sweep can be timed
//! again on a warm process (pass the load's `--rows-per-import`).
//!
//! `--add-follow-ups N` logs N more follow-ups through REST after the load, or first on a kept
//! store (with `--load-only`, it stops there): 3,000,000 follow-ups at about 330/s take hours,
//! so a store can reach them over several runs. The kept count follows each batch of 10,000,
//! so a top-up stopped midway can go on from what it stored.
//!
//! `--make-due N` moves N more owned customers to level C (REST, on a kept store; with
//! `--load-only` it stops there), so a store loaded with a small `--returns` can be swept at a
//! larger one without loading it again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::Engine;
use outpost::config::Config;
use outpost::platform::clock::Clock;
use outpost_tests::TestServer;
use reqwest::StatusCode;
use serde_json::json;

const SURNAMES: [&str; 20] = [
    "张", "王", "李", "赵", "刘", "陈", "杨", "黄", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "罗", "高",
];
const WORDS: [&str; 16] = [
    "星辰", "华信", "东方", "远航", "金桥", "恒通", "宏达", "万里", "新天", "瑞丰", "永盛", "天成",
    "鼎力", "安泰", "博远", "中和",
];
const CITIES: [&str; 8] = [
    "北京", "上海", "深圳", "杭州", "成都", "武汉", "南京", "西安",
];

struct Args {
    customers: usize,
    follow_ups: usize,
    returns: usize,
    queries: usize,
    rows_per_import: usize,
    /// A store kept between runs: loaded once, then reused (copy it first, the sweep changes it).
    data: Option<std::path::PathBuf>,
    /// SurrealKV's memtable, MiB (the server's default when absent).
    memtable_mib: Option<u64>,
    /// SurrealKV's block cache, MiB (the server's default when absent).
    cache_mib: Option<u64>,
    /// SurrealKV's block size, KiB (the server's default when absent; files written from then on).
    block_kib: Option<u64>,
    /// Stop after loading (to keep `data` as it was before the sweep).
    load_only: bool,
    /// Assign customers a previous sweep returned back to their first owners, so the sweep has
    /// work again.
    reassign: bool,
    /// Follow-ups to add to a kept store before anything is timed (its first load's count
    /// grows by them), so a store can reach millions of follow-ups over several runs.
    add_follow_ups: usize,
    /// Owned customers of other levels moved to level C (through REST) on a kept store, so
    /// that a store loaded with a smaller `--returns` can be swept at a larger one.
    make_due: usize,
}

fn args() -> Args {
    let mut args = Args {
        customers: 100_000,
        follow_ups: 3,
        returns: 10_000,
        queries: 200,
        rows_per_import: 5_000,
        data: None,
        memtable_mib: None,
        cache_mib: None,
        block_kib: None,
        load_only: false,
        reassign: false,
        add_follow_ups: 0,
        make_due: 0,
    };
    let mut raw: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = raw.iter().position(|a| a == "--load-only") {
        raw.remove(at);
        args.load_only = true;
    }
    if let Some(at) = raw.iter().position(|a| a == "--reassign") {
        raw.remove(at);
        args.reassign = true;
    }
    for pair in raw.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        match pair[0].as_str() {
            "--memtable-mib" => args.memtable_mib = pair.get(1).and_then(|v| v.parse().ok()),
            "--cache-mib" => args.cache_mib = pair.get(1).and_then(|v| v.parse().ok()),
            "--block-kib" => args.block_kib = pair.get(1).and_then(|v| v.parse().ok()),
            "--data" => args.data = pair.get(1).map(std::path::PathBuf::from),
            "--customers" => args.customers = value,
            "--follow-ups" => args.follow_ups = value,
            "--returns" => args.returns = value,
            "--add-follow-ups" => args.add_follow_ups = value,
            "--make-due" => args.make_due = value,
            "--queries" => args.queries = value,
            "--rows-per-import" => args.rows_per_import = value.max(1),
            other => panic!(
                "unknown flag {other}; flags: --customers N --follow-ups PER_CUSTOMER --returns N --queries N --rows-per-import N --data DIR --load-only --reassign --add-follow-ups N --make-due N --memtable-mib N --cache-mib N --block-kib N"
            ),
        }
    }
    args.returns = args.returns.min(args.customers);
    args
}

/// Customer `i`: a company name from a city, a word, a surname and the number (unique, so
/// no two rows are duplicates), a unique mobile number, and a level. The first `returns` are
/// level C, the level the pool's return rule covers.
fn row(i: usize, returns: usize) -> String {
    let name = format!(
        "{}{}{}{}贸易有限公司",
        CITIES[i % CITIES.len()],
        WORDS[(i / 8) % WORDS.len()],
        SURNAMES[(i / 128) % SURNAMES.len()],
        i
    );
    let level = if i < returns {
        "C"
    } else {
        ["A", "B", "D"][i % 3]
    };
    format!("{name},139{:08},{level},bench\n", i)
}

async fn time_queries(
    server: &TestServer,
    token: &str,
    paths: &[String],
) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(paths.len());
    let mut hits = 0;
    for path in paths {
        let started = Instant::now();
        let reply = server.get(path, token).await;
        times.push(started.elapsed());
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
        // A list counts its items; a 360 view its follow-ups.
        hits += reply.body["items"]
            .as_array()
            .or_else(|| reply.body["follow_ups"].as_array())
            .map_or_else(|| usize::from(reply.body.is_object()), Vec::len);
    }
    times.sort();
    (
        outpost_tests::bench::percentile(&times, 0.5),
        outpost_tests::bench::percentile(&times, 0.99),
        hits,
    )
}

/// Times each kind of query (label, token, paths) in turn.
async fn time_kinds<'a>(
    server: &TestServer,
    kinds: &[(&'a str, &String, &Vec<String>)],
) -> Vec<(&'a str, Duration, Duration, usize)> {
    let mut table = Vec::with_capacity(kinds.len());
    for (label, token, paths) in kinds {
        let (p50, p99, hits) = time_queries(server, token, paths).await;
        table.push((*label, p50, p99, hits));
    }
    table
}

fn print_queries(table: &[(&str, Duration, Duration, usize)], q: usize, when: &str) {
    println!();
    println!("{when}:");
    println!();
    println!("| query ({q} each) | p50 ms | p99 ms | rows returned |");
    println!("|---|---:|---:|---:|");
    for (label, p50, p99, hits) in table {
        println!(
            "| {label} | {:.1} | {:.1} | {hits} |",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
    println!();
}

/// Times single edits through REST, one at a time, of the customers `ids`: a change of notes
/// (which leaves the search terms alone), a rename and its undo (which delete the terms that
/// go away), and a phone number added (terms added only) then removed (terms deleted only):
/// SurrealDB walks its catalog for every record it deletes. Each edit is its own group
/// commit. The customers end as they were, but for their notes.
async fn time_edits(server: &TestServer, token: &str, ids: &[String]) {
    let patch = |id: &String, body: serde_json::Value| {
        let path = format!("/api/v1/customers/{id}");
        async move {
            let started = Instant::now();
            let reply = server.patch(&path, token, body).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
            (started.elapsed(), reply)
        }
    };
    let (mut notes, mut renames, mut added, mut removed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, id) in ids.iter().enumerate() {
        let (took, reply) = patch(id, json!({ "notes": format!("bench edit {i}") })).await;
        notes.push(took);
        let name = reply.body["name"].as_str().unwrap().to_string();
        let phones = reply.body["phones"].clone();
        let (took, _) = patch(id, json!({ "name": format!("{name}分部") })).await;
        renames.push(took);
        let (took, _) = patch(id, json!({ "name": name })).await;
        renames.push(took);
        let mut more = phones.as_array().cloned().unwrap_or_default();
        more.push(json!(format!("137{i:08}")));
        let (took, _) = patch(id, json!({ "phones": more })).await;
        added.push(took);
        let (took, _) = patch(id, json!({ "phones": phones })).await;
        removed.push(took);
    }
    for times in [&mut notes, &mut renames, &mut added, &mut removed] {
        times.sort();
    }
    println!("| edit (REST, one at a time) | count | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (label, times) in [
        ("notes (search terms untouched)", &notes),
        ("rename and rename back (terms deleted)", &renames),
        ("add a phone number (terms added)", &added),
        ("remove it again (terms deleted)", &removed),
    ] {
        println!(
            "| {label} | {} | {:.1} | {:.1} |",
            times.len(),
            outpost_tests::bench::percentile(times, 0.5).as_secs_f64() * 1000.0,
            outpost_tests::bench::percentile(times, 0.99).as_secs_f64() * 1000.0
        );
    }
    println!();
}

/// An admin with a known password, so a kept store can be used again.
const BENCH_ADMIN: &str = "admin@bench.cn";

/// What loading left, kept beside a reused store.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Loaded {
    rep_id: String,
    customer_secs: f64,
    follow_ups: usize,
    follow_up_secs: f64,
}

/// Creates the pool, the rep and the admin, then loads customers and follow-ups.
async fn load(server: &TestServer, args: &Args) -> Loaded {
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep_role = server.role(&admin, "rep").await;
    let admin_role = server.role(&admin, "admin").await;
    server
        .user(&admin, BENCH_ADMIN, &root, None, &[&admin_role])
        .await;
    let rep_id = server
        .user(&admin, "rep@bench.cn", &root, None, &[&rep_role])
        .await;
    let pool = server
        .post(
            "/api/v1/pools",
            &admin,
            json!({ "name": "bench", "member_department_ids": [root], "grace_hours": 0,
                    "rules": { "C": { "return_without_follow_up_days": 30 } } }),
        )
        .await;
    assert_eq!(pool.status, StatusCode::CREATED, "{:?}", pool.body);
    let pool_id = pool.body["id"].as_str().unwrap().to_string();

    // Load: every 10th import is the rep's, so the rep owns about 10% of the customers.
    let load = Instant::now();
    let mut loaded = 0;
    let mut chunk = 0;
    while loaded < args.customers {
        let n = args.rows_per_import.min(args.customers - loaded);
        let mut csv = String::from("name,phones,level,tags\n");
        for i in loaded..loaded + n {
            csv.push_str(&row(i, args.returns));
        }
        let token = if chunk % 10 == 9 {
            server.token_of("rep@bench.cn").await
        } else {
            server.token_of(BENCH_ADMIN).await
        };
        let dry_started = Instant::now();
        let dry = server
            .post(
                "/api/v1/customers/imports",
                &token,
                json!({ "format": "csv", "content_base64": base64::engine::general_purpose::STANDARD.encode(&csv), "pool_id": pool_id }),
            )
            .await;
        assert_eq!(dry.status, StatusCode::CREATED, "{:?}", dry.body);
        assert_eq!(
            dry.body["importable_rows"], n,
            "{:?}",
            dry.body["duplicates"]
        );
        let id = dry.body["import_id"].as_str().unwrap();
        let dry_secs = dry_started.elapsed().as_secs_f64();
        let commit_started = Instant::now();
        // A commit longer than the HTTP timeout goes on in the server; asking again waits for
        // the rest and reports.
        let commit = loop {
            let reply = server
                .post(
                    &format!("/api/v1/customers/imports/{id}/commit"),
                    &token,
                    json!({}),
                )
                .await;
            if reply.status == StatusCode::OK {
                break reply;
            }
            eprintln!("commit answered {}, asking again", reply.status);
        };
        assert_eq!(commit.body["created"], n, "{:?}", commit.body);
        loaded += n;
        chunk += 1;
        eprintln!(
            "loaded {loaded} customers, {:.0}/s (this chunk: dry run {dry_secs:.1} s, commit {:.1} s)",
            loaded as f64 / load.elapsed().as_secs_f64(),
            commit_started.elapsed().as_secs_f64()
        );
    }
    let customer_secs = load.elapsed().as_secs_f64();

    // Follow-ups on the customers that are not returning (`--follow-ups` each on average).
    let (follow_ups, follow_up_secs) =
        add_follow_ups(server, args.customers * args.follow_ups, 0, |_, _| ()).await;
    Loaded {
        rep_id,
        customer_secs,
        follow_ups,
        follow_up_secs,
    }
}

/// Sends one `method` request per item through REST, 32 in flight, in batches of 10,000 (each
/// with a fresh admin token, so none outlives its token), and checks that every answer is
/// `expected`. After each batch, `progress` gets how many are done and the seconds so far;
/// returns the same.
async fn send_each<T: Sync>(
    server: &TestServer,
    method: &str,
    items: &[T],
    expected: StatusCode,
    request: impl Fn(&T) -> (String, serde_json::Value) + Sync,
    mut progress: impl FnMut(usize, f64),
) -> (usize, f64) {
    use futures_util::StreamExt;
    let started = Instant::now();
    let mut done = 0;
    for batch in items.chunks(10_000) {
        let token = server.token_of(BENCH_ADMIN).await;
        let results: Vec<StatusCode> = futures_util::stream::iter(batch)
            .map(|item| {
                let (path, body) = request(item);
                let token = &token;
                async move {
                    server
                        .send(method, &path, Some(token), Some(body), &[])
                        .await
                        .status
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        assert!(
            results.iter().all(|s| *s == expected),
            "{:?}",
            results.iter().find(|s| **s != expected)
        );
        done += results.len();
        progress(done, started.elapsed().as_secs_f64());
    }
    (done, started.elapsed().as_secs_f64())
}

/// Logs `count` follow-ups through the REST path, spread evenly over the customers that are
/// not returning (the `i`-th on customer `i mod n`, numbered on from `first`, so a top-up of
/// a kept store spreads like the first load). `progress` hears after each batch of 10,000
/// (how many so far, seconds so far). Returns how many and how long it took; none when every
/// customer returns.
async fn add_follow_ups(
    server: &TestServer,
    count: usize,
    first: usize,
    mut progress: impl FnMut(usize, f64),
) -> (usize, f64) {
    let ids: Vec<String> = outpost::platform::db::Query::new(
        "SELECT VALUE record::id(id) FROM customer WHERE level != 'C'",
    )
    .take(&server.db(), 0)
    .await
    .unwrap();
    if ids.is_empty() || count == 0 {
        return (0, 0.0);
    }
    let numbers: Vec<usize> = (first..first + count).collect();
    send_each(
        server,
        "POST",
        &numbers,
        StatusCode::CREATED,
        |&i| {
            (
                "/api/v1/follow-ups".to_string(),
                json!({ "customer_doc_id": ids[i % ids.len()], "method": "call", "at": "2026-11-01T02:00:00Z", "content": format!("第{i}次电话") }),
            )
        },
        |done, secs| {
            eprintln!("loaded {done} follow-ups, {:.0}/s", done as f64 / secs);
            progress(done, secs);
        },
    )
    .await
}

/// Moves up to `n` owned customers of other levels to level C through REST (32 in flight), so
/// that the sweep returns them too; returns how many and how long it took. For a kept store
/// loaded with fewer returns than a run wants (its level-C customers are the first
/// `--returns` of the load). The customers moved may have follow-ups, but all of them were
/// logged before this run, and the bench's clock moves 31 days on before the sweep, so the
/// 30-day rule finds them due like the others.
async fn make_due(server: &TestServer, n: usize) -> (usize, f64) {
    let ids: Vec<String> = outpost::platform::db::Query::new(
        "SELECT VALUE record::id(id) FROM customer WHERE level != 'C' AND state = 'owned' LIMIT $n",
    )
    .bind("n", i64::try_from(n).unwrap())
    .take(&server.db(), 0)
    .await
    .unwrap();
    send_each(
        server,
        "PATCH",
        &ids,
        StatusCode::OK,
        |id| (format!("/api/v1/customers/{id}"), json!({ "level": "C" })),
        |done, secs| {
            eprintln!(
                "moved {done} customers to level C, {:.0}/s",
                done as f64 / secs
            )
        },
    )
    .await
}

/// Assigns up to `n` level-C customers in the pool (what an earlier sweep returned) back to
/// the user the first load gave them to through the REST command; returns how many and how
/// long it took. Customer `i` (its number is in its name) came in import `i / rows_per_import`,
/// and every tenth import is the rep's, so the rep gets back a tenth of them and the admin the
/// rest: the next sweep then meets the owners' index ranges as a freshly loaded store has them.
/// (Giving all of them to the rep would put 100,000 delete markers at the head of the rep's
/// range after the sweep, a harder case than the issue's load-then-sweep.)
async fn reassign(
    server: &TestServer,
    rep_id: &str,
    n: usize,
    rows_per_import: usize,
) -> (usize, f64) {
    // Each row: the customer's id and its name.
    let returned: Vec<Vec<String>> = outpost::platform::db::Query::new(
        "SELECT VALUE [record::id(id), name] FROM customer WHERE state = 'pool' AND level = 'C' LIMIT $n",
    )
    .bind("n", i64::try_from(n).unwrap())
    .take(&server.db(), 0)
    .await
    .unwrap();
    let admin = server.token_of(BENCH_ADMIN).await;
    let admin_id = server.get("/api/v1/me", &admin).await.body["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first_owners: Vec<(String, &str)> = returned
        .into_iter()
        .map(|customer| {
            let [id, name] = <[String; 2]>::try_from(customer).unwrap();
            let number: String = name.chars().filter(char::is_ascii_digit).collect();
            let import = number.parse::<usize>().unwrap() / rows_per_import;
            let owner = if import % 10 == 9 {
                rep_id
            } else {
                admin_id.as_str()
            };
            (id, owner)
        })
        .collect();
    send_each(
        server,
        "POST",
        &first_owners,
        StatusCode::OK,
        |(id, owner)| {
            (
                format!("/api/v1/customers/{id}/assign"),
                json!({ "user_id": owner, "reason": "bench: back for another sweep" }),
            )
        },
        |done, secs| {
            eprintln!(
                "assigned back {done} customers, {:.0}/s",
                done as f64 / secs
            );
        },
    )
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    if outpost::library_backtraces_on() {
        eprintln!(
            "note: RUST_BACKTRACE is set: storage errors the database raises internally capture backtraces (about 4% of a sweep); run with RUST_LIB_BACKTRACE=0 to measure as deployed"
        );
    }
    let temporary = tempfile::tempdir().unwrap();
    let dir = args
        .data
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let url = format!("surrealkv://{}", dir.join("data").display());
    let clock = Clock::system();
    let mut config = Config::for_database(&url);
    // The bench times whole operations (an import commit, a sweep), not the HTTP timeout.
    config.server.request_timeout_secs = 3_600;
    if let Some(mib) = args.memtable_mib {
        config.database.memtable_mib = mib;
    }
    if let Some(mib) = args.cache_mib {
        config.database.cache_mib = mib;
    }
    if let Some(kib) = args.block_kib {
        config.database.block_kib = kib;
    }
    let server = TestServer::start_with_clock(config, clock.clone()).await;
    let marker = dir.join("loaded.json");
    let reused = marker.exists();
    let mut loaded: Loaded = match std::fs::read(&marker) {
        Ok(bytes) => {
            eprintln!("reusing the store loaded in {}", dir.display());
            serde_json::from_slice(&bytes).unwrap()
        }
        Err(_) => {
            let loaded = load(&server, &args).await;
            std::fs::write(&marker, serde_json::to_vec(&loaded).unwrap()).unwrap();
            loaded
        }
    };
    if args.add_follow_ups > 0 {
        // The marker follows each batch, so a top-up stopped midway still counts what it
        // stored (at most one batch of 10,000 goes uncounted).
        let (before, before_secs) = (loaded.follow_ups, loaded.follow_up_secs);
        let (added, secs) = add_follow_ups(&server, args.add_follow_ups, before, |done, secs| {
            let so_far = Loaded {
                follow_ups: before + done,
                follow_up_secs: before_secs + secs,
                ..loaded.clone()
            };
            std::fs::write(&marker, serde_json::to_vec(&so_far).unwrap()).unwrap();
        })
        .await;
        loaded.follow_ups = before + added;
        loaded.follow_up_secs = before_secs + secs;
        std::fs::write(&marker, serde_json::to_vec(&loaded).unwrap()).unwrap();
    }
    if args.make_due > 0 {
        let (count, secs) = make_due(&server, args.make_due).await;
        eprintln!(
            "moved {count} customers to level C in {secs:.1} s, {:.0}/s",
            count as f64 / secs.max(0.001)
        );
    }
    if args.load_only {
        server.shutdown().await;
        return;
    }
    let Loaded {
        rep_id,
        customer_secs,
        follow_ups,
        follow_up_secs,
    } = loaded;
    let rss_after_load = outpost_tests::bench::memory_mib("VmRSS:");
    // Timing starts once the store has finished merging what the load or the reopen left.
    let settled = outpost_tests::bench::settle(Duration::from_secs(900)).await;
    eprintln!(
        "background merges done after {:.0} s",
        settled.as_secs_f64()
    );

    // Customers a previous sweep returned go back to their first owners, so the sweep below
    // has work.
    let reassigned = if args.reassign {
        let reassigned = reassign(&server, &rep_id, args.returns, args.rows_per_import).await;
        // The assignments' writes are merged in the background before anything is timed.
        let settled = outpost_tests::bench::settle(Duration::from_secs(900)).await;
        eprintln!(
            "background merges after reassigning done after {:.0} s",
            settled.as_secs_f64()
        );
        Some(reassigned)
    } else {
        None
    };

    // Queries.
    let token = server.token_of(BENCH_ADMIN).await;
    let admin_id = server.get("/api/v1/me", &token).await.body["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rep = server.token_of("rep@bench.cn").await;
    let q = args.queries;
    let enc = outpost_tests::query_value;
    let lists: Vec<String> = (0..q)
        .map(|_| "/api/v1/customers?limit=50".to_string())
        .collect();
    let newest: Vec<String> = (0..q)
        .map(|_| "/api/v1/customers?limit=50&sort=-created".to_string())
        .collect();
    let by_level: Vec<String> = (0..q)
        .map(|_| "/api/v1/customers?limit=50&level=B".to_string())
        .collect();
    let names: Vec<String> = (0..q)
        .map(|i| {
            format!(
                "/api/v1/customers?limit=20&q={}",
                enc(&format!(
                    "{}{}",
                    CITIES[i % CITIES.len()],
                    WORDS[(i / 8) % WORDS.len()]
                ))
            )
        })
        .collect();
    let partial: Vec<String> = (0..q)
        .map(|i| {
            format!(
                "/api/v1/customers?limit=20&q={}",
                enc(WORDS[i % WORDS.len()])
            )
        })
        .collect();
    let pinyin: Vec<String> = [
        "beijingxingchen",
        "shanghaihuaxin",
        "xingchen",
        "dongfang",
        "hangzhouyuanhang",
        "bjxc",
        "shhx",
        "cdyh",
    ]
    .iter()
    .cycle()
    .take(q)
    .map(|p| format!("/api/v1/customers?limit=20&q={p}"))
    .collect();
    let phones: Vec<String> = (0..q)
        .map(|i| {
            let n = (i * 7919) % args.customers;
            match i % 3 {
                0 => format!("/api/v1/customers?q=139{n:08}"),
                1 => format!(
                    "/api/v1/customers?q={}",
                    enc(&format!("+86 139 {:04} {:04}", n / 10_000, n % 10_000))
                ),
                _ => format!(
                    "/api/v1/customers?phone={}",
                    enc(&format!("139-{:04}-{:04}", n / 10_000, n % 10_000))
                ),
            }
        })
        .collect();
    let pool_id: Option<String> =
        outpost::platform::db::Query::new("(SELECT VALUE record::id(id) FROM pool LIMIT 1)[0]")
            .take(&server.db(), 0)
            .await
            .unwrap();
    let pool_id = pool_id.expect("the bench created its pool");
    let claimable: Vec<String> = (0..q)
        .map(|_| format!("/api/v1/customers?limit=50&pool_id={pool_id}&state=pool"))
        .collect();
    let pooled: Vec<String> = (0..q)
        .map(|_| "/api/v1/customers?limit=50&state=pool&sort=-created".to_string())
        .collect();
    let owner_list: Vec<String> = (0..q)
        .map(|_| "/api/v1/customers?limit=50".to_string())
        .collect();
    let owner_search: Vec<String> = pinyin.clone();
    let sample: Vec<String> = {
        let db = server.db();
        outpost::platform::db::Query::new(
            "SELECT VALUE record::id(id) FROM customer WHERE level != 'C' LIMIT $n",
        )
        .bind("n", i64::try_from(q).unwrap())
        .take(&db, 0)
        .await
        .unwrap()
    };
    let views: Vec<String> = sample
        .iter()
        .map(|id| format!("/api/v1/customers/{id}/360"))
        .collect();
    let audit_of_customer: Vec<String> = sample
        .iter()
        .map(|id| format!("/api/v1/audit?target_kind=customer&target_id={id}"))
        .collect();
    let audit_newest: Vec<String> = (0..q).map(|_| "/api/v1/audit?limit=50".into()).collect();
    let audit_by_actor: Vec<String> = (0..q)
        .map(|_| format!("/api/v1/audit?actor_id={admin_id}&limit=50"))
        .collect();

    let kinds = [
        ("list (all scope, 50/page)", &token, &lists),
        ("list newest first", &token, &newest),
        ("list filtered by level", &token, &by_level),
        ("list: one pool's claimable customers", &token, &claimable),
        (
            "list: every pool's customers, newest first",
            &token,
            &pooled,
        ),
        ("search: name prefix", &token, &names),
        ("search: partial name", &token, &partial),
        ("search: pinyin / initials", &token, &pinyin),
        ("search: phone, any format", &token, &phones),
        ("rep: own list", &rep, &owner_list),
        ("rep: own pinyin search", &rep, &owner_search),
        ("360 view", &token, &views),
        ("audit: one customer's entries", &token, &audit_of_customer),
        ("audit: newest page", &token, &audit_newest),
        ("audit: one user's newest page", &token, &audit_by_actor),
    ];
    let table = time_kinds(&server, &kinds).await;
    print_queries(&table, q, "before the sweep");
    time_edits(&server, &token, &sample).await;

    // The sweep: every level-C customer is due after 30 days. A sweep longer than the HTTP
    // timeout goes on in the server; the bench then waits for the customers to be back.
    clock.advance(Duration::from_secs(31 * 86_400));
    eprintln!("sweeping");
    let admin = server.token_of(BENCH_ADMIN).await;
    let sync_before = server.get("/api/v1/admin/sync", &admin).await.body;
    let io_before = outpost_tests::bench::io_bytes();
    let cpu_before = outpost_tests::bench::cpu_seconds();
    let sweep = Instant::now();
    let report = server.post("/api/v1/pools/sweep", &admin, json!({})).await;
    let db = server.db();
    let returned = loop {
        let pooled: Option<i64> = outpost::platform::db::Query::new(
            "(SELECT count() AS n FROM customer WHERE state = 'pool' GROUP ALL)[0].n",
        )
        .take(&db, 0)
        .await
        .unwrap();
        let pooled = usize::try_from(pooled.unwrap_or(0)).unwrap();
        if report.status == StatusCode::OK || pooled >= args.returns {
            break pooled;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let sweep_secs = sweep.elapsed().as_secs_f64();
    let sweep_cpu = outpost_tests::bench::cpu_seconds() - cpu_before;
    // What the store read and wrote meanwhile: the sweep's own writes, the memtable flushes and
    // the merges they set off, which share the two cores with the sweep.
    let io_after = outpost_tests::bench::io_bytes();
    let sync_after = server.get("/api/v1/admin/sync", &admin).await.body;
    let sync_delta = |field: &str| {
        sync_after[field].as_f64().unwrap_or(0.0) - sync_before[field].as_f64().unwrap_or(0.0)
    };
    let (groups, commits) = (sync_delta("group_commits"), sync_delta("document_commits"));
    eprintln!("swept");
    // The same queries at once, before the store's merges drop what the sweep moved: each
    // returned customer left a delete marker in its owner's part of the list order and a new
    // entry in its pool's claimable part.
    let after_sweep = time_kinds(&server, &kinds).await;
    print_queries(&after_sweep, q, "right after the sweep");
    println!(
        "customers_bench: {} customers ({} by the rep {rep_id}), {} follow-ups, surrealkv, release build",
        args.customers,
        args.customers / args.rows_per_import / 10 * args.rows_per_import,
        follow_ups
    );
    println!();
    println!("| load | count | seconds | rate |");
    println!("|---|---:|---:|---:|");
    println!(
        "| customers (import: dry run + commit) | {} | {customer_secs:.1} | {:.0}/s |",
        args.customers,
        args.customers as f64 / customer_secs
    );
    println!(
        "| follow-ups (REST, 32 in flight) | {follow_ups} | {follow_up_secs:.1} | {:.0}/s |",
        follow_ups as f64 / follow_up_secs.max(0.001)
    );
    if let Some((count, secs)) = reassigned {
        println!(
            "| assign back what a previous sweep returned (REST, 32 in flight) | {count} | {secs:.1} | {:.0}/s |",
            count as f64 / secs.max(0.001)
        );
    }
    println!();
    println!("| sweep | returned | seconds | rate |");
    println!("|---|---:|---:|---:|");
    println!(
        "| pool returns | {returned} | {sweep_secs:.1} | {:.0}/s |",
        returned as f64 / sweep_secs
    );
    println!();
    println!(
        "the sweep used {sweep_cpu:.1} s of CPU (two cores); the process read {:.0} MiB and wrote {:.0} MiB to disk meanwhile (commits, memtable flushes and the merges they start)",
        (io_after.0 - io_before.0) as f64 / 1_048_576.0,
        (io_after.1 - io_before.1) as f64 / 1_048_576.0
    );
    println!(
        "its {commits:.0} document commits ran in {groups:.0} group commits ({:.1} each, {:.0} run again one by one) of {:.1} ms on average; a commit waited {:.1} ms on average from its arrival to its result",
        commits / groups.max(1.0),
        sync_delta("group_commits_retried_singly"),
        sync_delta("group_commit_seconds") * 1e3 / groups.max(1.0),
        sync_delta("document_commit_wait_seconds") * 1e3 / commits.max(1.0)
    );
    println!(
        "it loaded {:.0} documents ahead in blocks and {:.0} one by one (a customer evicted from the engine's cache before its return loads again alone)",
        sync_delta("documents_loaded_in_batches"),
        sync_delta("documents_loaded_singly")
    );
    println!(
        "queries and sweep timed after the store's background merges settled ({:.0} s)",
        settled.as_secs_f64()
    );
    println!(
        "memory: RSS after {} {rss_after_load:.0} MiB, after sweep {:.0} MiB, peak {:.0} MiB",
        if reused {
            "reopening the kept store"
        } else {
            "load"
        },
        outpost_tests::bench::memory_mib("VmRSS:"),
        outpost_tests::bench::memory_mib("VmHWM:")
    );
    // The store closes when its last handle goes: drop this one first, so SurrealKV flushes
    // before the temporary directory is removed.
    drop(db);
    server.shutdown().await;
}
