//! Login, refresh rotation and reuse detection, logout, password changes, deactivation,
//! devices, throttling.

use outpost::config::Config;
use outpost_tests::{PASSWORD, TestServer};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn first_start_creates_an_admin_with_a_generated_password() {
    let server = TestServer::start().await;
    assert!(
        server.admin_password.len() >= 16,
        "a generated password, never a default one"
    );
    let token = server.admin_token().await;
    let me = server.get("/api/v1/me", &token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["email"], "admin@outpost.local");
    assert_eq!(me.body["data_scope"], "all");
    assert!(
        me.body["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "user.manage")
    );
    assert!(me.body["user"].get("password_hash").is_none());
}

#[tokio::test]
async fn login_by_email_or_phone_and_wrong_passwords() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    let root = server.root_department(&token).await;
    let rep = server.role(&token, "rep").await;
    let created = server
        .post("/api/v1/users", &token, json!({ "phone": "138 0013 8000", "email": "Li.Lei@Example.com", "name": "李雷", "department_id": root, "role_ids": [rep], "password": PASSWORD }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["phone"], "+8613800138000");
    assert_eq!(created.body["email"], "li.lei@example.com");
    assert_eq!(created.body["time_zone"], "Asia/Shanghai");

    server.login("li.lei@example.com", PASSWORD).await;
    server.login("LI.LEI@example.com", PASSWORD).await;
    server.login("13800138000", PASSWORD).await;
    server.login("+86 138-0013-8000", PASSWORD).await;

    let wrong = server.try_login("13800138000", "nope nope nope").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.problem(), "invalid-credentials");
    let unknown = server.try_login("ghost@example.com", "whatever12").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown.body["detail"], wrong.body["detail"],
        "no hint whether the account exists"
    );

    let no_token = server.send("GET", "/api/v1/me", None, None, &[]).await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    let garbage = server.get("/api/v1/me", "not.a.jwt").await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let server = TestServer::start().await;
    let pair = server
        .login(&server.admin_login, &server.admin_password)
        .await;
    let first_refresh = pair["refresh_token"].as_str().unwrap().to_string();

    let refreshed = server
        .send(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": first_refresh })),
            &[],
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let second_refresh = refreshed.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let second_access = refreshed.body["access_token"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, first_refresh);
    assert_eq!(
        server.get("/api/v1/me", &second_access).await.status,
        StatusCode::OK
    );

    // A thief replays the first token: refused, and the whole session ends.
    let replay = server
        .send(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": first_refresh })),
            &[],
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    let legit = server
        .send(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": second_refresh })),
            &[],
        )
        .await;
    assert_eq!(
        legit.status,
        StatusCode::UNAUTHORIZED,
        "the rotated token died with its family"
    );
    assert_eq!(
        server.get("/api/v1/me", &second_access).await.status,
        StatusCode::UNAUTHORIZED,
        "access tokens of the family die too"
    );

    let unknown = server
        .send(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": "made-up" })),
            &[],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let server = TestServer::start().await;
    let pair = server
        .login(&server.admin_login, &server.admin_password)
        .await;
    let access = pair["access_token"].as_str().unwrap();
    let refresh = pair["refresh_token"].as_str().unwrap();
    let other = server.admin_token().await;
    let out = server
        .send(
            "POST",
            "/api/v1/auth/logout",
            None,
            Some(json!({ "refresh_token": refresh })),
            &[],
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/api/v1/me", access).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = server
        .send(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.get("/api/v1/me", &other).await.status,
        StatusCode::OK,
        "other sessions live on"
    );
}

#[tokio::test]
async fn password_change_reset_and_deactivation() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep_role = server.role(&admin, "rep").await;
    let rep = server
        .user(&admin, "rep@example.com", &root, None, &[&rep_role])
        .await;
    let laptop = server.token_of("rep@example.com").await;
    let phone = server.token_of("rep@example.com").await;

    let short = server
        .post(
            "/api/v1/me/password",
            &phone,
            json!({ "current_password": PASSWORD, "new_password": "short" }),
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    let wrong = server
        .post(
            "/api/v1/me/password",
            &phone,
            json!({ "current_password": "wrong password", "new_password": "a much longer one" }),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    let changed = server
        .post(
            "/api/v1/me/password",
            &phone,
            json!({ "current_password": PASSWORD, "new_password": "a much longer one" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/api/v1/me", &phone).await.status,
        StatusCode::OK,
        "the changing session stays"
    );
    assert_eq!(
        server.get("/api/v1/me", &laptop).await.status,
        StatusCode::UNAUTHORIZED,
        "other sessions end"
    );
    server.login("rep@example.com", "a much longer one").await;

    let reset = server
        .post(
            &format!("/api/v1/users/{rep}/reset-password"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK);
    let generated = reset.body["password"].as_str().unwrap().to_string();
    assert_eq!(
        server.get("/api/v1/me", &phone).await.status,
        StatusCode::UNAUTHORIZED
    );
    let fresh = server.login("rep@example.com", &generated).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let forbidden = server
        .post(
            &format!("/api/v1/users/{rep}/deactivate"),
            &fresh,
            json!({}),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let deactivated = server
        .post(
            &format!("/api/v1/users/{rep}/deactivate"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(deactivated.status, StatusCode::OK);
    assert_eq!(deactivated.body["active"], false);
    assert_eq!(
        server.get("/api/v1/me", &fresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    let login = server.try_login("rep@example.com", generated).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);

    let me = server.get("/api/v1/me", &admin).await;
    let admin_id = me.body["user"]["id"].as_str().unwrap();
    let self_deactivate = server
        .post(
            &format!("/api/v1/users/{admin_id}/deactivate"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(self_deactivate.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn devices_bind_tokens_and_revocation_ends_them() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep_role = server.role(&admin, "rep").await;
    server
        .user(&admin, "field@example.com", &root, None, &[&rep_role])
        .await;
    let token = server.token_of("field@example.com").await;

    let bad = server
        .post(
            "/api/v1/devices",
            &token,
            json!({ "name": "Phone", "platform": "nokia" }),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let device = server
        .post(
            "/api/v1/devices",
            &token,
            json!({ "name": "Li's iPhone", "platform": "ios" }),
        )
        .await;
    assert_eq!(device.status, StatusCode::CREATED);
    let device_id = device.body["id"].as_str().unwrap().to_string();

    let bound = server.send("POST", "/api/v1/auth/login", None, Some(json!({ "login": "field@example.com", "password": PASSWORD, "device_id": device_id })), &[]).await;
    assert_eq!(bound.status, StatusCode::OK);
    let bound_token = bound.body["access_token"].as_str().unwrap().to_string();
    let me = server.get("/api/v1/me", &bound_token).await;
    assert_eq!(me.body["device_id"], device_id.as_str());

    let someone_elses = server.send("POST", "/api/v1/auth/login", None, Some(json!({ "login": server.admin_login, "password": server.admin_password, "device_id": device_id })), &[]).await;
    assert_eq!(someone_elses.status, StatusCode::UNPROCESSABLE_ENTITY);

    let mine = server.get("/api/v1/devices", &token).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);

    let revoked = server
        .post(
            &format!("/api/v1/devices/{device_id}/revoke"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(revoked.body["revoked_at"].is_string());
    assert_eq!(
        server.get("/api/v1/me", &bound_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.get("/api/v1/me", &token).await.status,
        StatusCode::OK,
        "an unbound session is unaffected"
    );
    let refresh = server
        .send(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": bound.body["refresh_token"] })),
            &[],
        )
        .await;
    assert_eq!(refresh.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn failed_logins_are_throttled_and_audited() {
    let mut config = Config::for_database("mem://");
    config.auth.max_failed_logins_per_account = 3;
    config.auth.max_failed_logins_per_address = 6;
    let server = TestServer::start_with(config).await;
    let bad = |login: &str| json!({ "login": login, "password": "wrong wrong wrong" });
    for _ in 0..3 {
        let r = server
            .send(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(bad(&server.admin_login)),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let throttled = server
        .send(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(bad(&server.admin_login)),
            &[],
        )
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.problem(), "rate-limited");
    let retry_after: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    // Even the right password waits: the account is locked for the window.
    let right = server
        .try_login(&server.admin_login, &server.admin_password)
        .await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);

    // Per address: other accounts from the same address, until the address limit.
    for i in 0..3 {
        let r = server
            .send(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(bad(&format!("user{i}@example.com"))),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let address_limited = server
        .send(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(bad("fresh@example.com")),
            &[],
        )
        .await;
    assert_eq!(address_limited.status, StatusCode::TOO_MANY_REQUESTS);
}
