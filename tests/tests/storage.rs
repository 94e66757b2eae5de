//! The store: conflict retries, migrations that roll back, restarts that lose nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use outpost::config::Config;
use outpost::platform::db::{Db, DbError, MIGRATIONS, Migration, Query, apply_migrations};
use outpost_tests::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_to_one_record_all_succeed_through_the_retry_helper() {
    let db = Db::connect(&Config::for_database("mem://").database)
        .await
        .unwrap();
    Query::new("CREATE counter:one SET n = 0")
        .run(&db)
        .await
        .unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    // Two writers, as a real hot record sees them; with more, full-jitter backoff still wins but
    // a loaded CI machine can starve one writer past any fixed attempt bound.
    let writers = 2;
    let increments = 30;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let db = db.clone();
        let attempts = attempts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..increments {
                db.retry(|| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let db = db.clone();
                    async move {
                        Query::new("BEGIN; LET $n = (SELECT VALUE n FROM ONLY counter:one); SLEEP 2ms; UPDATE counter:one SET n = $n + 1; COMMIT;")
                            .run(&db)
                            .await?;
                        Ok::<_, DbError>(())
                    }
                })
                .await
                .expect("every write succeeds");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let n: Option<i64> = Query::new("SELECT VALUE n FROM ONLY counter:one")
        .take(&db, 0)
        .await
        .unwrap();
    assert_eq!(n, Some((writers * increments) as i64), "no increment lost");
    assert!(
        attempts.load(Ordering::SeqCst) > writers * increments,
        "the writers did conflict, and the helper retried them"
    );
}

#[tokio::test]
async fn a_failing_migration_leaves_the_store_as_it_was() {
    let db = Db::connect(&Config::for_database("mem://").database)
        .await
        .unwrap();
    assert_eq!(
        apply_migrations(&db, MIGRATIONS).await.unwrap(),
        MIGRATIONS.len()
    );
    assert_eq!(
        apply_migrations(&db, MIGRATIONS).await.unwrap(),
        0,
        "never re-applied"
    );

    let mut with_bad = MIGRATIONS.to_vec();
    with_bad.push(Migration {
        version: 99,
        name: "0099_broken.surql",
        sql: "DEFINE TABLE half_done SCHEMAFULL; CREATE half_done:x SET oops = 1; THROW 'broken migration';",
        batched_over: None,
        replaces: None,
    });
    let err = apply_migrations(&db, &with_bad).await.unwrap_err();
    assert!(
        matches!(err, DbError::Migration { version: 99, .. }),
        "{err}"
    );
    let rows: Vec<surrealdb::types::Value> = Query::new("SELECT * FROM half_done")
        .take(&db, 0)
        .await
        .unwrap_or_default();
    assert!(rows.is_empty(), "nothing of the failed migration stays");
    let tables: surrealdb::types::Value = Query::new("(INFO FOR DB).tables")
        .take(&db, 0)
        .await
        .unwrap();
    let tables = format!("{tables:?}");
    assert!(
        tables.contains("department"),
        "the good migration's tables exist: {tables}"
    );
    assert!(
        !tables.contains("half_done"),
        "the failed migration's table definition was rolled back: {tables}"
    );
    let recorded: Vec<i64> = Query::new("SELECT VALUE version FROM migration")
        .take(&db, 0)
        .await
        .unwrap();
    let all: Vec<i64> = MIGRATIONS.iter().map(|m| i64::from(m.version)).collect();
    assert_eq!(recorded, all);

    // A store migrated by a newer build is refused.
    let future = all.iter().max().copied().unwrap_or(0) + 1;
    Query::new("CREATE type::record('migration', $version) SET version = $version, name = 'future', checksum = 'x', applied_at = time::now()")
        .bind("version", future)
        .run(&db)
        .await
        .unwrap();
    let newer = apply_migrations(&db, MIGRATIONS).await.unwrap_err();
    assert!(matches!(newer, DbError::SchemaMismatch(_)), "{newer}");
}

