//! Test support: real servers on port 0. A recording HTTP backend, the real
//! gateway (library `server::serve`) over a temporary SQLite store, and
//! rmcp clients over Streamable HTTP.

#![allow(clippy::unwrap_used)]

pub mod jwt;
pub mod oauth;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate::Gateway;
use tollgate::server::HttpOptions;

/// The workspace root (for shipped manifests and examples).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One request the backend received.
#[derive(Debug, Clone)]
pub struct Hit {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body parsed as JSON, if it was.
    pub body: Option<Value>,
}

/// A real HTTP backend on port 0 that records every request.
///
/// Routes: `/boom` answers 500 with a JSON error, `/slow` answers after
/// 5 s, `/big` answers 64 KiB, anything else echoes the request as JSON.
#[derive(Debug, Clone)]
pub struct Backend {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Backend {
    /// Starts the backend.
    pub async fn start() -> Self {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let app = Router::new().fallback(record).with_state(hits.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            hits,
        }
    }

    /// Everything received so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn record(State(hits): State<Arc<Mutex<Vec<Hit>>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let hit = Hit {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: serde_json::from_slice(&bytes).ok(),
    };
    hits.lock().unwrap().push(hit.clone());
    match hit.path.as_str() {
        "/api/boom" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": "database exploded" })),
        )
            .into_response(),
        "/api/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            axum::Json(json!({ "late": true })).into_response()
        }
        "/api/big" => "x".repeat(64 * 1024).into_response(),
        _ => axum::Json(json!({
            "method": hit.method, "path": hit.path, "query": hit.query, "body": hit.body,
        }))
        .into_response(),
    }
}

