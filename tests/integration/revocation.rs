//! Revocation always wins (ARCHITECTURE.md, "Revocation bound"): once a
//! retirement, key revocation or task end has committed — here from a
//! second store connection on the same data directory, as another process
//! (the CLI, another replica) would — no dispatch reaches the backend later
//! than 100 ms after the commit. Each test opens the window on purpose and
//! checks what the backend actually received, with its own clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate::store::{AgentStatus, SqliteStore, Store, TaskEnd, TaskStatus};
use tollgate_tests::{TestGateway, args, test_manifests};

/// The promise under test.
const BOUND: Duration = Duration::from_millis(100);

/// A backend that notes when each request arrived, by its own clock.
#[derive(Clone, Default)]
struct TimedBackend {
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl TimedBackend {
    async fn start(&self) -> String {
        async fn hit(State(b): State<TimedBackend>, _r: Request) -> axum::Json<Value> {
            b.arrivals.lock().unwrap().push(Instant::now());
            axum::Json(json!({ "ok": true }))
        }
        let app = Router::new().fallback(hit).with_state(self.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn count(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    fn after(&self, t: Instant) -> usize {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|a| **a > t)
            .count()
    }
}

fn get_item() -> CallToolRequestParams {
    CallToolRequestParams::new("inventory.get_item").with_arguments(args(json!({"item_id": "x"})))
}

/// A second connection to the same data directory: what another process
/// (the CLI, another replica) commits through.
async fn other_process(gw: &TestGateway) -> SqliteStore {
    SqliteStore::open(gw.data.path()).await.unwrap()
}

/// What ends the agent's right to call, committed elsewhere.
#[derive(Clone, Copy, Debug)]
enum Revocation {
    Retire,
    RevokeKey,
    EndTask,
}

/// 12 clients call as fast as they can; mid-burst the revocation commits
/// from another connection. Nothing may arrive at the backend later than
/// the bound after the commit returned, and calls after it are refused.
async fn burst_against(revocation: Revocation) {
    let backend = TimedBackend::default();
    let url = backend.start().await;
    let gw = TestGateway::start(&test_manifests(&url)).await;
    let key = gw.issue_key("tester").await;
    let task = match revocation {
        Revocation::EndTask => Some(
            gw.start_task("tester", &["inventory.get_item"], &[], 600)
                .await,
        ),
        _ => None,
    };
    let bearer = task
        .as_ref()
        .map(|t| t.token.clone())
        .unwrap_or(key.clone());
    let key_id = gw
        .gw
        .store()
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.agent_id == "tester")
        .unwrap()
        .key_id;

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..12 {
        let client = gw.client(&bearer).await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut refused_after = 0u32;
            while !stop.load(Ordering::SeqCst) {
                match client.call_tool(get_item()).await {
                    Ok(r) if r.is_error != Some(true) => {}
                    _ => refused_after += 1,
                }
            }
            refused_after
        }));
    }
    // Let the burst get going before the revocation lands.
    let deadline = Instant::now() + Duration::from_secs(20);
    while backend.count() < 40 {
        assert!(Instant::now() < deadline, "the burst never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let other = other_process(&gw).await;
    match revocation {
        Revocation::Retire => {
            other
                .set_agent_status(
                    "tester",
                    AgentStatus::Retired,
                    "test",
                    "operator",
                    &tollgate_now(),
                )
                .await
                .unwrap();
        }
        Revocation::RevokeKey => {
            assert!(other.revoke_key(&key_id, &tollgate_now()).await.unwrap());
        }
        Revocation::EndTask => {
            let id = &task.as_ref().unwrap().task.id;
            let end = TaskEnd {
                status: TaskStatus::Completed,
                by: "operator".into(),
                reason: "test".into(),
                at: tollgate_now(),
            };
            assert!(other.end_task(id, &end).await.unwrap().is_some());
        }
    }
    let committed = Instant::now();
    let before = backend.count();

    // Keep the burst running well past the bound.
    tokio::time::sleep(BOUND * 5).await;
    stop.store(true, Ordering::SeqCst);
    let mut refusals = 0;
    for w in workers {
        refusals += w.await.unwrap();
    }
    let late = backend.after(committed + BOUND);
    assert_eq!(
        late, 0,
        "{revocation:?}: {late} calls reached the backend more than {BOUND:?} after the commit"
    );
    assert!(before >= 40, "calls ran before the revocation");
    assert!(
        refusals > 0,
        "{revocation:?}: the clients kept calling after the commit and were refused"
    );
}

fn tollgate_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retirement_committed_elsewhere_stops_a_burst_within_the_bound() {
    burst_against(Revocation::Retire).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_revocation_committed_elsewhere_stops_a_burst_within_the_bound() {
    burst_against(Revocation::RevokeKey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_end_committed_elsewhere_stops_a_burst_within_the_bound() {
    burst_against(Revocation::EndTask).await;
}

/// The slow-body attack: the client sends its headers (authenticated, the
/// agent active at that moment), holds the body back, the agent is retired,
/// then the body arrives. The call is judged on the status after the
/// retirement, and the backend receives nothing.
#[tokio::test]
async fn a_held_body_is_judged_after_a_retirement_committed_meanwhile() {
    let backend = TimedBackend::default();
    let url = backend.start().await;
    let gw = TestGateway::start(&test_manifests(&url)).await;
    let key = gw.issue_key("tester").await;
    let http = reqwest::Client::new();

    // A legacy session, opened by hand so the call's body can be held.
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"slow","version":"1"}}});
    let r = http
        .post(&gw.url)
        .bearer_auth(&key)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "initialize: {}", r.status());
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let _ = r.bytes().await;
    let r = http
        .post(&gw.url)
        .bearer_auth(&key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "initialized: {}", r.status());

    // The call: headers now, body later.
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call",
        "params":{"name":"inventory.get_item","arguments":{"item_id":"x"}}})
    .to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let pending = tokio::spawn({
        let (http, url, key, session, len) = (
            http.clone(),
            gw.url.clone(),
            key.clone(),
            session.clone(),
            call.len(),
        );
        async move {
            http.post(&url)
                .bearer_auth(&key)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .header("content-length", len)
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", "2025-06-18")
                .body(body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    // Give the headers time to be read and authenticated at the edge.
    tokio::time::sleep(Duration::from_millis(200)).await;
    other_process(&gw)
        .await
        .set_agent_status(
            "tester",
            AgentStatus::Retired,
            "test",
            "operator",
            &tollgate_now(),
        )
        .await
        .unwrap();
    // Wait past the bound, then release the body.
    tokio::time::sleep(BOUND * 2).await;
    tx.send(Ok(call.into_bytes())).await.unwrap();
    drop(tx);
    let answer = pending.await.unwrap();
    assert!(answer.contains("agent_retired"), "answer: {answer}");
    assert_eq!(backend.count(), 0, "the held call reached the backend");
    let d = gw.decisions().await;
    let last = d.last().unwrap();
    assert_eq!(last.tool, "inventory.get_item");
    assert_ne!(last.outcome.as_deref(), Some("ok"));
}

/// A stream of body chunks from a channel, without another dependency.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// The watcher notices a change committed by another connection without
/// any call asking: the in-memory feed moves on its own.
#[tokio::test]
async fn the_watcher_applies_changes_committed_by_another_process() {
    let backend = TimedBackend::default();
    let url = backend.start().await;
    let gw = TestGateway::start(&test_manifests(&url)).await;
    let before = gw.gw.revocations().fence();
    other_process(&gw)
        .await
        .set_agent_status(
            "other",
            AgentStatus::Suspended,
            "test",
            "operator",
            &tollgate_now(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.gw.revocations().fence() == before {
        assert!(
            Instant::now() < deadline,
            "the watcher never applied the change"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
