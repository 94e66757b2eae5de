//! Departments, roles and users: the tree rules, validation, duplicates, permissions.

use outpost_tests::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn department_tree_rename_move_and_delete_rules() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    let root = server.root_department(&token).await;
    let sales = server.department(&token, "Sales", &root).await;
    let east = server.department(&token, "East", &sales).await;
    let shanghai = server.department(&token, "Shanghai", &east).await;
    let support = server.department(&token, "Support", &root).await;

    let dup = server
        .post(
            "/api/v1/departments",
            &token,
            json!({ "name": "sales", "parent_id": root }),
        )
        .await;
    assert_eq!(
        dup.status,
        StatusCode::CONFLICT,
        "sibling names are unique, ignoring case"
    );

    let renamed = server
        .patch(
            &format!("/api/v1/departments/{east}"),
            &token,
            json!({ "name": "East China" }),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.body["name"], "East China");

    // A cycle, directly and through a descendant, is refused and changes nothing.
    for target in [&sales, &east, &shanghai] {
        let cycle = server
            .patch(
                &format!("/api/v1/departments/{sales}"),
                &token,
                json!({ "parent_id": target }),
            )
            .await;
        assert_eq!(
            cycle.status,
            StatusCode::CONFLICT,
            "moving Sales under {target}"
        );
    }
    let root_move = server
        .patch(
            &format!("/api/v1/departments/{root}"),
            &token,
            json!({ "parent_id": sales }),
        )
        .await;
    assert_eq!(root_move.status, StatusCode::CONFLICT);

    // Moving East (with Shanghai) under Support rewrites the subtree's ancestry.
    let moved = server
        .patch(
            &format!("/api/v1/departments/{east}"),
            &token,
            json!({ "parent_id": support }),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.body["ancestor_ids"], json!([root, support]));
    let leaf = server
        .get(&format!("/api/v1/departments/{shanghai}"), &token)
        .await;
    assert_eq!(leaf.body["ancestor_ids"], json!([root, support, east]));

    // Delete only when empty.
    let with_children = server
        .delete(&format!("/api/v1/departments/{east}"), &token)
        .await;
    assert_eq!(with_children.status, StatusCode::CONFLICT);
    let rep = server.role(&token, "rep").await;
    server
        .user(&token, "sh@example.com", &shanghai, None, &[&rep])
        .await;
    let with_users = server
        .delete(&format!("/api/v1/departments/{shanghai}"), &token)
        .await;
    assert_eq!(with_users.status, StatusCode::CONFLICT);
    let empty = server
        .delete(&format!("/api/v1/departments/{sales}"), &token)
        .await;
    assert_eq!(empty.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server
            .get(&format!("/api/v1/departments/{sales}"), &token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .delete(&format!("/api/v1/departments/{root}"), &token)
            .await
            .status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn users_are_validated_and_logins_are_unique() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    let root = server.root_department(&token).await;
    let rep = server.role(&token, "rep").await;

    let invalid = server
        .post("/api/v1/users", &token, json!({ "email": "not-an-email", "phone": "12", "name": "", "department_id": "0192f0c1-0000-7000-8000-000000000000", "role_ids": ["nope"], "time_zone": "Mars/Olympus" }))
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = invalid.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in [
        "email",
        "phone",
        "name",
        "department_id",
        "role_ids[0]",
        "time_zone",
    ] {
        assert!(fields.contains(&field), "{field} is reported: {fields:?}");
    }

    let generated = server.post("/api/v1/users", &token, json!({ "email": "a@example.com", "name": "A", "department_id": root, "role_ids": [rep] })).await;
    assert_eq!(generated.status, StatusCode::CREATED);
    let initial = generated.body["initial_password"].as_str().unwrap();
    server.login("a@example.com", initial).await;

    let duplicate = server.post("/api/v1/users", &token, json!({ "email": "A@Example.com", "name": "A2", "department_id": root, "role_ids": [rep] })).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);

    let a = generated.body["id"].as_str().unwrap();
    let b = server
        .user(&token, "b@example.com", &root, Some(a), &[&rep])
        .await;
    let taken = server
        .patch(
            &format!("/api/v1/users/{b}"),
            &token,
            json!({ "email": "a@example.com" }),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    let cycle = server
        .patch(
            &format!("/api/v1/users/{a}"),
            &token,
            json!({ "manager_id": b }),
        )
        .await;
    assert_eq!(
        cycle.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a manager cycle is refused"
    );
    let self_manager = server
        .patch(
            &format!("/api/v1/users/{a}"),
            &token,
            json!({ "manager_id": a }),
        )
        .await;
    assert_eq!(self_manager.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Changing the login email frees the old one.
    let moved = server
        .patch(
            &format!("/api/v1/users/{b}"),
            &token,
            json!({ "email": "b2@example.com", "time_zone": "Europe/Berlin", "manager_id": null }),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.body["time_zone"], "Europe/Berlin");
    assert!(moved.body["manager_id"].is_null());
    server
        .login("b2@example.com", outpost_tests::PASSWORD)
        .await;
    let old = server
        .try_login("b@example.com", outpost_tests::PASSWORD)
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    server
        .user(&token, "b@example.com", &root, None, &[&rep])
        .await;
}

#[tokio::test]
async fn roles_check_their_permissions_and_protect_builtins() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    let bad = server.post("/api/v1/roles", &token, json!({ "name": "Auditor", "data_scope": "all", "permissions": ["audit.read", "launch.missiles"] })).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["errors"][0]["field"], "permissions[1]");
    let bad_scope = server
        .post(
            "/api/v1/roles",
            &token,
            json!({ "name": "Auditor", "data_scope": "galaxy", "permissions": [] }),
        )
        .await;
    assert_eq!(bad_scope.status, StatusCode::UNPROCESSABLE_ENTITY);

    let auditor = server
        .post(
            "/api/v1/roles",
            &token,
            json!({ "name": "Auditor", "data_scope": "all", "permissions": ["audit.read"] }),
        )
        .await;
    assert_eq!(auditor.status, StatusCode::CREATED);
    let auditor_id = auditor.body["id"].as_str().unwrap().to_string();
    let dup = server
        .post(
            "/api/v1/roles",
            &token,
            json!({ "name": "Auditor", "data_scope": "own", "permissions": [] }),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);

    let root = server.root_department(&token).await;
    let user = server
        .user(&token, "aud@example.com", &root, None, &[&auditor_id])
        .await;
    let aud = server.token_of("aud@example.com").await;
    assert_eq!(
        server.get("/api/v1/audit", &aud).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.get("/api/v1/users", &aud).await.status,
        StatusCode::FORBIDDEN
    );

    // Permission changes apply on the next request.
    let widened = server
        .patch(
            &format!("/api/v1/roles/{auditor_id}"),
            &token,
            json!({ "permissions": ["audit.read", "user.read"] }),
        )
        .await;
    assert_eq!(widened.status, StatusCode::OK);
    assert_eq!(
        server.get("/api/v1/users", &aud).await.status,
        StatusCode::OK
    );

    assert_eq!(
        server
            .delete(&format!("/api/v1/roles/{auditor_id}"), &token)
            .await
            .status,
        StatusCode::CONFLICT,
        "still held"
    );
    server
        .patch(
            &format!("/api/v1/users/{user}"),
            &token,
            json!({ "role_ids": [] }),
        )
        .await;
    assert_eq!(
        server
            .delete(&format!("/api/v1/roles/{auditor_id}"), &token)
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let admin_role = server.role(&token, "admin").await;
    assert_eq!(
        server
            .delete(&format!("/api/v1/roles/{admin_role}"), &token)
            .await
            .status,
        StatusCode::CONFLICT
    );
    let weaken = server
        .patch(
            &format!("/api/v1/roles/{admin_role}"),
            &token,
            json!({ "data_scope": "own" }),
        )
        .await;
    assert_eq!(weaken.status, StatusCode::CONFLICT);
}
