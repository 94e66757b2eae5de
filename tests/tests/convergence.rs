//! Random offline edit sequences on three devices, synced through the real server, converge to
//! one state on every device and in the server's projection.

use autosurgeon::{hydrate, reconcile};
use outpost_mobile::records::customer::Customer;
use outpost_tests::TestServer;
use outpost_tests::sync_client::SyncClient;
use proptest::prelude::*;

use crate::records::{Edit, apply, edit};

async fn converge(edits: Vec<Vec<Edit>>) -> Result<(), TestCaseError> {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let root = server.root_department(&admin).await;
    let rep = server.role(&admin, "rep").await;
    server.user(&admin, "p@x.cn", &root, None, &[&rep]).await;
    let token = server.token_of("p@x.cn").await;

    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(
            SyncClient::connect(
                &server.base,
                &token,
                &format!("device-{i}"),
                Some(&format!("storage-{i}")),
            )
            .await,
        );
    }
    let mut doc = outpost_mobile::records::new_document();
    reconcile(&mut doc, Customer::new("Start")).unwrap();
    let id = devices[0].insert(doc);
    devices[0].settle().await;
    for device in &mut devices[1..] {
        device.request(&id).await;
        device.settle().await;
    }

    // Offline: each device edits on its own.
    for (device, sequence) in devices.iter_mut().zip(&edits) {
        for e in sequence {
            apply(device.doc(&id), e);
        }
    }
    // Back online, one after the other, then once more so every device hears the others.
    for _ in 0..2 {
        for device in devices.iter_mut() {
            device.settle().await;
        }
    }
    let states: Vec<Customer> = devices
        .iter_mut()
        .map(|d| hydrate(d.doc(&id)).unwrap())
        .collect();
    prop_assert_eq!(&states[0], &states[1]);
    prop_assert_eq!(&states[1], &states[2]);
    let projected = server.get(&format!("/api/v1/customers/{id}"), &token).await;
    prop_assert_eq!(
        projected.body["name"].as_str(),
        Some(states[0].name.as_str())
    );
    prop_assert_eq!(
        projected.body["tags"].as_array().map(|t| t.len()),
        Some(states[0].tags.len())
    );
    server.shutdown().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    #[test]
    fn three_devices_converge_through_the_server(edits in proptest::collection::vec(proptest::collection::vec(edit(), 0..6), 3)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(converge(edits))?;
    }
}
