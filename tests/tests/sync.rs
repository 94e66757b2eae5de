//! `GET /sync`: phones (and any automerge-repo client) sync customer documents with the server;
//! the server validates, corrects, persists, projects and fans out.

use automerge::AutoCommit;
use autosurgeon::{hydrate, reconcile};
use outpost::config::Config;
use outpost_mobile::records::customer::Customer;
use outpost_sync::DocumentId;
use outpost_sync::protocol::Message;
use outpost_tests::TestServer;
use outpost_tests::sync_client::SyncClient;
use reqwest::StatusCode;
use serde_json::json;

/// An admin, and two reps in the root department with device-bound tokens.
struct Team {
    admin: String,
    rep_a: String,
    rep_a_id: String,
    rep_b: String,
}

async fn team(server: &TestServer) -> Team {
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    let rep_a_id = server.user(&admin, "a@x.cn", &root, None, &[&rep]).await;
    server.user(&admin, "b@x.cn", &root, None, &[&rep]).await;
    Team {
        rep_a: server.token_of("a@x.cn").await,
        rep_b: server.token_of("b@x.cn").await,
        admin,
        rep_a_id,
    }
}

fn customer_doc(name: &str) -> AutoCommit {
    let mut doc = outpost_mobile::records::new_document();
    let mut customer = Customer::new(name);
    customer.phones.push("13800138000".into());
    reconcile(&mut doc, &customer).unwrap();
    doc
}

fn read(client: &mut SyncClient, id: &DocumentId) -> Customer {
    hydrate(client.doc(id)).unwrap()
}

#[tokio::test]
async fn an_unauthenticated_upgrade_is_refused_before_upgrading() {
    let server = TestServer::start().await;
    let url = format!("{}/sync", server.base.replace("http://", "ws://"));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let bad = format!(
        "{}/sync?token=forged",
        server.base.replace("http://", "ws://")
    );
    assert!(tokio_tungstenite::connect_async(bad).await.is_err());
}

#[tokio::test]
async fn a_customer_created_offline_syncs_in_with_its_owner_stamped_and_projected() {
    let server = TestServer::start().await;
    let team = team(&server).await;
    let mut phone =
        SyncClient::connect(&server.base, &team.rep_a, "phone-a", Some("storage-a")).await;
    let id = phone.insert(customer_doc("上海示例贸易有限公司"));
    phone.settle().await;

    let synced = read(&mut phone, &id);
    assert_eq!(
        synced.server.owner.as_deref(),
        Some(team.rep_a_id.as_str()),
        "the server stamped the owner"
    );
    assert_eq!(
        synced.server.created_by.as_deref(),
        Some(team.rep_a_id.as_str())
    );

    let projected = server
        .get(&format!("/api/v1/customers/{id}"), &team.rep_a)
        .await;
    assert_eq!(projected.status, StatusCode::OK, "{:?}", projected.body);
    assert_eq!(projected.body["name"], "上海示例贸易有限公司");
    assert_eq!(projected.body["owner_id"], team.rep_a_id.as_str());
    assert_eq!(projected.body["doc_id"], id.as_str());
    let list = server.get("/api/v1/customers", &team.rep_a).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        server.get("/api/v1/customers", &team.rep_b).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "not in B's scope"
    );

    let audit = server
        .get(
            &format!("/api/v1/audit?target_kind=customer&target_id={id}"),
            &team.admin,
        )
        .await;
    let entry = &audit.body["items"][0];
    assert_eq!(entry["action"], "customer.create");
    assert_eq!(entry["channel"], "sync");
}

