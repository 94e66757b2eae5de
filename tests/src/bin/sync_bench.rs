//! Sync benchmark: N devices, each with M customer documents edited E times offline, reconnect at
//! once to a real Outpost server (embedded SurrealKV in a temp dir) and sync everything.
//!
//! Prints accepted changes/s, documents/s, frames and bytes per reconnect, p50/p99 of one
//! device's reconnect, the process's peak memory, and, for the same changes, raw automerge merge
//! throughput in-process (the ceiling), and how long the phone's own `Device` client takes to
//! sync `--solo-docs` documents changed offline. Run it optimized:
//!
//! ```sh
//! cargo run --release -p outpost-tests --bin sync_bench -- --devices 200 --docs 100 --edits 10
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use automerge::AutoCommit;
use autosurgeon::{hydrate, reconcile};
use outpost::config::Config;
use outpost_mobile::device::Device;
use outpost_mobile::records::customer::Customer;
use outpost_tests::sync_client::SyncClient;
use outpost_tests::{PASSWORD, TestServer};

struct Args {
    solo_docs: usize,
    devices: usize,
    docs: usize,
    edits: usize,
    db: String,
}

fn args() -> Args {
    let mut args = Args {
        solo_docs: 200,
        devices: 20,
        docs: 20,
        edits: 10,
        db: "surrealkv".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--devices" => args.devices = value.parse().expect("--devices N"),
            "--docs" => args.docs = value.parse().expect("--docs M"),
            "--edits" => args.edits = value.parse().expect("--edits E"),
            "--db" => args.db = value,
            "--solo-docs" => args.solo_docs = value.parse().expect("--solo-docs N"),
            other => panic!(
                "unknown flag {other}; flags: --devices N --docs M --edits E --solo-docs N --db surrealkv|mem"
            ),
        }
    }
    args
}

/// A customer document edited `edits` times (one automerge change per edit).
fn offline_document(device: usize, doc: usize, edits: usize) -> AutoCommit {
    let mut am = outpost_mobile::records::new_document();
    let mut customer = Customer::new(format!("客户 {device}-{doc}"));
    reconcile(&mut am, &customer).unwrap();
    am.commit();
    for edit in 1..edits {
        customer = hydrate(&am).unwrap();
        match edit % 4 {
            0 => customer.industry = Some(format!("行业 {edit}")),
            1 => customer.tags.push(format!("t{edit}")),
            2 => customer.phones.push(format!("1380013{:04}", edit)),
            _ => {
                let notes = format!("{} 第{edit}次拜访。", customer.notes.as_str());
                outpost_mobile::records::set_text(&mut customer.notes, &notes);
            }
        }
        reconcile(&mut am, &customer).unwrap();
        am.commit();
    }
    am
}

fn peak_rss_mib() -> f64 {
    outpost_tests::bench::memory_mib("VmHWM:")
}