#[tokio::test]
async fn the_write_paths_tables_drop_their_field_definitions_but_keep_their_indexes() {
    let db = Db::connect(&Config::for_database("mem://").database)
        .await
        .unwrap();
    apply_migrations(&db, MIGRATIONS).await.unwrap();
    // Migration 0013 redefines these tables; a redefinition must not take their indexes along,
    // which no query would notice (they would only get slow).
    let expected: &[(&str, &[&str])] = &[
        ("sync_document", &[]),
        ("document_chunk", &[]),
        ("customer_terms", &[]),
        (
            "customer",
            &[
                "customer_credit_code",
                "customer_company_key",
                "customer_listed_list_key",
                "customer_listed_list_key_newest",
                "customer_listed_level_list_key",
                "customer_listed_level_list_key_newest",
                "customer_due",
                "customer_holder_list_key",
                "customer_holder_list_key_newest",
                "customer_listed_pool_list_key",
                "customer_listed_pool_list_key_newest",
            ],
        ),
        // Keyed rows, read by record-id ranges (0024): no index to keep up.
        ("custody_entry", &[]),
        ("pool_claim", &[]),
        (
            "audit",
            &["audit_newest", "audit_target_newest", "audit_actor_newest"],
        ),
        (
            "follow_up",
            &["follow_up_owner", "follow_up_customer_timeline"],
        ),
        (
            "task",
            &["task_owner", "task_assignee", "task_customer_timeline"],
        ),
        (
            "event",
            &["event_owner", "event_attendees", "event_customer_timeline"],
        ),
    ];
    let tables: surrealdb::types::Value = Query::new("(INFO FOR DB).tables")
        .take(&db, 0)
        .await
        .unwrap();
    let tables = tables.into_json_value();
    for (table, indexes) in expected {
        let definition = tables[*table].as_str().unwrap_or_default().to_string();
        assert!(
            definition.contains("SCHEMALESS"),
            "{table} is schemaless: {definition}"
        );
        let info: surrealdb::types::Value = Query::new(format!("INFO FOR TABLE {table}"))
            .take(&db, 0)
            .await
            .unwrap();
        let info = info.into_json_value();
        assert_eq!(
            info["fields"].as_object().map(serde_json::Map::len),
            Some(0),
            "{table} has no field definitions: {info}"
        );
        let mut defined: Vec<&str> = info["indexes"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        defined.sort_unstable();
        let mut wanted = indexes.to_vec();
        wanted.sort_unstable();
        assert_eq!(defined, wanted, "{table} keeps its indexes");
    }
    assert!(
        tables.get("customer_history").is_none(),
        "the indexed history table is gone (0026)"
    );
}

#[tokio::test]
async fn the_embedded_store_takes_its_memory_limits_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let mut config = Config::for_database(&url).database;
    config.cache_mib = 16;
    config.memtable_mib = 16;
    let db = Db::connect(&config).await.unwrap();
    // Forty MiB in small transactions flush through a 16 MiB write buffer.
    let row = "x".repeat(1000);
    for batch in 0..40 {
        Query::new("FOR $i IN 0..1000 { CREATE note SET batch = $batch, i = $i, text = $row }")
            .bind("batch", batch)
            .bind("row", row.clone())
            .run(&db)
            .await
            .unwrap();
    }
    // One transaction bigger than the buffer cannot fit it: SurrealKV refuses it, which shows
    // the limit reached the store (its own default here would be a gigabyte).
    let too_big =
        Query::new("FOR $i IN 0..30000 { CREATE note SET batch = 99, i = $i, text = $row }")
            .bind("row", row.clone())
            .run(&db)
            .await;
    let refused = too_big.expect_err("a 30 MiB transaction fits a 16 MiB buffer");
    assert!(
        refused.to_string().contains("Memtable arena is full"),
        "{refused}"
    );
    drop(db);
    let db = Db::connect(&config).await.unwrap();
    let count: Option<i64> = Query::new("(SELECT count() AS n FROM note GROUP ALL)[0].n")
        .take(&db, 0)
        .await
        .unwrap();
    assert_eq!(count, Some(40_000), "nothing lost, nothing half-written");
}

