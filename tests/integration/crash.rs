//! Crash recovery: the real binary is killed with SIGKILL in the middle of
//! a burst of concurrent calls, some of them held by the backend, then
//! restarted on the same data directory. The store must be intact, every
//! allowed call must have an outcome or be marked `interrupted`, and the
//! backend's own log must agree with the records.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tollgate_tests::{ServedBinary, args, run_cli, test_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

/// What the backend saw: item ids received, and those it answered.
#[derive(Debug, Default)]
struct Log {
    received: Vec<String>,
    completed: Vec<String>,
}

/// A backend whose `GET /api/items/{id}` answers ids `c0`, `c5`, `c10`, ...
/// never (held until the test ends) and the others after a short delay,
/// recording both events.
async fn slow_backend() -> (String, Arc<Mutex<Log>>) {
    async fn item(State(log): State<Arc<Mutex<Log>>>, UrlPath(id): UrlPath<String>) -> String {
        log.lock().unwrap().received.push(id.clone());
        let n: usize = id.trim_start_matches('c').parse().unwrap_or(1);
        if n.is_multiple_of(5) {
            std::future::pending::<()>().await;
        }
        // A slow backend keeps calls in flight while others arrive.
        tokio::time::sleep(Duration::from_millis(30)).await;
        log.lock().unwrap().completed.push(id.clone());
        json!({ "id": id }).to_string()
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let app = Router::new()
        .route("/api/items/{id}", axum::routing::get(item))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_mid_burst_loses_nothing_and_leaves_nothing_ambiguous() {
    let (backend, log) = slow_backend().await;
    let manifests = tempfile::tempdir().unwrap();
    // A long connector timeout: held calls stay in flight until the kill.
    let text = test_manifests(&backend).replace("timeout_ms: 2000", "timeout_ms: 120000");
    std::fs::write(manifests.path().join("test.yaml"), text).unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = run_cli(
        BIN,
        data.path(),
        manifests.path(),
        &["agents", "issue-key", "tester"],
    );
    assert_eq!(out.status.code(), Some(0));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let mut served = ServedBinary::start(BIN, data.path(), manifests.path(), &[]);
    // Eight clients call in a loop, each with a fresh item id, until the
    // gateway dies under them.
    let next = Arc::new(AtomicUsize::new(0));
    let mut burst = Vec::new();
    for _ in 0..8 {
        let client = served.client(&key).await;
        let next = next.clone();
        burst.push(tokio::spawn(async move {
            loop {
                let id = format!("c{}", next.fetch_add(1, Ordering::SeqCst));
                let call = CallToolRequestParams::new("inventory.get_item")
                    .with_arguments(args(json!({ "item_id": id })));
                if client.call_tool(call).await.is_err() {
                    return;
                }
            }
        }));
    }
    // Kill once calls have completed and others are held in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (done, held) = {
            let l = log.lock().unwrap();
            (l.completed.len(), l.received.len() - l.completed.len())
        };
        if done >= 10 && held >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the burst never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    served.kill();
    let (received, completed) = {
        let l = log.lock().unwrap();
        (l.received.clone(), l.completed.clone())
    };
    for b in &burst {
        b.abort();
    }
    let held: HashSet<&String> = received.iter().filter(|r| !completed.contains(r)).collect();
    assert!(held.len() >= 3);

    // The store survived the kill.
    let db = data.path().join("tollgate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    let blank: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log c WHERE c.kind = 'call' AND c.decision = 'allow' \
         AND NOT EXISTS (SELECT 1 FROM audit_log o WHERE o.ref = c.id)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        blank >= held.len() as i64,
        "the held calls were recorded before dispatch, without an outcome"
    );
    pool.close().await;

    // Restart on the same data directory: recovery runs before serving.
    let mut again = ServedBinary::start(BIN, data.path(), manifests.path(), &[]);
    let out = run_cli(
        BIN,
        data.path(),
        manifests.path(),
        &["audit", "list", "--limit", "100000", "--json"],
    );
    assert_eq!(out.status.code(), Some(0));
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let table = run_cli(
        BIN,
        data.path(),
        manifests.path(),
        &["audit", "list", "--limit", "100000"],
    );
    assert!(String::from_utf8_lossy(&table.stdout).contains("interrupted"));
    let logs = again.kill();
    assert!(
        logs.contains(&format!("marked {blank} allowed call(s)")),
        "{logs}"
    );

    // Match records to calls by the keyed digest of their arguments.
    let secrets = tollgate::secrets::Secrets::load_or_create(data.path()).unwrap();
    let digest = |id: &str| {
        tollgate::pipeline::record::args_digest(
            secrets.digest_key(),
            &args(json!({ "item_id": id })),
        )
    };
    let allowed: HashMap<String, &Value> = records
        .iter()
        .filter(|r| r["decision"] == "allow")
        .map(|r| (r["args_digest"].as_str().unwrap().to_string(), r))
        .collect();
    assert!(allowed.len() >= received.len());

    // Every allowed call has an outcome now; none is left blank.
    for r in allowed.values() {
        let outcome = r["outcome"]
            .as_str()
            .unwrap_or_else(|| panic!("blank: {r}"));
        assert!(
            ["ok", "tool_error", "failed", "interrupted"].contains(&outcome),
            "{r}"
        );
    }
    // No call reached the backend without an allow record.
    for id in &received {
        assert!(
            allowed.contains_key(&digest(id)),
            "{id} reached the backend unrecorded"
        );
    }
    // Held calls were in flight at the kill: outcome unknown.
    for id in &held {
        assert_eq!(allowed[&digest(id)]["outcome"], "interrupted", "{id}");
    }
    // A call recorded as done was answered by the backend.
    let answered: HashSet<String> = completed.iter().map(|id| digest(id)).collect();
    for (d, r) in &allowed {
        if r["outcome"] == "ok" {
            assert!(answered.contains(d), "recorded ok but never answered: {r}");
        }
    }
}

/// Recovery must not mistake a live process's call in flight for a dead
/// one's: a second gateway started on the same data directory while the
/// first has a call held at the backend leaves that record alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_process_leaves_a_live_gateways_calls_in_flight_alone() {
    let (backend, log) = slow_backend().await;
    let gw = tollgate_tests::TestGateway::start(
        &test_manifests(&backend).replace("timeout_ms: 2000", "timeout_ms: 120000"),
    )
    .await;
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    // `c0` is held by the backend: the call stays in flight.
    let held = tokio::spawn(async move {
        let call = CallToolRequestParams::new("inventory.get_item")
            .with_arguments(args(json!({ "item_id": "c0" })));
        let _ = client.call_tool(call).await;
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.lock().unwrap().received.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the call never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut second = ServedBinary::start(BIN, gw.data.path(), gw.manifests.path(), &[]);
    let logs = second.kill();
    assert!(
        logs.contains("another Tollgate is serving this data directory"),
        "{logs}"
    );
    let d = gw.decisions().await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].decision, "allow");
    assert_eq!(
        d[0].outcome, None,
        "a live call was marked by another process"
    );
    held.abort();
}
