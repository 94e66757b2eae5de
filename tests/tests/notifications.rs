//! Notification channels: each user's choices per kind, quiet hours, and email delivered to a
//! real SMTP server (Python's aiosmtpd, installed by the test) on loopback.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chrono::Utc;
use outpost::config::Config;
use outpost_tests::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// An SMTP server on loopback; every accepted message arrives on `messages`.
struct SmtpSink {
    port: u16,
    child: Child,
    messages: mpsc::Receiver<Value>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs aiosmtpd (once, into the target directory) and starts the sink.
fn smtp_sink() -> SmtpSink {
    let deps = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pydeps");
    let importable = |deps: &std::path::Path| {
        Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .env("PYTHONPATH", deps)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !importable(&deps) {
        let installed = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&deps)
            .arg("aiosmtpd==1.4.6")
            .status()
            .expect("pip runs");
        assert!(installed.success(), "aiosmtpd installs from PyPI");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/smtp/sink.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .env("PYTHONPATH", &deps)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the SMTP sink starts");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, messages) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == "ready" {
                let _ = ready_tx.send(());
            } else if let Ok(message) = serde_json::from_str(&line) {
                let _ = tx.send(message);
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the SMTP sink is ready");
    SmtpSink {
        port,
        child,
        messages,
    }
}

async fn server_with_email(port: u16) -> TestServer {
    let mut config = Config::for_database("mem://");
    config.email.smtp_host = "127.0.0.1".into();
    config.email.smtp_port = port;
    config.email.from = "Outpost CRM <crm@outpost.test>".into();
    TestServer::start_with(config).await
}

/// Waits (up to a minute) until the caller's inbox holds `count` notifications.
async fn inbox_holds(server: &TestServer, token: &str, count: usize) {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if server.notifications(token, "").await.len() == count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the notifications reach the inbox");
}

fn due_in(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_arrives_by_email_and_settings_choose_the_channels() {
    let sink = tokio::task::spawn_blocking(smtp_sink).await.unwrap();
    let server = server_with_email(sink.port).await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    server
        .user(&admin, "li.lei@x.cn", &root, None, &[&rep])
        .await;
    let token = server.token_of("li.lei@x.cn").await;

    let defaults = server.get("/api/v1/me/notification-settings", &token).await;
    assert_eq!(defaults.status, StatusCode::OK, "{:?}", defaults.body);
    assert_eq!(
        defaults.body["channels"]["task.reminder"],
        json!(["inbox", "email"])
    );

    let created = server
        .post(
            "/api/v1/tasks",
            &token,
            json!({ "title": "Quote for Acme", "due_at": due_in(62), "reminders": [1] }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let messages = &sink.messages;
    let mail = tokio::task::block_in_place(|| messages.recv_timeout(Duration::from_secs(60)))
        .expect("the reminder is mailed");
    assert_eq!(mail["to"], json!(["li.lei@x.cn"]));
    assert_eq!(mail["from"], "crm@outpost.test");
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("Subject: Quote for Acme"), "{data}");

    // Reminders to the inbox only: no more mail.
    let put = server
        .send(
            "PUT",
            "/api/v1/me/notification-settings",
            Some(&token),
            Some(json!({ "channels": { "task.reminder": ["inbox"] } })),
            &[],
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.body["channels"]["task.reminder"], json!(["inbox"]));
    server
        .post(
            "/api/v1/tasks",
            &token,
            json!({ "title": "Inbox only", "due_at": due_in(62), "reminders": [1] }),
        )
        .await;
    inbox_holds(&server, &token, 2).await;
    let extra = tokio::task::block_in_place(|| messages.recv_timeout(Duration::from_secs(2)));
    assert!(extra.is_err(), "no mail for an inbox-only kind: {extra:?}");

    // Bad settings change nothing.
    for body in [
        json!({ "channels": { "task.reminder": ["pigeon"] } }),
        json!({ "channels": { "weather": ["inbox"] } }),
        json!({ "quiet_start": "22:00" }),
        json!({ "quiet_start": "25:00", "quiet_end": "07:00" }),
    ] {
        let refused = server
            .send(
                "PUT",
                "/api/v1/me/notification-settings",
                Some(&token),
                Some(body.clone()),
                &[],
            )
            .await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let unchanged = server.get("/api/v1/me/notification-settings", &token).await;
    assert_eq!(
        unchanged.body["channels"]["task.reminder"],
        json!(["inbox"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_a_non_urgent_email_until_they_end() {
    let sink = tokio::task::spawn_blocking(smtp_sink).await.unwrap();
    let server = server_with_email(sink.port).await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    server
        .user(&admin, "han.mei@x.cn", &root, None, &[&rep])
        .await;
    let token = server.token_of("han.mei@x.cn").await;

    // Quiet hours from a minute ago until two hours from now, in the user's time zone.
    let now = Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
    let start = (now - chrono::Duration::minutes(1))
        .format("%H:%M")
        .to_string();
    let end = (now + chrono::Duration::hours(2))
        .format("%H:%M")
        .to_string();
    let put = server
        .send(
            "PUT",
            "/api/v1/me/notification-settings",
            Some(&token),
            Some(json!({ "quiet_start": start, "quiet_end": end })),
            &[],
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);

    // A reminder two hours before a task due in just under two hours is due now, and is not
    // urgent: the inbox gets it at once, the email waits for the end of the quiet hours.
    server
        .post(
            "/api/v1/tasks",
            &token,
            json!({ "title": "Prepare the samples", "due_at": due_in(7190), "reminders": [120] }),
        )
        .await;
    inbox_holds(&server, &token, 1).await;
    let jobs = server
        .get(
            "/api/v1/admin/jobs?queue=notification.deliver&status=pending",
            &admin,
        )
        .await;
    let pending = jobs.body["items"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{:?}", jobs.body);
    let release: chrono::DateTime<Utc> = pending[0]["run_at"].as_str().unwrap().parse().unwrap();
    assert!(
        release > Utc::now() + chrono::Duration::minutes(100),
        "held until the quiet hours end: {release}"
    );
    let messages = &sink.messages;
    let mail = tokio::task::block_in_place(|| messages.recv_timeout(Duration::from_secs(2)));
    assert!(mail.is_err(), "nothing mailed during quiet hours");
}