#[tokio::test]
async fn a_restart_on_surrealkv_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let server = TestServer::start_with(Config::for_database(&url)).await;
    let (login, password) = (server.admin_login.clone(), server.admin_password.clone());
    let pair = server.login(&login, &password).await;
    let token = pair["access_token"].as_str().unwrap().to_string();
    let root = server.root_department(&token).await;
    let sales = server.department(&token, "Sales", &root).await;
    let key = [("idempotency-key", "restart-1")];
    let body = json!({ "name": "Field", "parent_id": sales });
    let first = server
        .send(
            "POST",
            "/api/v1/departments",
            Some(&token),
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    server.shutdown().await;

    let mut restarted = None;
    for _ in 0..50 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        match outpost::start(Config::for_database(&url), listener).await {
            Ok(s) => {
                restarted = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let restarted = restarted.expect("the store reopens after a clean shutdown");
    assert!(restarted.generated_admin.is_none(), "no second first admin");
    let base = format!("http://{}", restarted.addr);
    let http = reqwest::Client::new();

    // The old access token still works: the signing secret lives in the store.
    let me = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let refreshed = http
        .post(format!("{base}/api/v1/auth/refresh"))
        .json(&json!({ "refresh_token": pair["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    let list: serde_json::Value = http
        .get(format!("{base}/api/v1/departments"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Sales") && names.contains(&"Field"),
        "{names:?}"
    );
    let replay = http
        .post(format!("{base}/api/v1/departments"))
        .bearer_auth(&token)
        .header("idempotency-key", "restart-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(
        replay.headers()["idempotent-replayed"],
        "true",
        "idempotency survives a restart"
    );
    let login_again = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({ "login": login, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(login_again.status(), StatusCode::OK);
    restarted.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    let root = server.root_department(&token).await;
    let body = json!({ "name": "Night shift", "parent_id": root }).to_string();
    let (head, tail) = body.split_at(10);

    // The request is in flight: headers sent, body half sent, handler waiting for the rest.
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /api/v1/departments HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{head}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the in-flight request"
    );
    stream.write_all(tail.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    stopping.await.unwrap();

    // New connections are refused once it has stopped.
    assert!(tokio::net::TcpStream::connect(&address).await.is_err());
}

/// How many chunks of document `doc` each table holds, and its `chunk_layout`.
async fn chunk_places(db: &Db, doc: &str) -> (i64, i64, Option<i64>) {
    let mut results = Query::new(
        "RETURN count(SELECT id FROM sync_chunk WHERE document = $doc);
         RETURN count(SELECT id FROM document_chunk:[$doc]..[$doc, '~']);
         RETURN (SELECT VALUE chunk_layout FROM ONLY type::record('sync_document', $doc));",
    )
    .bind("doc", doc.to_string())
    .run(db)
    .await
    .unwrap();
    let legacy: Option<i64> = results.take(0).unwrap();
    let ranged: Option<i64> = results.take(1).unwrap();
    let layout: Option<i64> = results.take(2).unwrap();
    (legacy.unwrap_or(0), ranged.unwrap_or(0), layout)
}

#[tokio::test]
async fn chunks_stored_before_their_ranged_table_load_grow_and_compact_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let server = TestServer::start_with(Config::for_database(&url)).await;
    let (login, password) = (server.admin_login.clone(), server.admin_password.clone());
    let token = server.admin_token().await;
    let root = server.root_department(&token).await;
    let pool = server
        .post(
            "/api/v1/pools",
            &token,
            json!({ "name": "Returns", "member_department_ids": [root], "grace_hours": 0, "rules": { "*": { "return_without_follow_up_days": 3 } } }),
        )
        .await;
    assert_eq!(pool.status, StatusCode::CREATED, "{:?}", pool.body);
    // Two customers of the admin in the pool, each stored in two chunks.
    let mut docs = Vec::new();
    for name in ["Legacy Trading", "Ranged Trading"] {
        let created = server
            .post(
                "/api/v1/customers",
                &token,
                json!({ "name": name, "level": "B", "pool_id": pool.body["id"], "confirm_duplicate": true }),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let doc = created.body["doc_id"].as_str().unwrap().to_string();
        let renamed = server
            .patch(
                &format!("/api/v1/customers/{doc}"),
                &token,
                json!({ "name": format!("{name} Co") }),
            )
            .await;
        assert_eq!(renamed.status, StatusCode::OK, "{:?}", renamed.body);
        docs.push(doc);
    }
    let (doc, ranged_doc) = (docs[0].clone(), docs[1].clone());
    let path = format!("/api/v1/customers/{doc}");
    let db = server.db();
    let (legacy, ranged, layout) = chunk_places(&db, &doc).await;
    assert_eq!(
        (legacy, layout),
        (0, Some(2)),
        "a new document keeps its chunks in one range"
    );
    assert!(ranged >= 2, "{ranged}");

    // The shape a store had before migration 0012: the chunks in `sync_chunk` under their
    // time-ordered keys, found through the `document` index, and no layout mark.
    Query::new(
        "FOR $chunk IN (SELECT bytes, record::id(id)[1] AS key FROM document_chunk:[$doc]..[$doc, '~'] ORDER BY id) {
             CREATE type::record('sync_chunk', $chunk.key) SET document = $doc, bytes = $chunk.bytes;
         };
         DELETE document_chunk:[$doc]..[$doc, '~'];
         UPDATE type::record('sync_document', $doc) UNSET chunk_layout;",
    )
    .bind("doc", doc.clone())
    .run(&db)
    .await
    .unwrap();
    assert_eq!(chunk_places(&db, &doc).await, (ranged, 0, None));
    drop(db);
    server.shutdown().await;

    // After a restart, four days on, the sweep loads both documents in one read (the old
    // one from `sync_chunk`, the new one from its range) and returns them whole.
    let clock = outpost::platform::clock::Clock::system();
    clock.advance(std::time::Duration::from_secs(4 * 86_400));
    let server = TestServer::start_with_clock(Config::for_database(&url), clock).await;
    let token = server.login(&login, &password).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let swept = server.post("/api/v1/pools/sweep", &token, json!({})).await;
    assert_eq!(swept.status, StatusCode::OK, "{:?}", swept.body);
    assert_eq!(swept.body["returned"], 2, "{:?}", swept.body);
    for (doc, name) in [
        (&doc, "Legacy Trading Co"),
        (&ranged_doc, "Ranged Trading Co"),
    ] {
        let customer = server
            .get(&format!("/api/v1/customers/{doc}"), &token)
            .await;
        assert_eq!(customer.body["state"], "pool", "{:?}", customer.body);
        assert_eq!(
            customer.body["name"], name,
            "the return was made on the whole document"
        );
    }
    let stats = server.get("/api/v1/admin/sync", &token).await;
    assert_eq!(
        stats.body["documents_loaded_in_batches"], 2,
        "the sweep read both documents ahead in one batch: {:?}",
        stats.body
    );
    assert_eq!(
        stats.body["changes_redone"], 0,
        "one node's copies are always the stored versions, legacy chunks included"
    );
    let db = server.db();
    assert_eq!(
        chunk_places(&db, &doc).await,
        (ranged, 1, None),
        "the return added a ranged chunk to the old ones"
    );

    // The admin takes the old one back, and compaction moves it whole into its range.
    let me = server.get("/api/v1/me", &token).await.body["user"]["id"].clone();
    let assigned = server
        .post(&format!("{path}/assign"), &token, json!({ "user_id": me }))
        .await;
    assert_eq!(assigned.status, StatusCode::OK, "{:?}", assigned.body);
    for i in 0..70 {
        let level = if i % 2 == 0 { "C" } else { "D" };
        let reply = server.patch(&path, &token, json!({ "level": level })).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    let (legacy, ranged, layout) = chunk_places(&db, &doc).await;
    assert_eq!((legacy, layout), (0, Some(2)), "compacted into the range");
    assert!(ranged < 64, "one snapshot and the chunks since: {ranged}");
    drop(db);
    server.shutdown().await;

    let server = TestServer::start_with(Config::for_database(&url)).await;
    let token = server.login(&login, &password).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let last = server
        .patch(&path, &token, json!({ "name": "Legacy Trading Group" }))
        .await;
    assert_eq!(last.status, StatusCode::OK, "{:?}", last.body);
    assert_eq!(
        last.body["level"], "D",
        "the 70th edit survived the compaction"
    );
    assert_eq!(last.body["state"], "owned");
    let listed = server.get(&path, &token).await;
    assert_eq!(listed.body["name"], "Legacy Trading Group");
    server.shutdown().await;
}

/// Migrations 0015 to 0019 give rows written before them the same newest-first keys the server
/// writes from then on (`ids::newest_first_key`), or they would sort apart from new rows: an
/// audit entry by the instant in its UUIDv7 key, a follow-up by when it happened, a task by its
/// creation, an event by its start. A row without its time sorts as the oldest. The backfill
/// goes slice by slice (2,000 rows each), so a log of 4,500 entries takes three.
#[tokio::test]
async fn newest_first_migrations_key_old_rows_as_the_server_keys_new_ones() {
    use chrono::{DateTime, Utc};
    use outpost::platform::ids;
    let db = memory_store_before(15).await;
    let audit_key = ids::new_key();
    let follow_up_key = "2VxqG7fd7Ffr8rZDbdVi3gSGdNrY";
    let occurred: DateTime<Utc> = "2026-03-04T05:06:07.891Z".parse().unwrap();
    let created: DateTime<Utc> = "1969-12-31T23:59:59Z".parse().unwrap();
    let starts: DateTime<Utc> = "2301-01-01T00:00:00Z".parse().unwrap();
    Query::new(
        "FOR $i IN 0..4500 { CREATE type::record('audit', <string> rand::uuid::v7()) SET action = 'bulk', at = time::now() };
         CREATE type::record('audit', $audit) SET action = 'x', at = time::now();
         CREATE audit:legacy SET action = 'y', at = time::now();
         CREATE type::record('follow_up', $f) SET customer = 'c', occurred = $occurred;
         CREATE follow_up:unparsed SET customer = 'c';
         CREATE follow_up:`1earlier` SET customer = 'c', occurred = $occurred - 1d;
         CREATE task:t SET customer = 'c', created_at = $created;
         CREATE event:e SET customer = 'c', starts = $starts;",
    )
    .bind("audit", audit_key.clone())
    .bind("f", follow_up_key.to_string())
    .bind("occurred", occurred)
    .bind("created", created)
    .bind("starts", starts)
    .run(&db)
    .await
    .unwrap();
    apply_migrations(&db, MIGRATIONS).await.unwrap();
    let keys: Vec<Option<String>> = Query::new(
        "RETURN [
            (SELECT VALUE newest FROM ONLY type::record('audit', $audit)),
            (SELECT VALUE list FROM ONLY type::record('audit', $audit)),
            audit:legacy.newest,
            (SELECT VALUE timeline_key FROM ONLY type::record('follow_up', $f)),
            follow_up:unparsed.timeline_key,
            task:t.timeline_key,
            event:e.timeline_key,
        ]",
    )
    .bind("audit", audit_key.clone())
    .bind("f", follow_up_key.to_string())
    .take(&db, 0)
    .await
    .unwrap();
    assert_eq!(
        keys,
        vec![
            ids::newest_first_key_of(&audit_key),
            Some("all".to_string()),
            None,
            Some(ids::newest_first_key(occurred, follow_up_key)),
            Some(ids::newest_first_key(DateTime::UNIX_EPOCH, "unparsed")),
            Some(ids::newest_first_key(created, "t")),
            Some(ids::newest_first_key(starts, "e")),
        ]
    );
    let backfilled: Vec<i64> = Query::new(
        "RETURN [
            count(SELECT id FROM audit WHERE list = 'all' AND newest != NONE),
            count(SELECT id FROM migration_progress),
        ]",
    )
    .take(&db, 0)
    .await
    .unwrap();
    assert_eq!(
        backfilled,
        vec![4501, 0],
        "every entry keyed, progress cleared"
    );
    // The old rows are in the new indexes with their keys, not only in their records: an
    // index defined after the rows' update in the same transaction indexed them as they were
    // before it (measured: 400,000 audit entries missing from the log's newest-first index).
    let indexed: Vec<Vec<String>> = id_lists(
        &db,
        "SELECT VALUE record::id(id) FROM audit WHERE list = 'all' AND action = 'x' ORDER BY newest LIMIT 10;
         SELECT VALUE record::id(id) FROM follow_up WHERE customer = 'c' ORDER BY timeline_key LIMIT 10;
         SELECT VALUE record::id(id) FROM task WHERE customer = 'c' ORDER BY timeline_key LIMIT 10;
         SELECT VALUE record::id(id) FROM event WHERE customer = 'c' ORDER BY timeline_key LIMIT 10;",
    )
    .await;
    assert_eq!(
        indexed,
        vec![
            vec![audit_key.clone()],
            // Newest first by the key, not by id (which would put `1earlier` first).
            vec![
                follow_up_key.to_string(),
                "1earlier".to_string(),
                "unparsed".to_string()
            ],
            vec!["t".to_string()],
            vec!["e".to_string()],
        ]
    );
    // The key sorts newest first: later instants, smaller keys; a time before 1970 or after
    // the key's range is clamped, not allowed to change the key's length.
    assert!(ids::newest_first_key(starts, "e") < ids::newest_first_key(occurred, "e"));
    assert!(ids::newest_first_key(occurred, "e") < ids::newest_first_key(created, "e"));
    assert_eq!(ids::newest_first_key(created, "t"), "9999999999999|t");
    // An audit key reverses the ids' order, also within one millisecond.
    let (older, newer) = (ids::new_key(), ids::new_key());
    assert!(older < newer);
    assert!(ids::newest_first_key_of(&newer) < ids::newest_first_key_of(&older));
    assert_eq!(ids::newest_first_key_of("not-a-key"), None);
    assert_eq!(ids::newest_first_key(starts, "e"), "1000000000000|e");
}

/// Customers projected before 0021 have no `listed` field; the upgrade sets it (false only for
/// the deleted) over slices of the table, and the `(listed, key)` indexes that the admin's
/// list walks hold every listed row, in both orders.
#[tokio::test]
async fn the_listed_migration_puts_every_customer_but_the_deleted_in_the_list_order() {
    let db = memory_store_before(21).await;
    // More than one backfill slice (2,000 rows), in three states.
    Query::new(
        "FOR $i IN 0..2100 {
             LET $key = <string> (10000 + $i);
             CREATE type::record('customer', $key) SET state = IF $i % 3 = 0 { 'pool' } ELSE { 'owned' },
                 list_key = '2026|' + $key, list_key_newest = <string> (99999 - $i) + '|' + $key;
         };
         UPDATE customer:`10001` SET state = 'deleted';",
    )
    .run(&db)
    .await
    .unwrap();
    apply_migrations(&db, MIGRATIONS).await.unwrap();
    let counts: Vec<i64> = Query::new(
        "RETURN [
            count(SELECT id FROM customer WITH INDEX customer_listed_list_key WHERE listed = true),
            count(SELECT id FROM customer WHERE listed = false),
            count(SELECT id FROM customer WHERE listed = NONE),
            count(SELECT id FROM customer WHERE state = 'pool' AND listed = true),
            count(SELECT id FROM migration_progress),
        ]",
    )
    .take(&db, 0)
    .await
    .unwrap();
    assert_eq!(counts, vec![2099, 1, 0, 700, 0]);
    let pages: Vec<Vec<String>> = id_lists(
        &db,
        "SELECT VALUE record::id(id) FROM customer WITH INDEX customer_listed_list_key WHERE listed = true AND list_key > '' ORDER BY list_key LIMIT 3;
         SELECT VALUE record::id(id) FROM customer WITH INDEX customer_listed_list_key_newest WHERE listed = true AND list_key_newest > '' ORDER BY list_key_newest LIMIT 2;",
    )
    .await;
    assert_eq!(
        pages,
        vec![
            vec![
                "10000".to_string(),
                "10002".to_string(),
                "10003".to_string()
            ],
            vec!["12099".to_string(), "12098".to_string()],
        ],
        "the deleted customer is not in the order; the rest are, in both directions"
    );
}

/// Customers projected before 0027 have no `holder`; the upgrade gives each the one its state
/// says (its owner while owned, its pool while in one, none once deleted), over slices of the
/// table, and the `(holder, key)` indexes of 0028 find each owner's and each pool's part in
/// order. The `(listed, pool, key)` index holds a pool's customers whoever holds them.
#[tokio::test]
async fn the_holder_migration_puts_each_customer_in_its_owners_or_its_pools_part() {
    let db = memory_store_before(27).await;
    // More than one backfill slice (2,000 rows): owned by two reps (one of them from a pool),
    // in the pool, and deleted.
    Query::new(
        "FOR $i IN 0..2100 {
             LET $key = <string> (10000 + $i);
             LET $state = IF $i % 3 = 0 { 'pool' } ELSE { 'owned' };
             CREATE type::record('customer', $key) SET state = $state, listed = true,
                 owner = IF $state = 'owned' { IF $i % 2 = 0 { 'ann' } ELSE { 'bob' } } ELSE { NONE },
                 pool = IF $i % 3 = 0 OR $i % 3 = 1 { 'north' } ELSE { NONE },
                 list_key = '2026|' + $key, list_key_newest = <string> (99999 - $i) + '|' + $key;
         };
         UPDATE customer:`10001` SET state = 'deleted', listed = false;",
    )
    .run(&db)
    .await
    .unwrap();
    apply_migrations(&db, MIGRATIONS).await.unwrap();
    let counts: Vec<i64> = Query::new(
        "RETURN [
            count(SELECT id FROM customer WITH INDEX customer_holder_list_key WHERE holder = 'u:ann'),
            count(SELECT id FROM customer WITH INDEX customer_holder_list_key WHERE holder = 'u:bob'),
            count(SELECT id FROM customer WITH INDEX customer_holder_list_key WHERE holder = 'p:north'),
            count(SELECT id FROM customer WHERE holder = NONE),
            count(SELECT id FROM customer WITH INDEX customer_listed_pool_list_key WHERE listed = true AND pool = 'north'),
            count(SELECT id FROM migration_progress),
        ]",
    )
    .take(&db, 0)
    .await
    .unwrap();
    // 1,400 owned (700 each, less the deleted `10001`, which was bob's), 700 in the pool,
    // and 1,400 of the listed ones from the pool (every `i % 3` of 0 or 1, less `10001`).
    assert_eq!(counts, vec![700, 699, 700, 1, 1399, 0]);
    let pages: Vec<Vec<String>> = id_lists(
        &db,
        "SELECT VALUE record::id(id) FROM customer WITH INDEX customer_holder_list_key WHERE holder = 'u:bob' AND list_key > '' ORDER BY list_key LIMIT 3;
         SELECT VALUE record::id(id) FROM customer WITH INDEX customer_holder_list_key_newest WHERE holder = 'p:north' AND list_key_newest > '' ORDER BY list_key_newest LIMIT 2;",
    )
    .await;
    assert_eq!(
        pages,
        vec![
            vec![
                "10005".to_string(),
                "10007".to_string(),
                "10011".to_string()
            ],
            vec!["12097".to_string(), "12094".to_string()],
        ],
        "each part in both orders, without the deleted customer"
    );
    // A scoped user's sync manifest finds the customers its owners hold through the index,
    // not by reading every customer.
    let plan: surrealdb::types::Value = Query::new(
        "SELECT record::id(id) AS doc_id FROM customer WHERE holder IN $scope_holders EXPLAIN",
    )
    .bind(
        "scope_holders",
        vec!["u:ann".to_string(), "u:bob".to_string()],
    )
    .take(&db, 0)
    .await
    .unwrap();
    assert!(
        format!("{plan:?}").contains("customer_holder_list_key"),
        "{plan:?}"
    );
}

/// The custody history written before 0024 (rows of `customer_history`, found through two
/// indexes) moves into the keyed tables: every entry, in more than one slice, newest first per
/// customer, with its old id as the key an earlier merge recorded; the claims count toward the
/// daily cap by the day they were made.
#[tokio::test]
async fn the_custody_history_moves_to_keyed_rows_with_every_entry_and_claim() {
    use outpost::crm::customers::history;
    let db = memory_store_before(24).await;
    // 2,100 entries of 700 customers (claim, return, claim), a day apart; two reps claim.
    // Their ids are UUIDv7 text, as the server wrote them.
    Query::new(
        "FOR $i IN 0..2100 {
             LET $customer = <string> (10000 + $i % 700);
             LET $step = math::floor($i / 700);
             CREATE type::record('customer_history', <string> rand::uuid::v7()) SET customer = $customer,
                 action = IF $step = 1 { 'return' } ELSE { 'claim' },
                 from_owner = NONE, to_owner = NONE,
                 by = IF $step = 1 { NONE } ELSE IF $i % 2 = 0 { 'rep-a' } ELSE { 'rep-b' },
                 pool = 'p1', reason = NONE,
                 at = d'2026-11-01T08:00:00.250Z' + <duration> (<string> $step + 'd');
         };",
    )
    .run(&db)
    .await
    .unwrap();
    let old_keys: Vec<String> = Query::new(
        "SELECT VALUE record::id(id) FROM customer_history WHERE customer = '10001' ORDER BY at DESC",
    )
    .take(&db, 0)
    .await
    .unwrap();
    assert_eq!(old_keys.len(), 3);
    apply_migrations(&db, MIGRATIONS).await.unwrap();

    let counts: Vec<i64> = Query::new(
        "RETURN [count(SELECT id FROM custody_entry), count(SELECT id FROM pool_claim), count(SELECT id FROM migration_progress)]",
    )
    .take(&db, 0)
    .await
    .unwrap();
    assert_eq!(counts, vec![2100, 1400, 0]);
    let entries = history::newest(&db, "10001", 10).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["claim", "return", "claim"], "newest first");
    assert_eq!(entries[0].at.to_rfc3339(), "2026-11-03T08:00:00.250+00:00");
    assert_eq!(history::keys(&db, "10001").await.unwrap(), old_keys);
    // Rep A made 350 claims on each of the first and third days; the cap counts from a time.
    let day_three = chrono::DateTime::parse_from_rfc3339("2026-11-03T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let on_the_dot = chrono::DateTime::parse_from_rfc3339("2026-11-03T08:00:00.250Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let later = on_the_dot + chrono::Duration::milliseconds(1);
    assert_eq!(
        history::claims_since(&db, "rep-a", "p1", day_three)
            .await
            .unwrap(),
        350
    );
    assert_eq!(
        history::claims_since(&db, "rep-a", "p1", on_the_dot)
            .await
            .unwrap(),
        350,
        "a claim at the start of the range counts"
    );
    assert_eq!(
        history::claims_since(&db, "rep-a", "p1", later)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        history::claims_since(&db, "rep-a", "p2", day_three)
            .await
            .unwrap(),
        0,
        "claims count per pool"
    );
}

/// A store that applied the first text of migration 0014 (one transaction, which a store with a
/// million follow-ups could not commit) still starts: that text's checksum is accepted, and the
/// later migrations bring it to the same schema. Any other change to an applied migration is
/// still refused.
#[tokio::test]
async fn a_store_that_applied_the_first_text_of_0014_still_starts() {
    let db = memory_store_before(14).await;
    let record = |checksum: &str| {
        Query::new(
            "UPSERT migration:14 SET version = 14, name = '0014_customer_timeline_indexes.surql', \
             checksum = $checksum, applied_at = time::now()",
        )
        .bind("checksum", checksum.to_string())
    };
    record("0123").run(&db).await.unwrap();
    let err = apply_migrations(&db, MIGRATIONS).await.unwrap_err();
    assert!(matches!(err, DbError::SchemaMismatch(_)), "{err}");
    record("a229baceae621ca4a416f0143a2ff6c986bc0ca7fc3bd35ed9ad2e006c62fe29")
        .run(&db)
        .await
        .unwrap();
    assert_eq!(
        apply_migrations(&db, MIGRATIONS).await.unwrap(),
        MIGRATIONS.len() - 14
    );
}

/// A `mem://` store with the migrations older than `version`, as a store from before it.
async fn memory_store_before(version: u32) -> Db {
    let db = Db::connect(&Config::for_database("mem://").database)
        .await
        .unwrap();
    migrate_before(&db, version).await;
    db
}

/// The record keys each statement of `sql` (one `SELECT VALUE record::id(id)` per line)
/// returns.
async fn id_lists(db: &Db, sql: &str) -> Vec<Vec<String>> {
    let statements = sql.trim().lines().count();
    Query::new(sql)
        .run(db)
        .await
        .map(|mut r| (0..statements).map(|i| r.take(i).unwrap()).collect())
        .unwrap()
}

/// Applies the migrations older than `version`, as a store from before it has them.
async fn migrate_before(db: &Db, version: u32) {
    let older: Vec<Migration> = MIGRATIONS
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect();
    apply_migrations(db, &older).await.unwrap();
}

/// Opens the embedded store at `url` without migrating it, runs `query` (which returns a list
/// of numbers), and closes it.
async fn numbers_in_store(url: &str, query: Query) -> Vec<i64> {
    let config = Config::for_database(url);
    let db = Db::connect(&config.database).await.unwrap();
    let value = query.take(&db, 0).await.unwrap();
    drop(db);
    outpost::platform::db::await_store_closed(&config.database).await;
    value
}

#[tokio::test]
async fn a_backfill_killed_between_slices_resumes_where_it_stopped_and_keys_every_row_once() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    // A store from before migration 0015, with four slices of audit entries to key.
    let config = Config::for_database(&url);
    let db = Db::connect(&config.database).await.unwrap();
    migrate_before(&db, 15).await;
    for _ in 0..4 {
        Query::new(
            "FOR $i IN 0..2000 { CREATE type::record('audit', <string> rand::uuid::v7()) SET action = 'bulk', at = time::now() }",
        )
        .run(&db)
        .await
        .unwrap();
    }
    drop(db);
    outpost::platform::db::await_store_closed(&config.database).await;

    // An upgrade killed (SIGKILL) once its first slice is committed (the helper stops there
    // until it is killed).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_migrate_crash"))
        .arg(&url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let progress = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        lines.find(|line| {
            line.as_ref()
                .is_ok_and(|l| l.contains("backfill slice committed") && l.contains("version=15"))
        })
    })
    .await
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(progress.is_some(), "the upgrade reported a committed slice");
    outpost::platform::db::await_store_closed(&config.database).await;

    // The store is in the middle of 0015: some entries keyed, the place recorded, 0015 not
    // recorded as applied.
    let state = numbers_in_store(
        &url,
        Query::new(
            "RETURN [
                count(SELECT id FROM audit WHERE newest != NONE),
                count(SELECT id FROM migration_progress WHERE id = migration_progress:15),
                count(SELECT id FROM migration WHERE version = 15),
            ]",
        ),
    )
    .await;
    assert_eq!(state, [2_000, 1, 0], "one slice keyed, its place recorded");

    // The next start resumes from there and finishes: every entry keyed once, from its id,
    // and reachable through the newest-first index, in order.
    let db = Db::connect(&config.database).await.unwrap();
    apply_migrations(&db, MIGRATIONS).await.unwrap();
    let rows: Vec<(String, Option<String>)> = Query::new(
        "SELECT VALUE [record::id(id), newest] FROM audit WHERE list = 'all' ORDER BY newest",
    )
    .take::<Vec<Vec<Option<String>>>>(&db, 0)
    .await
    .unwrap()
    .into_iter()
    .map(|pair| (pair[0].clone().unwrap(), pair[1].clone()))
    .collect();
    assert_eq!(rows.len(), 8_000, "each entry once in the index");
    for (id, newest) in &rows {
        assert_eq!(newest, &outpost::platform::ids::newest_first_key_of(id));
    }
    let ids: Vec<&String> = rows.iter().map(|(id, _)| id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first is the reverse of id order"
    );
    let left: Option<i64> = Query::new("RETURN count(SELECT id FROM migration_progress)")
        .take(&db, 0)
        .await
        .unwrap();
    assert_eq!(left, Some(0), "the progress is cleared with the last slice");
}

