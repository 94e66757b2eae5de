//! Document storage benchmark: what it costs to load a customer document stored as a snapshot
//! followed by incremental chunks (one per change, as the server appends them), against the
//! same document compacted into one snapshot, by the number of changes since the snapshot.
//! Each change is a change of hands (a return or an assignment: the ten server-owned fields a
//! pool sweep writes). The server compacts a document on the commit that would make its
//! `COMPACT_AFTER_CHUNKS`-th chunk (`backend/src/sync_host/storage.rs`): this table is what the
//! chunks cost to load, against which a compaction's cost (a `save`, and deleting the old
//! chunks) is weighed. Run it optimized:
//!
//! ```sh
//! cargo run --release -p outpost-tests --bin documents_bench -- --docs 2000
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use autosurgeon::{hydrate, reconcile};
use outpost_mobile::records::customer::Customer;

const REP: &str = "01a227fe-c3b8-71d5-bd71-60d7ca164efc";

/// One change of hands of `doc`: a return to the pool (even `n`) or an assignment back.
fn change_hands(doc: &mut automerge::AutoCommit, n: usize) {
    let mut customer: Customer = hydrate(doc).unwrap();
    let at = format!("2026-11-{:02}T10:00:00.000Z", 1 + n % 28);
    if n.is_multiple_of(2) {
        customer.custody.previous_owner = customer.server.owner.take();
        customer.server.state = "pool".into();
        customer.custody.owned_since = None;
        customer.custody.released_at = Some(at.clone());
        customer.custody.action = Some("return".into());
        customer.custody.reason = Some("no follow-up for 30 days".into());
    } else {
        customer.server.owner = Some(REP.into());
        customer.server.state = "owned".into();
        customer.custody.owned_since = Some(at.clone());
        customer.custody.action = Some("assign".into());
        customer.custody.reason = Some("back for another round".into());
    }
    customer.server.updated_at = Some(at.clone());
    customer.custody.changed_at = Some(at);
    reconcile(doc, &customer).unwrap();
    doc.commit();
}

/// Microseconds per document to load each of `stored`.
fn load_micros(stored: &[Vec<u8>]) -> f64 {
    let started = Instant::now();
    for bytes in stored {
        outpost_mobile::records::load_document(bytes).unwrap();
    }
    started.elapsed().as_secs_f64() * 1e6 / stored.len() as f64
}

fn main() {
    let mut docs = 2000usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--docs" => docs = it.next().and_then(|v| v.parse().ok()).expect("--docs N"),
            other => panic!("unknown flag {other}; flags: --docs N"),
        }
    }
    println!("documents_bench: {docs} customer documents per row, release build");
    println!();
    println!(
        "| changes since the snapshot | load: snapshot + chunks µs | load: compacted µs | stored bytes | compacted bytes | bytes per chunk | compacting (`save`) µs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for changes in [0usize, 1, 2, 4, 8, 16, 32, 64] {
        let mut chunked = Vec::with_capacity(docs);
        let mut compacted = Vec::with_capacity(docs);
        let mut chunk_bytes = 0usize;
        let mut saving = std::time::Duration::ZERO;
        for d in 0..docs {
            let mut doc = outpost_mobile::records::new_document();
            let mut customer = Customer::new(format!("客户{d}有限公司"));
            customer.phones.push(format!("1380013{:04}", d % 10_000));
            customer.level = Some("C".into());
            customer.server.owner = Some(REP.into());
            customer.custody.pool = Some("pool".into());
            reconcile(&mut doc, &customer).unwrap();
            doc.commit();
            let mut stored = doc.save();
            for n in 0..changes {
                let before = doc.get_heads();
                change_hands(&mut doc, n);
                let chunk = doc.save_after(&before);
                chunk_bytes += chunk.len();
                stored.extend_from_slice(&chunk);
            }
            chunked.push(stored);
            let started = Instant::now();
            compacted.push(doc.save());
            saving += started.elapsed();
        }
        let mean = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() / docs;
        println!(
            "| {changes} | {:.1} | {:.1} | {} | {} | {} | {:.1} |",
            load_micros(&chunked),
            load_micros(&compacted),
            mean(&chunked),
            mean(&compacted),
            chunk_bytes.checked_div(docs * changes).unwrap_or(0),
            saving.as_secs_f64() * 1e6 / docs as f64
        );
    }
}