#[tokio::test]
async fn a_device_edit_to_a_server_owned_field_is_undone_and_audited() {
    let server = TestServer::start().await;
    let team = team(&server).await;
    let mut phone = SyncClient::connect(&server.base, &team.rep_a, "phone-a", None).await;
    let id = phone.insert(customer_doc("Acme"));
    phone.settle().await;

    let mut customer = read(&mut phone, &id);
    customer.server.owner = Some("someone-else".into());
    customer.industry = Some("Retail".into());
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;

    let after = read(&mut phone, &id);
    assert_eq!(
        after.server.owner.as_deref(),
        Some(team.rep_a_id.as_str()),
        "the owner edit was undone on the phone too"
    );
    assert_eq!(
        after.industry.as_deref(),
        Some("Retail"),
        "the legitimate edit in the same change stays"
    );
    let projected = server
        .get(&format!("/api/v1/customers/{id}"), &team.rep_a)
        .await;
    assert_eq!(projected.body["owner_id"], team.rep_a_id.as_str());
    assert_eq!(projected.body["industry"], "Retail");
    let audit = server
        .get(
            &format!("/api/v1/audit?target_kind=customer&target_id={id}"),
            &team.admin,
        )
        .await;
    let corrected = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "sync.corrected")
        .expect("the correction is audited");
    assert_eq!(corrected["summary"]["corrections"][0]["field"], "server");

    // An invalid value is restored to the last accepted one.
    let mut customer = read(&mut phone, &id);
    customer.level = Some("SSS".into());
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;
    assert_eq!(read(&mut phone, &id).level, None);

    // Collaborative text too, multi-byte characters included: notes over the limit go back.
    let mut customer = read(&mut phone, &id);
    customer.notes.update("客户很重要，下周再访。");
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;
    let mut customer = read(&mut phone, &id);
    assert_eq!(customer.notes.as_str(), "客户很重要，下周再访。");
    outpost_mobile::records::set_text(&mut customer.notes, &"长".repeat(20_001));
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;
    let restored = read(&mut phone, &id).notes.as_str().to_string();
    assert!(
        restored == "客户很重要，下周再访。",
        "the over-long notes were not restored ({} chars)",
        restored.chars().count()
    );
}

#[tokio::test]
async fn a_change_reaches_the_other_connected_device_without_polling() {
    let server = TestServer::start().await;
    let team = team(&server).await;
    let mut phone = SyncClient::connect(&server.base, &team.rep_a, "phone-a", None).await;
    let mut tablet = SyncClient::connect(&server.base, &team.rep_a, "tablet-a", None).await;
    let id = phone.insert(customer_doc("Acme"));
    phone.settle().await;
    tablet.request(&id).await;
    tablet.settle().await;
    assert_eq!(read(&mut tablet, &id).name, "Acme");

    let mut customer = read(&mut phone, &id);
    customer.address = Some("杭州市西湖区".into());
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;
    // The tablet sends nothing first: it only listens.
    tablet.listen().await;
    assert_eq!(
        read(&mut tablet, &id).address.as_deref(),
        Some("杭州市西湖区")
    );
}

#[tokio::test]
async fn documents_outside_the_scope_are_unavailable_like_missing_ones() {
    let server = TestServer::start().await;
    let team = team(&server).await;
    let mut phone_a = SyncClient::connect(&server.base, &team.rep_a, "phone-a", None).await;
    let id = phone_a.insert(customer_doc("A's customer"));
    phone_a.settle().await;

    let mut phone_b = SyncClient::connect(&server.base, &team.rep_b, "phone-b", None).await;
    phone_b.request(&id).await;
    let missing = DocumentId::generate();
    phone_b.request(&missing).await;
    phone_b.settle().await;
    assert!(
        phone_b.unavailable.contains(&id.to_string()),
        "B may not see A's customer"
    );
    assert!(
        phone_b.unavailable.contains(&missing.to_string()),
        "the same answer as for a missing one"
    );
    assert!(!phone_b.has(&id));

    // The admin sees everything.
    let mut desk = SyncClient::connect(&server.base, &team.admin, "desk", None).await;
    desk.request(&id).await;
    desk.settle().await;
    assert_eq!(read(&mut desk, &id).name, "A's customer");
}

