//! The upstream-MCP connector: an MCP server behind Tollgate, reached with
//! rmcp's client over stdio (a child process this module starts, watches
//! and restarts) or Streamable HTTP.
//!
//! What it owns:
//! - [`Upstream`]: one running upstream and its connection. It outlives
//!   manifest reloads (the gateway keeps it while the `mcp:` block is
//!   unchanged), so a reload neither restarts a child nor opens a session.
//!   It lists the upstream's tools on connect and whenever the upstream
//!   says its list changed, and publishes them as a [`Discovery`]; the
//!   gateway decides what of that an agent may see (curation, pins).
//! - [`McpConnector`]: the [`Connector`] the catalog calls, mapping the
//!   curated (possibly renamed) tool names onto the upstream's.
//! - [`definition_hash`]: the digest `tollgate connectors pin` writes and
//!   the gateway compares, so a definition that changes under a pin is
//!   noticed.
//!
//! Over HTTP the credential the gateway issued for the call's task is the
//! only one sent, as a header on a session opened with it; sessions are
//! kept per credential and reused, never opened per call. A call that is
//! dropped (the agent cancelled or went away) sends
//! `notifications/cancelled` to the upstream; the upstream's progress for a
//! call goes to the call's [`CallRelay`].
//!
//! What an upstream sends unasked during a call (log messages, sampling and
//! elicitation requests of the agent's client) goes to the call it belongs
//! to, or nowhere: over Streamable HTTP a request names the response stream
//! it arrived on (SEP-2260); over stdio nothing does, so a message is tied
//! to a call only while that call is the only request on the connection. A
//! guess would hand one agent's exchange to another, so there is none: what
//! cannot be tied to one call is refused (requests) or only logged here
//! (log messages). The gateway governs what a [`CallRelay`] passes on.

mod config;

pub use config::{McpConnectorConfig, McpProtocol, StdioConfig};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CancelledNotification, CancelledNotificationParam,
    ClientCapabilities, ClientConfig, ClientNotification, ClientRequest, ElicitRequestParams,
    ElicitResult, ErrorData, Implementation, ProgressNotificationParam, ProgressToken,
    ProtocolVersion, RequestId, ServerResult, Tool,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, InboundStreamOrigin, NotificationContext, Peer,
    PeerRequestOptions, RequestContext, RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::{BackendCredential, Connector, ConnectorCall, ConnectorError, ToolOutput};

/// Shortest and longest wait before a dead stdio upstream is started again.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An upstream that stayed up this long starts its next backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// A session not used for this long is closed when the next one opens.
const SESSION_IDLE: Duration = Duration::from_secs(600);
/// Sessions kept per HTTP upstream (one per live credential).
const MAX_SESSIONS: usize = 64;
/// How often an upstream's tools are listed again without being told.
const RELIST_EVERY: Duration = Duration::from_secs(60);
/// Longest stderr line logged whole.
const MAX_STDERR_LINE: usize = 4096;

/// What the upstream currently offers.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// Not connected yet.
    Pending,
    /// Its tools, as the upstream defines them.
    Ready(Arc<Vec<Tool>>),
    /// It could not be started or listed; why (for operators).
    Failed(String),
}

/// The upstream's prompts and resources (empty when it offers none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras {
    /// Its prompts.
    pub prompts: Vec<rmcp::model::Prompt>,
    /// Its resources.
    pub resources: Vec<rmcp::model::Resource>,
    /// Its resource templates.
    pub templates: Vec<rmcp::model::ResourceTemplate>,
}

/// What the gateway asks of an upstream for one exposed name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `tools/call` of this upstream tool.
    Tool(String),
    /// `prompts/get` of this upstream prompt.
    Prompt(String),
    /// `resources/read` of this URI.
    Resource(String),
    /// `resources/read` of the URI in the call's `uri` argument, which
    /// must match this URI template (RFC 6570, `{var}` and `{+var}`).
    ResourceTemplate(String),
}

/// Whether `uri` is an expansion of `template` (RFC 6570 level 1 and
/// reserved expansion: `{var}` stands for one or more characters other
/// than `/`, `?` and `#`; `{+var}` for one or more of any).
pub fn template_matches(template: &str, uri: &str) -> bool {
    fn go(t: &[u8], u: &[u8]) -> bool {
        match t.first() {
            None => u.is_empty(),
            Some(b'{') => {
                let Some(end) = t.iter().position(|b| *b == b'}') else {
                    return false;
                };
                let reserved = t.get(1) == Some(&b'+');
                let rest = &t[end + 1..];
                // One or more characters, then the rest must match.
                for n in 1..=u.len() {
                    let c = u[n - 1];
                    if !reserved && matches!(c, b'/' | b'?' | b'#') {
                        break;
                    }
                    if go(rest, &u[n..]) {
                        return true;
                    }
                }
                false
            }
            Some(c) => u.first() == Some(c) && go(&t[1..], &u[1..]),
        }
    }
    go(template.as_bytes(), uri.as_bytes())
}

/// How the upstream is doing, for `tollgate connectors status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    /// `starting`, `up`, `restarting`, `failed`, `stopped`.
    pub state: &'static str,
    /// Times it was started again after dying.
    pub restarts: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// The protocol revision negotiated.
    pub protocol: Option<String>,
    /// The upstream's own name and version.
    pub server: Option<String>,
    /// Sessions open (HTTP with credentials).
    pub sessions: usize,
}

/// What an upstream may ask of the agent's client during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAsk {
    /// `sampling/createMessage`: an LLM completion from the agent's side.
    Sampling,
    /// `elicitation/create`: input from the agent's user.
    Elicitation,
}

impl ClientAsk {
    /// The MCP capability name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAsk::Sampling => "sampling",
            ClientAsk::Elicitation => "elicitation",
        }
    }
}

/// Which of those an upstream may ask at all: the capabilities Tollgate
/// declares to it (a connector whose manifest governs none declares none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientAsks {
    /// Declare `sampling`.
    pub sampling: bool,
    /// Declare `elicitation` (form mode).
    pub elicitation: bool,
}

