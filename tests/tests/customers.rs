//! The REST customer endpoints write through the sync engine: one write path, so a phone sees a
//! web edit and the web sees a phone's.

use autosurgeon::{hydrate, reconcile};
use outpost_mobile::records::customer::Customer;
use outpost_sync::DocumentId;
use outpost_tests::TestServer;
use outpost_tests::sync_client::SyncClient;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn web_and_phone_edits_meet_in_one_document() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    let rep_id = server.user(&admin, "web@x.cn", &root, None, &[&rep]).await;
    server
        .user(&admin, "other@x.cn", &root, None, &[&rep])
        .await;
    let token = server.token_of("web@x.cn").await;
    let other = server.token_of("other@x.cn").await;

    let created = server
        .post("/api/v1/customers", &token, json!({ "name": "Web Co", "phones": ["021-5555 0000"], "contacts": [{ "name": "王五" }] }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["owner_id"], rep_id.as_str());
    let doc_id = created.body["doc_id"].as_str().unwrap().to_string();
    let id = DocumentId::parse(&doc_id).unwrap();
    assert!(
        created.body["contacts"][0]["id"].is_string(),
        "contacts get ids"
    );

    // The phone opens the document the web created.
    let mut phone = SyncClient::connect(&server.base, &token, "phone", None).await;
    phone.request(&id).await;
    phone.settle().await;
    let mut customer: Customer = hydrate(phone.doc(&id)).unwrap();
    assert_eq!(customer.name, "Web Co");
    assert_eq!(customer.contacts[0].name, "王五");

    // A web edit is pushed to the connected phone.
    let patched = server
        .patch(
            &format!("/api/v1/customers/{doc_id}"),
            &token,
            json!({ "industry": "Logistics", "level": "A" }),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    phone.listen().await;
    customer = hydrate(phone.doc(&id)).unwrap();
    assert_eq!(customer.industry.as_deref(), Some("Logistics"));

    // A phone edit shows on the web.
    customer.address = Some("深圳市南山区".into());
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;
    let read = server
        .get(&format!("/api/v1/customers/{doc_id}"), &token)
        .await;
    assert_eq!(read.body["address"], "深圳市南山区");
    assert_eq!(read.body["industry"], "Logistics");
    // The edit left the searchable fields alone, so the search keys stayed; a phone's rename
    // of the contact moves them.
    use crate::customer_search::names;
    for q in ["wangwu", "web"] {
        assert_eq!(
            names(&server, &token, &format!("q={q}")).await,
            ["Web Co"],
            "{q}"
        );
    }
    customer = hydrate(phone.doc(&id)).unwrap();
    customer.contacts[0].name = "赵六".into();
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;
    assert!(names(&server, &token, "q=wangwu").await.is_empty());
    assert_eq!(names(&server, &token, "q=zhaoliu").await, ["Web Co"]);

    // Bad input changes nothing.
    let invalid = server
        .patch(
            &format!("/api/v1/customers/{doc_id}"),
            &token,
            json!({ "level": "Z", "name": "" }),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = invalid.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"level") && fields.contains(&"name"),
        "{fields:?}"
    );
    let unknown = server
        .patch(
            &format!("/api/v1/customers/{doc_id}"),
            &token,
            json!({ "owner_id": "me" }),
        )
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "ownership is not a field edit"
    );
    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{doc_id}"), &token)
            .await
            .body["level"],
        "A"
    );
    assert_eq!(
        server
            .post(
                "/api/v1/customers",
                &token,
                json!({ "name": "x".repeat(300) })
            )
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        server
            .get("/api/v1/customers/not-a-doc-id", &token)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // Out of scope: the same 404 as missing, for reads and writes.
    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{doc_id}"), &other)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .patch(
                &format!("/api/v1/customers/{doc_id}"),
                &other,
                json!({ "industry": "Hack" })
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Delete makes a tombstone every device learns about.
    assert_eq!(
        server
            .delete(&format!("/api/v1/customers/{doc_id}"), &token)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{doc_id}"), &token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/api/v1/customers", &token).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    phone.listen().await;
    let mut tombstone: Customer = hydrate(phone.doc(&id)).unwrap();
    assert_eq!(tombstone.server.state, "deleted");

    // A phone that edits the deleted record offline has the edit undone.
    tombstone.name = "Edited after deletion".into();
    reconcile(phone.doc(&id), &tombstone).unwrap();
    phone.settle().await;
    let after: Customer = hydrate(phone.doc(&id)).unwrap();
    assert_eq!(after.name, "Web Co");
    assert_eq!(after.server.state, "deleted");

    let audit = server
        .get(
            &format!("/api/v1/audit?target_kind=customer&target_id={doc_id}&limit=200"),
            &admin,
        )
        .await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.first(),
        Some(&"sync.corrected"),
        "the edit after deletion was undone"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "customer.delete").count(),
        1
    );
    assert_eq!(actions.last(), Some(&"customer.create"));
    assert!(actions.contains(&"customer.update"));
}

#[tokio::test]
async fn customer_writes_need_the_permission() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let viewer = server
        .post(
            "/api/v1/roles",
            &admin,
            // `customer.phone_full` too, so that sync serves it the customers it reads.
            json!({ "name": "viewer", "data_scope": "all", "permissions": ["customer.read", "customer.phone_full"] }),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .user(&admin, "view@x.cn", &root, None, &[&viewer])
        .await;
    let token = server.token_of("view@x.cn").await;
    let created = server
        .post("/api/v1/customers", &admin, json!({ "name": "Seen Co" }))
        .await;
    let doc_id = created.body["doc_id"].as_str().unwrap();
    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{doc_id}"), &token)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server
            .post("/api/v1/customers", &token, json!({ "name": "Nope" }))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server
            .patch(
                &format!("/api/v1/customers/{doc_id}"),
                &token,
                json!({ "name": "Nope" })
            )
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Through sync, a reader's edit is undone rather than refused.
    let id = DocumentId::parse(doc_id).unwrap();
    let mut phone = SyncClient::connect(&server.base, &token, "viewer-phone", None).await;
    phone.request(&id).await;
    phone.settle().await;
    let mut customer: Customer = hydrate(phone.doc(&id)).unwrap();
    customer.name = "Renamed by a reader".into();
    reconcile(phone.doc(&id), &customer).unwrap();
    phone.settle().await;
    let after: Customer = hydrate(phone.doc(&id)).unwrap();
    assert_eq!(after.name, "Seen Co");
    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{doc_id}"), &admin)
            .await
            .body["name"],
        "Seen Co"
    );
}