#[tokio::test]
async fn a_customer_whose_phones_a_reader_would_see_masked_is_read_over_rest_not_synced() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let manager_role = server.role(&admin, "manager").await;
    let head_role = server.role(&admin, "department_head").await;
    let rep_role = server.role(&admin, "rep").await;
    let boss = server
        .user(&admin, "boss@x.cn", &root, None, &[&manager_role])
        .await;
    server
        .user(&admin, "rep@x.cn", &root, Some(&boss), &[&rep_role])
        .await;
    server
        .user(&admin, "head@x.cn", &root, None, &[&head_role])
        .await;
    let boss_token = server.token_of("boss@x.cn").await;
    let rep_token = server.token_of("rep@x.cn").await;
    let head_token = server.token_of("head@x.cn").await;

    let mut rep_phone = SyncClient::connect(&server.base, &rep_token, "rep-phone", None).await;
    let id = rep_phone.insert(customer_doc("Rep's customer"));
    rep_phone.settle().await;

    // The rep's manager has the customer in scope but without `customer.phone_full`: REST
    // shows it masked, and sync does not serve the document, whose history holds the number.
    let seen = server
        .get(&format!("/api/v1/customers/{id}"), &boss_token)
        .await;
    assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);
    assert_eq!(seen.body["phones"], json!(["138****8000"]));
    let mut boss_phone = SyncClient::connect(&server.base, &boss_token, "boss-phone", None).await;
    boss_phone.request(&id).await;
    boss_phone.settle().await;
    assert!(boss_phone.unavailable.contains(&id.to_string()));
    assert!(!boss_phone.has(&id));
    let listed = |manifest: &serde_json::Value, id: &DocumentId| {
        manifest["documents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["doc_id"] == id.to_string())
    };
    let boss_manifest = server.get("/api/v1/sync/manifest", &boss_token).await;
    assert!(
        !listed(&boss_manifest.body, &id),
        "{:?}",
        boss_manifest.body
    );

    // A department head, who sees phone numbers in full, syncs it.
    let mut head_phone = SyncClient::connect(&server.base, &head_token, "head-phone", None).await;
    head_phone.request(&id).await;
    head_phone.settle().await;
    assert_eq!(read(&mut head_phone, &id).phones, vec!["13800138000"]);
    assert!(listed(
        &server.get("/api/v1/sync/manifest", &head_token).await.body,
        &id
    ));

    // Once the manager owns the customer, it is theirs to sync.
    let assigned = server
        .post(
            &format!("/api/v1/customers/{id}/assign"),
            &admin,
            json!({ "user_id": boss }),
        )
        .await;
    assert_eq!(assigned.status, StatusCode::OK, "{:?}", assigned.body);
    assert!(listed(
        &server.get("/api/v1/sync/manifest", &boss_token).await.body,
        &id
    ));
    let mut boss_phone = SyncClient::connect(&server.base, &boss_token, "boss-phone-2", None).await;
    boss_phone.request(&id).await;
    boss_phone.settle().await;
    assert_eq!(read(&mut boss_phone, &id).phones, vec!["13800138000"]);
}

#[tokio::test]
async fn a_phone_syncing_through_a_node_with_an_old_copy_keeps_what_another_node_wrote() {
    let server = TestServer::start().await;
    let team = team(&server).await;
    let node_b = server.another_node(Config::for_database("mem://")).await;
    let created = server
        .post(
            "/api/v1/customers",
            &team.rep_a,
            json!({ "name": "Two Nodes Ltd" }),
        )
        .await;
    let id = DocumentId::parse(created.body["doc_id"].as_str().unwrap()).unwrap();

    // The phone syncs through node B, which loads the customer.
    let mut phone = SyncClient::connect(&node_b.base, &team.rep_a, "phone-a", None).await;
    phone.request(&id).await;
    phone.settle().await;
    assert_eq!(read(&mut phone, &id).name, "Two Nodes Ltd");

    // The desk changes it through node A; B's copy is now out of date.
    let desk = server
        .patch(
            &format!("/api/v1/customers/{id}"),
            &team.rep_a,
            json!({ "level": "A" }),
        )
        .await;
    assert_eq!(desk.status, StatusCode::OK, "{:?}", desk.body);

    // The phone's edit reaches B, which applies it to the stored version, not its old copy.
    let mut customer = read(&mut phone, &id);
    customer.industry = Some("Logistics".into());
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;
    let projected = server
        .get(&format!("/api/v1/customers/{id}"), &team.rep_a)
        .await;
    assert_eq!(
        (&projected.body["level"], &projected.body["industry"]),
        (&json!("A"), &json!("Logistics")),
        "{:?}",
        projected.body
    );
    let stats = node_b.get("/api/v1/admin/sync", &team.admin).await;
    assert_eq!(stats.body["changes_redone"], 1, "{:?}", stats.body);
    // The phone gets the desk's change too.
    phone.settle().await;
    assert_eq!(read(&mut phone, &id).level.as_deref(), Some("A"));
    node_b.shutdown().await;
}