/// Where what the upstream sends during one call goes: the gateway's side
/// of the call, which decides what reaches the agent's client.
#[async_trait]
pub trait CallRelay: Send + Sync {
    /// Whether the agent answers `input_required` results itself (its
    /// client speaks 2026-07-28): then an upstream's result of that kind
    /// goes to it once [`CallRelay::ask`] allowed each request in it;
    /// otherwise the gateway asks the agent's client and retries.
    fn takes_input_required(&self) -> bool;
    /// Whether the agent's client declared it can answer `what` (the
    /// upstream is told, per request, only what both it and the manifest
    /// allow).
    fn client_can(&self, what: ClientAsk) -> bool;
    /// Whether the agent asked for progress (a call without it pays
    /// nothing for relaying).
    fn wants_progress(&self) -> bool;
    /// Whether the agent's client asked for log messages.
    fn wants_logs(&self) -> bool;
    /// One progress notification from the upstream.
    async fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>);
    /// A log message of the upstream's tied to this call (`level` is the
    /// MCP level name); credentials it echoes are already redacted.
    async fn log(&self, level: &str, logger: Option<&str>, data: Value);
    /// A request of the agent's client (its MCP params as JSON, echoed
    /// credentials redacted): the client's result, or why not (sent back
    /// to the upstream as an error).
    async fn ask(&self, what: ClientAsk, params: Value) -> Result<Value, String>;
}

/// Rounds of `input_required` the gateway answers for one call before it
/// gives up (an upstream that never finishes asking).
const MAX_INPUT_ROUNDS: usize = 10;

/// How long a request from the upstream waits for the call it names to be
/// registered (its send and its registration race).
const ATTRIBUTION_WAIT: Duration = Duration::from_secs(2);

/// What the upstream sent during a call besides progress and its result.
enum Inbound {
    Log {
        level: String,
        logger: Option<String>,
        data: Value,
    },
    Ask {
        what: ClientAsk,
        params: Value,
        reply: oneshot::Sender<Result<Value, String>>,
    },
}

/// The requests in flight on one connection, so that what the upstream
/// sends unasked can be tied to the call it belongs to.
#[derive(Default)]
struct Calls {
    state: Mutex<CallsState>,
    changed: Notify,
}

#[derive(Default)]
struct CallsState {
    /// Calls being sent, whose request ids are not known yet.
    sending: usize,
    /// Requests in flight that take nothing back (prompts, resources).
    untracked: usize,
    calls: HashMap<RequestId, mpsc::UnboundedSender<Inbound>>,
}

impl Calls {
    fn state(&self) -> std::sync::MutexGuard<'_, CallsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut CallsState)) {
        f(&mut self.state());
        self.changed.notify_waiters();
    }

    /// The call a message belongs to. `origin` is the stream a request
    /// came on (HTTP); `None` (stdio, and every notification) ties it only
    /// to the one request in flight. `wait`: a request may arrive before
    /// its call is registered, so it waits (briefly) for sends to settle.
    async fn owner(
        &self,
        origin: Option<&InboundStreamOrigin>,
        wait: bool,
    ) -> Option<mpsc::UnboundedSender<Inbound>> {
        let deadline = tokio::time::Instant::now() + ATTRIBUTION_WAIT;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.state();
                let settled = s.sending == 0;
                match origin {
                    Some(InboundStreamOrigin::OutboundRequest(id)) => {
                        if let Some(tx) = s.calls.get(id) {
                            return Some(tx.clone());
                        }
                        if settled {
                            return None;
                        }
                    }
                    Some(InboundStreamOrigin::Unassociated) => return None,
                    None if settled => {
                        if s.untracked == 0 && s.calls.len() == 1 {
                            return s.calls.values().next().cloned();
                        }
                        return None;
                    }
                    None => {}
                }
            }
            if !wait || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// Counts a request being sent (or a fetch in flight) until dropped.
struct Counted {
    calls: Arc<Calls>,
    fetch: bool,
}

impl Counted {
    fn sending(calls: &Arc<Calls>) -> Self {
        calls.update(|s| s.sending += 1);
        Self {
            calls: calls.clone(),
            fetch: false,
        }
    }

    fn fetch(calls: &Arc<Calls>) -> Self {
        calls.update(|s| s.untracked += 1);
        Self {
            calls: calls.clone(),
            fetch: true,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let fetch = self.fetch;
        self.calls.update(|s| {
            if fetch {
                s.untracked -= 1;
            } else {
                s.sending -= 1;
            }
        });
    }
}

/// Progress notifications kept for a token nobody has claimed yet (the
/// upstream can answer before the call registers its token).
const EARLY_PROGRESS: usize = 64;

struct Shared {
    id: String,
    config: McpConnectorConfig,
    base_dir: PathBuf,
    /// Bumped (pool-wide) whenever what the upstream offers changes.
    generation: Arc<AtomicU64>,
    discovery: RwLock<Discovery>,
    extras: RwLock<Arc<Extras>>,
    health: RwLock<Health>,
    /// The connection calls use: the child's, or the HTTP upstream's
    /// session without credential.
    primary: watch::Sender<Option<Conn>>,
    /// HTTP sessions by credential digest.
    sessions: tokio::sync::Mutex<HashMap<String, Session>>,
    progress: Mutex<Progress>,
    relist: Notify,
    stop: CancellationToken,
    http: reqwest::Client,
    /// What it may ask of agents' clients.
    asks: ClientAsks,
}

/// An HTTP session opened with one credential, and when it was last used.
type Session = (Instant, RunningService<RoleClient, Handler>);

/// A connection calls can use, and its requests in flight.
#[derive(Clone)]
struct Conn {
    peer: Peer<RoleClient>,
    calls: Arc<Calls>,
}

#[derive(Default)]
struct Progress {
    claimed: HashMap<ProgressToken, mpsc::UnboundedSender<ProgressNotificationParam>>,
    early: Vec<ProgressNotificationParam>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("id", &self.id)
            .field("target", &self.config.target())
            .finish_non_exhaustive()
    }
}

