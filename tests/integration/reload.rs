//! Manifest reload on a running gateway: a valid change applies without
//! dropping the connection; a broken one is rejected with file and line and
//! the old configuration keeps working; every attempt is recorded.

use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use tollgate_tests::{Backend, TestGateway, args, test_manifests};

async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn a_valid_change_applies_and_a_broken_one_is_rejected() {
    let backend = Backend::start().await;
    let text = test_manifests(&backend.url);
    let gw = TestGateway::start(&text).await;
    let _watcher = gw.watch(Duration::from_millis(20));
    let key = gw.issue_key("other").await;
    let client = gw.client(&key).await;
    let create = || {
        CallToolRequestParams::new("inventory.create_item")
            .with_arguments(args(json!({ "name": "n", "qty": 1 })))
    };
    assert!(client.call_tool(create()).await.is_err());

    // Grant create_item to `other`.
    let granted = text.replace(
        "tools: [inventory.get_item]\n",
        "tools: [inventory.get_item, inventory.create_item]\n",
    );
    assert_ne!(granted, text);
    std::fs::write(gw.manifests.path().join("test.yaml"), &granted).unwrap();
    eventually(|| async {
        client
            .list_all_tools()
            .await
            .map(|t| t.len() == 3)
            .unwrap_or(false)
    })
    .await;
    assert_eq!(
        client.call_tool(create()).await.unwrap().is_error,
        Some(false)
    );

    // A broken file: rejected, reported with file and line, old grants stay.
    std::fs::write(
        gw.manifests.path().join("zz-broken.yaml"),
        "kind: Agent\nid: typo\ndescripton: x\n",
    )
    .unwrap();
    let store = gw.gw.clone();
    eventually(|| {
        let store = store.clone();
        async move {
            store
                .store()
                .manifest_changes(10)
                .await
                .unwrap()
                .iter()
                .any(|c| c.outcome == "rejected")
        }
    })
    .await;
    let changes = gw.gw.store().manifest_changes(10).await.unwrap();
    let rejected = changes.iter().find(|c| c.outcome == "rejected").unwrap();
    let errors = rejected.errors.as_ref().unwrap().join("\n");
    assert!(
        errors.contains("zz-broken.yaml:3:1: unknown field `descripton`"),
        "{errors}"
    );
    assert_eq!(
        client.call_tool(create()).await.unwrap().is_error,
        Some(false)
    );
    assert_eq!(client.list_all_tools().await.unwrap().len(), 3);

    let applied = changes.iter().find(|c| c.outcome == "applied").unwrap();
    let files = applied.files.as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["change"], "modified");
    assert_eq!(files[0]["sha256"].as_str().unwrap().len(), 64);
}