#[tokio::test]
async fn hostile_frames_end_that_connection_only() {
    let server = TestServer::start().await;
    let team = team(&server).await;
    let mut good = SyncClient::connect(&server.base, &team.rep_a, "good", None).await;
    let good_first = good.insert(customer_doc("First")).to_string();
    good.settle().await;

    let mut garbage = SyncClient::connect(&server.base, &team.rep_b, "garbage", None).await;
    garbage.send_raw(b"\xff\xfe not cbor at all".to_vec()).await;
    garbage.settle().await;
    assert_eq!(garbage.errors.len(), 1, "{:?}", garbage.errors);
    assert!(garbage.closed);

    // A peer id that belongs to someone else is refused.
    let url = format!(
        "{}/sync?token={}",
        server.base.replace("http://", "ws://"),
        team.rep_b
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let join = outpost_sync::protocol::encode(&Message::Join {
        sender_id: "good".into(),
        supported_protocol_versions: Some(vec!["1".into()]),
        peer_metadata: None,
    });
    socket
        .send(tokio_tungstenite::tungstenite::Message::Binary(join.into()))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap().into_data();
    assert!(matches!(
        outpost_sync::protocol::decode(&reply, usize::MAX).unwrap(),
        Message::Error { .. }
    ));

    // An invalid new document is quarantined, not stored.
    let id = good.insert(customer_doc(""));
    good.settle().await;
    assert!(good.unavailable.contains(&id.to_string()));
    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{id}"), &team.rep_a)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // A device cannot write as an actor another device already wrote as.
    let stolen_actor = good
        .doc(&DocumentId::parse(&good_first).unwrap())
        .get_actor()
        .clone();
    let mut impostor = SyncClient::connect(&server.base, &team.rep_b, "impostor", None).await;
    let mut forged = customer_doc("Forged").with_actor(stolen_actor);
    let mut forged_customer: Customer = hydrate(&forged).unwrap();
    forged_customer.industry = Some("Forgery".into());
    reconcile(&mut forged, &forged_customer).unwrap();
    let forged_id = impostor.insert(forged);
    impostor.settle().await;
    assert!(
        impostor.unavailable.contains(&forged_id.to_string()),
        "the impostor's document is quarantined"
    );
    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{forged_id}"), &team.admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // The good connection still works.
    let fine = good.insert(customer_doc("Fine"));
    good.settle().await;
    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{fine}"), &team.rep_a)
            .await
            .status,
        StatusCode::OK
    );
    let _ = json!({});
}

