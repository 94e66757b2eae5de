//! The device client a phone embeds (`outpost_mobile::device::Device`), against the real server:
//! offline edits, the sync round, the manifest-driven drop, the outbox, and crashes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost_mobile::device::{Device, DeviceError};
use outpost_mobile::records::customer::Customer;
use outpost_mobile::records::follow_up::FollowUp;
use outpost_tests::{PASSWORD, TestServer};
use reqwest::StatusCode;
use serde_json::json;

/// A server with a sales department, its head, and two reps in it.
struct Team {
    server: TestServer,
    admin: String,
    support: String,
    rep_id: String,
    colleague_id: String,
}

async fn team() -> Team {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let sales = server.department(&admin, "Sales", &root).await;
    let support = server.department(&admin, "Support", &root).await;
    let rep = server.role(&admin, "rep").await;
    let head = server.role(&admin, "department_head").await;
    server
        .user(&admin, "head@x.cn", &sales, None, &[&head])
        .await;
    let rep_id = server.user(&admin, "rep@x.cn", &sales, None, &[&rep]).await;
    let colleague_id = server
        .user(&admin, "colleague@x.cn", &sales, None, &[&rep])
        .await;
    Team {
        server,
        admin,
        support,
        rep_id,
        colleague_id,
    }
}

async fn phone(server: &TestServer, dir: &tempfile::TempDir, login: &str) -> Device {
    let mut device = Device::open(dir.path(), &server.base).unwrap();
    device
        .login(login, PASSWORD, &format!("{login}'s phone"), "android")
        .await
        .unwrap();
    device
}

