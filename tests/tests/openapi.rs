//! The OpenAPI document covers every route the router serves, and each documented operation is
//! really served.

use outpost_tests::TestServer;
use reqwest::StatusCode;

#[tokio::test]
async fn every_documented_operation_is_served_and_documents_its_errors() {
    let server = TestServer::start().await;
    let doc = server
        .send("GET", "/api/openapi.json", None, None, &[])
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{} paths", paths.len());
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            if !["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                continue;
            }
            let concrete = path.replace("{id}", "0192f0c1-0000-7000-8000-000000000000");
            let reply = server
                .send(&method.to_uppercase(), &concrete, None, None, &[])
                .await;
            assert_ne!(
                reply.problem(),
                "route-not-found",
                "{method} {path} is documented but not served"
            );
            assert_ne!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let responses = operation["responses"].as_object().unwrap();
            if method != "get" || path.starts_with("/api/v1") {
                let has_error = responses.keys().any(|code| code.starts_with('4'));
                assert!(
                    has_error
                        || path.ends_with("openapi.json")
                        || path.starts_with("/healthz")
                        || path.starts_with("/readyz"),
                    "{method} {path} documents its errors"
                );
            }
            if operation.get("requestBody").is_some() {
                let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
                assert!(
                    !schema.is_null(),
                    "{method} {path} documents its request body"
                );
            }
        }
    }
    assert!(doc.body["components"]["schemas"]["Problem"].is_object());
    // The import takes a file upload as well as JSON, and says so.
    let upload = &paths["/api/v1/customers/imports"]["post"]["requestBody"]["content"]["multipart/form-data"]
        ["schema"];
    assert!(!upload.is_null(), "the import documents its upload form");
}

/// Routes can only be registered through utoipa's `routes!`, which documents them: a plain
/// `.route(` anywhere in the backend would serve an undocumented path.
#[test]
fn no_route_is_registered_outside_the_documented_router() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../backend/src");
    let mut offenders = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains(".route(")
                    || text.contains(".route_service(")
                    || text.contains(".nest(")
                {
                    offenders.push(path.display().to_string());
                }
            }
        }
    }
    assert!(offenders.is_empty(), "undocumented routes in {offenders:?}");
}