/// Manifests for the test connector `inventory` in front of `backend_url`,
/// with agents `tester` (most tools) and `other` (one tool).
pub fn test_manifests(backend_url: &str) -> String {
    format!(
        r#"kind: Connector
id: inventory
description: Test inventory API
owners:
  system: {{ name: inventory-team, contact: inv@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http:
  base_url: {backend_url}/api
  timeout_ms: 2000
tools:
  - name: get_item
    description: Read an item
    risk: low
    annotations: {{ read_only: true }}
    input_schema:
      type: object
      properties:
        item_id: {{ type: string, minLength: 1 }}
        verbose: {{ type: boolean }}
      required: [item_id]
      additionalProperties: false
    http:
      request: {{ method: GET, path: "/items/{{item_id}}", query: {{ v: verbose }} }}
  - name: create_item
    description: Create an item
    risk: medium
    input_schema:
      type: object
      properties:
        name: {{ type: string }}
        qty: {{ type: integer, minimum: 0 }}
        trace: {{ type: string }}
      required: [name, qty]
    sensitive: [trace]
    http:
      request: {{ method: POST, path: /items, headers: {{ x-trace: trace }} }}
  - name: boom
    description: Always fails
    risk: low
    input_schema: {{ type: object }}
    http:
      request: {{ method: GET, path: /boom }}
      response: {{ error_message: /error }}
  - name: slow
    description: Never answers in time
    risk: low
    input_schema: {{ type: object }}
    http:
      request: {{ method: GET, path: /slow }}
      timeout_ms: 300
  - name: purge
    description: Granted to nobody
    risk: critical
    input_schema: {{ type: object }}
    http:
      request: {{ method: DELETE, path: /items }}
---
kind: Agent
id: tester
description: Test agent
owners:
  business: {{ name: biz, contact: biz@example.com }}
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [inventory.get_item, inventory.create_item, inventory.boom, inventory.slow]
---
kind: Agent
id: other
description: Second test agent
owners:
  business: {{ name: biz, contact: biz@example.com }}
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [inventory.get_item]
"#
    )
}

/// The real gateway on port 0 over a temporary data and manifest directory.
#[derive(Debug)]
pub struct TestGateway {
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// Listening address.
    pub addr: SocketAddr,
    /// Shared state, to inspect the store.
    pub gw: Arc<Gateway>,
    /// The gateway's clock: tests move it instead of sleeping.
    pub clock: Arc<tollgate::clock::ManualClock>,
    /// Data directory (SQLite file lives here).
    pub data: tempfile::TempDir,
    /// Manifest directory.
    pub manifests: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestGateway {
    /// Writes `manifests` as `test.yaml` and starts the gateway on them.
    pub async fn start(manifests: &str) -> Self {
        Self::start_with(
            manifests,
            HttpOptions {
                max_body_bytes: 64 * 1024,
                ..HttpOptions::default()
            },
        )
        .await
    }

    /// Same, with explicit HTTP options.
    pub async fn start_with(manifests: &str, options: HttpOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.yaml"), manifests).unwrap();
        Self::start_dir(dir, options).await
    }

    /// Starts the gateway on an existing manifest directory.
    pub async fn start_dir(manifests: tempfile::TempDir, options: HttpOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, manifests, options).await
    }

    /// Reserves the gateway's address first, for backends that must know
    /// it (to fetch its JWKS) before the manifests naming them are written.
    pub async fn reserve() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        (listener, base)
    }

    /// Starts the gateway on a reserved listener with `manifests` as
    /// `test.yaml` and extra files (secrets) beside it.
    pub async fn start_reserved(
        listener: TcpListener,
        manifests: &str,
        files: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.yaml"), manifests).unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        Self::start_on(listener, dir, HttpOptions::default()).await
    }

    /// Starts the gateway on `listener`, assembled by `tollgate::app` as
    /// `tollgate serve` assembles it (crash recovery, start-up record, the
    /// task sweeper, the demo backend if declared), on a [`ManualClock`]
    /// and a fresh data directory. The manifest watcher is off: tests
    /// that reload call [`TestGateway::watch`] with their own period.
    ///
    /// [`ManualClock`]: tollgate::clock::ManualClock
    pub async fn start_on(
        listener: TcpListener,
        manifests: tempfile::TempDir,
        options: HttpOptions,
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let clock = Arc::new(tollgate::clock::ManualClock::new());
        let config = tollgate::app::Config::new(data.path(), manifests.path())
            .with_clock(clock.clone())
            .with_http(options)
            .with_reload_interval(None);
        let app = tollgate::app::App::build(config)
            .await
            .unwrap_or_else(|e| panic!("the gateway did not start: {e}"));
        let gw = app.gateway();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            app.serve_http(listener, async {
                let _ = rx.await;
            })
            .await
        });
        Self {
            url: format!("http://{addr}/mcp"),
            addr,
            gw,
            clock,
            data,
            manifests,
            shutdown: Some(tx),
        }
    }

    /// Stops serving and starts again on the same data and manifest
    /// directories, on a new port and a new clock, as a restarted process
    /// would (everything in memory is gone; the store is what remains).
    pub async fn restart(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clock = Arc::new(tollgate::clock::ManualClock::new());
        let config = tollgate::app::Config::new(self.data.path(), self.manifests.path())
            .with_clock(clock.clone())
            .with_reload_interval(None);
        let app = tollgate::app::App::build(config)
            .await
            .unwrap_or_else(|e| panic!("the gateway did not restart: {e}"));
        self.gw = app.gateway();
        self.addr = listener.local_addr().unwrap();
        self.url = format!("http://{}/mcp", self.addr);
        self.clock = clock;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            app.serve_http(listener, async {
                let _ = rx.await;
            })
            .await
        });
        self.shutdown = Some(tx);
    }

    /// Issues a credential for approver `id` (as `tollgate approvers
    /// issue-key` does).
    pub async fn issue_approver_key(&self, id: &str) -> String {
        let k = tollgate::keys::generate(tollgate::approvals::APPROVER_KEY_PREFIX, "apk_");
        let record = tollgate::store::ApproverKeyRecord {
            key_id: k.key_id.clone(),
            approver_id: id.into(),
            label: None,
            created_at: now(),
            revoked_at: None,
        };
        self.gw
            .store()
            .insert_approver_key(&record, &k.hash)
            .await
            .unwrap();
        k.key
    }

    /// The newest pending approval request, waiting (bounded: 10 s) until
    /// there is one.
    pub async fn pending_approval(&self) -> tollgate::store::ApprovalRequest {
        for _ in 0..400 {
            let list = self
                .gw
                .store()
                .approvals(&tollgate::store::ApprovalFilter {
                    statuses: vec![tollgate::store::ApprovalStatus::Pending],
                    ..Default::default()
                })
                .await
                .unwrap();
            if let Some(r) = list.into_iter().next() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let all = self
            .gw
            .store()
            .approvals(&Default::default())
            .await
            .unwrap();
        panic!("no pending approval request; all requests: {all:?}");
    }

    /// The gateway's base URL (`http://127.0.0.1:PORT`).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Issues a key for `agent` (as `tollgate agents issue-key` does).
    pub async fn issue_key(&self, agent: &str) -> String {
        let k = tollgate::pipeline::authenticate::new_key();
        self.gw
            .store()
            .insert_key(&k.key_id, agent, &k.hash, None, &now())
            .await
            .unwrap();
        k.key
    }

    /// An rmcp client (handshake revisions) authenticated with `key`.
    pub async fn client(&self, key: &str) -> RunningService<RoleClient, ()> {
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone())
            .auth_header(key.to_string());
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .unwrap()
    }

    /// An rmcp client on the stateless 2026-07-28 revision.
    pub async fn stateless_client(&self, key: &str) -> RunningService<RoleClient, ()> {
        use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone())
            .auth_header(key.to_string());
        let mode = ClientLifecycleMode::Discover {
            preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
        };
        ().serve_with_lifecycle(StreamableHttpClientTransport::from_config(config), mode)
            .await
            .unwrap()
    }

    /// Watches the manifest directory for changes every `every`.
    pub fn watch(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        tollgate::reload::spawn(self.gw.clone(), self.manifests.path().to_path_buf(), every)
    }

    /// Runs the real CLI (`bin`: the test package's `tollgate-under-test`)
    /// against this gateway's data and manifests.
    pub fn cli(&self, bin: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new(bin)
            .arg("--data")
            .arg(self.data.path())
            .arg("--manifests")
            .arg(self.manifests.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts a task as an operator would.
    pub async fn start_task(
        &self,
        agent: &str,
        tools: &[&str],
        constraints: &[&str],
        ttl_secs: u64,
    ) -> tollgate::tasks::StartedTask {
        tollgate::tasks::start(
            &self.gw,
            tollgate::tasks::StartTask {
                agent_id: agent.into(),
                purpose: "integration test".into(),
                tools: tools.iter().map(|t| t.to_string()).collect(),
                constraints: constraints.iter().map(|c| c.to_string()).collect(),
                ttl: Duration::from_secs(ttl_secs),
                started_by: "tester-operator".into(),
                origin: "cli",
            },
        )
        .await
        .unwrap()
    }

    /// The gateway's JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Every decision record, oldest first (after the audit writer has
    /// committed everything queued so far: outcomes are not waited for).
    pub async fn decisions(&self) -> Vec<tollgate::store::DecisionRecord> {
        self.gw.audit().flush().await;
        let mut all = self
            .gw
            .store()
            .decisions(&Default::default())
            .await
            .unwrap();
        all.reverse();
        all
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Now, as the store writes times (RFC 3339, UTC, microseconds).
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&f).unwrap()
}

/// Arguments as an rmcp JSON object.
pub fn args(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("arguments must be an object, got {other}"),
    }
}