/// One upstream MCP server, connected (or being connected) in the
/// background. Dropping the last handle stops it (and its child).
#[derive(Debug)]
pub struct Upstream {
    shared: Arc<Shared>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl Upstream {
    /// Starts connecting to the upstream in the background (needs a tokio
    /// runtime). `generation` is bumped each time its tool list changes.
    pub fn start(
        id: &str,
        config: McpConnectorConfig,
        base_dir: &Path,
        generation: Arc<AtomicU64>,
        asks: ClientAsks,
    ) -> Result<Arc<Self>, String> {
        config.check()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        let shared = Arc::new(Shared {
            id: id.to_string(),
            config,
            base_dir: base_dir.to_path_buf(),
            generation,
            discovery: RwLock::new(Discovery::Pending),
            extras: RwLock::new(Arc::default()),
            health: RwLock::new(Health {
                state: "starting",
                restarts: 0,
                last_error: None,
                protocol: None,
                server: None,
                sessions: 0,
            }),
            primary: watch::Sender::new(None),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            progress: Mutex::new(Progress::default()),
            relist: Notify::new(),
            stop: CancellationToken::new(),
            http,
            asks,
        });
        tokio::spawn(supervise(shared.clone()));
        Ok(Arc::new(Self { shared }))
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &McpConnectorConfig {
        &self.shared.config
    }

    /// What it may ask of agents' clients.
    pub fn asks(&self) -> ClientAsks {
        self.shared.asks
    }

    /// What the upstream offers now.
    pub fn discovery(&self) -> Discovery {
        read(&self.shared.discovery).clone()
    }

    /// Its prompts and resources now.
    pub fn extras(&self) -> Arc<Extras> {
        read(&self.shared.extras).clone()
    }

    /// How it is doing.
    pub fn health(&self) -> Health {
        read(&self.shared.health).clone()
    }

    /// Waits until the first discovery has an answer (tools or failure),
    /// or `within` passes.
    pub async fn settled(&self, within: Duration) -> Discovery {
        let deadline = Instant::now() + within;
        loop {
            let d = self.discovery();
            if !matches!(d, Discovery::Pending) || Instant::now() >= deadline {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the upstream (its child, its sessions).
    pub fn stop(&self) {
        self.shared.stop.cancel();
    }

    /// `prompts/get` or `resources/read`: no progress to relay; the whole
    /// result goes back as `raw`.
    async fn fetch(
        &self,
        op: &Operation,
        call: ConnectorCall<'_>,
    ) -> Result<ToolOutput, ConnectorError> {
        let shared = &self.shared;
        let timeout = shared.config.timeout();
        let work = async {
            let conn = self.peer_for(call.credential).await?;
            // Counted, so nothing the upstream sends meanwhile is tied to
            // another call on this connection.
            let _fetching = Counted::fetch(&conn.calls);
            let peer = conn.peer;
            let (text, raw) = match op {
                Operation::Prompt(name) => {
                    let mut params = rmcp::model::GetPromptRequestParams::new(name.clone());
                    if !call.arguments.is_empty() {
                        params = params.with_arguments(call.arguments.clone());
                    }
                    match peer.get_prompt(params).await {
                        Ok(r) => (
                            r.description.clone().unwrap_or_default(),
                            serde_json::to_value(&r).unwrap_or(Value::Null),
                        ),
                        Err(e) => return upstream_failure(&shared.id, e),
                    }
                }
                Operation::Resource(_) | Operation::ResourceTemplate(_) => {
                    let uri = match op {
                        Operation::ResourceTemplate(template) => {
                            let uri = call
                                .arguments
                                .get("uri")
                                .and_then(Value::as_str)
                                .unwrap_or_default();
                            // The front end matched it; checked again here
                            // so nothing else can read outside the template.
                            if !template_matches(template, uri) {
                                return Err(ConnectorError::BadRequest(format!(
                                    "`{uri}` does not match the resource template"
                                )));
                            }
                            uri.to_string()
                        }
                        Operation::Resource(uri) => uri.clone(),
                        _ => String::new(),
                    };
                    let uri = &uri;
                    match peer
                        .read_resource(rmcp::model::ReadResourceRequestParams::new(uri.clone()))
                        .await
                    {
                        Ok(r) => (
                            format!("{} content item(s) of {uri}", r.contents.len()),
                            serde_json::to_value(&r).unwrap_or(Value::Null),
                        ),
                        Err(e) => return upstream_failure(&shared.id, e),
                    }
                }
                Operation::Tool(_) => {
                    return Err(ConnectorError::BadRequest("not a fetch".into()));
                }
            };
            let mut out = ToolOutput {
                text,
                structured: None,
                is_error: false,
                backend_status: None,
                content: Vec::new(),
                raw: Some(raw),
                input_required: false,
            };
            if let Some(cred) = call.credential {
                redact(&mut out, cred);
            }
            Ok(out)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ConnectorError::Timeout(timeout))?
    }

    /// Calls upstream tool `name`. An `input_required` result (protocol
    /// 2026-07-28) is answered here by asking the agent's client through
    /// the relay (each request governed there) and retrying, unless the
    /// agent answers such results itself: then it goes to the agent.
    async fn call(
        &self,
        name: &str,
        call: ConnectorCall<'_>,
    ) -> Result<ToolOutput, ConnectorError> {
        let shared = &self.shared;
        let timeout = shared.config.timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let conn = tokio::time::timeout_at(deadline, self.peer_for(call.credential))
            .await
            .map_err(|_| ConnectorError::Timeout(timeout))??;
        let mut params =
            CallToolRequestParams::new(name.to_string()).with_arguments(call.arguments.clone());
        if let Some(resume) = call.resume {
            if let Some(r) = &resume.input_responses {
                params = params.with_input_responses(r.clone().into_iter().collect());
            }
            if let Some(state) = &resume.request_state {
                params = params.with_request_state(state.clone());
            }
        }
        for _ in 0..MAX_INPUT_ROUNDS {
            let result = match self.round(&conn, params.clone(), &call, deadline).await? {
                Ok(ServerResult::CallToolResult(r)) => r,
                Ok(ServerResult::InputRequiredResult(r)) => {
                    match input_required(&shared.id, r, &call).await? {
                        Inputs::ForAgent(out) => return Ok(out),
                        Inputs::Answered(responses, state) => {
                            params.input_responses = Some(responses);
                            params.request_state = state;
                            continue;
                        }
                        Inputs::Refused(out) => return Ok(out),
                    }
                }
                Ok(other) => {
                    return Err(ConnectorError::Unreachable(format!(
                        "upstream `{}` answered tools/call with {}",
                        shared.id,
                        kind_of(&other)
                    )));
                }
                Err(e) => return upstream_failure(&shared.id, e),
            };
            // The blocks go on as they came: no text is derived from them.
            let mut out = ToolOutput {
                text: String::new(),
                structured: result.structured_content,
                is_error: result.is_error.unwrap_or(false),
                backend_status: None,
                content: result.content,
                raw: None,
                input_required: false,
            };
            if let Some(cred) = call.credential {
                redact(&mut out, cred);
            }
            return Ok(out);
        }
        Err(ConnectorError::InvalidResponse(format!(
            "upstream `{}` still asked for input after {MAX_INPUT_ROUNDS} rounds",
            shared.id
        )))
    }

    /// One `tools/call` on the wire, with what the upstream sends meanwhile
    /// relayed; its answer, or the upstream's error.
    async fn round(
        &self,
        conn: &Conn,
        params: CallToolRequestParams,
        call: &ConnectorCall<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<Result<ServerResult, rmcp::ServiceError>, ConnectorError> {
        let shared = &self.shared;
        let Conn { peer, calls } = conn;
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let mut options = PeerRequestOptions::no_options();
        // Nothing governed, nothing to tell: the connection declared none.
        if shared.asks != ClientAsks::default() {
            options.meta = Some(capabilities_for(shared.asks, call.relay));
        }
        let sending = Counted::sending(calls);
        let handle = peer
            .send_request_with_option(request, options)
            .await
            .map_err(|e| unreachable(&shared.id, &e))?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (inbound_tx, mut inbound) = mpsc::unbounded_channel();
        let mut guard = InFlight {
            shared: shared.clone(),
            peer: peer.clone(),
            calls: calls.clone(),
            id: handle.id.clone(),
            token: handle.progress_token.clone(),
            done: false,
        };
        calls.update(|s| {
            s.calls.insert(handle.id.clone(), inbound_tx);
        });
        drop(sending);
        claim_progress(shared, &guard.token, tx);
        let relay = call.relay;
        let wants_progress = relay.is_some_and(|r| r.wants_progress());
        let wants_logs = relay.is_some_and(|r| r.wants_logs());
        let response = handle.await_response();
        tokio::pin!(response);
        let result = loop {
            tokio::select! {
                r = &mut response => break r,
                Some(p) = rx.recv() => {
                    if let (Some(relay), true) = (relay, wants_progress) {
                        relay.progress(p.progress, p.total, p.message).await;
                    }
                }
                Some(m) = inbound.recv() => {
                    deliver(relay, m, call.credential, deadline).await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    // The guard tells the upstream the call is abandoned.
                    return Err(ConnectorError::Timeout(shared.config.timeout()));
                }
            }
        };
        guard.done = true;
        // rmcp hands notifications to the handler on tasks of their own, so
        // progress and log messages sent just before the result may still
        // be on their way: when the agent asked for them, let those tasks
        // run, then pass on what arrived. Otherwise this costs nothing.
        // (A request arriving now finds its call over: it is refused.)
        if let (Some(relay), true) = (relay, wants_progress || wants_logs) {
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            while let Ok(p) = rx.try_recv() {
                if wants_progress {
                    relay.progress(p.progress, p.total, p.message).await;
                }
            }
            while let Ok(m) = inbound.try_recv() {
                if let Inbound::Log { .. } = m {
                    deliver(Some(relay), m, call.credential, deadline).await;
                }
            }
        }
        Ok(result)
    }

    /// The connection for a call: the upstream's own (stdio, or HTTP with
    /// no credential), or the session opened with this credential.
    async fn peer_for(
        &self,
        credential: Option<&BackendCredential>,
    ) -> Result<Conn, ConnectorError> {
        let shared = &self.shared;
        match (credential, shared.config.url.as_ref()) {
            (Some(cred), Some(_)) => session_for(shared, cred).await,
            _ => {
                let mut rx = shared.primary.subscribe();
                // A restarting upstream is waited for (within the call's
                // timeout), so a call right after a crash still works.
                let peer = rx
                    .wait_for(|p| p.as_ref().is_some_and(|c| !c.peer.is_transport_closed()))
                    .await
                    .map_err(|_| {
                        ConnectorError::Unreachable(format!("upstream `{}` stopped", shared.id))
                    })?;
                peer.clone().ok_or_else(|| {
                    ConnectorError::Unreachable(format!("upstream `{}` is not up", shared.id))
                })
            }
        }
    }
}

/// A call on the wire: when dropped before its answer arrived (the agent
/// cancelled, the call timed out), the upstream is told.
struct InFlight {
    shared: Arc<Shared>,
    peer: Peer<RoleClient>,
    calls: Arc<Calls>,
    id: RequestId,
    token: ProgressToken,
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut p) = self.shared.progress.lock() {
            p.claimed.remove(&self.token);
        }
        // Anything the upstream asks after this finds no call (and is
        // refused); an answer being awaited is dropped with its sender.
        let id = &self.id;
        self.calls.update(|s| {
            s.calls.remove(id);
        });
        if self.done {
            return;
        }
        let peer = self.peer.clone();
        let id = self.id.clone();
        let connector = self.shared.id.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let note = CancelledNotification::new(CancelledNotificationParam::new(
                    Some(id),
                    Some("cancelled by the agent or timed out at the gateway".into()),
                ));
                if let Err(e) = peer
                    .send_notification(ClientNotification::CancelledNotification(note))
                    .await
                {
                    tracing::debug!(connector = %connector, error = %e, "cannot relay a cancellation upstream");
                }
            });
        }
    }
}

/// An upstream that echoes the credential it was sent (in any content
/// block, the structured content or the text) does not hand it to the
/// agent: every copy becomes [`crate::REDACTED`], as the HTTP connector
/// does with response bodies.
fn redact(out: &mut ToolOutput, cred: &BackendCredential) {
    if let Some(r) = cred.redact_in(out.text.as_bytes()) {
        out.text = String::from_utf8_lossy(&r).into_owned();
    }
    let json = |v: &mut Value| {
        let text = v.to_string();
        if let Some(r) = cred.redact_in(text.as_bytes()) {
            *v = serde_json::from_slice(&r).unwrap_or(Value::String(crate::REDACTED.into()));
        }
    };
    for block in &mut out.content {
        let text = serde_json::to_string(block).unwrap_or_default();
        if let Some(r) = cred.redact_in(text.as_bytes()) {
            *block = serde_json::from_slice(&r)
                .unwrap_or_else(|_| rmcp::model::ContentBlock::text(crate::REDACTED));
        }
    }
    if let Some(v) = out.structured.as_mut() {
        json(v);
    }
    if let Some(v) = out.raw.as_mut() {
        json(v);
    }
}

/// The client capabilities an upstream is told for one call: what the
/// manifest governs and the agent's client declared (the stateless
/// revision reads them per request; rmcp servers prefer them to the
/// handshake's too). An upstream that respects them does not ask for what
/// would only be refused.
fn capabilities_for(
    asks: ClientAsks,
    relay: Option<&dyn CallRelay>,
) -> rmcp::model::RequestMetaObject {
    let can = |what| relay.is_some_and(|r| r.client_can(what));
    let mut caps = serde_json::Map::new();
    if asks.sampling && can(ClientAsk::Sampling) {
        caps.insert("sampling".into(), serde_json::json!({}));
    }
    if asks.elicitation && can(ClientAsk::Elicitation) {
        caps.insert("elicitation".into(), serde_json::json!({ "form": {} }));
    }
    let mut meta = rmcp::model::RequestMetaObject::new();
    meta.set_client_capabilities(
        serde_json::from_value::<ClientCapabilities>(Value::Object(caps)).unwrap_or_default(),
    );
    meta
}

/// What came of an upstream's `input_required` result.
enum Inputs {
    /// For the agent to answer (it speaks 2026-07-28): every request in it
    /// was allowed.
    ForAgent(ToolOutput),
    /// Answered by the agent's client through the gateway: retry with these.
    Answered(rmcp::model::InputResponses, Option<String>),
    /// A request in it was refused: this tool error is the call's result.
    Refused(ToolOutput),
}

/// Takes an upstream's `input_required` result: each request goes to the
/// relay (which governs it); then either the whole result goes to the
/// agent, or the answers come back for a retry.
async fn input_required(
    id: &str,
    r: rmcp::model::InputRequiredResult,
    call: &ConnectorCall<'_>,
) -> Result<Inputs, ConnectorError> {
    let refused = |why: String| Inputs::Refused(ToolOutput::tool_error(why));
    let Some(relay) = call.relay else {
        return Ok(refused(format!(
            "upstream `{id}` asked for input, and this call has no client to ask"
        )));
    };
    let for_agent = relay.takes_input_required();
    let mut responses = rmcp::model::InputResponses::new();
    for (key, request) in r.input_requests.iter().flatten() {
        let mut v = serde_json::to_value(request).unwrap_or(Value::Null);
        let what = match v["method"].as_str() {
            Some("sampling/createMessage") => ClientAsk::Sampling,
            Some("elicitation/create") => ClientAsk::Elicitation,
            Some(other) => {
                return Ok(refused(format!(
                    "upstream `{id}` asked for `{other}`, which Tollgate does not relay"
                )));
            }
            None => {
                return Ok(refused(format!(
                    "upstream `{id}` asked for input it did not name"
                )));
            }
        };
        let mut params = v["params"].take();
        redact_value(&mut params, call.credential);
        match relay.ask(what, params).await {
            Ok(answer) => {
                responses.insert(key.clone(), answer);
            }
            Err(why) => {
                return Ok(refused(format!(
                    "upstream `{id}` asked the agent's client for {}, and Tollgate refused: {why}",
                    what.as_str()
                )));
            }
        }
    }
    if !for_agent {
        return Ok(Inputs::Answered(responses, r.request_state));
    }
    let mut raw = serde_json::to_value(&r).map_err(|e| {
        ConnectorError::InvalidResponse(format!("upstream `{id}`: unreadable input_required: {e}"))
    })?;
    redact_value(&mut raw, call.credential);
    let n = r.input_requests.as_ref().map_or(0, |m| m.len());
    Ok(Inputs::ForAgent(ToolOutput {
        text: format!("input required: {n} request(s) for the agent's client"),
        structured: None,
        is_error: false,
        backend_status: None,
        content: Vec::new(),
        raw: Some(raw),
        input_required: true,
    }))
}

/// Copies of the credential in a JSON value become [`crate::REDACTED`].
fn redact_value(v: &mut Value, cred: Option<&BackendCredential>) {
    let Some(cred) = cred else { return };
    let text = v.to_string();
    if let Some(r) = cred.redact_in(text.as_bytes()) {
        *v = serde_json::from_slice(&r).unwrap_or(Value::String(crate::REDACTED.into()));
    }
}

/// Hands one log message or request of the upstream's to the call's relay
/// (echoed credentials redacted first). A request gets an answer within
/// the call's deadline; without a relay it is refused.
async fn deliver(
    relay: Option<&dyn CallRelay>,
    m: Inbound,
    cred: Option<&BackendCredential>,
    deadline: tokio::time::Instant,
) {
    match m {
        Inbound::Log {
            level,
            logger,
            mut data,
        } => {
            if let Some(relay) = relay {
                redact_value(&mut data, cred);
                let logger = logger.map(|mut l| {
                    if let Some(c) = cred
                        && let Some(r) = c.redact_in(l.as_bytes())
                    {
                        l = String::from_utf8_lossy(&r).into_owned();
                    }
                    l
                });
                relay.log(&level, logger.as_deref(), data).await;
            }
        }
        Inbound::Ask {
            what,
            mut params,
            reply,
        } => {
            let answer = match relay {
                None => Err(format!("this call cannot take {} requests", what.as_str())),
                // Such a client takes requests only inside `input_required`
                // results, never mid-call.
                Some(relay) if relay.takes_input_required() => Err(format!(
                    "the agent's client speaks the stateless revision (2026-07-28) and cannot be sent a {} request mid-call",
                    what.as_str()
                )),
                Some(relay) => {
                    redact_value(&mut params, cred);
                    tokio::time::timeout_at(deadline, relay.ask(what, params))
                        .await
                        .unwrap_or_else(|_| Err("the call's time ran out".into()))
                }
            };
            let _ = reply.send(answer);
        }
    }
}

fn claim_progress(
    shared: &Shared,
    token: &ProgressToken,
    tx: mpsc::UnboundedSender<ProgressNotificationParam>,
) {
    if let Ok(mut p) = shared.progress.lock() {
        let early = std::mem::take(&mut p.early);
        for n in early {
            if &n.progress_token == token {
                let _ = tx.send(n);
            } else {
                p.early.push(n);
            }
        }
        p.claimed.insert(token.clone(), tx);
    }
}

fn kind_of(r: &ServerResult) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.keys().take(3).cloned().collect::<Vec<_>>().join(","))
        })
        .map(|k| format!("an unexpected result ({k})"))
        .unwrap_or_else(|| "an unexpected result".into())
}

