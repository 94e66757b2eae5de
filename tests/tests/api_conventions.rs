//! Errors, body limits, ids, pagination, idempotency, request ids, health.

use outpost::config::Config;
use outpost_tests::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    let health = server.send("GET", "/healthz", None, None, &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = server.send("GET", "/readyz", None, None, &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ok");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_problems_name_it() {
    let server = TestServer::start().await;
    let reply = server.send("GET", "/api/v1/nowhere", None, None, &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(reply.problem(), "route-not-found");
    let request_id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(!request_id.is_empty());
    assert_eq!(
        reply.body["instance"],
        format!("urn:outpost:request:{request_id}")
    );

    let given = server
        .send(
            "GET",
            "/healthz",
            None,
            None,
            &[("x-request-id", "abc-123")],
        )
        .await;
    assert_eq!(given.headers["x-request-id"], "abc-123");

    let wrong_method = server
        .send("PUT", "/api/v1/auth/login", None, None, &[])
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.problem(), "method-not-allowed");
}

#[tokio::test]
async fn bad_bodies_are_4xx_problems_and_change_nothing() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    let root = server.root_department(&token).await;
    let url = format!("{}/api/v1/departments", server.base);

    let malformed = server
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        malformed.headers()["content-type"],
        "application/problem+json"
    );

    let not_json = server
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let wrong_type = server
        .post(
            "/api/v1/departments",
            &token,
            json!({ "name": 42, "parent_id": root }),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong_type.body["errors"][0]["field"], "name");

    let unknown = server
        .post(
            "/api/v1/departments",
            &token,
            json!({ "name": "X", "parent_id": root, "colour": "red" }),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.body["errors"][0]["field"], "colour");

    let missing = server
        .post("/api/v1/departments", &token, json!({ "name": "X" }))
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);

    let empty_name = server
        .post(
            "/api/v1/departments",
            &token,
            json!({ "name": "  ", "parent_id": root }),
        )
        .await;
    assert_eq!(empty_name.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(empty_name.problem(), "validation");
    assert_eq!(empty_name.body["errors"][0]["field"], "name");

    let bad_id = server.get("/api/v1/departments/not-an-id", &token).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_id.problem(), "invalid-id");
    let hostile_id = server
        .get(
            "/api/v1/departments/department:x%3B%20DELETE%20user",
            &token,
        )
        .await;
    assert_eq!(hostile_id.status, StatusCode::BAD_REQUEST);
    let missing_id = server
        .get(
            "/api/v1/departments/0192f0c1-0000-7000-8000-000000000000",
            &token,
        )
        .await;
    assert_eq!(missing_id.status, StatusCode::NOT_FOUND);

    let bad_query = server.get("/api/v1/departments?limit=lots", &token).await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    let zero = server.get("/api/v1/departments?limit=0", &token).await;
    assert_eq!(zero.status, StatusCode::UNPROCESSABLE_ENTITY);
    let forged_cursor = server.get("/api/v1/departments?cursor=Zm9v", &token).await;
    assert_eq!(forged_cursor.status, StatusCode::UNPROCESSABLE_ENTITY);

    let list = server.get("/api/v1/departments", &token).await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        1,
        "nothing was created by bad requests"
    );
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let mut config = Config::for_database("mem://");
    config.server.max_body_bytes = 2048;
    let server = TestServer::start_with(config).await;
    let token = server.admin_token().await;
    let huge = "x".repeat(10_000);
    let reply = server
        .post(
            "/api/v1/departments",
            &token,
            json!({ "name": huge, "parent_id": "p" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.problem(), "payload-too-large");
    let with_key = server
        .send(
            "POST",
            "/api/v1/departments",
            Some(&token),
            Some(json!({ "name": huge })),
            &[("idempotency-key", "k1")],
        )
        .await;
    assert_eq!(with_key.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn cursor_pagination_is_stable_under_inserts() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    let root = server.root_department(&token).await;
    for i in 0..7 {
        server.department(&token, &format!("D{i}"), &root).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/departments?limit=3&cursor={c}"),
            None => "/api/v1/departments?limit=3".to_string(),
        };
        let page = server.get(&path, &token).await;
        assert_eq!(page.status, StatusCode::OK);
        for item in page.body["items"].as_array().unwrap() {
            seen.push(item["name"].as_str().unwrap().to_string());
        }
        pages += 1;
        if pages == 1 {
            // Inserted while paging: appears at the end, shifts nothing.
            server.department(&token, "Late", &root).await;
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no item repeated: {seen:?}");
    assert_eq!(
        seen.len(),
        9,
        "root, 7 departments and the late one: {seen:?}"
    );
    assert_eq!(seen.last().unwrap(), "Late");
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_a_different_body() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    let root = server.root_department(&token).await;
    let body = json!({ "name": "Sales", "parent_id": root });
    let key = [("idempotency-key", "create-sales-1")];
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
    let replay = server
        .send(
            "POST",
            "/api/v1/departments",
            Some(&token),
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(
        replay.body["id"], first.body["id"],
        "the same department, not a second one"
    );
    assert_eq!(replay.headers["idempotent-replayed"], "true");

    let different = server
        .send(
            "POST",
            "/api/v1/departments",
            Some(&token),
            Some(json!({ "name": "Other", "parent_id": root })),
            &key,
        )
        .await;
    assert_eq!(different.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(different.problem(), "idempotency-key-reused");

    let list = server.get("/api/v1/departments", &token).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);

    // Concurrent duplicates: exactly one department is created.
    let body = json!({ "name": "Marketing", "parent_id": root });
    let key = [("idempotency-key", "create-marketing")];
    let (a, b, c) = tokio::join!(
        server.send(
            "POST",
            "/api/v1/departments",
            Some(&token),
            Some(body.clone()),
            &key
        ),
        server.send(
            "POST",
            "/api/v1/departments",
            Some(&token),
            Some(body.clone()),
            &key
        ),
        server.send(
            "POST",
            "/api/v1/departments",
            Some(&token),
            Some(body.clone()),
            &key
        ),
    );
    let created: Vec<_> = [&a, &b, &c]
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .map(|r| r.body["id"].clone())
        .collect();
    assert!(!created.is_empty());
    assert!(
        created.iter().all(|id| *id == created[0]),
        "every success is the same department"
    );
    for r in [&a, &b, &c] {
        assert!(
            r.status == StatusCode::CREATED || r.problem() == "idempotency-in-progress",
            "{:?}",
            r.body
        );
    }
    let list = server.get("/api/v1/departments", &token).await;
    let marketing = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"] == "Marketing")
        .count();
    assert_eq!(marketing, 1);
}