#[tokio::test]
async fn a_phone_works_offline_and_syncs_both_ways() {
    let Team { server, rep_id, .. } = team().await;
    let dir = tempfile::tempdir().unwrap();
    let mut rep = phone(&server, &dir, "rep@x.cn").await;
    assert_eq!(rep.user_id(), Some(rep_id.as_str()));

    // Offline: a customer and a visit, typed.
    let mut customer = Customer::new("田野农机");
    customer.phones = vec!["138 0013 8000".into()];
    outpost_mobile::records::set_text(&mut customer.notes, "想要拖拉机");
    let customer_id = rep.create(&customer).unwrap();
    let visit = FollowUp::new(customer_id.to_string(), "visit", "2026-11-27T02:00:00Z");
    let visit_id = rep.create(&visit).unwrap();

    let report = rep.sync().await.unwrap();
    assert_eq!(report.sent.len(), 2, "{report:?}");
    assert!(report.dropped.is_empty() && report.rejected.is_empty());

    // The server projected both and filled the server-owned fields, which reach the phone.
    let token = server.token_of("rep@x.cn").await;
    let row = server
        .get(&format!("/api/v1/customers/{customer_id}"), &token)
        .await;
    assert_eq!(row.status, StatusCode::OK, "{:?}", row.body);
    assert_eq!(row.body["name"], "田野农机");
    assert_eq!(row.body["owner_id"], rep_id.as_str());
    let follow_up = server
        .get(&format!("/api/v1/follow-ups/{visit_id}"), &token)
        .await;
    assert_eq!(follow_up.status, StatusCode::OK, "{:?}", follow_up.body);
    let local: Customer = rep.get(&customer_id).unwrap();
    assert_eq!(local.server.owner.as_deref(), Some(rep_id.as_str()));

    // A web edit reaches the phone and is reported; a second phone of the same rep gets all.
    let patched = server
        .patch(
            &format!("/api/v1/customers/{customer_id}"),
            &token,
            json!({ "level": "A" }),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    let report = rep.sync().await.unwrap();
    assert_eq!(report.changed, vec![customer_id.clone()], "{report:?}");
    assert_eq!(
        rep.get::<Customer>(&customer_id).unwrap().level.as_deref(),
        Some("A")
    );
    let report = rep.sync().await.unwrap();
    assert!(
        report.changed.is_empty() && report.sent.is_empty(),
        "nothing changed, nothing sent: {report:?}"
    );

    let tablet_dir = tempfile::tempdir().unwrap();
    let mut tablet = phone(&server, &tablet_dir, "rep@x.cn").await;
    assert_ne!(
        tablet.device_id(),
        rep.device_id(),
        "each store is a device"
    );
    let report = tablet.sync().await.unwrap();
    let mut added = report.added.clone();
    added.sort();
    let mut expected = vec![customer_id.clone(), visit_id.clone()];
    expected.sort();
    assert_eq!(added, expected, "{report:?}");
    assert_eq!(
        tablet.get::<Customer>(&customer_id).unwrap().notes.as_str(),
        "想要拖拉机"
    );

    // Both phones edit the notes offline; both texts survive.
    rep.update::<Customer>(&customer_id, |c| {
        let notes = format!("{}，两台", c.notes.as_str());
        outpost_mobile::records::set_text(&mut c.notes, &notes);
    })
    .unwrap();
    tablet
        .update::<Customer>(&customer_id, |c| {
            let notes = format!("下周再访。{}", c.notes.as_str());
            outpost_mobile::records::set_text(&mut c.notes, &notes);
        })
        .unwrap();
    rep.sync().await.unwrap();
    tablet.sync().await.unwrap();
    rep.sync().await.unwrap();
    for device in [&rep, &tablet] {
        assert_eq!(
            device.get::<Customer>(&customer_id).unwrap().notes.as_str(),
            "下周再访。想要拖拉机，两台"
        );
    }

    // The store is the truth: reopened, the device has everything and nothing to send.
    drop(rep);
    let mut reopened = Device::open(dir.path(), &server.base).unwrap();
    assert_eq!(reopened.documents().len(), 2);
    let report = reopened.sync().await.unwrap();
    assert!(
        report.sent.is_empty() && report.changed.is_empty(),
        "{report:?}"
    );
}

#[tokio::test]
async fn an_edit_that_breaks_a_rule_changes_nothing() {
    let Team { server, .. } = team().await;
    let dir = tempfile::tempdir().unwrap();
    let mut rep = phone(&server, &dir, "rep@x.cn").await;
    let id = rep.create(&Customer::new("Acme")).unwrap();

    let taken = rep.update::<Customer>(&id, |c| c.server.owner = Some("someone-else".into()));
    assert!(
        matches!(&taken, Err(DeviceError::Invalid(v)) if v[0].field == "server"),
        "{taken:?}"
    );
    let empty = rep.update::<Customer>(&id, |c| {
        c.name.clear();
        c.level = Some("Z".into());
    });
    let Err(DeviceError::Invalid(violations)) = empty else {
        panic!("{empty:?}")
    };
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert!(
        fields.contains(&"name") && fields.contains(&"level"),
        "{fields:?}"
    );
    let wrong_type = rep.get::<FollowUp>(&id);
    assert!(matches!(wrong_type, Err(DeviceError::WrongType { .. })));
    assert!(matches!(
        rep.create(&Customer::new("")),
        Err(DeviceError::Invalid(_))
    ));

    drop(rep);
    let reopened = Device::open(dir.path(), &server.base).unwrap();
    let customer: Customer = reopened.get(&id).unwrap();
    assert_eq!(customer.name, "Acme");
    assert_eq!(customer.level, None);
    assert_eq!(
        reopened.documents().len(),
        1,
        "the refused create left nothing"
    );
}

#[tokio::test]
async fn a_phone_drops_what_its_user_may_no_longer_see() {
    let Team {
        server,
        admin,
        support,
        colleague_id,
        ..
    } = team().await;
    let colleague_dir = tempfile::tempdir().unwrap();
    let mut colleague = phone(&server, &colleague_dir, "colleague@x.cn").await;
    let kept = colleague.create(&Customer::new("Kept Co")).unwrap();
    let deleted = colleague.create(&Customer::new("Deleted Co")).unwrap();
    colleague.sync().await.unwrap();

    // The department head sees the department's customers on her phone.
    let head_dir = tempfile::tempdir().unwrap();
    let mut head = phone(&server, &head_dir, "head@x.cn").await;
    let report = head.sync().await.unwrap();
    assert_eq!(report.added.len(), 2, "{report:?}");

    // A record deleted on the web leaves every phone.
    let token = server.token_of("colleague@x.cn").await;
    let gone = server
        .delete(&format!("/api/v1/customers/{deleted}"), &token)
        .await;
    assert!(gone.status.is_success(), "{:?}", gone.body);
    let report = head.sync().await.unwrap();
    assert_eq!(report.dropped, vec![deleted.clone()], "{report:?}");
    assert!(!head.has(&deleted));
    let report = colleague.sync().await.unwrap();
    assert_eq!(report.dropped, vec![deleted.clone()], "{report:?}");

    // The colleague moves to another department: the head's phone drops the colleague's
    // customers, on disk too; the colleague keeps them.
    let moved = server
        .patch(
            &format!("/api/v1/users/{colleague_id}"),
            &admin,
            json!({ "department_id": support }),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    let report = head.sync().await.unwrap();
    assert_eq!(report.dropped, vec![kept.clone()], "{report:?}");
    drop(head);
    let head = Device::open(head_dir.path(), &server.base).unwrap();
    assert!(head.documents().is_empty(), "{:?}", head.documents());
    let report = colleague.sync().await.unwrap();
    assert!(report.dropped.is_empty(), "{report:?}");
    assert!(colleague.has(&kept));

    // A document created offline that the server never saw is not dropped by the manifest.
    let fresh = colleague.create(&Customer::new("Fresh Co")).unwrap();
    drop(colleague);
    let mut colleague = Device::open(colleague_dir.path(), &server.base).unwrap();
    let report = colleague.sync().await.unwrap();
    assert_eq!(report.sent, vec![fresh], "{report:?}");
}

#[tokio::test]
async fn the_outbox_survives_restarts_and_runs_each_command_once() {
    let Team { server, .. } = team().await;
    let dir = tempfile::tempdir().unwrap();
    drop(phone(&server, &dir, "rep@x.cn").await);

    // Offline (the server address does not answer): commands are queued durably.
    let offline_base = "http://127.0.0.1:9";
    let mut offline = Device::open(dir.path(), offline_base).unwrap();
    offline
        .enqueue("/api/v1/customers", json!({ "name": "Queued One" }))
        .unwrap();
    offline
        .enqueue("/api/v1/customers", json!({ "name": "" }))
        .unwrap();
    offline
        .enqueue("/api/v1/customers", json!({ "name": "Queued Two" }))
        .unwrap();
    let failed = offline.sync().await;
    assert!(matches!(failed, Err(DeviceError::Network(_))), "{failed:?}");
    drop(offline);

    // Back online after a restart; keep a copy of the outbox to replay it as if the answers
    // had been lost in a crash.
    let outbox = dir.path().join("outbox");
    let saved = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&outbox).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, saved.path().join(path.file_name().unwrap())).unwrap();
    }
    let mut online = Device::open(dir.path(), &server.base).unwrap();
    assert_eq!(online.pending_commands().len(), 3);
    let report = online.sync().await.unwrap();
    let statuses: Vec<u16> = report.commands.iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![201, 422, 201], "{report:?}");
    let refused = report.commands[1].problem.as_ref().expect("a problem");
    assert_eq!(refused.errors[0].field, "name");
    assert_eq!(report.pending_commands, 0);
    // The created customers reached this phone in the same round.
    assert_eq!(report.added.len(), 2, "{report:?}");
    let first_id = report.commands[0].body["doc_id"].clone();
    drop(online);

    for entry in std::fs::read_dir(saved.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, outbox.join(path.file_name().unwrap())).unwrap();
    }
    let mut replayed = Device::open(dir.path(), &server.base).unwrap();
    let report = replayed.sync().await.unwrap();
    assert_eq!(report.commands.len(), 3);
    assert_eq!(
        report.commands[0].body["doc_id"], first_id,
        "the replay got the stored answer"
    );
    let token = server.token_of("rep@x.cn").await;
    let list = server.get("/api/v1/customers?limit=50", &token).await;
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "each command ran once: {names:?}");
}

