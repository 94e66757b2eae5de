//! The public pool: claim, assign, release and transfer as commands; caps, cool-down and the
//! daily claim limit; the return sweep at its boundaries with a controllable clock; offline
//! phones that claim or lose a customer.

use std::time::Duration;

use outpost::config::Config;
use outpost::platform::clock::Clock;
use outpost_mobile::device::Device;
use outpost_mobile::records::customer::Customer;
use outpost_sync::DocumentId;
use outpost_tests::{PASSWORD, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Floor {
    server: TestServer,
    admin: String,
    clock: Clock,
    pool: String,
    manager: String,
    rep_a: String,
    rep_b: String,
    a: String,
    b: String,
}

/// A sales floor: a manager over two reps, and a pool whose members are the sales department.
async fn floor(rules: Value, grace_hours: u32) -> Floor {
    let clock = Clock::system();
    let server = TestServer::start_with_clock(Config::for_database("mem://"), clock.clone()).await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let sales = server.department(&admin, "Sales", &root).await;
    let rep = server.role(&admin, "rep").await;
    let manager_role = server.role(&admin, "manager").await;
    let manager_id = server
        .user(&admin, "boss@x.cn", &sales, None, &[&manager_role])
        .await;
    let a = server
        .user(&admin, "a@x.cn", &sales, Some(&manager_id), &[&rep])
        .await;
    let b = server
        .user(&admin, "b@x.cn", &sales, Some(&manager_id), &[&rep])
        .await;
    let pool = server
        .post(
            "/api/v1/pools",
            &admin,
            json!({ "name": "华东公海", "member_department_ids": [sales], "grace_hours": grace_hours, "rules": rules }),
        )
        .await;
    assert_eq!(pool.status, StatusCode::CREATED, "{:?}", pool.body);
    Floor {
        manager: server.token_of("boss@x.cn").await,
        rep_a: server.token_of("a@x.cn").await,
        rep_b: server.token_of("b@x.cn").await,
        pool: pool.body["id"].as_str().unwrap().to_string(),
        server,
        admin,
        clock,
        a,
        b,
    }
}

impl Floor {
    /// A customer in the pool (created by the admin, then released to the pool).
    async fn pooled(&self, name: &str, level: &str) -> String {
        self.pooled_at(name, Some(level)).await
    }

    /// A customer in the pool at `level`, or without one.
    async fn pooled_at(&self, name: &str, level: Option<&str>) -> String {
        self.pooled_in(&self.pool, name, level).await
    }

    /// A customer in `pool` (created by the admin, then released to it).
    async fn pooled_in(&self, pool: &str, name: &str, level: Option<&str>) -> String {
        let created = self
            .server
            .post(
                "/api/v1/customers",
                &self.admin,
                json!({ "name": name, "level": level, "pool_id": pool, "phones": ["13800000000"], "confirm_duplicate": true }),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let doc = created.body["doc_id"].as_str().unwrap().to_string();
        let released = self
            .release(&self.admin, &doc, "new lead for the pool")
            .await;
        assert_eq!(released.status, StatusCode::OK, "{:?}", released.body);
        assert_eq!(released.body["state"], "pool");
        doc
    }

    async fn release(&self, token: &str, doc: &str, reason: &str) -> outpost_tests::Reply {
        self.server
            .post(
                &format!("/api/v1/customers/{doc}/release"),
                token,
                json!({ "reason": reason }),
            )
            .await
    }

    async fn claim(&self, token: &str, doc: &str) -> outpost_tests::Reply {
        self.server
            .post(&format!("/api/v1/customers/{doc}/claim"), token, json!({}))
            .await
    }

    async fn sweep(&self) -> Value {
        let reply = self
            .server
            .post("/api/v1/pools/sweep", &self.admin, json!({}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body
    }

    /// Sweeps once and expects `n` returns, then again and expects none.
    async fn sweep_returns(&self, n: usize) {
        let report = self.sweep().await;
        assert_eq!(report["returned"], n, "{report:?}");
        assert_eq!(
            self.sweep().await["returned"],
            0,
            "a second sweep finds nothing"
        );
    }

    /// The items of the pool's `pool.return` audit entries (a sweep's returns), each with its
    /// entry, read page by page.
    async fn pool_returns(&self) -> Vec<(Value, Value)> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!(
                "/api/v1/audit?target_kind=pool&target_id={}&action=pool.return&limit=10",
                self.pool
            );
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = self.server.get(&url, &self.admin).await;
            assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
            for entry in page.body["items"].as_array().unwrap() {
                assert_eq!(entry["action"], "pool.return", "{entry:?}");
                for item in entry["summary"]["items"].as_array().unwrap() {
                    out.push((entry.clone(), item.clone()));
                }
            }
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return out,
            }
        }
    }

    /// The customers in the pool, as `token` lists them.
    async fn in_pool(&self, token: &str) -> Vec<Value> {
        let reply = self
            .server
            .get(
                &format!(
                    "/api/v1/customers?pool_id={}&state=pool&limit=100",
                    self.pool
                ),
                token,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body["items"].as_array().unwrap().clone()
    }

    async fn history(&self, doc: &str) -> Vec<String> {
        let view = self
            .server
            .get(&format!("/api/v1/customers/{doc}/360"), &self.admin)
            .await;
        assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
        view.body["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["action"].as_str().unwrap().to_string())
            .collect()
    }
}

#[tokio::test]
async fn claim_release_assign_and_transfer_are_recorded_and_refused_when_they_should_be() {
    let f = floor(json!({ "*": { "cooldown_days": 7 } }), 24).await;
    let doc = f.pooled("东方机械", "B").await;

    // A pool customer is outside every rep's scope, but pool members see it (masked) and list
    // the pool.
    let seen = f
        .server
        .get(&format!("/api/v1/customers/{doc}"), &f.rep_a)
        .await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.body["phones_masked"], true);
    assert!(
        f.server.get("/api/v1/customers", &f.rep_a).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "not among the rep's own customers"
    );
    let listed = f
        .server
        .get(
            &format!("/api/v1/customers?pool_id={}&state=pool", f.pool),
            &f.rep_a,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    assert_eq!(listed.body["items"][0]["doc_id"], doc.as_str());
    assert_eq!(
        listed.body["items"][0]["phones"][0], "138****0000",
        "a non-owner sees the phone masked"
    );

    let claimed = f.claim(&f.rep_a, &doc).await;
    assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
    assert_eq!(claimed.body["owner_id"], f.a.as_str());
    assert_eq!(
        claimed.body["phones"][0], "13800000000",
        "the owner sees it whole"
    );
    // Claiming one's own customer again changes nothing.
    assert_eq!(f.claim(&f.rep_a, &doc).await.status, StatusCode::OK);

    let lost = f.claim(&f.rep_b, &doc).await;
    assert_eq!(lost.status, StatusCode::CONFLICT);
    assert_eq!(lost.problem(), "already-owned");
    assert_eq!(lost.body["owner_id"], f.a.as_str());

    // Release needs a reason; then the cool-down keeps A from claiming it straight back.
    let no_reason = f.release(&f.rep_a, &doc, " ").await;
    assert_eq!(no_reason.status, StatusCode::UNPROCESSABLE_ENTITY);
    let released = f
        .release(&f.rep_a, &doc, "budget frozen until next year")
        .await;
    assert_eq!(released.status, StatusCode::OK, "{:?}", released.body);
    let back = f.claim(&f.rep_a, &doc).await;
    assert_eq!(back.status, StatusCode::CONFLICT);
    assert_eq!(back.problem(), "pool-rule", "{:?}", back.body);
    f.clock.advance(Duration::from_secs(7 * 86_400 + 60));
    // B may claim meanwhile; the manager transfers it to A and assigns it back to B.
    assert_eq!(f.claim(&f.rep_b, &doc).await.status, StatusCode::OK);
    let rep_transfer = f
        .server
        .post(
            &format!("/api/v1/customers/{doc}/transfer"),
            &f.rep_b,
            json!({ "user_id": f.a }),
        )
        .await;
    assert_eq!(
        rep_transfer.status,
        StatusCode::FORBIDDEN,
        "reps cannot transfer"
    );
    let transferred = f
        .server
        .post(
            &format!("/api/v1/customers/{doc}/transfer"),
            &f.manager,
            json!({ "user_id": f.a, "reason": "A covers that district" }),
        )
        .await;
    assert_eq!(transferred.status, StatusCode::OK, "{:?}", transferred.body);
    assert_eq!(transferred.body["owner_id"], f.a.as_str());
    let outsider = f
        .server
        .post(
            &format!("/api/v1/customers/{doc}/assign"),
            &f.manager,
            json!({ "user_id": "0192f0c1-0000-7000-8000-000000000000" }),
        )
        .await;
    assert_eq!(outsider.status, StatusCode::UNPROCESSABLE_ENTITY);

    let history = f.history(&doc).await;
    assert_eq!(
        history,
        ["transfer", "claim", "release", "claim", "release"],
        "newest first"
    );
    let audit = f
        .server
        .get("/api/v1/audit?action=customer.claim", &f.admin)
        .await;
    assert_eq!(audit.status, StatusCode::OK, "{:?}", audit.body);
    assert_eq!(audit.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn fifty_concurrent_claims_have_exactly_one_winner() {
    let f = floor(json!({}), 24).await;
    let silly = f
        .server
        .patch(
            &format!("/api/v1/pools/{}", f.pool),
            &f.admin,
            json!({ "rules": { "A": { "return_without_follow_up_days": 4_000_000_000u64 } } }),
        )
        .await;
    assert_eq!(
        silly.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        silly.body
    );
    let root = f.server.root_department(&f.admin).await;
    let sales: String = f
        .server
        .get(&format!("/api/v1/pools/{}", f.pool), &f.admin)
        .await
        .body["member_department_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(root, sales);
    let rep = f.server.role(&f.admin, "rep").await;
    let mut tokens = Vec::new();
    for i in 0..50 {
        let email = format!("claimer{i}@x.cn");
        f.server.user(&f.admin, &email, &sales, None, &[&rep]).await;
        tokens.push(f.server.token_of(&email).await);
    }
    let doc = f.pooled("抢手客户", "A").await;
    let claims = tokens.iter().map(|t| f.claim(t, &doc));
    let replies = futures_util::future::join_all(claims).await;
    let winners: Vec<&outpost_tests::Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let winner = winners[0].body["owner_id"].clone();
    for reply in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
        assert_eq!(reply.body["owner_id"], winner);
    }
    assert_eq!(
        f.history(&doc)
            .await
            .iter()
            .filter(|a| *a == "claim")
            .count(),
        1
    );
}

/// Edits a customer through `node`; the edit must succeed.
async fn patch(node: &TestServer, token: &str, doc: &str, body: Value) -> Value {
    let reply = node
        .patch(&format!("/api/v1/customers/{doc}"), token, body)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

/// How many of its own changes `node` made again on a reloaded document, because another node
/// had changed the document since `node` loaded it.
async fn changes_redone(node: &TestServer, admin: &str) -> u64 {
    let stats = node.get("/api/v1/admin/sync", admin).await;
    assert_eq!(stats.status, StatusCode::OK, "{:?}", stats.body);
    stats.body["changes_redone"].as_u64().unwrap()
}

#[tokio::test]
async fn two_nodes_on_one_store_decide_on_the_latest_version_of_a_customer() {
    let f = floor(json!({}), 24).await;
    let node_b = f.server.another_node(Config::for_database("mem://")).await;

    // A pooled customer that only node B has loaded.
    let created = node_b
        .post(
            "/api/v1/customers",
            &f.admin,
            json!({ "name": "两地客户", "level": "A", "pool_id": f.pool }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let doc = created.body["doc_id"].as_str().unwrap().to_string();
    let command = |node: &TestServer, token: &str, action: &str| {
        let (node, token, path) = (
            node.base.clone(),
            token.to_string(),
            format!("/api/v1/customers/{doc}/{action}"),
        );
        async move {
            let reply = reqwest::Client::new()
                .post(format!("{node}{path}"))
                .bearer_auth(token)
                .json(&json!({ "reason": "test" }))
                .send()
                .await
                .unwrap();
            (reply.status(), reply.json::<Value>().await.unwrap())
        }
    };
    let (status, _) = command(&node_b, &f.admin, "release").await;
    assert_eq!(status, StatusCode::OK);

    // A claims; B still holds the pooled version. Its claim is made on that version, the
    // store refuses it, and B decides again on the stored one: the customer is taken.
    let (status, won) = command(&f.server, &f.rep_a, "claim").await;
    assert_eq!(status, StatusCode::OK, "{won:?}");
    let (status, lost) = command(&node_b, &f.rep_b, "claim").await;
    assert_eq!(status, StatusCode::CONFLICT, "{lost:?}");
    assert_eq!(lost["owner_id"], f.a);
    assert_eq!(
        (
            changes_redone(&f.server, &f.admin).await,
            changes_redone(&node_b, &f.admin).await
        ),
        (0, 1)
    );

    // A releases it; B holds a's ownership. A refusal made on that version would be wrong, so
    // B checks the stored version before refusing, and the claim succeeds.
    let (status, _) = command(&f.server, &f.rep_a, "release").await;
    assert_eq!(status, StatusCode::OK);
    let (status, won) = command(&node_b, &f.rep_b, "claim").await;
    assert_eq!(status, StatusCode::OK, "{won:?}");
    assert_eq!(won["owner_id"], f.b);
    assert_eq!(changes_redone(&node_b, &f.admin).await, 2);

    // Edits on an out-of-date copy keep what the other node wrote, in the document and in
    // the projection that lists and search read.
    let edited = patch(&f.server, &f.admin, &doc, json!({ "industry": "Retail" })).await;
    assert_eq!(edited["owner_id"], f.b, "{edited:?}");
    let both = patch(&node_b, &f.admin, &doc, json!({ "level": "B" })).await;
    assert_eq!(
        (&both["industry"], &both["level"], &both["owner_id"]),
        (&json!("Retail"), &json!("B"), &json!(f.b))
    );
    let seen_on_a = f
        .server
        .get(&format!("/api/v1/customers/{doc}"), &f.admin)
        .await;
    assert_eq!(
        (&seen_on_a.body["industry"], &seen_on_a.body["level"]),
        (&json!("Retail"), &json!("B"))
    );
    assert_eq!(
        (
            changes_redone(&f.server, &f.admin).await,
            changes_redone(&node_b, &f.admin).await
        ),
        (1, 3)
    );
    assert_eq!(
        f.history(&doc).await,
        ["claim", "release", "claim", "release"]
    );

    // Claims racing on both nodes: one winner.
    let contested = f.pooled("两地抢手客户", "A").await;
    let path = format!("/api/v1/customers/{contested}/claim");
    let (on_a, on_b) = tokio::join!(
        f.server.post(&path, &f.rep_a, json!({})),
        node_b.post(&path, &f.rep_b, json!({}))
    );
    let mut statuses = [on_a.status, on_b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{on_a:?} {on_b:?}"
    );
    let claims = f
        .history(&contested)
        .await
        .into_iter()
        .filter(|a| a == "claim")
        .count();
    assert_eq!(claims, 1);
    node_b.shutdown().await;
}

#[tokio::test]
async fn a_pools_admins_edit_its_customers_and_members_only_browse_them() {
    let f = floor(json!({}), 24).await;
    let doc = f.pooled("公海待整理客户", "A").await;
    let path = format!("/api/v1/customers/{doc}");

    // An admin who configures the pool corrects the customer's data; it stays in the pool.
    let fixed = f
        .server
        .patch(
            &path,
            &f.admin,
            json!({ "name": "公海已整理客户", "industry": "Retail" }),
        )
        .await;
    assert_eq!(fixed.status, StatusCode::OK, "{:?}", fixed.body);
    assert_eq!(
        (&fixed.body["name"], &fixed.body["state"]),
        (&json!("公海已整理客户"), &json!("pool"))
    );

    // A member reads it but may not change it; nothing changes.
    assert_eq!(f.server.get(&path, &f.rep_a).await.status, StatusCode::OK);
    let refused = f
        .server
        .patch(&path, &f.rep_a, json!({ "name": "Mine now" }))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    assert_eq!(
        f.server.get(&path, &f.admin).await.body["name"],
        "公海已整理客户"
    );

    // Once claimed, the owner edits it, and the pool's admin (whose scope is everything) too.
    assert_eq!(f.claim(&f.rep_a, &doc).await.status, StatusCode::OK);
    let own = f
        .server
        .patch(&path, &f.rep_a, json!({ "industry": "Logistics" }))
        .await;
    assert_eq!(own.status, StatusCode::OK, "{:?}", own.body);
    assert_eq!(own.body["industry"], "Logistics");
    assert_eq!(
        f.server
            .patch(&path, &f.rep_b, json!({ "industry": "Nope" }))
            .await
            .status,
        StatusCode::NOT_FOUND,
        "another rep no longer sees it"
    );
}

#[tokio::test]
async fn the_owned_cap_and_the_daily_claim_limit_refuse_at_their_boundary() {
    let f = floor(
        json!({ "A": { "max_owned": 2 }, "*": { "max_claims_per_day": 2, "max_owned": 10 } }),
        24,
    )
    .await;
    let a1 = f.pooled("A1", "A").await;
    let a2 = f.pooled("A2", "A").await;
    let a3 = f.pooled("A3", "A").await;
    assert_eq!(f.claim(&f.rep_a, &a1).await.status, StatusCode::OK);
    assert_eq!(f.claim(&f.rep_a, &a2).await.status, StatusCode::OK);
    let capped = f.claim(&f.rep_a, &a3).await;
    assert_eq!(capped.status, StatusCode::CONFLICT);
    assert_eq!(capped.problem(), "pool-rule");
    // An assignment over the cap is refused too; the cap frees up when one goes back.
    let assigned = f
        .server
        .post(
            &format!("/api/v1/customers/{a3}/assign"),
            &f.manager,
            json!({ "user_id": f.a }),
        )
        .await;
    assert_eq!(assigned.problem(), "pool-rule", "{:?}", assigned.body);

    let c1 = f.pooled("C1", "C").await;
    let c2 = f.pooled("C2", "C").await;
    let c3 = f.pooled("C3", "C").await;
    assert_eq!(f.claim(&f.rep_b, &c1).await.status, StatusCode::OK);
    assert_eq!(f.claim(&f.rep_b, &c2).await.status, StatusCode::OK);
    let limited = f.claim(&f.rep_b, &c3).await;
    assert_eq!(limited.status, StatusCode::CONFLICT);
    assert!(limited.body["detail"].as_str().unwrap().contains("today"));
    // The next local day, B may claim again.
    f.clock.advance(Duration::from_secs(86_400));
    assert_eq!(f.claim(&f.rep_b, &c3).await.status, StatusCode::OK);
}

#[tokio::test]
async fn customers_return_at_the_deadline_plus_grace_and_offline_follow_ups_count_when_made() {
    let f = floor(
        json!({ "*": { "return_without_follow_up_days": 3, "warn_days_before": 1 } }),
        24,
    )
    .await;
    let quiet = f.pooled("无人跟进", "B").await;
    let busy = f.pooled("常去拜访", "B").await;
    assert_eq!(f.claim(&f.rep_a, &quiet).await.status, StatusCode::OK);
    assert_eq!(f.claim(&f.rep_a, &busy).await.status, StatusCode::OK);
    let claimed_at = f.clock.now();

    // The day before the deadline: a warning, no return.
    f.clock.advance(Duration::from_secs(2 * 86_400 + 60));
    let report = f.sweep().await;
    assert_eq!(report["returned"], 0);
    assert_eq!(report["warned"], 2);
    assert_eq!(f.sweep().await["warned"], 0, "each warning goes out once");
    let inbox = f.server.get("/api/v1/notifications", &f.rep_a).await;
    assert!(
        inbox.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "pool.return_warning"),
        "{:?}",
        inbox.body
    );

    // Past the deadline but within the grace period: nothing returns yet. Then a follow-up
    // made offline before the deadline arrives and counts from when it was made.
    f.clock.advance(Duration::from_secs(86_400 + 3600));
    assert_eq!(f.sweep().await["returned"], 0);
    let made = claimed_at + chrono::Duration::days(2);
    let visit = f
        .server
        .post(
            "/api/v1/follow-ups",
            &f.rep_a,
            json!({ "customer_doc_id": busy, "method": "visit", "at": made.to_rfc3339(), "content": "地下室没信号" }),
        )
        .await;
    assert_eq!(visit.status, StatusCode::CREATED, "{:?}", visit.body);

    // The preview for the day the quiet one returns (deadline + grace, in the rep's time zone)
    // lists it, and not the busy one.
    let today = (claimed_at + chrono::Duration::days(4))
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let preview = f
        .server
        .get(
            &format!("/api/v1/pools/{}/returns/preview?date={today}", f.pool),
            &f.rep_a,
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    let names: Vec<&str> = preview
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["无人跟进"]);
    assert_eq!(preview.body[0]["reason"], "no follow-up for 3 days");

    // The day after the deadline plus grace: the quiet one returns, the busy one stays.
    f.clock.advance(Duration::from_secs(86_400));
    f.sweep_returns(1).await;
    let pooled = f.in_pool(&f.rep_b).await;
    let names: Vec<&str> = pooled.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["无人跟进"]);
    assert_eq!(f.history(&quiet).await[0], "return");
    // The return is audited once, by the sweep, in the pool's `pool.return` entry that
    // lists what it returned (one entry per group commit).
    let returns = f.pool_returns().await;
    assert_eq!(returns.len(), 1, "{returns:?}");
    let (entry, item) = &returns[0];
    assert_eq!(entry["channel"], "job");
    assert_eq!(entry["actor_id"], "system");
    assert_eq!(item["customer_id"], quiet.as_str());
    assert_eq!(item["reason"], "no follow-up for 3 days");
    assert_eq!(item["from_owner"], f.a.as_str());
    assert!(
        item["heads"].as_array().is_some_and(|h| !h.is_empty()),
        "{item:?}"
    );
    let audit = f
        .server
        .get(&format!("/api/v1/audit?target_id={quiet}"), &f.admin)
        .await;
    assert_eq!(audit.status, StatusCode::OK, "{:?}", audit.body);
    let entries = audit.body["items"].as_array().unwrap();
    // A change of hands keeps the search terms (reused, not derived again): pinyin
    // initials and a phone still find it in the pool.
    for q in ["wrgj", "wurengen", "13800000000"] {
        let query = format!("pool_id={}&state=pool&q={q}", f.pool);
        let names = crate::customer_search::names(&f.server, &f.rep_b, &query).await;
        assert_eq!(names, ["无人跟进"], "searching {q}");
    }
    let count = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("customer.return"), 0, "{entries:?}");
    assert_eq!(count("customer.claim"), 1, "{entries:?}");
    assert_eq!(
        count("customer.update"),
        0,
        "changes of hands are not also generic updates: {entries:?}"
    );
    let mine = f.server.get("/api/v1/customers", &f.rep_a).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
}

/// A level with rules of its own follows them, not the pool's `*` rules, which cover every
/// other level and customers without one.
#[tokio::test]
async fn each_level_returns_under_its_own_rules_and_the_rest_under_the_pools_default() {
    let f = floor(
        json!({ "C": { "return_without_follow_up_days": 10 }, "*": { "return_without_follow_up_days": 3 } }),
        0,
    )
    .await;
    let c = f.pooled("慢慢跟的C类", "C").await;
    let b = f.pooled("普通B类", "B").await;
    let unrated = f.pooled_at("未分级客户", None).await;
    for doc in [&c, &b, &unrated] {
        assert_eq!(f.claim(&f.rep_a, doc).await.status, StatusCode::OK);
    }
    let pooled_names = |items: Vec<Value>| {
        let mut names: Vec<String> = items
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };

    // A day before the default deadline: nothing.
    f.clock.advance(Duration::from_secs(2 * 86_400));
    f.sweep_returns(0).await;
    // The default deadline: the B and the unrated customer go back, the C customer stays.
    f.clock.advance(Duration::from_secs(86_400 + 60));
    f.sweep_returns(2).await;
    assert_eq!(
        pooled_names(f.in_pool(&f.rep_b).await),
        ["普通B类", "未分级客户"]
    );
    // The C rule's own deadline, ten days after the claim.
    f.clock.advance(Duration::from_secs(6 * 86_400));
    f.sweep_returns(0).await;
    f.clock.advance(Duration::from_secs(86_400));
    f.sweep_returns(1).await;
    assert_eq!(
        pooled_names(f.in_pool(&f.rep_b).await),
        ["慢慢跟的C类", "普通B类", "未分级客户"]
    );
}

#[tokio::test]
async fn a_sweep_larger_than_one_lookup_returns_every_due_customer_whole() {
    use base64::Engine;
    let f = floor(json!({ "*": { "return_without_follow_up_days": 3 } }), 0).await;
    // 75 customers of rep A: more than the sweep loads with one chunk lookup (32).
    let mut csv = String::from("name,phones,level\n");
    for i in 0..75 {
        csv.push_str(&format!("批量客户{i:03},1391234{i:04},B\n"));
    }
    let dry = f
        .server
        .post(
            "/api/v1/customers/imports",
            &f.rep_a,
            json!({ "format": "csv", "content_base64": base64::engine::general_purpose::STANDARD.encode(&csv), "pool_id": f.pool }),
        )
        .await;
    assert_eq!(dry.status, StatusCode::CREATED, "{:?}", dry.body);
    assert_eq!(dry.body["importable_rows"], 75, "{:?}", dry.body);
    let commit = f
        .server
        .post(
            &format!(
                "/api/v1/customers/imports/{}/commit",
                dry.body["import_id"].as_str().unwrap()
            ),
            &f.rep_a,
            json!({}),
        )
        .await;
    assert_eq!(commit.status, StatusCode::OK, "{:?}", commit.body);
    assert_eq!(commit.body["created"], 75);
    // Every fifth one is edited after the import, so its document is stored in two chunks,
    // and on another node: the copy this node loaded at the import is out of date, so each of
    // their returns fails the store's version check, fails the group commit it is part of, and
    // is made again on the stored document while the rest of its group commits alone.
    let node_b = f.server.another_node(Config::for_database("mem://")).await;
    let mine = f.server.get("/api/v1/customers?limit=100", &f.rep_a).await;
    let docs: Vec<String> = mine.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["doc_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(docs.len(), 75);
    let edited: Vec<(String, String)> = docs
        .iter()
        .step_by(5)
        .enumerate()
        .map(|(n, doc)| (doc.clone(), format!("第{n}次拜访前的备注")))
        .collect();
    for (doc, notes) in &edited {
        patch(&node_b, &f.rep_a, doc, json!({ "notes": notes })).await;
    }

    f.clock.advance(Duration::from_secs(4 * 86_400));
    let before = f.server.get("/api/v1/admin/sync", &f.admin).await.body;
    f.sweep_returns(75).await;
    assert_eq!(
        changes_redone(&f.server, &f.admin).await,
        edited.len() as u64
    );
    // The store's counters: 75 returns committed, plus the refused first attempts of those
    // made on stale copies, in group commits of one or more (a failed group is run again one
    // commit at a time).
    let after = f.server.get("/api/v1/admin/sync", &f.admin).await.body;
    let delta = |field: &str| after[field].as_u64().unwrap() - before[field].as_u64().unwrap();
    let (groups, commits, retried) = (
        delta("group_commits"),
        delta("document_commits"),
        delta("group_commits_retried_singly"),
    );
    assert!(
        commits >= 75 + edited.len() as u64,
        "each return and each refused attempt is answered: {commits}"
    );
    assert!(
        groups >= 1 && groups <= commits + retried,
        "{groups} groups, {commits} commits, {retried} retried"
    );
    assert!(after["document_commit_wait_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(f.in_pool(&f.rep_b).await.len(), 75);
    // Each returned document was loaded whole: the edit in its second chunk survived the
    // return, which was made on top of it.
    for (doc, notes) in &edited {
        let customer = f
            .server
            .get(&format!("/api/v1/customers/{doc}"), &f.rep_b)
            .await;
        assert_eq!(customer.status, StatusCode::OK, "{:?}", customer.body);
        assert_eq!(customer.body["state"], "pool");
        assert_eq!(
            customer.body["notes"],
            notes.as_str(),
            "{:?}",
            customer.body
        );
        assert_eq!(f.history(doc).await[0], "return");
    }
    // Every return is in exactly one of the pool's `pool.return` entries, those of the groups
    // that failed included.
    let returns = f.pool_returns().await;
    let mut audited: Vec<&str> = returns
        .iter()
        .map(|(_, item)| item["customer_id"].as_str().unwrap())
        .collect();
    audited.sort();
    let mut expected: Vec<&str> = docs.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(audited, expected);
    let entries: std::collections::HashSet<&str> = returns
        .iter()
        .map(|(entry, _)| entry["id"].as_str().unwrap())
        .collect();
    for (entry, _) in &returns {
        assert_eq!(entry["actor_id"], "system");
        let listed = entry["summary"]["items"].as_array().unwrap().len();
        assert_eq!(entry["summary"]["count"], listed, "{entry:?}");
    }
    assert!(entries.len() <= 75, "{} entries", entries.len());
    assert!(
        f.server.get("/api/v1/customers", &f.rep_a).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "rep A keeps none of them"
    );
}

#[tokio::test]
async fn an_offline_claim_replayed_after_someone_else_won_is_told_who_won() {
    let f = floor(json!({}), 24).await;
    let doc = f.pooled("两人都想要", "A").await;
    let dir = tempfile::tempdir().unwrap();
    let mut phone = Device::open(dir.path(), &f.server.base).unwrap();
    phone
        .login("a@x.cn", PASSWORD, "a's phone", "android")
        .await
        .unwrap();
    drop(phone);

    // Offline, A queues a claim; meanwhile B claims online.
    let mut offline = Device::open(dir.path(), "http://127.0.0.1:9").unwrap();
    offline
        .enqueue(&format!("/api/v1/customers/{doc}/claim"), json!({}))
        .unwrap();
    assert!(offline.sync().await.is_err());
    drop(offline);
    assert_eq!(f.claim(&f.rep_b, &doc).await.status, StatusCode::OK);

    let mut online = Device::open(dir.path(), &f.server.base).unwrap();
    let report = online.sync().await.unwrap();
    assert_eq!(report.commands.len(), 1);
    let outcome = &report.commands[0];
    assert_eq!(outcome.status, 409);
    let problem = outcome.problem.as_ref().expect("a problem");
    assert_eq!(problem.extensions["owner_id"], f.b.as_str());
    assert_eq!(report.pending_commands, 0, "a lost claim leaves the outbox");
    let id = DocumentId::parse(&doc).unwrap();
    assert!(!online.has(&id), "A's phone never gets B's customer");
}

#[tokio::test]
async fn a_customer_returned_while_the_owners_phone_is_offline_leaves_the_phone_on_reconnect() {
    let f = floor(json!({ "*": { "return_without_follow_up_days": 1 } }), 0).await;
    let doc = f.pooled("离线期间回收", "C").await;
    assert_eq!(f.claim(&f.rep_a, &doc).await.status, StatusCode::OK);
    let id = DocumentId::parse(&doc).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut phone = Device::open(dir.path(), &f.server.base).unwrap();
    phone
        .login("a@x.cn", PASSWORD, "a's phone", "android")
        .await
        .unwrap();
    phone.sync().await.unwrap();
    assert!(phone.has(&id));
    let held: Customer = phone.get(&id).unwrap();
    assert_eq!(held.server.owner.as_deref(), Some(f.a.as_str()));
    drop(phone);

    f.clock.advance(Duration::from_secs(86_400 + 60));
    assert_eq!(f.sweep().await["returned"], 1);

    let mut phone = Device::open(dir.path(), &f.server.base).unwrap();
    let report = phone.sync().await.unwrap();
    assert!(report.dropped.contains(&id), "{report:?}");
    assert!(!phone.has(&id));
}

#[tokio::test]
async fn lists_walk_every_listed_customer_and_each_pools_claimable_part_in_creation_order() {
    let f = floor(json!({}), 0).await;
    let s = &f.server;
    let south = s
        .post(
            "/api/v1/pools",
            &f.admin,
            json!({ "name": "华南公海", "member_user_ids": [f.a, f.b] }),
        )
        .await;
    assert_eq!(south.status, StatusCode::CREATED, "{:?}", south.body);
    let south = south.body["id"].as_str().unwrap().to_string();
    // Owned customers and customers in two pools interleaved, one deleted, some tagged.
    let mut all = Vec::new();
    let mut first_pooled = String::new();
    for i in 0..7 {
        let name = format!("list {i}");
        if i == 1 {
            first_pooled = f.pooled_at(&name, None).await;
        } else if i == 4 {
            f.pooled_in(&south, &name, None).await;
        } else {
            let tags = if i % 2 == 0 || i == 3 {
                json!(["vip"])
            } else {
                json!([])
            };
            let created = s
                .post(
                    "/api/v1/customers",
                    &f.admin,
                    json!({ "name": name, "tags": tags, "level": if i % 3 == 0 { "A" } else { "B" }, "confirm_duplicate": true }),
                )
                .await;
            assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
            if i == 3 {
                let doc = created.body["doc_id"].as_str().unwrap();
                let deleted = s
                    .delete(&format!("/api/v1/customers/{doc}"), &f.admin)
                    .await;
                assert!(deleted.status.is_success(), "{:?}", deleted.body);
                continue;
            }
        }
        all.push(name);
        // Distinct creation times, so creation order is the list order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let paged = crate::customer_search::paged_names;
    assert_eq!(paged(s, &f.admin, "limit=2").await, all);
    let mut newest = all.clone();
    newest.reverse();
    assert_eq!(paged(s, &f.admin, "limit=2&sort=-created").await, newest);
    // One state: the pool customers of both pools, merged in creation order.
    let pooled = ["list 1", "list 4"];
    assert_eq!(paged(s, &f.admin, "limit=1&state=pool").await, pooled);
    assert_eq!(
        paged(s, &f.admin, "limit=1&state=pool&sort=-created").await,
        ["list 4", "list 1"]
    );
    let owned: Vec<String> = all
        .iter()
        .filter(|n| !pooled.contains(&n.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        paged(s, &f.admin, "limit=2&state=owned&sort=created").await,
        owned
    );
    // One level's part holds no deleted customer (`list 3` was level A).
    assert_eq!(
        paged(s, &f.admin, "limit=1&level=A").await,
        ["list 0", "list 6"]
    );
    assert_eq!(
        paged(s, &f.admin, "level=A&sort=-created&state=owned").await,
        ["list 6", "list 0"]
    );
    assert!(paged(s, &f.admin, "level=A&state=pool").await.is_empty());
    // A filter still applies on top of the walk (the deleted customer is tagged too).
    assert_eq!(
        paged(s, &f.admin, "limit=1&tag=vip&sort=-created").await,
        ["list 6", "list 2", "list 0"]
    );
    // A member sees each pool's claimable customers; once one is claimed, it leaves that part
    // and shows in the pool's owned part only to those whose scope holds its new owner.
    let north_pool = format!("limit=1&pool_id={}&state=pool", f.pool);
    assert_eq!(paged(s, &f.rep_b, &north_pool).await, ["list 1"]);
    assert_eq!(
        paged(s, &f.rep_b, &format!("pool_id={south}&state=pool")).await,
        ["list 4"]
    );
    // Any other filter is checked beside a pool's part (`list 4` has no tag).
    assert!(
        paged(s, &f.admin, &format!("pool_id={south}&state=pool&tag=vip"))
            .await
            .is_empty()
    );
    // A scoped caller sees no pool customer without naming the pool.
    assert!(paged(s, &f.rep_b, "state=pool").await.is_empty());
    let claimed = f.claim(&f.rep_a, &first_pooled).await;
    assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
    assert!(paged(s, &f.rep_b, &north_pool).await.is_empty());
    let north_owned = format!("pool_id={}&state=owned", f.pool);
    assert_eq!(paged(s, &f.rep_a, &north_owned).await, ["list 1"]);
    assert!(paged(s, &f.rep_b, &north_owned).await.is_empty());
    assert_eq!(
        paged(s, &f.admin, &format!("limit=1&pool_id={}", f.pool)).await,
        ["list 1"]
    );
    assert_eq!(paged(s, &f.admin, "limit=1&state=pool").await, ["list 4"]);
    assert_eq!(paged(s, &f.admin, "limit=3").await, all);
    // A pool's list without a state merges the part its owners hold with its claimable part:
    // a member sees the claimable ones and those within the member's scope, an admin all of
    // them, and a filter by owner only that owner's.
    f.pooled_at("list 7", None).await;
    let north = format!("limit=1&pool_id={}", f.pool);
    assert_eq!(paged(s, &f.rep_a, &north).await, ["list 1", "list 7"]);
    assert_eq!(paged(s, &f.rep_b, &north).await, ["list 7"]);
    assert_eq!(paged(s, &f.admin, &north).await, ["list 1", "list 7"]);
    assert_eq!(
        paged(s, &f.admin, &format!("{north}&sort=-created")).await,
        ["list 7", "list 1"]
    );
    assert_eq!(
        paged(s, &f.admin, &format!("{north}&state=owned")).await,
        ["list 1"]
    );
    let by_a = format!("{north}&owner_id={}", f.a);
    assert_eq!(paged(s, &f.admin, &by_a).await, ["list 1"]);
    assert!(
        paged(s, &f.admin, &format!("{by_a}&state=pool"))
            .await
            .is_empty()
    );
    // Released, the customer leaves its owner's part for the pool's claimable part.
    let released = f.release(&f.rep_a, &first_pooled, "not now").await;
    assert_eq!(released.status, StatusCode::OK, "{:?}", released.body);
    assert_eq!(paged(s, &f.rep_b, &north).await, ["list 1", "list 7"]);
    assert!(paged(s, &f.admin, &by_a).await.is_empty());
    // A cursor that is not one this list gave is refused.
    let bad = s
        .get("/api/v1/customers?cursor=bm90LWEtY3Vyc29y", &f.admin)
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad.body
    );
    assert_eq!(bad.body["errors"][0]["field"], "cursor", "{:?}", bad.body);
}