fn unreachable(id: &str, e: &rmcp::ServiceError) -> ConnectorError {
    ConnectorError::Unreachable(format!("upstream `{id}`: {e}"))
}

/// A request the upstream failed. A protocol-level error from it (unknown
/// arguments, an unknown prompt) is what the agent would have seen talking
/// to it directly: a tool error with its message. Anything else (the
/// connection lost) is the backend being unreachable.
fn upstream_failure(id: &str, e: rmcp::ServiceError) -> Result<ToolOutput, ConnectorError> {
    match e {
        rmcp::ServiceError::McpError(e) => Ok(ToolOutput::tool_error(e.message.to_string())),
        e => Err(unreachable(id, &e)),
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// The client side Tollgate presents to an upstream, one per connection:
/// no roots; sampling and elicitation only where the manifest governs them
/// (each request goes to the call it belongs to, whose relay decides);
/// progress, list changes and log messages are taken.
#[derive(Clone)]
struct Handler {
    shared: Arc<Shared>,
    calls: Arc<Calls>,
    /// The credential this connection was opened with (an HTTP session's):
    /// what the upstream echoes of it never reaches the gateway's log.
    credential: Option<BackendCredential>,
}

impl Handler {
    /// [`Handler::ask`] from and to rmcp's types.
    async fn ask_typed<P: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        what: ClientAsk,
        params: &P,
        context: &RequestContext<RoleClient>,
    ) -> Result<R, ErrorData> {
        let params = serde_json::to_value(params)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let origin = context.extensions.get::<InboundStreamOrigin>();
        let v = self.ask(what, params, origin).await?;
        serde_json::from_value(v).map_err(|e| {
            ErrorData::internal_error(
                format!("the agent's {} result is malformed: {e}", what.as_str()),
                None,
            )
        })
    }

    /// Passes a request of the upstream's to the call it belongs to and
    /// waits for that call's answer.
    async fn ask(
        &self,
        what: ClientAsk,
        params: Value,
        origin: Option<&InboundStreamOrigin>,
    ) -> Result<Value, ErrorData> {
        let refuse = |why: String| {
            tracing::info!(target: "tollgate::upstream", connector = %self.shared.id, request = what.as_str(), "refused: {why}");
            ErrorData::invalid_request(why, None)
        };
        let Some(owner) = self.calls.owner(origin, true).await else {
            return Err(refuse(format!(
                "Tollgate relays a {} request only within the one call it belongs to, and cannot tell which call this is",
                what.as_str()
            )));
        };
        let (reply, answer) = oneshot::channel();
        owner
            .send(Inbound::Ask {
                what,
                params,
                reply,
            })
            .map_err(|_| refuse("the call it belongs to has ended".into()))?;
        match answer.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(why)) => Err(refuse(why)),
            Err(_) => Err(refuse("the call it belongs to has ended".into())),
        }
    }
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        let mut caps = serde_json::Map::new();
        if self.shared.asks.sampling {
            caps.insert("sampling".into(), serde_json::json!({}));
        }
        if self.shared.asks.elicitation {
            caps.insert("elicitation".into(), serde_json::json!({ "form": {} }));
        }
        ClientConfig::new(
            serde_json::from_value::<ClientCapabilities>(Value::Object(caps)).unwrap_or_default(),
            Implementation::new("tollgate", env!("CARGO_PKG_VERSION")),
        )
    }

    #[allow(deprecated)]
    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, ErrorData> {
        if !self.shared.asks.sampling {
            return Err(ErrorData::method_not_found::<
                rmcp::model::CreateMessageRequestMethod,
            >());
        }
        self.ask_typed(ClientAsk::Sampling, &params, &context).await
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if !self.shared.asks.elicitation {
            return Err(ErrorData::method_not_found::<
                rmcp::model::ElicitationCreateRequestMethod,
            >());
        }
        self.ask_typed(ClientAsk::Elicitation, &params, &context)
            .await
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let Ok(mut p) = self.shared.progress.lock() else {
            return;
        };
        match p.claimed.get(&params.progress_token) {
            Some(tx) => {
                let _ = tx.send(params);
            }
            None => {
                if p.early.len() >= EARLY_PROGRESS {
                    p.early.remove(0);
                }
                p.early.push(params);
            }
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.shared.relist.notify_one();
    }

    // Logging is deprecated in the newest revision (SEP-2577) but still
    // what handshake-era upstreams send.
    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let mut shown = params.data.clone();
        redact_value(&mut shown, self.credential.as_ref());
        tracing::info!(
            target: "tollgate::upstream",
            connector = %self.shared.id,
            level = ?params.level,
            logger = params.logger.as_deref().unwrap_or(""),
            data = %shown,
            "upstream log message"
        );
        // Relayed only when it can be tied to one call (see `Calls`).
        if let Some(owner) = self.calls.owner(None, false).await {
            let level = serde_json::to_value(params.level)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "info".into());
            let _ = owner.send(Inbound::Log {
                level,
                logger: params.logger,
                data: params.data,
            });
        }
    }
}

