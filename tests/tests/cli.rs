//! `outpost admin create --password-stdin` on an empty and on an existing store.

use clap::Parser;
use outpost::cli::{Cli, Command, run_admin};
use outpost_tests::TestServer;
use reqwest::StatusCode;

#[tokio::test]
async fn admin_create_bootstraps_with_the_given_password_then_adds_admins() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let cli = Cli::parse_from([
        "outpost",
        "--db",
        &url,
        "admin",
        "create",
        "--email",
        "Boss@Example.com",
        "--password-stdin",
    ]);
    let config = cli.load_config().unwrap();
    let Command::Admin { command } = &cli.command else {
        panic!("admin command")
    };
    let mut out = Vec::new();
    run_admin(
        &config,
        command,
        &mut "a chosen password\n".as_bytes(),
        &mut out,
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("boss@example.com"));

    let short = run_admin(&config, command, &mut "short\n".as_bytes(), &mut Vec::new()).await;
    assert!(short.is_err(), "a short password is refused");

    let second = Cli::parse_from([
        "outpost",
        "--db",
        &url,
        "admin",
        "create",
        "--email",
        "deputy@example.com",
        "--password-stdin",
    ]);
    let Command::Admin {
        command: second_command,
    } = &second.command
    else {
        panic!()
    };
    run_admin(
        &config,
        second_command,
        &mut "another good password\n".as_bytes(),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    let duplicate = run_admin(
        &config,
        second_command,
        &mut "another good password\n".as_bytes(),
        &mut Vec::new(),
    )
    .await;
    assert!(duplicate.is_err(), "the same admin twice is refused");

    // The server then starts without generating anything, and both admins log in.
    let server = TestServer::start_with(config.clone()).await;
    assert!(
        server.admin_password.is_empty(),
        "no generated admin on a bootstrapped store"
    );
    let boss = server
        .send(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(
                serde_json::json!({ "login": "boss@example.com", "password": "a chosen password" }),
            ),
            &[],
        )
        .await;
    assert_eq!(boss.status, StatusCode::OK);
    let token = boss.body["access_token"].as_str().unwrap();
    let me = server.get("/api/v1/me", token).await;
    assert_eq!(me.body["data_scope"], "all");
    server
        .login("deputy@example.com", "another good password")
        .await;
    server.shutdown().await;
}
