//! Follow-up records: logged from the web or synced from a phone, listed per customer, scoped.

use autosurgeon::reconcile;
use outpost_mobile::records::follow_up::FollowUp;
use outpost_tests::TestServer;
use outpost_tests::sync_client::SyncClient;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn follow_ups_from_web_and_phone_list_under_their_customer() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    server.user(&admin, "f@x.cn", &root, None, &[&rep]).await;
    server.user(&admin, "g@x.cn", &root, None, &[&rep]).await;
    let token = server.token_of("f@x.cn").await;
    let stranger = server.token_of("g@x.cn").await;
    let customer = server
        .post("/api/v1/customers", &token, json!({ "name": "Visited Co" }))
        .await
        .body["doc_id"]
        .as_str()
        .unwrap()
        .to_string();

    let logged = server
        .post("/api/v1/follow-ups", &token, json!({ "customer_doc_id": customer, "method": "visit", "at": "2026-11-27T09:30:00+08:00", "content": "谈了报价", "next_contact_at": "2026-12-01T10:00:00+08:00" }))
        .await;
    assert_eq!(logged.status, StatusCode::CREATED, "{:?}", logged.body);
    let web_id = logged.body["doc_id"].as_str().unwrap().to_string();

    // A call logged offline on the phone.
    let mut phone = SyncClient::connect(&server.base, &token, "phone", None).await;
    let mut doc = outpost_mobile::records::new_document();
    let mut call = FollowUp::new(customer.clone(), "call", "2026-11-27T15:00:00+08:00");
    call.content.splice(0, 0, "电话确认");
    reconcile(&mut doc, &call).unwrap();
    let phone_id = phone.insert(doc);
    phone.settle().await;

    let list = server
        .get(
            &format!("/api/v1/follow-ups?customer_doc_id={customer}"),
            &token,
        )
        .await;
    let mut ids: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["doc_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![web_id.as_str(), phone_id.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(
        server
            .get(&format!("/api/v1/follow-ups/{phone_id}"), &token)
            .await
            .body["content"],
        "电话确认"
    );
    assert_eq!(
        server.get("/api/v1/follow-ups", &stranger).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        server
            .get(&format!("/api/v1/follow-ups/{web_id}"), &stranger)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Bad input: an unknown method, a bad time, someone else's customer.
    let bad = server
        .post(
            "/api/v1/follow-ups",
            &token,
            json!({ "customer_doc_id": customer, "method": "telepathy", "at": "soon" }),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"method") && fields.contains(&"at"),
        "{fields:?}"
    );
    let foreign = server
        .post(
            "/api/v1/follow-ups",
            &stranger,
            json!({ "customer_doc_id": customer, "method": "call", "at": "2026-11-27T09:30:00Z" }),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::UNPROCESSABLE_ENTITY);

    let moved = server
        .patch(
            &format!("/api/v1/follow-ups/{web_id}"),
            &token,
            json!({ "content": "谈了报价和交期", "location": null }),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    assert_eq!(moved.body["content"], "谈了报价和交期");
    assert_eq!(
        server
            .delete(&format!("/api/v1/follow-ups/{web_id}"), &token)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let list = server
        .get(
            &format!("/api/v1/follow-ups?customer_doc_id={customer}"),
            &token,
        )
        .await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
}