/// Opens a connection: the child process or the HTTP endpoint, then the
/// MCP handshake (2026-07-28 discovery where the upstream speaks it, else
/// `initialize`).
async fn connect(
    shared: &Arc<Shared>,
    credential: Option<&BackendCredential>,
) -> Result<
    (
        RunningService<RoleClient, Handler>,
        Option<tokio::process::Child>,
    ),
    String,
> {
    let handler = Handler {
        shared: shared.clone(),
        calls: Arc::default(),
        credential: credential.cloned(),
    };
    let lifecycle = match shared.config.protocol {
        McpProtocol::Auto => ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        },
        McpProtocol::Handshake => ClientLifecycleMode::Initialize,
    };
    let within = shared.config.connect_timeout();
    if let Some(url) = &shared.config.url {
        let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.as_str());
        if let Some(c) = credential {
            cfg.custom_headers
                .insert(c.header().clone(), c.value().clone());
        }
        let transport = StreamableHttpClientTransport::with_client(shared.http.clone(), cfg);
        let service =
            tokio::time::timeout(within, handler.serve_with_lifecycle(transport, lifecycle))
                .await
                .map_err(|_| format!("no MCP handshake within {within:?}"))?
                .map_err(|e| format!("MCP handshake failed: {e}"))?;
        return Ok((service, None));
    }
    let Some(s) = &shared.config.stdio else {
        return Err("no transport configured".into());
    };
    let mut cmd = tokio::process::Command::new(&s.command);
    cmd.args(&s.args)
        .env_clear()
        .current_dir(match &s.cwd {
            Some(dir) => shared.base_dir.join(dir),
            None => shared.base_dir.clone(),
        })
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for name in &s.inherit_env {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.envs(&s.env);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", s.command))?;
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        return Err("the child's stdio is not piped".into());
    };
    if let Some(stderr) = child.stderr.take() {
        let id = shared.id.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(mut line)) = lines.next_line().await {
                if line.len() > MAX_STDERR_LINE {
                    let mut cut = MAX_STDERR_LINE;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                    line.push_str(" [...]");
                }
                tracing::info!(target: "tollgate::upstream", connector = %id, "stderr: {line}");
            }
        });
    }
    match tokio::time::timeout(
        within,
        handler.serve_with_lifecycle((stdout, stdin), lifecycle),
    )
    .await
    {
        Ok(Ok(service)) => Ok((service, Some(child))),
        Ok(Err(e)) => {
            let _ = child.start_kill();
            Err(format!("MCP handshake failed: {e}"))
        }
        Err(_) => {
            let _ = child.start_kill();
            Err(format!("no MCP handshake within {within:?}"))
        }
    }
}