#[tokio::test]
async fn documents_and_sync_state_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let server = TestServer::start_with(Config::for_database(&url)).await;
    let team = team(&server).await;
    let mut phone = SyncClient::connect(
        &server.base,
        &team.rep_a,
        "phone-a",
        Some("phone-a-storage"),
    )
    .await;
    let id = phone.insert(customer_doc("Persistent Ltd"));
    phone.settle().await;
    server.shutdown().await;

    let server = TestServer::start_with(Config::for_database(&url)).await;
    let mut other = SyncClient::connect(&server.base, &team.rep_a, "tablet-a", None).await;
    other.request(&id).await;
    other.settle().await;
    assert_eq!(read(&mut other, &id).name, "Persistent Ltd");
    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{id}"), &team.rep_a)
            .await
            .body["name"],
        "Persistent Ltd"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_manifest_lists_what_a_user_may_see_and_changes_with_edits_and_scope() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let manager_role = server.role(&admin, "manager").await;
    let rep_role = server.role(&admin, "rep").await;
    let boss = server
        .user(&admin, "boss@x.cn", &root, None, &[&manager_role])
        .await;
    let rep = server
        .user(&admin, "rep@x.cn", &root, Some(&boss), &[&rep_role])
        .await;
    let boss_token = server.token_of("boss@x.cn").await;
    let rep_token = server.token_of("rep@x.cn").await;

    let first = server
        .post("/api/v1/customers", &rep_token, json!({ "name": "One" }))
        .await
        .body["doc_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = server
        .post("/api/v1/customers", &rep_token, json!({ "name": "Two" }))
        .await
        .body["doc_id"]
        .as_str()
        .unwrap()
        .to_string();
    let visit = server
        .post(
            "/api/v1/follow-ups",
            &rep_token,
            json!({ "customer_doc_id": first, "method": "visit", "at": "2026-11-27T10:00:00Z" }),
        )
        .await
        .body["doc_id"]
        .as_str()
        .unwrap()
        .to_string();

    let digests = |manifest: &serde_json::Value| -> std::collections::BTreeMap<String, String> {
        manifest["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["doc_id"].as_str().unwrap().to_string(),
                    d["heads_digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let before = server.get("/api/v1/sync/manifest", &rep_token).await;
    assert_eq!(before.status, StatusCode::OK);
    let before = digests(&before.body);
    let mut expected: Vec<&String> = vec![&first, &second, &visit];
    expected.sort();
    assert_eq!(before.keys().collect::<Vec<_>>(), expected);
    let boss_sees = digests(&server.get("/api/v1/sync/manifest", &boss_token).await.body);
    assert_eq!(
        boss_sees.keys().collect::<Vec<_>>(),
        vec![&visit],
        "the manager syncs the rep's follow-up; the customers, whose phones a manager sees masked, are read over REST"
    );
    assert_eq!(boss_sees[&visit], before[&visit]);

    server
        .patch(
            &format!("/api/v1/customers/{second}"),
            &rep_token,
            json!({ "industry": "Changed" }),
        )
        .await;
    let after = digests(&server.get("/api/v1/sync/manifest", &rep_token).await.body);
    assert_ne!(
        after[&second], before[&second],
        "an edit changes its digest"
    );
    assert_eq!(after[&first], before[&first], "and only its own");

    // The rep leaves the manager's team: the documents leave the manager's manifest.
    server
        .patch(
            &format!("/api/v1/users/{rep}"),
            &admin,
            json!({ "manager_id": null }),
        )
        .await;
    assert!(digests(&server.get("/api/v1/sync/manifest", &boss_token).await.body).is_empty());

    server
        .delete(&format!("/api/v1/customers/{second}"), &rep_token)
        .await;
    assert!(
        !digests(&server.get("/api/v1/sync/manifest", &rep_token).await.body).contains_key(&second),
        "tombstones leave the manifest"
    );
}

#[tokio::test]
async fn memory_stays_bounded_and_compacted_documents_reload() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let mut config = Config::for_database(&url);
    config.sync.cache_documents = 3;
    let server = TestServer::start_with(config.clone()).await;
    let admin = server.admin_token().await;

    let mut ids = Vec::new();
    for i in 0..12 {
        let created = server
            .post(
                "/api/v1/customers",
                &admin,
                json!({ "name": format!("Cached {i}") }),
            )
            .await;
        ids.push(created.body["doc_id"].as_str().unwrap().to_string());
    }
    let stats = server.get("/api/v1/admin/sync", &admin).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert!(
        stats.body["cached_documents"].as_u64().unwrap() <= 3,
        "{:?}",
        stats.body
    );

    // Enough edits to one document to trigger compaction into a snapshot.
    for i in 0..70 {
        let patched = server
            .patch(
                &format!("/api/v1/customers/{}", ids[0]),
                &admin,
                json!({ "industry": format!("v{i}") }),
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK);
    }
    let password = server.admin_password.clone();
    server.shutdown().await;

    let server = TestServer::start_with(config).await;
    let admin = server.login(&server.admin_login, &password).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut desk = SyncClient::connect(&server.base, &admin, "desk", None).await;
    let id = DocumentId::parse(&ids[0]).unwrap();
    desk.request(&id).await;
    desk.settle().await;
    let customer = read(&mut desk, &id);
    assert_eq!(
        customer.industry.as_deref(),
        Some("v69"),
        "the compacted document reloads with every edit"
    );
    assert_eq!(customer.name, "Cached 0");
    server.shutdown().await;
}