fn helper_args(dir: &str, base: &str, mode: &str, customer: &str, start: &str) -> Vec<String> {
    [dir, base, mode, customer, start]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Runs the crash helper binary until it has acknowledged `acks` steps, then kills it (SIGKILL:
/// no destructor, no flush) and returns the acknowledged step numbers.
fn run_and_kill(args: &[String], acks: usize) -> Vec<u64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_device_crash"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the helper starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acknowledged = Vec::new();
    while acknowledged.len() < acks {
        match lines.next() {
            Some(Ok(line)) => acknowledged.push(line.trim().parse().expect("a step number")),
            _ => break,
        }
    }
    child.kill().expect("killed");
    child.wait().expect("reaped");
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_killed_at_any_point_loses_no_local_edit() {
    let Team { server, .. } = team().await;
    let dir = tempfile::tempdir().unwrap();
    let mut rep = phone(&server, &dir, "rep@x.cn").await;
    let customer = rep.create(&Customer::new("Crash Co")).unwrap();
    rep.sync().await.unwrap();
    drop(rep);
    let path = dir.path().to_str().unwrap().to_string();
    let customer_arg = customer.to_string();

    // Killed while editing, three times, at a different step each time.
    let mut acknowledged = Vec::new();
    for (round, acks) in [7usize, 13, 4].into_iter().enumerate() {
        let start = (round * 1000).to_string();
        let args = helper_args(&path, &server.base, "edit", &customer_arg, &start);
        let acks_now = tokio::task::spawn_blocking(move || run_and_kill(&args, acks))
            .await
            .unwrap();
        assert_eq!(acks_now.len(), acks, "the helper made progress");
        acknowledged.extend(acks_now);
        let device = Device::open(dir.path(), &server.base).expect("the store opens after a kill");
        let notes = device.get::<Customer>(&customer).unwrap().notes;
        for step in &acknowledged {
            assert!(
                notes.as_str().contains(&format!("[t{step}]")),
                "step {step} survived: {notes:?}"
            );
        }
    }

    // Killed while syncing: each step creates a follow-up and syncs.
    for (round, acks) in [3usize, 5].into_iter().enumerate() {
        let start = (10_000 + round * 1000).to_string();
        let args = helper_args(&path, &server.base, "sync", &customer_arg, &start);
        let acks_now = tokio::task::spawn_blocking(move || run_and_kill(&args, acks))
            .await
            .unwrap();
        assert_eq!(acks_now.len(), acks);
        acknowledged.extend(acks_now);
    }

    // After the crashes, one more sync: the server has every acknowledged edit, once.
    let mut device = Device::open(dir.path(), &server.base).unwrap();
    tokio::time::timeout(Duration::from_secs(120), device.sync())
        .await
        .expect("sync finishes")
        .unwrap();
    let token = server.token_of("rep@x.cn").await;
    let row = server
        .get(&format!("/api/v1/customers/{customer}"), &token)
        .await;
    let notes = row.body["notes"].as_str().unwrap_or_default();
    for step in acknowledged.iter().filter(|s| **s < 10_000) {
        assert!(
            notes.contains(&format!("[t{step}]")),
            "t{step} reached the server"
        );
    }
    let follow_ups = server
        .get(
            &format!("/api/v1/follow-ups?customer_doc_id={customer}&limit=200"),
            &token,
        )
        .await;
    assert_eq!(follow_ups.status, StatusCode::OK, "{:?}", follow_ups.body);
    let mut contents: Vec<String> = follow_ups.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["location"].as_str().unwrap_or_default().to_string())
        .collect();
    contents.sort();
    let before = contents.len();
    contents.dedup();
    assert_eq!(before, contents.len(), "no follow-up arrived twice");
    for step in acknowledged.iter().filter(|s| **s >= 10_000) {
        assert!(
            contents.contains(&format!("step {step}")),
            "follow-up {step} reached the server: {contents:?}"
        );
    }
}

/// The manifest as a document: served to its user only, read-only, and pushed to a connected
/// peer when a record enters or leaves the user's scope.
#[tokio::test]
async fn the_manifest_document_is_pushed_when_the_scope_changes() {
    use outpost_mobile::manifest::{ManifestDocument, manifest_document_id};
    use outpost_tests::sync_client::SyncClient;

    let Team {
        server,
        admin,
        support,
        colleague_id,
        ..
    } = team().await;
    let head_token = server.token_of("head@x.cn").await;
    let head_id = server.get("/api/v1/me", &head_token).await.body["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest_id = manifest_document_id(&head_id);
    let rest = server.get("/api/v1/sync/manifest", &head_token).await;
    assert_eq!(rest.body["doc_id"], manifest_id.as_str());

    let mut head = SyncClient::connect(&server.base, &head_token, "head-phone", None).await;
    head.request(&manifest_id).await;
    head.listen().await;
    let manifest: ManifestDocument = autosurgeon::hydrate(head.doc(&manifest_id)).unwrap();
    assert_eq!(manifest.user_id, head_id);
    assert!(manifest.documents.is_empty());

    // A colleague creates a customer: it appears in the head's open manifest, unasked.
    let colleague_token = server.token_of("colleague@x.cn").await;
    let created = server
        .post(
            "/api/v1/customers",
            &colleague_token,
            json!({ "name": "Pushed Co" }),
        )
        .await;
    let doc_id = created.body["doc_id"].as_str().unwrap().to_string();
    head.listen().await;
    let manifest: ManifestDocument = autosurgeon::hydrate(head.doc(&manifest_id)).unwrap();
    assert_eq!(
        manifest.documents.keys().collect::<Vec<_>>(),
        vec![&doc_id],
        "{manifest:?}"
    );
    assert_eq!(manifest.documents[&doc_id].kind, "customer");
    let digest_before = manifest.documents[&doc_id].heads_digest.clone();

    // An edit changes its digest.
    server
        .patch(
            &format!("/api/v1/customers/{doc_id}"),
            &colleague_token,
            json!({ "level": "B" }),
        )
        .await;
    head.listen().await;
    let manifest: ManifestDocument = autosurgeon::hydrate(head.doc(&manifest_id)).unwrap();
    assert_ne!(manifest.documents[&doc_id].heads_digest, digest_before);

    // The colleague moves department: the entry leaves the manifest at once.
    let moved = server
        .patch(
            &format!("/api/v1/users/{colleague_id}"),
            &admin,
            json!({ "department_id": support }),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    head.listen().await;
    let manifest: ManifestDocument = autosurgeon::hydrate(head.doc(&manifest_id)).unwrap();
    assert!(manifest.documents.is_empty(), "{manifest:?}");

    // Nobody else may open it, and its own user may not write to it.
    let mut colleague =
        SyncClient::connect(&server.base, &colleague_token, "colleague-phone", None).await;
    colleague.request(&manifest_id).await;
    colleague.listen().await;
    assert_eq!(colleague.unavailable, vec![manifest_id.to_string()]);

    let forged = ManifestDocument::new(
        &head_id,
        vec![outpost_mobile::api::ManifestEntry {
            doc_id: "forged".into(),
            kind: "customer".into(),
            heads_digest: "0".into(),
        }],
    );
    autosurgeon::reconcile(head.doc(&manifest_id), &forged).unwrap();
    head.push(&manifest_id).await;
    head.listen().await;
    assert_eq!(head.unavailable, vec![manifest_id.to_string()]);
    let rest = server.get("/api/v1/sync/manifest", &head_token).await;
    assert_eq!(
        rest.body["documents"],
        json!([]),
        "the forged entry went nowhere"
    );
}