/// On the stateless revision (2026-07-28) list changes come only on a
/// `subscriptions/listen` stream: open one and turn each
/// `tools/list_changed` into a new listing. Handshake-era upstreams send
/// the notification unasked ([`Handler::on_tool_list_changed`]).
fn listen_for_changes(
    shared: &Arc<Shared>,
    peer: &Peer<RoleClient>,
) -> tokio::task::JoinHandle<()> {
    let shared = shared.clone();
    let peer = peer.clone();
    tokio::spawn(async move {
        let stateless = peer
            .peer_info()
            .is_some_and(|i| i.protocol_version == ProtocolVersion::V_2026_07_28);
        if !stateless {
            return;
        }
        let filter = rmcp::model::SubscriptionFilter::builder()
            .tools_list_changed()
            .build();
        let mut sub = match peer.listen(filter).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::debug!(target: "tollgate::upstream", connector = %shared.id, error = %e, "the upstream takes no subscriptions; relisting periodically");
                return;
            }
        };
        while let Ok(Some(_)) = sub.next().await {
            shared.relist.notify_one();
        }
    })
}

/// Lists the upstream's tools and publishes them if they changed.
async fn discover(shared: &Arc<Shared>, peer: &Peer<RoleClient>) {
    let listed = tokio::time::timeout(shared.config.connect_timeout(), peer.list_all_tools()).await;
    let next = match listed {
        Ok(Ok(tools)) => Discovery::Ready(Arc::new(tools)),
        Ok(Err(e)) => Discovery::Failed(format!("tools/list failed: {e}")),
        Err(_) => Discovery::Failed("tools/list did not answer in time".into()),
    };
    // Prompts and resources, from an upstream that declares them. A list
    // that fails is empty: their entries are withdrawn, the tools stay.
    let caps = peer.peer_info().map(|i| i.capabilities.clone());
    let within = shared.config.connect_timeout();
    let mut extras = Extras::default();
    if caps.as_ref().is_some_and(|c| c.prompts.is_some())
        && let Ok(Ok(p)) = tokio::time::timeout(within, peer.list_all_prompts()).await
    {
        extras.prompts = p;
    }
    if caps.as_ref().is_some_and(|c| c.resources.is_some()) {
        if let Ok(Ok(r)) = tokio::time::timeout(within, peer.list_all_resources()).await {
            extras.resources = r;
        }
        if let Ok(Ok(t)) = tokio::time::timeout(within, peer.list_all_resource_templates()).await {
            extras.templates = t;
        }
    }
    let extras_changed = {
        let mut e = write(&shared.extras);
        let changed = **e != extras;
        *e = Arc::new(extras);
        changed
    };
    if extras_changed {
        shared.generation.fetch_add(1, Ordering::SeqCst);
    }
    publish(shared, next);
}