#[tokio::test]
async fn the_store_watchdog_fires_once_the_store_stops_answering() {
    use outpost::platform::db::StoreWatchdog;
    use std::time::Duration;
    // A store that answers three reads, then never again: what SurrealKV 0.21's lock-order
    // deadlock between a range read and a memtable flush looks like from outside.
    let answered = Arc::new(AtomicUsize::new(0));
    let probe = {
        let answered = answered.clone();
        move || {
            let round = answered.fetch_add(1, Ordering::SeqCst);
            async move {
                if round >= 3 {
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let watchdog = StoreWatchdog::spawn(probe, Duration::from_secs(2), move |since| {
        tx.send(since).unwrap();
    });
    let fired = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    let since = fired.expect("the watchdog reports a store that stopped answering");
    assert!(
        since > Duration::from_secs(2),
        "it waits the whole allowance first: {since:?}"
    );
    assert_eq!(
        answered.load(Ordering::SeqCst),
        4,
        "three answers, then the stuck read"
    );
    watchdog.stop().await;
}

#[tokio::test]
async fn a_stopped_store_watchdog_never_fires_and_lets_go_of_its_probe() {
    use outpost::platform::db::StoreWatchdog;
    use std::time::Duration;
    // The probe holds a share of `store`, as the real one holds the store's handle.
    let store = Arc::new(());
    let probe = {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move {
                let _held = store;
                std::future::pending::<()>().await;
            }
        }
    };
    let fired = Arc::new(AtomicUsize::new(0));
    let watchdog = StoreWatchdog::spawn(probe, Duration::from_secs(1), {
        let fired = fired.clone();
        move |_| {
            fired.fetch_add(1, Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(Arc::strong_count(&store) > 1, "the probe is running");
    watchdog.stop().await;
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "once stopped, the probe has let go of what it held"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fired.load(Ordering::SeqCst),
        0,
        "a stopped watchdog stays silent past its allowance"
    );
}

#[tokio::test]
async fn the_store_watchdog_stays_quiet_while_the_store_answers() {
    use outpost::platform::db::{StoreWatchdog, await_store_closed};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let config = Config::for_database(&url).database;
    let db = Db::connect(&config).await.unwrap();
    apply_migrations(&db, MIGRATIONS).await.unwrap();
    let stalls = Arc::new(AtomicUsize::new(0));
    let watchdog = StoreWatchdog::for_store(&db, Duration::from_secs(3), {
        let stalls = stalls.clone();
        move |_| {
            stalls.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Writes go on meanwhile, as on a working server.
    for batch in 0..30 {
        Query::new("FOR $i IN 0..200 { CREATE note SET batch = $batch, i = $i }")
            .bind("batch", batch)
            .run(&db)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        stalls.load(Ordering::SeqCst),
        0,
        "a store that answers is left alone"
    );
    watchdog.stop().await;
    drop(db);
    await_store_closed(&config).await;
    let lock = std::fs::File::open(dir.path().join("data").join("LOCK")).unwrap();
    assert!(
        lock.try_lock().is_ok(),
        "the store closed once its last user let go"
    );
}
