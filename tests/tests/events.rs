//! Calendar events: invited colleagues see and answer them, managers see their team's calendars,
//! private events show as busy time, calendars can be shared, and phones sync what they may see.

use chrono::Utc;
use outpost_mobile::DocumentId;
use outpost_mobile::device::Device;
use outpost_mobile::records::event::Event;
use outpost_tests::{PASSWORD, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn at(hours: i64) -> String {
    (Utc::now() + chrono::Duration::hours(hours)).to_rfc3339()
}

async fn events(server: &TestServer, token: &str) -> Vec<Value> {
    let reply = server.get("/api/v1/events?limit=50", token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn invited_colleagues_answer_managers_see_their_team_and_private_time_is_busy() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let sales = server.department(&admin, "Sales", &root).await;
    let support = server.department(&admin, "Support", &root).await;
    let (rep, manager) = (
        server.role(&admin, "rep").await,
        server.role(&admin, "manager").await,
    );
    let boss_id = server
        .user(&admin, "boss@x.cn", &sales, None, &[&manager])
        .await;
    server
        .user(&admin, "a@x.cn", &sales, Some(&boss_id), &[&rep])
        .await;
    let b_id = server.user(&admin, "b@x.cn", &support, None, &[&rep]).await;
    let c_id = server.user(&admin, "c@x.cn", &support, None, &[&rep]).await;
    let [boss, a, b, c] = [
        server.token_of("boss@x.cn").await,
        server.token_of("a@x.cn").await,
        server.token_of("b@x.cn").await,
        server.token_of("c@x.cn").await,
    ];

    let created = server
        .post(
            "/api/v1/events",
            &a,
            json!({ "title": "拜访华东经销商", "starts_at": at(24), "ends_at": at(26),
                    "location": "上海", "attendee_ids": [b_id] }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["attendees"][0]["response"], "invited");
    let doc_id = created.body["doc_id"].as_str().unwrap().to_string();

    // The invitee sees it, cannot change it, and answers it.
    let seen = events(&server, &b).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["editable"], false);
    let changed = server
        .patch(
            &format!("/api/v1/events/{doc_id}"),
            &b,
            json!({ "title": "mine now" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::FORBIDDEN, "{:?}", changed.body);
    let accepted = server
        .post(&format!("/api/v1/events/{doc_id}/accept"), &b, json!({}))
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{:?}", accepted.body);
    assert_eq!(accepted.body["attendees"][0]["response"], "accepted");
    let declined = server
        .post(&format!("/api/v1/events/{doc_id}/decline"), &b, json!({}))
        .await;
    assert_eq!(declined.body["attendees"][0]["response"], "declined");

    // Someone neither invited nor in the organizer's scope sees nothing and cannot answer.
    assert!(events(&server, &c).await.is_empty());
    let foreign = server.get(&format!("/api/v1/events/{doc_id}"), &c).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    let gate_crash = server
        .post(&format!("/api/v1/events/{doc_id}/accept"), &c, json!({}))
        .await;
    assert_eq!(gate_crash.status, StatusCode::NOT_FOUND);

    // The manager sees the subordinate's calendar; a private event is busy time to them.
    let private = server
        .post(
            "/api/v1/events",
            &a,
            json!({ "title": "体检", "starts_at": at(48), "ends_at": at(49), "visibility": "private" }),
        )
        .await;
    assert_eq!(private.status, StatusCode::CREATED, "{:?}", private.body);
    let team = events(&server, &boss).await;
    assert_eq!(team.len(), 2);
    let busy = team.iter().find(|e| e["visibility"] == "private").unwrap();
    assert_eq!(busy["title"], "Busy");
    assert!(busy["location"].is_null());
    let own = events(&server, &a).await;
    assert!(
        own.iter().any(|e| e["title"] == "体检"),
        "the organizer sees it all"
    );

    // Sharing a calendar lets a colleague see it, until it is unshared.
    let shared = server
        .post(
            "/api/v1/calendar/shares",
            &a,
            json!({ "with_user_id": c_id }),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "{:?}", shared.body);
    assert_eq!(events(&server, &c).await.len(), 2);
    let unshared = server
        .delete(&format!("/api/v1/calendar/shares/{c_id}"), &a)
        .await;
    assert_eq!(unshared.status, StatusCode::NO_CONTENT);
    assert!(events(&server, &c).await.is_empty());

    // Bad input changes nothing.
    let backwards = server
        .post(
            "/api/v1/events",
            &a,
            json!({ "title": "x", "starts_at": at(5), "ends_at": at(4) }),
        )
        .await;
    assert_eq!(backwards.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(backwards.body["errors"][0]["field"], "ends_at");
    let ghost = server
        .post(
            "/api/v1/events",
            &a,
            json!({ "title": "x", "starts_at": at(5), "ends_at": at(6),
                    "attendee_ids": [outpost::platform::ids::new_key()] }),
        )
        .await;
    assert_eq!(ghost.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(events(&server, &a).await.len(), 2);
}

#[tokio::test]
async fn an_invitee_s_phone_syncs_the_event_but_cannot_change_it() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    server.user(&admin, "host@x.cn", &root, None, &[&rep]).await;
    let guest_id = server
        .user(&admin, "guest@x.cn", &root, None, &[&rep])
        .await;
    let host = server.token_of("host@x.cn").await;
    let created = server
        .post(
            "/api/v1/events",
            &host,
            json!({ "title": "Trade fair", "starts_at": at(72), "ends_at": at(80),
                    "attendee_ids": [guest_id] }),
        )
        .await;
    let doc_id = DocumentId::parse(created.body["doc_id"].as_str().unwrap()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut phone = Device::open(dir.path(), &server.base).unwrap();
    phone
        .login("guest@x.cn", PASSWORD, "guest phone", "ios")
        .await
        .unwrap();
    let report = phone.sync().await.unwrap();
    assert_eq!(report.added, vec![doc_id.clone()], "{report:?}");
    let event: Event = phone.get(&doc_id).unwrap();
    assert_eq!(event.title, "Trade fair");

    // The guest's phone renames it offline; the server undoes that on sync.
    phone
        .update::<Event>(&doc_id, |e| e.title = "My fair".into())
        .unwrap();
    phone.sync().await.unwrap();
    phone.sync().await.unwrap();
    assert_eq!(phone.get::<Event>(&doc_id).unwrap().title, "Trade fair");
    let on_server = server.get(&format!("/api/v1/events/{doc_id}"), &host).await;
    assert_eq!(on_server.body["title"], "Trade fair");
}

#[tokio::test]
async fn an_event_reminder_reaches_the_organizer_and_every_attendee_who_has_not_declined() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    server.user(&admin, "host@x.cn", &root, None, &[&rep]).await;
    let yes_id = server.user(&admin, "yes@x.cn", &root, None, &[&rep]).await;
    let no_id = server.user(&admin, "no@x.cn", &root, None, &[&rep]).await;
    let [host, yes, no] = [
        server.token_of("host@x.cn").await,
        server.token_of("yes@x.cn").await,
        server.token_of("no@x.cn").await,
    ];
    // Starts in 66 s, reminder 1 min before: the reminder is due in about 6 s.
    let starts = (Utc::now() + chrono::Duration::seconds(66)).to_rfc3339();
    let ends = (Utc::now() + chrono::Duration::seconds(3666)).to_rfc3339();
    let created = server
        .post(
            "/api/v1/events",
            &host,
            json!({ "title": "Kick-off", "starts_at": starts, "ends_at": ends,
                    "attendee_ids": [yes_id, no_id], "reminders": [1] }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let doc_id = created.body["doc_id"].as_str().unwrap();
    server
        .post(&format!("/api/v1/events/{doc_id}/accept"), &yes, json!({}))
        .await;
    server
        .post(&format!("/api/v1/events/{doc_id}/decline"), &no, json!({}))
        .await;

    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let done = server
                .get(
                    "/api/v1/admin/jobs?queue=event.reminder&status=done",
                    &admin,
                )
                .await;
            if done.body["items"].as_array().map(Vec::len) == Some(1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the reminder ran");
    for (token, expected) in [(&host, 1), (&yes, 1), (&no, 0)] {
        let items = server.notifications(token, "").await;
        assert_eq!(items.len(), expected, "{items:?}");
        if expected == 1 {
            assert_eq!(items[0]["kind"], "event.reminder");
            assert_eq!(items[0]["title"], "Kick-off");
        }
    }
}