fn publish(shared: &Shared, next: Discovery) {
    let changed = {
        let mut d = write(&shared.discovery);
        let changed = match (&*d, &next) {
            (Discovery::Ready(a), Discovery::Ready(b)) => a != b,
            (Discovery::Failed(a), Discovery::Failed(b)) => a != b,
            (Discovery::Pending, Discovery::Pending) => false,
            _ => true,
        };
        *d = next;
        changed
    };
    if changed {
        shared.generation.fetch_add(1, Ordering::SeqCst);
    }
}

fn set_health(shared: &Shared, f: impl FnOnce(&mut Health)) {
    f(&mut write(&shared.health));
}

/// Keeps the upstream's primary connection up: connects, lists, waits for
/// it to end, and starts it again with backoff. Over HTTP a lost session
/// is reopened the same way.
async fn supervise(shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    let mut first = true;
    loop {
        if shared.stop.is_cancelled() {
            break;
        }
        let started = Instant::now();
        // A stop during the start or handshake drops the child (it is
        // killed on drop) rather than waiting out the connect timeout.
        let connected = tokio::select! {
            c = connect(&shared, None) => c,
            _ = shared.stop.cancelled() => break,
        };
        match connected {
            Ok((service, child)) => {
                let peer = service.peer().clone();
                let calls = service.service().calls.clone();
                let info = peer.peer_info();
                set_health(&shared, |h| {
                    h.state = "up";
                    h.protocol = info.as_ref().map(|i| i.protocol_version.to_string());
                    h.server = info.as_ref().and_then(|i| {
                        i.server_info
                            .as_ref()
                            .map(|s| format!("{} {}", s.name, s.version))
                    });
                });
                tracing::info!(target: "tollgate::upstream", connector = %shared.id, restarts = read(&shared.health).restarts, "upstream connected");
                discover(&shared, &peer).await;
                shared.primary.send_replace(Some(Conn {
                    peer: peer.clone(),
                    calls,
                }));
                let listening = listen_for_changes(&shared, &peer);
                let ct = service.cancellation_token();
                let mut waiting = tokio::spawn(service.waiting());
                // Upstreams that never announce a change are listed again
                // now and then, so a changed pin is still noticed.
                let mut relist = tokio::time::interval(RELIST_EVERY);
                relist.tick().await;
                let stopped = loop {
                    tokio::select! {
                        _ = shared.stop.cancelled() => {
                            ct.cancel();
                            let _ = (&mut waiting).await;
                            break true;
                        }
                        _ = shared.relist.notified() => discover(&shared, &peer).await,
                        _ = relist.tick() => discover(&shared, &peer).await,
                        _ = &mut waiting => break false,
                    }
                };
                listening.abort();
                shared.primary.send_replace(None);
                if let Some(mut child) = child {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                if stopped {
                    break;
                }
                let why = "the upstream closed its connection (exited or crashed)".to_string();
                tracing::warn!(target: "tollgate::upstream", connector = %shared.id, "{why}; starting it again");
                set_health(&shared, |h| {
                    h.state = "restarting";
                    h.restarts += 1;
                    h.last_error = Some(why);
                });
            }
            Err(why) => {
                tracing::warn!(target: "tollgate::upstream", connector = %shared.id, error = %why, retry_in = ?backoff, "upstream not available");
                if first {
                    publish(&shared, Discovery::Failed(why.clone()));
                }
                set_health(&shared, |h| {
                    h.state = if first { "failed" } else { "restarting" };
                    h.last_error = Some(why);
                });
            }
        }
        first = false;
        if started.elapsed() >= HEALTHY_RUN {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    shared.primary.send_replace(None);
    let mut sessions = shared.sessions.lock().await;
    for (_, (_, s)) in sessions.drain() {
        let _ = s.cancel().await;
    }
    // Last: "stopped" means the child is reaped and the sessions closed.
    set_health(&shared, |h| h.state = "stopped");
}

/// The HTTP session opened with `credential`, reused while it lives.
async fn session_for(
    shared: &Arc<Shared>,
    credential: &BackendCredential,
) -> Result<Conn, ConnectorError> {
    let key = {
        let mut h = Sha256::new();
        h.update(credential.header().as_str().as_bytes());
        h.update([0]);
        h.update(credential.value().as_bytes());
        hex::encode(h.finalize())
    };
    let mut sessions = shared.sessions.lock().await;
    if let Some((used, s)) = sessions.get_mut(&key)
        && !s.is_transport_closed()
    {
        *used = Instant::now();
        return Ok(Conn {
            peer: s.peer().clone(),
            calls: s.service().calls.clone(),
        });
    }
    // Sessions whose credential has not been used for a while (its task
    // ended, or the broker issued a fresh one) are closed at the upstream.
    let stale: Vec<String> = sessions
        .iter()
        .filter(|(_, (used, s))| s.is_transport_closed() || used.elapsed() >= SESSION_IDLE)
        .map(|(k, _)| k.clone())
        .collect();
    for k in stale {
        if let Some((_, s)) = sessions.remove(&k) {
            tokio::spawn(async move {
                let _ = s.cancel().await;
            });
        }
    }
    if sessions.len() >= MAX_SESSIONS {
        // The least recently used session goes (its credential has most
        // likely expired with its task).
        if let Some(oldest) = sessions
            .iter()
            .min_by_key(|(_, (used, _))| *used)
            .map(|(k, _)| k.clone())
            && let Some((_, s)) = sessions.remove(&oldest)
        {
            tokio::spawn(async move {
                let _ = s.cancel().await;
            });
        }
    }
    let (service, _) = connect(shared, Some(credential))
        .await
        .map_err(|e| ConnectorError::Unreachable(format!("upstream `{}`: {e}", shared.id)))?;
    let conn = Conn {
        peer: service.peer().clone(),
        calls: service.service().calls.clone(),
    };
    sessions.insert(key, (Instant::now(), service));
    let open = sessions.len();
    set_health(shared, |h| h.sessions = open);
    Ok(conn)
}

/// The connector the catalog calls: curated local names mapped onto the
/// upstream's.
#[derive(Debug)]
pub struct McpConnector {
    upstream: Arc<Upstream>,
    names: HashMap<String, Operation>,
}

impl McpConnector {
    /// A connector over `upstream` serving `names` (local name, what it
    /// asks of the upstream).
    pub fn new(
        upstream: Arc<Upstream>,
        names: impl IntoIterator<Item = (String, Operation)>,
    ) -> Self {
        Self {
            upstream,
            names: names.into_iter().collect(),
        }
    }
}

#[async_trait]
impl Connector for McpConnector {
    async fn call(&self, call: ConnectorCall<'_>) -> Result<ToolOutput, ConnectorError> {
        match self.names.get(call.tool) {
            Some(Operation::Tool(name)) => self.upstream.call(name, call).await,
            Some(op) => self.upstream.fetch(op, call).await,
            None => Err(ConnectorError::UnknownTool(call.tool.to_string())),
        }
    }

    fn target(&self) -> String {
        self.upstream.config().target()
    }
}

/// The digest of a tool definition as pinned: `sha256:` and the hex
/// SHA-256 of its canonical JSON (keys sorted) over name, title,
/// description, input and output schemas and annotations. Anything else
/// (icons, `_meta`) may change without withdrawing the tool.
pub fn definition_hash(tool: &Tool) -> String {
    let mut text = String::new();
    canonical(&pinned_view(tool), &mut text);
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// The part of a definition a pin covers, as JSON.
pub fn pinned_view(tool: &Tool) -> Value {
    serde_json::json!({
        "name": tool.name,
        "title": tool.title,
        "description": tool.description,
        "inputSchema": &*tool.input_schema,
        "outputSchema": tool.output_schema.as_deref(),
        "annotations": tool.annotations,
    })
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(description: &str, schema: Value) -> Tool {
        Tool::new(
            "echo",
            description.to_string(),
            Arc::new(schema.as_object().cloned().unwrap_or_default()),
        )
    }

    #[test]
    fn uri_templates_match_their_expansions_only() {
        assert!(template_matches(
            "test://template/{id}/data",
            "test://template/123/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template/1/2/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template/1/data/x"
        ));
        assert!(template_matches("file:///{+path}", "file:///a/b/c.txt"));
        assert!(!template_matches("file:///{path}", "file:///a/b"));
        assert!(template_matches("db://{table}/{row}", "db://users/7"));
    }

    #[test]
    fn the_hash_ignores_key_order_and_sees_every_pinned_field() {
        let a = tool(
            "Echo",
            serde_json::json!({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}),
        );
        let b = tool(
            "Echo",
            serde_json::json!({"properties":{"b":{"type":"integer"},"a":{"type":"string"}},"type":"object"}),
        );
        assert_eq!(definition_hash(&a), definition_hash(&b));
        assert!(definition_hash(&a).starts_with("sha256:"));
        let c = tool(
            "Echo, and exfiltrate",
            serde_json::json!({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}),
        );
        assert_ne!(definition_hash(&a), definition_hash(&c));
        let d = tool(
            "Echo",
            serde_json::json!({"type":"object","properties":{"a":{"type":"string"}}}),
        );
        assert_ne!(definition_hash(&a), definition_hash(&d));
        let e = a
            .clone()
            .with_annotations(rmcp::model::ToolAnnotations::new().read_only(true));
        assert_ne!(definition_hash(&a), definition_hash(&e));
    }
}
