//! stdio: the real binary spawned as a child process, its key from the
//! environment, driven by an rmcp client.

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::json;
use tollgate_tests::{Backend, TestGateway, args, test_manifests};

fn command(gw: &TestGateway, key: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate-under-test"));
    cmd.arg("--data")
        .arg(gw.data.path())
        .arg("--manifests")
        .arg(gw.manifests.path())
        .args(["serve", "--stdio"])
        .env("TOLLGATE_AGENT_KEY", key)
        .env("RUST_LOG", "warn");
    cmd
}

#[tokio::test]
async fn stdio_lists_and_calls_with_the_key_from_the_environment() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let key = gw.issue_key("other").await;
    let client = ().serve(TokioChildProcess::new(command(&gw, &key)).unwrap()).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(
        tools.iter().map(|t| t.name.to_string()).collect::<Vec<_>>(),
        ["inventory.get_item", "tollgate.start_task"]
    );
    let r = client
        .call_tool(
            CallToolRequestParams::new("inventory.get_item")
                .with_arguments(args(json!({ "item_id": "7" }))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    assert_eq!(backend.hits()[0].path, "/api/items/7");
    let refused = client
        .call_tool(
            CallToolRequestParams::new("inventory.create_item")
                .with_arguments(args(json!({ "name": "x", "qty": 1 }))),
        )
        .await;
    assert!(refused.is_err());
    client.cancel().await.unwrap();
    let d = gw.decisions().await;
    assert_eq!(d.len(), 2);
    assert!(
        d.iter()
            .all(|r| r.transport == "stdio" && r.agent_id == "other")
    );
}

#[tokio::test]
async fn stdio_refuses_to_start_with_a_bad_key() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let out = command(&gw, "tgk_wrong")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOLLGATE_AGENT_KEY was refused"), "{err}");
    assert!(out.stdout.is_empty());
}
