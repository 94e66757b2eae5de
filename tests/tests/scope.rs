//! Data scopes: own, own + subordinates, department (+ children), all; and 403 without a
//! permission.

use std::collections::BTreeSet;

use outpost_tests::TestServer;
use reqwest::StatusCode;
use serde_json::json;

async fn visible(server: &TestServer, token: &str) -> BTreeSet<String> {
    let reply = server.get("/api/v1/users?limit=200", token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_string())
        .collect()
}

fn set(emails: &[&str]) -> BTreeSet<String> {
    emails.iter().map(|e| e.to_string()).collect()
}

#[tokio::test]
async fn each_data_scope_sees_exactly_its_records() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let sales = server.department(&admin, "Sales", &root).await;
    let east = server.department(&admin, "East", &sales).await;
    let support = server.department(&admin, "Support", &root).await;
    let [head_role, manager_role, rep_role] = ["department_head", "manager", "rep"];
    let head_role = server.role(&admin, head_role).await;
    let manager_role = server.role(&admin, manager_role).await;
    let rep_role = server.role(&admin, rep_role).await;
    // A rep role that may list users, to observe its scope.
    let lister = server
        .post(
            "/api/v1/roles",
            &admin,
            json!({ "name": "rep_lister", "data_scope": "own", "permissions": ["user.read"] }),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dept_role = server.post("/api/v1/roles", &admin, json!({ "name": "dept_viewer", "data_scope": "department", "permissions": ["user.read"] })).await.body["id"].as_str().unwrap().to_string();

    server
        .user(&admin, "head@x.cn", &sales, None, &[&head_role])
        .await;
    let manager = server
        .user(&admin, "manager@x.cn", &east, None, &[&manager_role])
        .await;
    let lead = server
        .user(
            &admin,
            "lead@x.cn",
            &east,
            Some(&manager),
            &[&rep_role, &lister],
        )
        .await;
    server
        .user(
            &admin,
            "rep@x.cn",
            &east,
            Some(&lead),
            &[&rep_role, &lister],
        )
        .await;
    server
        .user(&admin, "sales-rep@x.cn", &sales, None, &[&dept_role])
        .await;
    server
        .user(
            &admin,
            "support@x.cn",
            &support,
            None,
            &[&rep_role, &lister],
        )
        .await;

    let rep = server.token_of("rep@x.cn").await;
    assert_eq!(
        visible(&server, &rep).await,
        set(&["rep@x.cn"]),
        "a rep sees only their own"
    );

    let manager_token = server.token_of("manager@x.cn").await;
    assert_eq!(
        visible(&server, &manager_token).await,
        set(&["manager@x.cn", "lead@x.cn", "rep@x.cn"]),
        "a manager sees subordinates, transitively"
    );

    let head = server.token_of("head@x.cn").await;
    assert_eq!(
        visible(&server, &head).await,
        set(&[
            "head@x.cn",
            "manager@x.cn",
            "lead@x.cn",
            "rep@x.cn",
            "sales-rep@x.cn"
        ]),
        "a department head sees the subtree"
    );

    let dept = server.token_of("sales-rep@x.cn").await;
    assert_eq!(
        visible(&server, &dept).await,
        set(&["head@x.cn", "sales-rep@x.cn"]),
        "department scope excludes child departments"
    );

    let all = visible(&server, &admin).await;
    assert_eq!(all.len(), 7, "the admin sees everyone: {all:?}");

    // Outside the scope is the same 404 as not existing.
    let support_id = server.get("/api/v1/users?limit=200", &admin).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "support@x.cn")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        server
            .get(&format!("/api/v1/users/{support_id}"), &manager_token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .get(&format!("/api/v1/users/{support_id}"), &admin)
            .await
            .status,
        StatusCode::OK
    );

    // A department move changes the scope on the next request.
    let moved = server
        .patch(
            &format!("/api/v1/departments/{support}"),
            &admin,
            json!({ "parent_id": sales }),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    assert!(visible(&server, &head).await.contains("support@x.cn"));

    // Without a permission: 403 with the permission named.
    let plain_rep = server
        .user(&admin, "plain@x.cn", &east, None, &[&rep_role])
        .await;
    let plain = server.token_of("plain@x.cn").await;
    let denied = server.get("/api/v1/users", &plain).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.problem(), "forbidden");
    assert!(
        denied.body["detail"]
            .as_str()
            .unwrap()
            .contains("user.read")
    );
    let create = server
        .post(
            "/api/v1/departments",
            &plain,
            json!({ "name": "Mine", "parent_id": root }),
        )
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
    let audit = server.get("/api/v1/audit", &plain).await;
    assert_eq!(audit.status, StatusCode::FORBIDDEN);
    let _ = plain_rep;
}