use outpost_tests::bench::percentile;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().unwrap();
    let url = if args.db == "mem" {
        "mem://".to_string()
    } else {
        format!("surrealkv://{}", dir.path().join("data").display())
    };
    let server = TestServer::start_with(Config::for_database(&url)).await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;

    let mut tokens = Vec::new();
    for device in 0..args.devices {
        let email = format!("rep{device}@bench.cn");
        server.user(&admin, &email, &root, None, &[&rep]).await;
        tokens.push(server.token_of(&email).await);
    }

    // Offline editing on every device.
    let prepare = Instant::now();
    let documents: Vec<Vec<AutoCommit>> = (0..args.devices)
        .map(|d| {
            (0..args.docs)
                .map(|m| offline_document(d, m, args.edits))
                .collect()
        })
        .collect();
    let prepared_in = prepare.elapsed();
    let changes = args.devices * args.docs * args.edits;

    // The ceiling: the same changes merged in-process by automerge alone.
    let mut copies: Vec<AutoCommit> = documents.iter().flatten().cloned().collect();
    let ceiling = Instant::now();
    for doc in &mut copies {
        let mut fresh = outpost_mobile::records::new_document();
        fresh.merge(doc).unwrap();
    }
    let ceiling_secs = ceiling.elapsed().as_secs_f64();

    // Everyone reconnects at once.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (device, (token, docs)) in tokens.into_iter().zip(documents).enumerate() {
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            let begin = Instant::now();
            let mut client = SyncClient::connect(
                &base,
                &token,
                &format!("device-{device}"),
                Some(&format!("storage-{device}")),
            )
            .await;
            for doc in docs {
                client.insert(doc);
            }
            client.sync_all().await;
            (begin.elapsed(), client.sent, client.received)
        }));
    }
    let mut latencies = Vec::new();
    let (mut frames, mut bytes) = (0usize, 0usize);
    for task in tasks {
        let (latency, sent, received) = task.await.unwrap();
        latencies.push(latency);
        frames += sent.0 + received.0;
        bytes += sent.1 + received.1;
    }
    let wall = started.elapsed().as_secs_f64();
    latencies.sort();

    let list = server.get("/api/v1/customers?limit=1", &admin).await;
    assert_eq!(list.status, reqwest::StatusCode::OK);

    // The phone's own client (disk store, manifest round trip, fsync per saved file): one
    // device with `--solo-docs` documents changed offline, after the storm.
    server
        .user(&admin, "solo@bench.cn", &root, None, &[&rep])
        .await;
    let solo_dir = tempfile::tempdir().unwrap();
    let mut solo = Device::open(solo_dir.path(), &server.base).unwrap();
    solo.login("solo@bench.cn", PASSWORD, "bench phone", "android")
        .await
        .unwrap();
    for doc in 0..args.solo_docs {
        let id = solo
            .create(&Customer::new(format!("离线客户 {doc}")))
            .unwrap();
        for edit in 1..args.edits {
            solo.update::<Customer>(&id, |c| c.tags.push(format!("t{edit}")))
                .unwrap();
        }
    }
    let solo_started = Instant::now();
    let report = solo.sync().await.unwrap();
    let solo_secs = solo_started.elapsed().as_secs_f64();
    assert_eq!(
        report.sent.len(),
        args.solo_docs,
        "every document reached the server"
    );

    println!(
        "sync_bench: {} devices x {} docs x {} edits on {} ({} changes, {} documents)",
        args.devices,
        args.docs,
        args.edits,
        args.db,
        changes,
        args.devices * args.docs
    );
    println!("| metric | value |");
    println!("| --- | --- |");
    println!(
        "| offline edit generation | {:.2} s |",
        prepared_in.as_secs_f64()
    );
    println!("| reconnect wall time (all devices) | {wall:.2} s |");
    println!("| accepted changes/s | {:.0} |", changes as f64 / wall);
    println!(
        "| documents/s | {:.0} |",
        (args.devices * args.docs) as f64 / wall
    );
    println!(
        "| frames per reconnect (sent+received) | {:.1} |",
        frames as f64 / args.devices as f64
    );
    println!(
        "| bytes per reconnect (sent+received) | {:.0} |",
        bytes as f64 / args.devices as f64
    );
    println!(
        "| one device's reconnect p50 | {:.3} s |",
        percentile(&latencies, 0.50).as_secs_f64()
    );
    println!(
        "| one device's reconnect p99 | {:.3} s |",
        percentile(&latencies, 0.99).as_secs_f64()
    );
    println!(
        "| Device client: {} documents changed offline, one sync() | {solo_secs:.3} s |",
        args.solo_docs
    );
    println!(
        "| peak RSS (server and clients, one process) | {:.0} MiB |",
        peak_rss_mib()
    );
    println!(
        "| raw automerge merge, same changes, in-process | {:.0} changes/s |",
        changes as f64 / ceiling_secs
    );
    println!(
        "| pipeline efficiency (accepted / raw) | {:.2}% |",
        100.0 * (changes as f64 / wall) / (changes as f64 / ceiling_secs)
    );
    server.shutdown().await;
}