/// A raw JSON-RPC POST to the gateway, for what a well-behaved client never sends.
pub async fn raw_post(
    url: &str,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    r.send().await.unwrap()
}

/// The real binary (`bin`: the test package's `tollgate-under-test`)
/// serving HTTP on a port the OS picks, as an operator runs it, with its
/// stderr captured. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServedBinary {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://ADDR/mcp`.
    pub url: String,
    stderr: Arc<Mutex<String>>,
    stderr_done: Option<std::thread::JoinHandle<()>>,
}

impl ServedBinary {
    /// Runs `bin --data DATA --manifests MANIFESTS serve --listen
    /// 127.0.0.1:0` with extra environment `envs`, and waits (at most 60 s)
    /// until it says where it serves.
    pub fn start(bin: &str, data: &Path, manifests: &Path, envs: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .arg("--data")
            .arg(data)
            .arg("--manifests")
            .arg(manifests)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_done = std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(pipe);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(rest) = line.split("serving MCP at http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the binary did not start serving: {}",
                    stderr.lock().unwrap()
                );
            }
        };
        Self {
            child,
            addr,
            url: format!("http://{addr}/mcp"),
            stderr,
            stderr_done: Some(stderr_done),
        }
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Kills it with SIGKILL (no clean-up runs) and waits for it to go;
    /// returns everything it wrote to stderr.
    pub fn kill(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(done) = self.stderr_done.take() {
            let _ = done.join();
        }
        self.stderr()
    }

    /// An rmcp client (handshake revisions) authenticated with `key`.
    pub async fn client(&self, key: &str) -> RunningService<RoleClient, ()> {
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone())
            .auth_header(key.to_string());
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .unwrap()
    }
}

impl Drop for ServedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real CLI (`bin`) on `data` and `manifests` with `args`.
pub fn run_cli(bin: &str, data: &Path, manifests: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin)
        .arg("--data")
        .arg(data)
        .arg("--manifests")
        .arg(manifests)
        .args(args)
        .output()
        .unwrap()
}

/// Runs the real CLI (`bin`) with its stdout a pipe whose reader is
/// already gone, as `tollgate ... --json | head -c1` when `head` exits
/// before the first write: every write meets a broken pipe.
pub fn run_with_closed_stdout(
    bin: &str,
    data: &Path,
    manifests: &Path,
    args: &[&str],
) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    std::process::Command::new(bin)
        .arg("--data")
        .arg(data)
        .arg("--manifests")
        .arg(manifests)
        .args(args)
        .stdout(writer)
        .output()
        .unwrap()
}

/// A server process that prints `listening on URL` as its first line
/// (the test upstream, the conformance upstream), killed when dropped.
#[derive(Debug)]
pub struct Listening {
    child: std::process::Child,
    /// The URL it printed.
    pub url: String,
}

impl Listening {
    /// Starts `cmd` (stdout is taken) and reads the URL it prints.
    pub fn start(cmd: &mut std::process::Command) -> Self {
        use std::io::BufRead;
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("expected `listening on URL`, got {line:?}"))
            .to_string();
        Self { child, url }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
