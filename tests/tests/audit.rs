//! The audit log records every mutation and failed logins, and filters by target, actor, time.

use outpost_tests::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn mutations_and_failed_logins_are_audited_and_filterable() {
    let server = TestServer::start().await;
    let failed = server
        .try_login(&server.admin_login, "definitely wrong")
        .await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    let token = server.admin_token().await;
    let me = server.get("/api/v1/me", &token).await;
    let admin_id = me.body["user"]["id"].as_str().unwrap().to_string();
    let root = server.root_department(&token).await;
    let before = chrono::Utc::now();
    let created = server
        .send(
            "POST",
            "/api/v1/departments",
            Some(&token),
            Some(json!({ "name": "Sales", "parent_id": root })),
            &[("x-request-id", "req-audit-1")],
        )
        .await;
    let sales = created.body["id"].as_str().unwrap().to_string();
    server
        .patch(
            &format!("/api/v1/departments/{sales}"),
            &token,
            json!({ "name": "Sales & Marketing" }),
        )
        .await;

    let log = server
        .get(
            &format!("/api/v1/audit?target_kind=department&target_id={sales}"),
            &token,
        )
        .await;
    assert_eq!(log.status, StatusCode::OK);
    let items = log.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["action"], "department.update", "newest first");
    assert_eq!(items[0]["summary"]["name"]["to"], "Sales & Marketing");
    assert_eq!(items[1]["action"], "department.create");
    assert_eq!(items[1]["actor_id"], admin_id.as_str());
    assert_eq!(items[1]["channel"], "api");
    assert_eq!(items[1]["request_id"], "req-audit-1");
    assert_eq!(items[1]["address"], "127.0.0.1");

    let failures = server.get("/api/v1/audit?limit=200", &token).await;
    let failure = failures.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "auth.login_failed")
        .expect("failed login audited");
    assert_eq!(failure["summary"]["login"], server.admin_login.as_str());

    let by_actor = server
        .get(
            &format!("/api/v1/audit?actor_id={admin_id}&limit=200"),
            &token,
        )
        .await;
    assert!(
        by_actor.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor_id"] == admin_id.as_str())
    );
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let recent = server
        .get(
            &format!("/api/v1/audit?from={}&limit=200", urlencode(&since)),
            &token,
        )
        .await;
    assert_eq!(recent.status, StatusCode::OK, "{:?}", recent.body);
    let actions: Vec<&str> = recent.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["department.update", "department.create"]);
    let bad_time = server.get("/api/v1/audit?from=yesterday", &token).await;
    assert_eq!(bad_time.status, StatusCode::BAD_REQUEST);
    // The widest window there is (long before 1970 to the end of year 9999) holds the whole
    // log.
    let everything = all_pages(&server, &token, "/api/v1/audit?limit=200").await;
    let widest = all_pages(
        &server,
        &token,
        &format!(
            "/api/v1/audit?from={}&to={}&limit=200",
            urlencode("0001-01-01T00:00:00Z"),
            urlencode("9999-12-31T23:59:59.999Z")
        ),
    )
    .await;
    assert_eq!(widest, everything);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// Walks every page of `path` (which has a `?`), returning the entries in order.
async fn all_pages(server: &TestServer, token: &str, path: &str) -> Vec<serde_json::Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_string(),
        };
        let page = server.get(&url, token).await;
        assert_eq!(page.status, StatusCode::OK, "{url}: {:?}", page.body);
        entries.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return entries,
        }
    }
}

#[tokio::test]
async fn filtered_audit_pages_walk_each_matching_entry_once_newest_first() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    let root = server.root_department(&token).await;
    let mut created = Vec::new();
    for n in 0..5 {
        let department = server
            .post(
                "/api/v1/departments",
                &token,
                json!({ "name": format!("Region {n}"), "parent_id": root }),
            )
            .await;
        assert_eq!(department.status, StatusCode::CREATED);
        created.push(department.body["id"].as_str().unwrap().to_string());
    }
    let renamed = &created[2];
    for n in 0..3 {
        let update = server
            .patch(
                &format!("/api/v1/departments/{renamed}"),
                &token,
                json!({ "name": format!("Region 2, take {n}") }),
            )
            .await;
        assert_eq!(update.status, StatusCode::OK);
    }

    // One action, two per page: every creation once, newest first.
    let creations = all_pages(
        &server,
        &token,
        "/api/v1/audit?action=department.create&limit=2",
    )
    .await;
    let targets: Vec<&str> = creations
        .iter()
        .map(|e| e["target_id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = created.iter().rev().map(String::as_str).collect();
    assert_eq!(targets, newest_first);

    // One record, one per page: its three renames and its creation.
    let history = all_pages(
        &server,
        &token,
        &format!("/api/v1/audit?target_kind=department&target_id={renamed}&limit=1"),
    )
    .await;
    let actions: Vec<&str> = history
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "department.update",
            "department.update",
            "department.update",
            "department.create"
        ]
    );
    assert_eq!(history[0]["summary"]["name"]["to"], "Region 2, take 2");

    // Filters combine: the renames before the last one, by this admin.
    let last_rename = history[0]["at"].as_str().unwrap();
    let earlier = server
        .get(
            &format!(
                "/api/v1/audit?action=department.update&actor_id={}&to={}",
                history[0]["actor_id"].as_str().unwrap(),
                urlencode(last_rename)
            ),
            &token,
        )
        .await;
    assert_eq!(earlier.status, StatusCode::OK, "{:?}", earlier.body);
    let names: Vec<&str> = earlier.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"]["name"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Region 2, take 1", "Region 2, take 0"]);

    // An unknown filter value matches nothing rather than everything.
    let nobody = server
        .get("/api/v1/audit?actor_id=nobody&limit=200", &token)
        .await;
    assert_eq!(nobody.status, StatusCode::OK);
    assert_eq!(nobody.body["items"].as_array().unwrap().len(), 0);
}
