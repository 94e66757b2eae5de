//! Customers 360: search (pinyin, initials, partial, phone in any format), masked phones per
//! role, duplicate detection, merge and undo, import and export.

use base64::Engine;
use outpost_tests::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Office {
    server: TestServer,
    admin: String,
    rep: String,
    rep_id: String,
    manager: String,
    head: String,
}

async fn office() -> Office {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep_role = server.role(&admin, "rep").await;
    let manager_role = server.role(&admin, "manager").await;
    let head_role = server.role(&admin, "department_head").await;
    let manager_id = server
        .user(&admin, "mgr@x.cn", &root, None, &[&manager_role])
        .await;
    let rep_id = server
        .user(&admin, "rep@x.cn", &root, Some(&manager_id), &[&rep_role])
        .await;
    server
        .user(&admin, "head@x.cn", &root, None, &[&head_role])
        .await;
    Office {
        rep: server.token_of("rep@x.cn").await,
        manager: server.token_of("mgr@x.cn").await,
        head: server.token_of("head@x.cn").await,
        server,
        admin,
        rep_id,
    }
}

async fn create(server: &TestServer, token: &str, body: Value) -> String {
    let reply = server.post("/api/v1/customers", token, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["doc_id"].as_str().unwrap().to_string()
}

/// The names (sorted) of the customers a list query returns.
pub(crate) async fn names(server: &TestServer, token: &str, query: &str) -> Vec<String> {
    let reply = server
        .get(&format!("/api/v1/customers?{query}"), token)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {:?}", reply.body);
    let mut names: Vec<String> = reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

use outpost_tests::query_value as enc;

/// Commits the import `import_id` (a dry run's id) as `token`.
async fn commit_import(server: &TestServer, token: &str, import_id: &str) -> outpost_tests::Reply {
    server
        .post(
            &format!("/api/v1/customers/imports/{import_id}/commit"),
            token,
            json!({}),
        )
        .await
}

/// A valid unified social credit code with the given 17-character body.
fn credit_code(body: &str) -> String {
    "0123456789ABCDEFGHJKLMNPQRTUWXY"
        .chars()
        .map(|c| format!("{body}{c}"))
        .find(|code| outpost_mobile::records::customer::credit_code_is_valid(code))
        .unwrap()
}

#[tokio::test]
async fn search_finds_names_by_pinyin_initials_and_parts_and_phones_in_any_format() {
    let o = office().await;
    let s = &o.server;
    create(s, &o.rep, json!({ "name": "张三", "kind": "person", "phones": ["+86 138-0013-8000"], "tags": ["vip"], "level": "A" })).await;
    create(
        s,
        &o.rep,
        json!({ "name": "北京星辰科技有限公司", "emails": ["Sales@XingChen.cn"], "level": "B" }),
    )
    .await;
    create(
        s,
        &o.rep,
        json!({ "name": "Acme Trading Co., Ltd.", "phones": ["021 5555 0000"], "tags": ["vip"] }),
    )
    .await;

    let zhang = vec!["张三".to_string()];
    let xc = vec!["北京星辰科技有限公司".to_string()];
    let acme = vec!["Acme Trading Co., Ltd.".to_string()];
    assert_eq!(names(s, &o.rep, "q=zhangsan").await, zhang);
    assert_eq!(names(s, &o.rep, "q=zhang").await, zhang);
    assert_eq!(names(s, &o.rep, "q=zs").await, zhang);
    assert_eq!(names(s, &o.rep, &format!("q={}", enc("张"))).await, zhang);
    assert_eq!(names(s, &o.rep, &format!("q={}", enc("星辰"))).await, xc);
    assert_eq!(names(s, &o.rep, &format!("q={}", enc("科技"))).await, xc);
    assert_eq!(names(s, &o.rep, "q=xingchen").await, xc);
    assert_eq!(names(s, &o.rep, "q=bjxc").await, xc);
    assert_eq!(names(s, &o.rep, "q=ACME").await, acme);
    assert_eq!(names(s, &o.rep, "q=trading").await, acme);
    // Phones: any format of the whole number, or its beginning.
    assert_eq!(
        names(s, &o.rep, &format!("q={}", enc("13800138000"))).await,
        zhang
    );
    assert_eq!(
        names(s, &o.rep, &format!("q={}", enc("+86 138 0013 8000"))).await,
        zhang
    );
    assert_eq!(names(s, &o.rep, "q=1380013").await, zhang);
    assert_eq!(
        names(s, &o.rep, &format!("phone={}", enc("(021) 5555-0000"))).await,
        acme
    );
    assert_eq!(
        names(s, &o.rep, &format!("q={}", enc("sales@xingchen.cn"))).await,
        xc
    );
    assert_eq!(
        names(s, &o.rep, &format!("email={}", enc("SALES@xingchen.cn"))).await,
        xc
    );
    // Filters combine with search.
    assert_eq!(names(s, &o.rep, "tag=vip").await.len(), 2);
    assert_eq!(names(s, &o.rep, "tag=vip&level=A").await, zhang);
    assert_eq!(
        names(s, &o.rep, &format!("owner_id={}", o.rep_id))
            .await
            .len(),
        3
    );
    assert!(names(s, &o.rep, "q=nosuchname").await.is_empty());
    // Out of scope: the admin's customer is not found by the rep.
    create(s, &o.admin, json!({ "name": "张三丰" })).await;
    assert_eq!(names(s, &o.rep, "q=zhangsan").await, zhang);
    assert_eq!(names(s, &o.admin, "q=zhangsan").await.len(), 2);

    // Pages: one at a time, every match once.
    let mut seen = paged_names(s, &o.admin, "q=zhang&limit=1").await;
    seen.sort();
    assert_eq!(seen, ["张三", "张三丰"]);
    // `z` matches each of them under several terms (zhangsan, zs, ...): still listed once.
    let mut once = paged_names(s, &o.admin, "q=z&limit=1").await;
    once.sort();
    assert_eq!(once, ["张三", "张三丰"], "no customer on two pages");
    let bad = s
        .get("/api/v1/customers?q=zhang&cursor=bm9wZQ", &o.admin)
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad = s.get("/api/v1/customers?level=Z", &o.admin).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Renaming moves the customer in the index.
    let doc = create(s, &o.rep, json!({ "name": "李四" })).await;
    assert_eq!(names(s, &o.rep, "q=lisi").await, ["李四"]);
    let renamed = s
        .patch(
            &format!("/api/v1/customers/{doc}"),
            &o.rep,
            json!({ "name": "王五" }),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert!(names(s, &o.rep, "q=lisi").await.is_empty());
    assert_eq!(names(s, &o.rep, "q=ww").await, ["王五"]);
    assert_eq!(
        s.delete(&format!("/api/v1/customers/{doc}"), &o.rep)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(
        names(s, &o.rep, "q=ww").await.is_empty(),
        "a tombstone leaves the index"
    );
}

/// A prefix search reads the term index in chunks of 256 entries; 150 customers with two `c`
/// terms each (full pinyin and initials) need two chunks for one page and several pages, and
/// each customer must still come back exactly once.
#[tokio::test]
async fn a_search_with_more_matches_than_one_index_chunk_lists_each_customer_once() {
    let o = office().await;
    let s = &o.server;
    let expected: Vec<String> = (0..150).map(|i| format!("陈氏{i:03}号")).collect();
    let mut csv = String::from("客户名称\n");
    for name in &expected {
        csv.push_str(name);
        csv.push('\n');
    }
    let body = json!({ "format": "csv", "content_base64": base64::engine::general_purpose::STANDARD.encode(csv) });
    let dry = s.post("/api/v1/customers/imports", &o.admin, body).await;
    assert_eq!(dry.status, StatusCode::CREATED, "{:?}", dry.body);
    assert_eq!(dry.body["importable_rows"], 150, "{:?}", dry.body);
    let import_id = dry.body["import_id"].as_str().unwrap();
    let commit = commit_import(s, &o.admin, import_id).await;
    assert_eq!(commit.body["created"], 150, "{:?}", commit.body);

    assert_eq!(
        names(s, &o.admin, "q=c&limit=200").await,
        expected,
        "one page reads past the first chunk"
    );
    let mut paged = paged_names(s, &o.admin, "q=c&limit=40").await;
    paged.sort();
    assert_eq!(paged, expected, "pages cover every match once");
    let mut initials = paged_names(s, &o.admin, "q=cs&limit=40").await;
    initials.sort();
    assert_eq!(initials, expected);

    // A rep whose few customers are scattered among the admin's sees exactly those, each
    // once, however the page reads its rows (most rows it reads are not the rep's).
    let mut own: Vec<String> = Vec::new();
    for i in [7, 49, 101, 148] {
        let name = format!("陈氏{i:03}号分店");
        // 陈氏007号分店 is close to 陈氏007号: confirmed as a separate customer.
        create(
            s,
            &o.rep,
            json!({ "name": name, "confirm_duplicate": true }),
        )
        .await;
        own.push(name);
    }
    own.sort();
    for query in [
        "q=cs&limit=1",
        "q=cs&limit=3",
        "q=c&limit=2",
        "q=陈氏&limit=50",
    ] {
        let mut found = paged_names(s, &o.rep, query).await;
        found.sort();
        assert_eq!(found, own, "{query}");
    }
    let mut everyone = paged_names(s, &o.admin, "q=chenshi&limit=7").await;
    everyone.sort();
    let mut all = expected.clone();
    all.extend(own.iter().cloned());
    all.sort();
    assert_eq!(everyone, all, "pages of 7 cover all 154 matches once");
}

/// The `terms` field of record `table:doc`, read straight from the store.
async fn stored_terms(
    db: &outpost::platform::db::Db,
    table: &str,
    doc: &str,
) -> Option<Vec<String>> {
    outpost::platform::db::Query::new("SELECT VALUE terms FROM type::record($table, $doc)")
        .bind("table", table.to_string())
        .bind("doc", doc.to_string())
        .take::<Vec<Option<Vec<String>>>>(db, 0)
        .await
        .unwrap()
        .pop()
        .flatten()
}

/// A customer projected before migration 0010 keeps its search terms in its own row until it
/// next changes; search still lists it by them, and a rename moves them to `customer_terms`,
/// dropping the old name's terms from the index and the row.
#[tokio::test]
async fn terms_left_in_a_row_from_before_their_own_table_move_at_the_next_change() {
    use outpost::platform::db::Query;
    let o = office().await;
    let s = &o.server;
    let doc = create(
        s,
        &o.rep,
        json!({ "name": "旧名字公司", "phones": ["13911112222"], "level": "B" }),
    )
    .await;
    // Put the customer back into the shape a pre-0010 store has: terms in the customer row,
    // no `customer_terms` row, and no `terms` field in the schema.
    let db = s.db();
    Query::new(
        "DEFINE FIELD terms ON customer TYPE option<array<string>>; \
         UPDATE type::record('customer', $doc) SET terms = (SELECT VALUE terms FROM ONLY type::record('customer_terms', $doc)); \
         DELETE type::record('customer_terms', $doc); \
         REMOVE FIELD terms ON customer;",
    )
    .bind("doc", doc.clone())
    .run(&db)
    .await
    .unwrap();
    let in_row = stored_terms(&db, "customer", &doc).await;
    assert!(
        in_row
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t.contains("jiumingzi"))),
        "{in_row:?}"
    );
    for q in ["jmz", "jiumingzi", "13911112222"] {
        assert_eq!(
            names(s, &o.rep, &format!("q={q}")).await,
            ["旧名字公司"],
            "{q}"
        );
    }

    let renamed = s
        .patch(
            &format!("/api/v1/customers/{doc}"),
            &o.rep,
            json!({ "name": "新名字公司" }),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{:?}", renamed.body);
    for q in ["jmz", "jiumingzi", "旧名"] {
        assert!(names(s, &o.rep, &format!("q={q}")).await.is_empty(), "{q}");
    }
    for q in ["xmz", "xinmingzi", "名字", "13911112222"] {
        assert_eq!(
            names(s, &o.rep, &format!("q={q}")).await,
            ["新名字公司"],
            "{q}"
        );
    }
    let in_row = stored_terms(&db, "customer", &doc).await;
    assert_eq!(in_row, None, "the rewrite drops the row's copy");
    let own = stored_terms(&db, "customer_terms", &doc)
        .await
        .unwrap_or_default();
    assert!(own.iter().any(|t| t.contains("xinmingzi")), "{own:?}");
    assert!(!own.iter().any(|t| t.contains("jiumingzi")), "{own:?}");
    // A change that leaves the name alone (a level) keeps them where they are.
    let levelled = s
        .patch(
            &format!("/api/v1/customers/{doc}"),
            &o.rep,
            json!({ "level": "A" }),
        )
        .await;
    assert_eq!(levelled.status, StatusCode::OK, "{:?}", levelled.body);
    assert_eq!(names(s, &o.rep, "q=xmz").await, ["新名字公司"]);
}

#[tokio::test]
async fn phones_are_masked_for_non_owners_unless_the_role_allows_full_view() {
    let o = office().await;
    let s = &o.server;
    let doc = create(
        s,
        &o.rep,
        json!({ "name": "遮罩测试", "phones": ["13812345678"], "contacts": [{ "name": "赵六", "phones": ["13987654321"] }] }),
    )
    .await;
    let path = format!("/api/v1/customers/{doc}");
    let own = s.get(&path, &o.rep).await;
    assert_eq!(own.body["phones"][0], "13812345678");
    assert_eq!(own.body["phones_masked"], false);
    // The manager sees the subordinate's customer, masked, everywhere.
    let managed = s.get(&path, &o.manager).await;
    assert_eq!(managed.status, StatusCode::OK);
    assert_eq!(managed.body["phones"][0], "138****5678");
    assert_eq!(managed.body["contacts"][0]["phones"][0], "139****4321");
    let view = s.get(&format!("{path}/360"), &o.manager).await;
    assert_eq!(view.body["customer"]["phones"][0], "138****5678");
    assert_eq!(view.body["contacts"][0]["phones"][0], "139****4321");
    let list = s.get("/api/v1/customers", &o.manager).await;
    assert_eq!(list.body["items"][0]["phones"][0], "138****5678");
    // The department head's role has customer.phone_full.
    let head = s.get(&path, &o.head).await;
    assert_eq!(head.body["phones"][0], "13812345678");
    // Search by the full number still finds it for the manager, masked; a partial number does
    // not, or the digits could be guessed one by one.
    let found = s.get("/api/v1/customers?q=13812345678", &o.manager).await;
    assert_eq!(found.body["items"][0]["phones"][0], "138****5678");
    let partial = s.get("/api/v1/customers?q=1381234", &o.manager).await;
    assert_eq!(partial.body["items"], json!([]));
    let partial = s.get("/api/v1/customers?phone=1381234", &o.head).await;
    assert_eq!(
        partial.body["items"].as_array().unwrap().len(),
        1,
        "full view may"
    );
}

#[tokio::test]
async fn likely_duplicates_are_refused_with_candidates_unless_confirmed() {
    let o = office().await;
    let s = &o.server;
    let code = credit_code("91310115MA1K3YJ2X");
    let first = create(
        s,
        &o.admin,
        json!({ "name": "上海星辰科技有限公司", "phones": ["13800000001"], "emails": ["a@star.cn"], "credit_code": code }),
    )
    .await;

    for (body, matched) in [
        (
            json!({ "name": "别的名字", "phones": ["+86 138 0000 0001"] }),
            "phone",
        ),
        (
            json!({ "name": "别的名字", "emails": ["A@STAR.CN"] }),
            "email",
        ),
        (
            json!({ "name": "别的名字", "credit_code": code.to_lowercase() }),
            "credit_code",
        ),
        (json!({ "name": "上海星辰科技股份有限公司" }), "name"),
    ] {
        let reply = s.post("/api/v1/customers", &o.rep, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "{body}: {:?}",
            reply.body
        );
        assert_eq!(reply.problem(), "duplicate");
        let candidates = reply.body["candidates"].as_array().unwrap();
        assert_eq!(candidates[0]["doc_id"], first.as_str());
        assert_eq!(candidates[0]["name"], "上***", "outside the rep's scope");
        assert!(
            candidates[0]["matched_on"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m == matched),
            "{body}: {candidates:?}"
        );
    }
    // Nothing was created by the refusals; confirming creates it.
    assert!(names(s, &o.rep, "").await.is_empty());
    let confirmed = s
        .post(
            "/api/v1/customers",
            &o.rep,
            json!({ "name": "上海星辰科技股份有限公司", "confirm_duplicate": true }),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::CREATED);
    // A wrong check character is a validation error.
    let mut wrong = code.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let invalid = s
        .post(
            "/api/v1/customers",
            &o.rep,
            json!({ "name": "X 公司", "credit_code": wrong }),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.body["errors"][0]["field"], "credit_code");
    // The same check while typing.
    let check = s
        .post(
            "/api/v1/customers/duplicates",
            &o.rep,
            json!({ "name": "上海星辰", "phones": ["13800000001"] }),
        )
        .await;
    assert_eq!(check.status, StatusCode::OK);
    assert_eq!(check.body[0]["doc_id"], first.as_str());
}

#[tokio::test]
async fn merge_moves_everything_to_the_survivor_and_undo_puts_it_back() {
    let o = office().await;
    let s = &o.server;
    let survivor = create(
        s,
        &o.rep,
        json!({ "name": "合并方", "phones": ["13800000011"], "tags": ["a"] }),
    )
    .await;
    let loser = create(
        s,
        &o.rep,
        json!({ "name": "被合并方", "phones": ["13800000022"], "tags": ["b"], "contacts": [{ "name": "钱七" }], "confirm_duplicate": true }),
    )
    .await;
    let visit = s
        .post(
            "/api/v1/follow-ups",
            &o.rep,
            json!({ "customer_doc_id": loser, "method": "call", "at": "2026-11-20T02:00:00Z", "content": "聊过" }),
        )
        .await;
    assert_eq!(visit.status, StatusCode::CREATED, "{:?}", visit.body);
    let task = s
        .post(
            "/api/v1/tasks",
            &o.rep,
            json!({ "title": "回访", "customer_doc_id": loser }),
        )
        .await;
    assert_eq!(task.status, StatusCode::CREATED, "{:?}", task.body);

    let path = format!("/api/v1/customers/{survivor}/merge");
    let dry = s
        .post(
            &path,
            &o.rep,
            json!({ "other_doc_id": loser, "dry_run": true }),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{:?}", dry.body);
    assert_eq!(dry.body["moved"].as_array().unwrap().len(), 2);
    assert_eq!(dry.body["survivor"]["phones"].as_array().unwrap().len(), 2);
    // A dry run changes nothing.
    let still = s
        .get(&format!("/api/v1/customers/{survivor}"), &o.rep)
        .await;
    assert_eq!(still.body["phones"].as_array().unwrap().len(), 1);
    let to_self = s
        .post(&path, &o.rep, json!({ "other_doc_id": survivor }))
        .await;
    assert_eq!(to_self.status, StatusCode::UNPROCESSABLE_ENTITY);

    let merged = s
        .post(&path, &o.rep, json!({ "other_doc_id": loser }))
        .await;
    assert_eq!(merged.status, StatusCode::OK, "{:?}", merged.body);
    let merge_id = merged.body["merge_id"].as_str().unwrap().to_string();
    assert_eq!(
        s.get(&format!("/api/v1/customers/{loser}"), &o.rep)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let view = s
        .get(&format!("/api/v1/customers/{survivor}/360"), &o.rep)
        .await;
    assert_eq!(view.body["follow_ups"].as_array().unwrap().len(), 1);
    assert_eq!(view.body["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(view.body["customer"]["tags"], json!(["a", "b"]));
    assert_eq!(view.body["contacts"][0]["name"], "钱七");
    let actions = |view: &serde_json::Value| -> Vec<String> {
        view["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["action"].as_str().unwrap().to_string())
            .collect()
    };
    // The loser's history (its merge) moved with it.
    assert_eq!(actions(&view.body), vec!["merge"]);

    // An edit after the merge survives the undo.
    s.patch(
        &format!("/api/v1/customers/{survivor}"),
        &o.rep,
        json!({ "tags": ["a", "b", "c"] }),
    )
    .await;
    let undone = s
        .post(
            &format!("/api/v1/customer-merges/{merge_id}/undo"),
            &o.rep,
            json!({}),
        )
        .await;
    assert_eq!(undone.status, StatusCode::OK, "{:?}", undone.body);
    assert_eq!(undone.body["name"], "被合并方");
    let back = s
        .get(&format!("/api/v1/customers/{loser}/360"), &o.rep)
        .await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(back.body["follow_ups"].as_array().unwrap().len(), 1);
    assert_eq!(back.body["tasks"].as_array().unwrap().len(), 1);
    // Its history came back, newest first, and left the survivor's.
    assert_eq!(actions(&back.body), vec!["unmerge", "merge"]);
    let survivor_view = s
        .get(&format!("/api/v1/customers/{survivor}/360"), &o.rep)
        .await;
    assert_eq!(actions(&survivor_view.body), Vec::<String>::new());
    let kept = s
        .get(&format!("/api/v1/customers/{survivor}"), &o.rep)
        .await;
    assert_eq!(kept.body["tags"], json!(["a", "c"]));
    assert_eq!(kept.body["phones"], json!(["13800000011"]));
    assert_eq!(kept.body["contacts"], json!([]));
    let again = s
        .post(
            &format!("/api/v1/customer-merges/{merge_id}/undo"),
            &o.rep,
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn import_reports_bad_rows_and_duplicates_then_commits_once_and_export_shows_what_the_caller_sees()
 {
    let o = office().await;
    let s = &o.server;
    create(
        s,
        &o.rep,
        json!({ "name": "已有客户", "phones": ["13800000099"] }),
    )
    .await;
    let code = credit_code("91110108MA01XYA12");
    let bad_code = format!(
        "{}{}",
        &code[..17],
        if code.ends_with('0') { '1' } else { '0' }
    );
    let csv = format!(
        "客户名称,电话,邮箱,级别,统一社会信用代码,联系人\n\
         新客户一,13800000101,one@x.cn,A,{code},孙八\n\
         ,13800000102,,,,\n\
         坏级别,13800000103,,Z,,\n\
         坏代码,13800000104,,,{bad_code},\n\
         重复已有,138 0000 0099,,,,\n\
         新客户二,13800000105,,B,,\n\
         文件内重复,13800000105,,,,\n"
    );
    let body = json!({ "format": "csv", "content_base64": base64::engine::general_purpose::STANDARD.encode(csv) });
    let dry = s.post("/api/v1/customers/imports", &o.rep, body).await;
    assert_eq!(dry.status, StatusCode::CREATED, "{:?}", dry.body);
    assert_eq!(dry.body["total_rows"], 7);
    assert_eq!(dry.body["importable_rows"], 2);
    let bad_rows: Vec<u64> = dry.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["row"].as_u64().unwrap())
        .collect();
    assert_eq!(bad_rows, [3, 4, 5]);
    let dup_rows: Vec<u64> = dry.body["duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["row"].as_u64().unwrap())
        .collect();
    assert_eq!(dup_rows, [6, 8]);
    assert_eq!(dry.body["duplicates"][1]["same_as_row"], 7);
    assert!(
        names(s, &o.rep, "").await.len() == 1,
        "a dry run creates nothing"
    );

    let import_id = dry.body["import_id"].as_str().unwrap();
    let commit = commit_import(s, &o.rep, import_id).await;
    assert_eq!(commit.status, StatusCode::OK, "{:?}", commit.body);
    assert_eq!(commit.body["created"], 2);
    assert_eq!(commit.body["status"], "committed");
    let again = commit_import(s, &o.rep, import_id).await;
    assert_eq!(again.body["created"], 2);
    assert_eq!(
        names(s, &o.rep, "").await,
        ["已有客户", "新客户一", "新客户二"]
    );
    assert_eq!(names(s, &o.rep, "q=xkhy").await, ["新客户一"]);
    // Someone else cannot commit it.
    let foreign = commit_import(s, &o.admin, import_id).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);

    // XLSX, with the phone typed as a number and an explicit mapping.
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.write_string(0, 0, "Company").unwrap();
    sheet.write_string(0, 1, "Mobile").unwrap();
    sheet.write_string(1, 0, "Excel Import Ltd").unwrap();
    sheet.write_number(1, 1, 13800000201.0).unwrap();
    let xlsx = workbook.save_to_buffer().unwrap();
    let dry = s
        .post(
            "/api/v1/customers/imports",
            &o.rep,
            json!({ "format": "xlsx", "content_base64": base64::engine::general_purpose::STANDARD.encode(xlsx), "mapping": { "Company": "name", "Mobile": "phones" } }),
        )
        .await;
    assert_eq!(dry.status, StatusCode::CREATED, "{:?}", dry.body);
    let import_id = dry.body["import_id"].as_str().unwrap();
    commit_import(s, &o.rep, import_id).await;
    assert_eq!(
        names(s, &o.rep, "q=13800000201").await,
        ["Excel Import Ltd"]
    );
    let garbage = s
        .post(
            "/api/v1/customers/imports",
            &o.rep,
            json!({ "format": "xlsx", "content_base64": "bm90IGEgemlw" }),
        )
        .await;
    assert_eq!(garbage.status, StatusCode::UNPROCESSABLE_ENTITY);
    let no_name = s
        .post("/api/v1/customers/imports", &o.rep, json!({ "format": "csv", "content_base64": base64::engine::general_purpose::STANDARD.encode("foo\nbar\n"), "mapping": { "foo": "nonsense" } }))
        .await;
    assert_eq!(no_name.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Export: reps lack customer.export; the head exports what the head may see, masked or not
    // by the head's role, and the export is audited.
    let refused = s.get("/api/v1/customers/export", &o.rep).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let response = export(s, &o.head, "format=csv").await;
    let text = response.text().await.unwrap();
    assert!(text.starts_with('\u{feff}'), "a BOM for Excel");
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("13800000101"), "the head has full view");
    let response = export(s, &o.admin, "format=xlsx&q=xinkehu").await;
    let bytes = response.bytes().await.unwrap();
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let range = book.worksheet_range("customers").unwrap();
    assert_eq!(range.height(), 3, "the header and the two matches");
    let audit = s
        .get("/api/v1/audit?action=customer.export", &o.admin)
        .await;
    assert_eq!(audit.body["items"].as_array().unwrap().len(), 2);
}

/// Pages through `/api/v1/customers?{query}` and returns the names in list order.
pub(crate) async fn paged_names(server: &TestServer, token: &str, query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor
            .as_deref()
            .map(|c| format!("&cursor={}", enc(c)))
            .unwrap_or_default();
        let reply = server
            .get(&format!("/api/v1/customers?{query}{after}"), token)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {:?}", reply.body);
        for item in reply.body["items"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_string());
        }
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return names,
        }
    }
}

#[tokio::test]
async fn a_teams_list_merges_its_owners_in_creation_order_across_pages() {
    let o = office().await;
    let mut expected = Vec::new();
    for i in 0..3 {
        for (who, token) in [("mgr", &o.manager), ("rep", &o.rep), ("admin", &o.admin)] {
            let name = format!("{who} customer {i}");
            create(&o.server, token, json!({ "name": name })).await;
            if who != "admin" {
                expected.push(name);
            }
            // Distinct creation times, so creation order is the list order.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    // The manager sees their own and their rep's customers, in creation order, each once.
    assert_eq!(
        paged_names(&o.server, &o.manager, "limit=2&sort=created").await,
        expected
    );
    let mut newest_first = expected.clone();
    newest_first.reverse();
    assert_eq!(
        paged_names(&o.server, &o.manager, "limit=2&sort=-created").await,
        newest_first
    );
    // One owner's part, for the manager and for the rep.
    let reps: Vec<String> = expected
        .iter()
        .filter(|n| n.starts_with("rep"))
        .cloned()
        .collect();
    assert_eq!(
        paged_names(
            &o.server,
            &o.manager,
            &format!("limit=2&owner_id={}", o.rep_id)
        )
        .await,
        reps
    );
    assert_eq!(
        paged_names(&o.server, &o.rep, "limit=2&sort=created").await,
        reps
    );
    // The admin's list holds everything, the admin's own customers among them.
    assert_eq!(paged_names(&o.server, &o.admin, "limit=2").await.len(), 9);
}

/// Posts an import form as `token` and returns the status and the JSON body.
async fn upload(
    server: &TestServer,
    token: &str,
    form: reqwest::multipart::Form,
) -> (StatusCode, Value) {
    let response = server
        .http
        .post(format!("{}/api/v1/customers/imports", server.base))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_import_uploaded_as_a_form_works_like_the_json_one_and_bad_forms_change_nothing() {
    use reqwest::multipart::{Form, Part};
    let o = office().await;
    let s = &o.server;
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.write_string(0, 0, "Company").unwrap();
    sheet.write_string(0, 1, "Mobile").unwrap();
    sheet.write_string(1, 0, "表单上传有限公司").unwrap();
    sheet.write_number(1, 1, 13800000301.0).unwrap();
    let xlsx = workbook.save_to_buffer().unwrap();

    // The format comes from the file's name; the mapping is a JSON part.
    let form = Form::new()
        .part("file", Part::bytes(xlsx.clone()).file_name("客户名单.xlsx"))
        .text("mapping", r#"{ "Company": "name", "Mobile": "phones" }"#);
    let (status, dry) = upload(s, &o.rep, form).await;
    assert_eq!(status, StatusCode::CREATED, "{dry:?}");
    assert_eq!(dry["importable_rows"], 1, "{dry:?}");
    let commit = commit_import(s, &o.rep, dry["import_id"].as_str().unwrap()).await;
    assert_eq!(commit.body["created"], 1, "{:?}", commit.body);
    assert_eq!(names(s, &o.rep, "q=bdsc").await, ["表单上传有限公司"]);

    // A name that says nothing needs a `format` part.
    let csv = "客户名称,电话\n表格二号,13800000302\n";
    let form = Form::new()
        .part(
            "file",
            Part::bytes(csv.as_bytes().to_vec()).file_name("export.txt"),
        )
        .text("format", "csv")
        .text("allow_duplicates", "false");
    let (status, dry) = upload(s, &o.rep, form).await;
    assert_eq!(status, StatusCode::CREATED, "{dry:?}");
    assert_eq!(dry["importable_rows"], 1, "{dry:?}");

    // Bad forms: each refused with the part it is about, and nothing created.
    let refused = [
        (Form::new().text("format", "csv"), "file"),
        (
            Form::new().part(
                "file",
                Part::bytes(csv.as_bytes().to_vec()).file_name("list.pdf"),
            ),
            "format",
        ),
        (
            Form::new()
                .part(
                    "file",
                    Part::bytes(csv.as_bytes().to_vec()).file_name("a.csv"),
                )
                .text("colour", "red"),
            "colour",
        ),
        (
            Form::new()
                .part(
                    "file",
                    Part::bytes(csv.as_bytes().to_vec()).file_name("a.csv"),
                )
                .text("mapping", "Company=name"),
            "mapping",
        ),
        (
            Form::new()
                .part(
                    "file",
                    Part::bytes(csv.as_bytes().to_vec()).file_name("a.csv"),
                )
                .text("allow_duplicates", "yes"),
            "allow_duplicates",
        ),
        (
            Form::new().part(
                "file",
                Part::bytes(b"not a zip".to_vec()).file_name("a.xlsx"),
            ),
            "file",
        ),
        (
            Form::new()
                .part(
                    "file",
                    Part::bytes(csv.as_bytes().to_vec()).file_name("a.csv"),
                )
                .text("pool_id", "")
                .text("pool_id", "another"),
            "pool_id",
        ),
    ];
    for (form, part) in refused {
        let (status, problem) = upload(s, &o.rep, form).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{part}: {problem:?}"
        );
        assert_eq!(problem["errors"][0]["field"], part, "{problem:?}");
    }
    // A body that claims to be a form but is not one.
    let broken = s
        .http
        .post(format!("{}/api/v1/customers/imports", s.base))
        .bearer_auth(&o.rep)
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body("this is not a form")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    assert_eq!(broken.headers()["content-type"], "application/problem+json");
    assert_eq!(
        names(s, &o.rep, "").await,
        ["表单上传有限公司"],
        "only the committed import created anything"
    );
}

#[tokio::test]
async fn imports_have_their_own_size_limit_with_or_without_an_idempotency_key() {
    use reqwest::multipart::{Form, Part};
    let mut config = outpost::config::Config::for_database("mem://");
    config.server.max_body_bytes = 4096;
    config.server.max_import_bytes = 256 * 1024;
    let s = &TestServer::start_with(config).await;
    let admin = s.admin_token().await;
    let as_json = |csv: &str| json!({ "format": "csv", "content_base64": base64::engine::general_purpose::STANDARD.encode(csv) });

    // 300 rows: over the general limit, within the import's, with a key and again with it.
    let mut csv = String::from("客户名称,电话\n");
    for i in 0..300 {
        csv.push_str(&format!("限额测试{i:03}有限公司,1390000{i:04}\n"));
    }
    assert!(as_json(&csv).to_string().len() > 4096);
    let first = keyed_with(s, &admin, "import-1", as_json(&csv)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.body["importable_rows"], 300);
    let again = keyed_with(s, &admin, "import-1", as_json(&csv)).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["import_id"], first.body["import_id"]);

    // Over the import's limit: 413 as JSON, with a key, and as a form; nothing is stored.
    let mut huge = csv.clone();
    while huge.len() < 300 * 1024 {
        huge.push_str(&csv[csv.find('\n').unwrap() + 1..]);
    }
    let refused = s
        .post("/api/v1/customers/imports", &admin, as_json(&huge))
        .await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(refused.problem(), "payload-too-large");
    let refused = keyed_with(s, &admin, "import-2", as_json(&huge)).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    let form = Form::new().part("file", Part::bytes(huge.into_bytes()).file_name("big.csv"));
    let (status, problem) = upload(s, &admin, form).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem:?}");
    assert_eq!(problem["status"], 413);
    // Other routes keep the general limit, key or no key.
    let other = s
        .send(
            "POST",
            "/api/v1/customers",
            Some(&admin),
            Some(json!({ "name": "x".repeat(5000) })),
            &[("idempotency-key", "create-1")],
        )
        .await;
    assert_eq!(other.status, StatusCode::PAYLOAD_TOO_LARGE);

    // A dry run whose report is too large to keep for replay (over 1 MiB: 30,000 rows, each
    // with errors) is answered in full, and a retry with the key runs it again.
    let bad: String = std::iter::once("客户名称,电话\n")
        .chain(std::iter::repeat_n(",x\n", 30_000))
        .collect();
    let report = keyed_with(s, &admin, "import-3", as_json(&bad)).await;
    assert_eq!(report.status, StatusCode::CREATED, "{:?}", report.headers);
    assert_eq!(report.body["errors"].as_array().unwrap().len(), 30_000);
    assert!(report.body.to_string().len() > 1024 * 1024);
    let retried = keyed_with(s, &admin, "import-3", as_json(&bad)).await;
    assert_eq!(retried.status, StatusCode::CREATED);
    assert!(retried.headers.get("idempotent-replayed").is_none());
    assert_ne!(retried.body["import_id"], report.body["import_id"]);

    assert_eq!(
        s.get("/api/v1/customers", &admin).await.body["items"],
        json!([]),
        "dry runs and refusals create nothing"
    );
}

/// Posts an import with an `Idempotency-Key`.
async fn keyed_with(
    server: &TestServer,
    token: &str,
    key: &str,
    body: Value,
) -> outpost_tests::Reply {
    server
        .send(
            "POST",
            "/api/v1/customers/imports",
            Some(token),
            Some(body),
            &[("idempotency-key", key)],
        )
        .await
}

#[tokio::test]
async fn the_last_follow_up_range_filters_the_list_and_the_export_alike() {
    let o = office().await;
    let s = &o.server;
    let mut ids = Vec::new();
    for (name, visited) in [
        ("早访客户", Some("2026-11-01T10:00:00Z")),
        ("中访客户", Some("2026-11-10T10:00:00Z")),
        ("未访客户", None),
    ] {
        let created = s
            .post("/api/v1/customers", &o.rep, json!({ "name": name }))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let doc = created.body["doc_id"].as_str().unwrap().to_string();
        if let Some(at) = visited {
            let visit = s
                .post(
                    "/api/v1/follow-ups",
                    &o.rep,
                    json!({ "customer_doc_id": doc, "method": "visit", "at": at }),
                )
                .await;
            assert_eq!(visit.status, StatusCode::CREATED, "{:?}", visit.body);
        }
        ids.push(doc);
    }
    // A follow-up logged later than the grace period allows counts from when it arrived (the
    // pool rules' clock), so both visited customers' last follow-up is today.
    let after = "follow_up_after=2026-11-05T00:00:00Z";
    let between = "follow_up_after=2026-10-01T00:00:00Z&follow_up_before=2026-11-05T00:00:00Z";
    assert_eq!(names(s, &o.rep, after).await, ["中访客户", "早访客户"]);
    assert!(names(s, &o.rep, between).await.is_empty());

    // The export applies the same range (the head exports what it sees).
    for (query, expected) in [(after, 2), (between, 0), ("", 3)] {
        let response = export(s, &o.head, &format!("format=csv&{query}")).await;
        let text = response.text().await.unwrap();
        assert_eq!(text.lines().count(), 1 + expected, "{query}: {text}");
    }
}

/// `GET /api/v1/customers/export?{query}` as `token`; it must succeed.
async fn export(server: &TestServer, token: &str, query: &str) -> reqwest::Response {
    let response = server
        .http
        .get(format!("{}/api/v1/customers/export?{query}", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    response
}

#[tokio::test]
async fn the_360_view_shows_the_newest_hundred_follow_ups_by_instant_skipping_deleted_ones() {
    let o = office().await;
    let s = &o.server;
    let customer = create(s, &o.rep, json!({ "name": "老客户大账户" })).await;
    let log = |at: String| follow_up(s, &o.rep, &customer, at);
    let oldest = log("2026-09-01T00:00:00Z".into()).await;
    let mut middle = Vec::new();
    for hour in 0..100 {
        middle.push(
            log(format!(
                "2026-10-0{}T{:02}:00:00Z",
                1 + hour / 24,
                hour % 24
            ))
            .await,
        );
    }
    // 09:00 in Beijing is 01:00 UTC: an hour before `utc`, though its text sorts after it.
    let beijing = log("2026-12-01T09:00:00+08:00".into()).await;
    let utc = log("2026-12-01T02:00:00Z".into()).await;
    let deleted = log("2026-12-02T00:00:00Z".into()).await;
    let gone = s
        .delete(&format!("/api/v1/follow-ups/{deleted}"), &o.rep)
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{:?}", gone.body);

    for token in [&o.rep, &o.manager] {
        let view = s
            .get(&format!("/api/v1/customers/{customer}/360"), token)
            .await;
        assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
        let shown: Vec<&str> = view.body["follow_ups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["doc_id"].as_str().unwrap())
            .collect();
        assert_eq!(shown.len(), 100, "the newest hundred of the 103 left");
        assert_eq!(shown[..2], [utc.as_str(), beijing.as_str()], "by instant");
        assert!(!shown.contains(&deleted.as_str()));
        assert!(!shown.contains(&oldest.as_str()));
        let expected_middle: Vec<&str> = middle.iter().rev().take(98).map(String::as_str).collect();
        assert_eq!(shown[2..], expected_middle[..]);
        let timeline = view.body["timeline"].as_array().unwrap();
        assert_eq!(timeline[0]["doc_id"], utc.as_str());
    }
}

/// Logs a visit to `customer` at `at` over REST; returns its document id.
async fn follow_up(server: &TestServer, token: &str, customer: &str, at: String) -> String {
    let reply = server
        .post(
            "/api/v1/follow-ups",
            token,
            json!({ "customer_doc_id": customer, "method": "visit", "at": at, "content": "拜访" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["doc_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_scope_too_wide_to_walk_owner_by_owner_lists_its_owned_customers_in_order() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let sales = server.department(&admin, "Sales", &root).await;
    let rep_role = server.role(&admin, "rep").await;
    let head_role = server.role(&admin, "department_head").await;
    server
        .user(&admin, "head@x.cn", &sales, None, &[&head_role])
        .await;
    // More reps than a list walks one by one (32), so the head's list walks every listed
    // customer with the scope checked beside it.
    for i in 0..33 {
        server
            .user(&admin, &format!("rep{i}@x.cn"), &sales, None, &[&rep_role])
            .await;
    }
    let reps = [
        server.token_of("rep0@x.cn").await,
        server.token_of("rep32@x.cn").await,
    ];
    let mut expected = Vec::new();
    for i in 0..3 {
        for (r, token) in reps.iter().enumerate() {
            let name = format!("rep {r} customer {i}");
            let doc = create(
                &server,
                token,
                json!({ "name": name, "confirm_duplicate": true }),
            )
            .await;
            if i == 1 && r == 1 {
                let deleted = server
                    .delete(&format!("/api/v1/customers/{doc}"), token)
                    .await;
                assert!(deleted.status.is_success(), "{:?}", deleted.body);
            } else {
                expected.push(name);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    // Outside the department: not the head's to see.
    create(&server, &admin, json!({ "name": "head office customer" })).await;
    let head = server.token_of("head@x.cn").await;
    assert_eq!(paged_names(&server, &head, "limit=2").await, expected);
    let mut newest = expected.clone();
    newest.reverse();
    assert_eq!(
        paged_names(&server, &head, "limit=2&sort=-created").await,
        newest
    );
    assert_eq!(
        paged_names(&server, &head, "limit=2&state=owned").await,
        expected
    );
    assert!(paged_names(&server, &head, "state=pool").await.is_empty());
    // The admin sees everything.
    assert_eq!(paged_names(&server, &admin, "limit=3").await.len(), 6);
}
