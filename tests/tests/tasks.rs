//! Tasks (a synced record type) and their reminders: planned through the job queue in the same
//! transaction as the change, re-planned, dropped, never sent twice, sent after a restart.

use std::time::Duration;

use chrono::Utc;
use outpost::config::Config;
use outpost::crm::tasks::reminders::{TaskReminder, remind};
use outpost_mobile::device::Device;
use outpost_mobile::records::task::Task;
use outpost_tests::{PASSWORD, Reply, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A due time `seconds` from now, RFC 3339.
fn due_in(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339()
}

async fn rep(server: &TestServer) -> (String, String) {
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    let id = server.user(&admin, "rep@x.cn", &root, None, &[&rep]).await;
    (id, server.token_of("rep@x.cn").await)
}

async fn inbox(server: &TestServer, token: &str) -> Vec<Value> {
    server.notifications(token, "limit=50").await
}

/// The caller's digests of the far-future days the digest test sweeps: the queue's own sweep,
/// on the real clock, may send today's digest to the same users meanwhile.
async fn far_future_digests(server: &TestServer, token: &str) -> Vec<Value> {
    let mut items = server.all_notifications(token, "limit=50").await;
    items.retain(|n| {
        n["kind"] == "digest" && n["title"].as_str().is_some_and(|t| t.starts_with("2031-"))
    });
    items
}

/// Waits (up to a minute) for the inbox to hold `count` notifications.
async fn inbox_of(server: &TestServer, token: &str, count: usize) -> Vec<Value> {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let items = inbox(server, token).await;
            if items.len() >= count {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the notifications arrive")
}

async fn reminder_jobs(server: &TestServer, status: &str) -> Vec<Value> {
    let admin = server.admin_token().await;
    let reply = server
        .get(
            &format!("/api/v1/admin/jobs?queue=task.reminder&status={status}&limit=50"),
            &admin,
        )
        .await;
    reply.body["items"].as_array().cloned().unwrap_or_default()
}

/// Waits (up to a minute) until the caller's task list passes `check`.
async fn tasks_until(
    server: &TestServer,
    token: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let list = server.get("/api/v1/tasks?limit=50", token).await;
            let items = list.body["items"].as_array().cloned().unwrap_or_default();
            if check(&items) {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the tasks settle")
}

async fn create(server: &TestServer, token: &str, body: Value) -> Reply {
    server.post("/api/v1/tasks", token, body).await
}

#[tokio::test]
async fn a_task_reminder_reaches_the_inbox_once() {
    let server = TestServer::start().await;
    let (rep_id, token) = rep(&server).await;
    // Due in 62 s with a reminder 1 min before: the reminder is due in 2 s.
    let due = due_in(62);
    let created = create(
        &server,
        &token,
        json!({ "title": "回访田野农机", "due_at": due, "reminders": [1] }),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["assignee_id"], rep_id.as_str());
    let doc_id = created.body["doc_id"].as_str().unwrap().to_string();

    let items = inbox_of(&server, &token, 1).await;
    assert_eq!(items.len(), 1);
    let note = &items[0];
    assert_eq!(note["kind"], "task.reminder");
    assert_eq!(note["title"], "回访田野农机");
    assert_eq!(note["subject_kind"], "task");
    assert_eq!(note["subject_id"], doc_id.as_str());
    assert!(note["read_at"].is_null());

    // The same reminder run again (a job may run twice) notifies no one.
    let again = remind(
        &server.db(),
        &TaskReminder {
            task: doc_id.clone(),
            due_at: due.clone(),
            minutes: 1,
        },
    )
    .await
    .unwrap();
    assert!(!again, "already sent");
    assert_eq!(inbox(&server, &token).await.len(), 1);

    // Read it; someone else cannot.
    let id = note["id"].as_str().unwrap();
    let admin = server.admin_token().await;
    let foreign = server
        .post(
            &format!("/api/v1/notifications/{id}/read"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    let read = server
        .post(
            &format!("/api/v1/notifications/{id}/read"),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert!(read.body["read_at"].is_string());
    let unread = server.notifications(&token, "unread=true").await;
    assert!(unread.is_empty(), "{unread:?}");
}

#[tokio::test]
async fn rescheduled_done_and_deleted_tasks_are_not_reminded_at_the_old_time() {
    let server = TestServer::start().await;
    let (_, token) = rep(&server).await;
    let mut ids = Vec::new();
    for title in ["moved", "finished", "dropped"] {
        let created = create(
            &server,
            &token,
            json!({ "title": title, "due_at": due_in(63), "reminders": [1] }),
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        ids.push(created.body["doc_id"].as_str().unwrap().to_string());
    }
    let moved = server
        .patch(
            &format!("/api/v1/tasks/{}", ids[0]),
            &token,
            json!({ "due_at": due_in(3600) }),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    let finished = server
        .patch(
            &format!("/api/v1/tasks/{}", ids[1]),
            &token,
            json!({ "status": "done" }),
        )
        .await;
    assert_eq!(finished.status, StatusCode::OK, "{:?}", finished.body);
    let dropped = server
        .delete(&format!("/api/v1/tasks/{}", ids[2]), &token)
        .await;
    assert!(dropped.status.is_success());

    // The three reminders planned for the old times run, find nothing to remind about, and
    // finish; the moved task has a new reminder, pending for its new time.
    tokio::time::timeout(Duration::from_secs(60), async {
        while reminder_jobs(&server, "done").await.len() < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the old reminders ran");
    assert!(
        inbox(&server, &token).await.is_empty(),
        "nobody was reminded"
    );
    let pending = reminder_jobs(&server, "pending").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["args"]["task"], ids[0].as_str());
}

#[tokio::test]
async fn task_fields_are_checked() {
    let server = TestServer::start().await;
    let (_, token) = rep(&server).await;
    let no_due = create(&server, &token, json!({ "title": "x", "reminders": [5] })).await;
    assert_eq!(no_due.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(no_due.body["errors"][0]["field"], "due_at");
    let too_early = create(
        &server,
        &token,
        json!({ "title": "x", "due_at": due_in(3600), "reminders": [20000] }),
    )
    .await;
    assert_eq!(too_early.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(too_early.body["errors"][0]["field"], "reminders[0]");
    let stranger = create(
        &server,
        &token,
        json!({ "title": "x", "assignee_id": outpost::platform::ids::new_key() }),
    )
    .await;
    assert_eq!(stranger.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_status = create(&server, &token, json!({ "title": "x" })).await;
    let doc_id = bad_status.body["doc_id"].as_str().unwrap();
    let patched = server
        .patch(
            &format!("/api/v1/tasks/{doc_id}"),
            &token,
            json!({ "status": "sleeping" }),
        )
        .await;
    assert_eq!(patched.status, StatusCode::UNPROCESSABLE_ENTITY);
    let list = server.get("/api/v1/tasks?status=open", &token).await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_task_made_offline_on_a_phone_is_reminded_too() {
    let server = TestServer::start().await;
    let (rep_id, token) = rep(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let mut phone = Device::open(dir.path(), &server.base).unwrap();
    phone
        .login("rep@x.cn", PASSWORD, "phone", "android")
        .await
        .unwrap();
    let mut task = Task::new("带样品");
    task.due_at = Some(due_in(62));
    task.reminders = vec![1];
    task.assignee = Some(rep_id);
    let id = phone.create(&task).unwrap();
    phone.sync().await.unwrap();
    let items = inbox_of(&server, &token, 1).await;
    assert_eq!(items[0]["subject_id"], id.as_str());
}

#[tokio::test]
async fn a_reminder_due_while_the_server_is_down_is_sent_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let server = TestServer::start_with(Config::for_database(&url)).await;
    let (_, token) = rep(&server).await;
    let created = create(
        &server,
        &token,
        json!({ "title": "给王总回电话", "due_at": due_in(68), "reminders": [1] }),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert!(inbox(&server, &token).await.is_empty(), "not yet due");
    server.shutdown().await;
    // The reminder falls due while nothing runs.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let server = TestServer::start_with(Config::for_database(&url)).await;
    let token = server.token_of("rep@x.cn").await;
    let items = inbox_of(&server, &token, 1).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["title"], "给王总回电话");
    server.shutdown().await;
}

#[tokio::test]
async fn a_follow_up_s_next_contact_time_becomes_one_task_for_its_owner() {
    let server = TestServer::start().await;
    let (rep_id, token) = rep(&server).await;
    let customer = server
        .post("/api/v1/customers", &token, json!({ "name": "Acme 机械" }))
        .await;
    let customer_id = customer.body["doc_id"].as_str().unwrap().to_string();
    let first = due_in(7200);
    let follow_up = server
        .post(
            "/api/v1/follow-ups",
            &token,
            json!({ "customer_doc_id": customer_id, "method": "visit", "at": Utc::now().to_rfc3339(), "next_contact_at": first }),
        )
        .await;
    assert_eq!(
        follow_up.status,
        StatusCode::CREATED,
        "{:?}",
        follow_up.body
    );
    let follow_up_id = follow_up.body["doc_id"].as_str().unwrap().to_string();

    let tasks = tasks_until(&server, &token, |items| {
        items.len() == 1 && items[0]["due_at"] == first.as_str()
    })
    .await;
    let task = &tasks[0];
    assert_eq!(task["title"], "Contact Acme 机械");
    assert_eq!(task["customer_doc_id"], customer_id.as_str());
    assert_eq!(task["assignee_id"], rep_id.as_str());
    assert_eq!(task["owner_id"], rep_id.as_str());
    let task_id = task["doc_id"].as_str().unwrap().to_string();

    // A new next contact time moves the same task.
    let later = due_in(10800);
    server
        .patch(
            &format!("/api/v1/follow-ups/{follow_up_id}"),
            &token,
            json!({ "next_contact_at": later }),
        )
        .await;
    let tasks = tasks_until(&server, &token, |items| {
        items.len() == 1 && items[0]["due_at"] == later.as_str()
    })
    .await;
    assert_eq!(tasks[0]["doc_id"], task_id.as_str(), "the same task moved");

    // Once the task is done, the follow-up no longer moves it.
    let done = server
        .patch(
            &format!("/api/v1/tasks/{task_id}"),
            &token,
            json!({ "status": "done" }),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    server
        .patch(
            &format!("/api/v1/follow-ups/{follow_up_id}"),
            &token,
            json!({ "next_contact_at": due_in(14400) }),
        )
        .await;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let admin = server.admin_token().await;
            let done = server
                .get(
                    "/api/v1/admin/jobs?queue=follow_up.next_contact&status=done",
                    &admin,
                )
                .await;
            if done.body["items"].as_array().map(Vec::len) == Some(3) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the third job ran");
    let task = server
        .get(&format!("/api/v1/tasks/{task_id}"), &token)
        .await;
    assert_eq!(task.body["status"], "done");
    assert_eq!(task.body["due_at"], later.as_str());
    let all = server.get("/api/v1/tasks?limit=50", &token).await;
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(1));
}

/// A UTC instant for a local wall-clock time in `tz`.
fn local(tz: chrono_tz::Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> chrono::DateTime<Utc> {
    use chrono::TimeZone;
    tz.with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn the_morning_digest_goes_out_once_per_user_and_local_day_even_across_a_restart() {
    use chrono_tz::America::New_York;
    use chrono_tz::Asia::Shanghai;
    use outpost::crm::digest::sweep;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("surrealkv://{}", dir.path().join("data").display());
    let server = TestServer::start_with(Config::for_database(&url)).await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    server.user(&admin, "rep@x.cn", &root, None, &[&rep]).await;
    let created = server
        .post(
            "/api/v1/users",
            &admin,
            json!({ "email": "ny@x.cn", "name": "NY", "department_id": root, "role_ids": [rep],
                    "password": PASSWORD, "time_zone": "America/New_York" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let shanghai = server.token_of("rep@x.cn").await;
    let new_york = server.token_of("ny@x.cn").await;

    // Far-future days, so the queue's own sweep (which uses the real clock) never sends these.
    let day = (2031, 3, 4);
    for (token, tz, title, hour) in [
        (&shanghai, Shanghai, "拜访客户", 10),
        (&new_york, New_York, "Call the distributor", 11),
    ] {
        let due = local(tz, day.0, day.1, day.2, hour, 30).to_rfc3339();
        let reply = create(&server, token, json!({ "title": title, "due_at": due })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    let overdue = local(Shanghai, day.0, day.1, day.2 - 1, 17, 0).to_rfc3339();
    create(
        &server,
        &shanghai,
        json!({ "title": "报价单", "due_at": overdue }),
    )
    .await;
    let event = server
        .post(
            "/api/v1/events",
            &shanghai,
            json!({ "title": "展会", "location": "深圳",
                    "starts_at": local(Shanghai, day.0, day.1, day.2, 14, 0).to_rfc3339(),
                    "ends_at": local(Shanghai, day.0, day.1, day.2, 17, 0).to_rfc3339() }),
        )
        .await;
    assert_eq!(event.status, StatusCode::CREATED, "{:?}", event.body);

    let db = server.db();
    // 07:59 in Shanghai: nobody yet.
    let sent = sweep(&db, local(Shanghai, day.0, day.1, day.2, 7, 59))
        .await
        .unwrap();
    assert_eq!(sent, 0);
    // 08:00 in Shanghai (19:00 the day before in New York): the Shanghai rep only.
    let sent = sweep(&db, local(Shanghai, day.0, day.1, day.2, 8, 0))
        .await
        .unwrap();
    assert_eq!(sent, 1);
    let digest = far_future_digests(&server, &shanghai).await;
    assert_eq!(digest.len(), 1);
    assert_eq!(digest[0]["kind"], "digest");
    assert_eq!(
        digest[0]["title"],
        "2031-03-04: 1 events, 1 tasks due, 1 overdue"
    );
    let body = digest[0]["body"].as_str().unwrap();
    assert!(
        body.contains("14:00 展会 (深圳)")
            && body.contains("10:30 拜访客户")
            && body.contains("报价单"),
        "{body}"
    );
    assert!(far_future_digests(&server, &new_york).await.is_empty());
    // Later sweeps the same morning send nothing more.
    let sent = sweep(&db, local(Shanghai, day.0, day.1, day.2, 9, 15))
        .await
        .unwrap();
    assert_eq!(sent, 0);

    // Across a restart: still once; New York's morning comes; the next day is a new digest.
    drop(db);
    server.shutdown().await;
    let server = TestServer::start_with(Config::for_database(&url)).await;
    let db = server.db();
    let shanghai = server.token_of("rep@x.cn").await;
    let new_york = server.token_of("ny@x.cn").await;
    let sent = sweep(&db, local(Shanghai, day.0, day.1, day.2, 10, 0))
        .await
        .unwrap();
    assert_eq!(sent, 0, "already sent before the restart");
    let sent = sweep(&db, local(New_York, day.0, day.1, day.2, 8, 15))
        .await
        .unwrap();
    assert_eq!(sent, 1, "New York's 08:00");
    assert_eq!(far_future_digests(&server, &new_york).await.len(), 1);
    let sent = sweep(&db, local(Shanghai, day.0, day.1, day.2 + 1, 8, 0))
        .await
        .unwrap();
    assert_eq!(
        sent, 1,
        "the next day's digest: the overdue items are still there"
    );
    assert_eq!(far_future_digests(&server, &shanghai).await.len(), 2);
    drop(db);
    server.shutdown().await;
}

#[tokio::test]
async fn reminders_follow_the_clock_when_rescheduled_and_completed() {
    use outpost::platform::clock::Clock;

    let clock = Clock::system();
    let server = TestServer::start_with_clock(Config::for_database("mem://"), clock.clone()).await;
    let (_, token) = rep(&server).await;
    let due = Utc::now() + chrono::Duration::hours(2);
    let created = create(
        &server,
        &token,
        json!({ "title": "月底对账", "due_at": due.to_rfc3339(), "reminders": [60] }),
    )
    .await;
    let doc_id = created.body["doc_id"].as_str().unwrap().to_string();

    // Planned for an hour before the due time, to the second.
    let pending = reminder_jobs(&server, "pending").await;
    assert_eq!(pending.len(), 1);
    let run_at: chrono::DateTime<Utc> = pending[0]["run_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(run_at, due - chrono::Duration::hours(1));

    // Rescheduled by an hour: a second reminder is planned; the first is now stale.
    let later = due + chrono::Duration::hours(1);
    server
        .patch(
            &format!("/api/v1/tasks/{doc_id}"),
            &token,
            json!({ "due_at": later.to_rfc3339() }),
        )
        .await;
    assert_eq!(reminder_jobs(&server, "pending").await.len(), 2);

    // 61 minutes later the stale reminder runs and says nothing.
    clock.advance(Duration::from_secs(61 * 60));
    tokio::time::timeout(Duration::from_secs(60), async {
        while reminder_jobs(&server, "done").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the stale reminder ran");
    assert!(inbox(&server, &token).await.is_empty());

    // Another hour: the reminder for the new time arrives.
    clock.advance(Duration::from_secs(60 * 60));
    let items = inbox_of(&server, &token, 1).await;
    assert_eq!(items[0]["title"], "月底对账");

    // A task completed before its reminder is not reminded.
    let second = create(
        &server,
        &token,
        json!({ "title": "寄合同", "due_at": (Utc::now() + chrono::Duration::hours(5)).to_rfc3339(), "reminders": [30] }),
    )
    .await;
    let second_id = second.body["doc_id"].as_str().unwrap();
    server
        .patch(
            &format!("/api/v1/tasks/{second_id}"),
            &token,
            json!({ "status": "done" }),
        )
        .await;
    clock.advance(Duration::from_secs(3 * 60 * 60));
    tokio::time::timeout(Duration::from_secs(60), async {
        while reminder_jobs(&server, "done").await.len() < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the completed task's reminder ran");
    assert_eq!(inbox(&server, &token).await.len(), 1, "still only the one");
}
