//! The official automerge-repo JavaScript client (npm `@automerge/automerge-repo` 2.x with its
//! WebSocket adapter, unchanged) syncs a customer with Outpost in both directions.
//!
//! The test installs the pinned npm packages itself (`tests/interop/package-lock.json`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use autosurgeon::{hydrate, reconcile};
use outpost_mobile::records::customer::Customer;
use outpost_sync::DocumentId;
use outpost_tests::TestServer;
use outpost_tests::sync_client::SyncClient;
use reqwest::StatusCode;
use serde_json::json;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Installs the npm packages once per test run.
fn npm_packages() -> &'static PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = interop_dir();
        if !dir
            .join("node_modules/@automerge/automerge-repo/package.json")
            .exists()
        {
            // `npm install` rather than `npm ci`: npm 11 leaves the optional native packages of
            // cbor-extract out of the lock file and then refuses `ci`; the lock file still pins
            // every package that is installed.
            let status = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--ignore-scripts"])
                .current_dir(&dir)
                .status()
                .expect("npm is installed (the interop test needs Node.js 20+)");
            assert!(status.success(), "npm ci failed");
        }
        dir
    })
}

#[tokio::test]
async fn the_javascript_client_syncs_a_customer_both_ways() {
    let dir = npm_packages().clone();
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep_role = server.role(&admin, "rep").await;
    let rep = server
        .user(&admin, "js@x.cn", &root, None, &[&rep_role])
        .await;
    let token = server.token_of("js@x.cn").await;
    let ws = format!(
        "{}/sync?token={token}",
        server.base.replace("http://", "ws://")
    );

    // 1. The JS client creates a customer (and tries to make someone else its owner).
    let initial = json!({
        "type": "customer", "name": "Node 有限公司", "kind": "company",
        "phones": ["010-8888 8888"], "tags": ["interop"], "contacts": [],
        "server": { "owner": "intruder", "state": "owned" }
    });
    let mut creator = Command::new("node")
        .args(["client.mjs", "create", &ws, &initial.to_string()])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut url = String::new();
    BufReader::new(creator.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let id = DocumentId::parse(url.trim()).unwrap_or_else(|| panic!("a document URL, got {url:?}"));

    let mut projected = None;
    for _ in 0..200 {
        let reply = server.get(&format!("/api/v1/customers/{id}"), &token).await;
        if reply.status == StatusCode::OK {
            projected = Some(reply.body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let projected = projected.expect("the JS client's document reached the server");
    assert_eq!(projected["name"], "Node 有限公司");
    assert_eq!(
        projected["owner_id"],
        rep.as_str(),
        "the server, not the client, decides the owner"
    );
    assert_eq!(projected["tags"], json!(["interop"]));
    drop(creator.stdin.take());
    let _ = creator.wait();

    // 2. A Rust device edits it.
    let mut phone = SyncClient::connect(&server.base, &token, "rust-phone", None).await;
    phone.request(&id).await;
    phone.settle().await;
    let mut customer: Customer = hydrate(phone.doc(&id)).unwrap();
    assert_eq!(
        customer.name, "Node 有限公司",
        "text written by JS reads as a string"
    );
    customer.industry = Some("互操作".into());
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;

    // 3. A fresh JS client sees the edit and the server's owner.
    let expected = json!({ "industry": "互操作", "name": "Node 有限公司", "server.owner": rep });
    let reader = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args([
                "client.mjs",
                "expect",
                &ws,
                url.trim(),
                &expected.to_string(),
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(
        reader.status.success(),
        "the JS client did not see the edit: {}{}",
        String::from_utf8_lossy(&reader.stdout),
        String::from_utf8_lossy(&reader.stderr)
    );
    let _ = std::io::stdout().flush();
}
