//! Several gateways on one machine, on the shipped manifests: each gets its
//! own demo backend with `--demo-listen`, a gateway on the same data
//! directory shares one, and any other holder of the address is a clear
//! start-up error (never a silent "someone else serves it" whose backend
//! then refuses every call).

use std::path::Path;
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::json;
use tollgate_tests::{ServedBinary, args, run_cli, workspace_root};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

fn issue_key(data: &Path) -> String {
    let out = run_cli(
        BIN,
        data,
        &workspace_root().join("manifests"),
        &["agents", "issue-key", "support-bot"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Where the binary's demo backend listens, from its start-up log.
fn demo_addr(served: &ServedBinary) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = served.stderr();
        if let Some(line) = log.lines().find(|l| l.contains("demo backend listening")) {
            let at = line
                .split(|c: char| c.is_whitespace() || c == '"')
                .filter_map(|w| w.strip_prefix("at="))
                .next()
                .unwrap_or_else(|| panic!("no address in {line}"));
            return at.to_string();
        }
        assert!(Instant::now() < deadline, "no demo backend in:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn search() -> CallToolRequestParams {
    CallToolRequestParams::new("helpdesk.search_tickets")
        .with_arguments(args(json!({ "query": "charged twice" })))
}

/// A call through `client` reached a demo backend that accepted this
/// gateway's credential and answered with the sample ticket.
async fn assert_search_works<S: rmcp::service::Service<rmcp::RoleClient>>(
    client: &rmcp::service::RunningService<rmcp::RoleClient, S>,
) {
    let r = client.call_tool(search()).await.unwrap();
    let text = r.content[0].as_text().unwrap().text.clone();
    assert_ne!(r.is_error, Some(true), "{text}");
    assert!(text.contains("4521"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_the_shipped_manifests_each_get_their_own_demo_backend() {
    let manifests = workspace_root().join("manifests");
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (key_a, key_b) = (issue_key(data_a.path()), issue_key(data_b.path()));
    let env = [
        ("TOLLGATE_DEMO_LISTEN", "127.0.0.1:0"),
        ("RUST_LOG", "info"),
    ];
    let a = ServedBinary::start(BIN, data_a.path(), &manifests, &env);
    let b = ServedBinary::start(BIN, data_b.path(), &manifests, &env);
    let (demo_a, demo_b) = (demo_addr(&a), demo_addr(&b));
    assert_ne!(demo_a, demo_b);
    assert_ne!(demo_a, "127.0.0.1:8931");

    // Each demo backend verifies its own gateway's credentials (JWKS), so
    // a call succeeds only if the connectors were pointed at the right one.
    let ca = a.client(&key_a).await;
    let cb = b.client(&key_b).await;
    assert_search_works(&ca).await;
    assert_search_works(&cb).await;
    for (served, demo) in [(&a, &demo_a), (&b, &demo_b)] {
        let log = served.stderr();
        assert!(
            log.contains("demo backend verified a gateway-minted credential"),
            "{demo}: {log}"
        );
        assert!(!log.contains("refused a credential"), "{log}");
    }
    ca.cancel().await.unwrap();
    cb.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_demo_address_is_a_clear_start_up_error() {
    let manifests = workspace_root().join("manifests");
    // Something that is not a demo backend: accepts, never answers.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--data")
        .arg(data.path())
        .arg("--manifests")
        .arg(&manifests)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TOLLGATE_DEMO_LISTEN", &taken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the demo backend's address {taken} is already in use"
        )) && err.contains("not a Tollgate demo backend")
            && err.contains("--demo-listen 127.0.0.1:0"),
        "{err}"
    );
    assert!(!err.contains("serving MCP at"), "{err}");

    // Another Tollgate's demo backend, on another data directory.
    let other = tempfile::tempdir().unwrap();
    let served = ServedBinary::start(
        BIN,
        other.path(),
        &manifests,
        &[
            ("TOLLGATE_DEMO_LISTEN", "127.0.0.1:0"),
            ("RUST_LOG", "info"),
        ],
    );
    let theirs = demo_addr(&served);
    let out = std::process::Command::new(BIN)
        .arg("--data")
        .arg(data.path())
        .arg("--manifests")
        .arg(&manifests)
        .args(["serve", "--listen", "127.0.0.1:0", "--demo-listen", &theirs])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{theirs} is already in use"))
            && err.contains("another Tollgate's demo backend (a different data directory)"),
        "{err}"
    );
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stdio_gateway_on_the_same_data_directory_shares_the_demo_backend() {
    let manifests = workspace_root().join("manifests");
    let data = tempfile::tempdir().unwrap();
    let key = issue_key(data.path());
    let http = ServedBinary::start(
        BIN,
        data.path(),
        &manifests,
        &[
            ("TOLLGATE_DEMO_LISTEN", "127.0.0.1:0"),
            ("RUST_LOG", "info"),
        ],
    );
    let demo = demo_addr(&http);

    // A desktop client launches a stdio gateway on the same data and
    // manifests: it signs with the same keys, so the HTTP gateway's demo
    // backend accepts its credentials.
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--data")
        .arg(data.path())
        .arg("--manifests")
        .arg(&manifests)
        .args(["serve", "--stdio", "--demo-listen", &demo])
        .env("TOLLGATE_AGENT_KEY", &key)
        .env("RUST_LOG", "warn");
    let client = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
    assert_search_works(&client).await;
    client.cancel().await.unwrap();
    let log = http.stderr();
    assert!(
        log.contains("demo backend verified a gateway-minted credential"),
        "{log}"
    );
}
