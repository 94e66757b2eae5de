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
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
