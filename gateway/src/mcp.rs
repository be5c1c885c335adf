//! The MCP front end: an rmcp [`ServerHandler`] over the catalog. It owns
//! the protocol surface only: who the caller is comes from the edge (HTTP
//! auth layer or the stdio key), and every `tools/call`, `prompts/get` and
//! `resources/read` goes to [`pipeline::call_tool`] (prompts and resources
//! are upstream MCP servers' catalog entries of their own kind). Methods
//! not implemented here (resource subscriptions, completion, ...) keep
//! rmcp's "method not found" default: nothing is passed through
//! ungoverned.
//!
//! [`McpClient`] is the agent's client as a running call's upstream may
//! reach it: upstream log messages at or above the level the client asked
//! for (`logging/setLevel` on a session, `_meta` log level per stateless
//! request), and sampling and elicitation requests, which the pipeline
//! only sends after governing them as calls of their own.

use std::sync::Arc;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    ErrorData, GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    MetaObject, PaginatedRequestParams, ProgressNotificationParam, ProgressToken,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, Peer, RequestContext};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::Gateway;
use crate::catalog::{Listing, ToolKind};
use crate::pipeline::{
    self, AgentView, Authenticated, CallReply, ToolRequest, Transport, authenticate,
    denial::{self, codes},
};
use tollgate_connectors::mcp::ClientAsk;

/// How this handler learns who is calling.
#[derive(Clone)]
enum Identity {
    /// From the [`Authenticated`] the HTTP auth layer put in the request.
    HttpLayer,
    /// From a key given at startup (stdio), re-checked on every request so
    /// a revoked key stops working without a restart.
    Key(Arc<str>),
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::HttpLayer => f.write_str("HttpLayer"),
            Identity::Key(_) => f.write_str("Key(<redacted>)"),
        }
    }
}

/// One MCP server handler; cheap to clone (the HTTP service builds one per
/// session or request, with [`McpFront::fresh`]).
#[derive(Debug, Clone)]
pub struct McpFront {
    gw: Arc<Gateway>,
    identity: Identity,
    /// For stdio: this process's connection key (tasks started in band
    /// bind to it). HTTP uses the session id instead.
    connection: Option<Arc<str>>,
    /// The log level this session's client set (`logging/setLevel`):
    /// upstream log messages below it, or all without it, stay in the
    /// gateway's log.
    log_level: Arc<std::sync::Mutex<Option<&'static str>>>,
}

/// MCP log levels, least severe first.
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

fn log_rank(level: &str) -> Option<usize> {
    LOG_LEVELS.iter().position(|l| *l == level)
}

/// A level's MCP name, from rmcp's type (whose name is deprecated along
/// with logging in the newest revision).
fn level_name<T: serde::Serialize>(level: &T) -> Option<&'static str> {
    let v = serde_json::to_value(level).ok()?;
    let rank = log_rank(v.as_str()?)?;
    Some(LOG_LEVELS[rank])
}

impl McpFront {
    /// A handler for the HTTP edge.
    pub fn for_http(gw: Arc<Gateway>) -> Self {
        Self {
            gw,
            identity: Identity::HttpLayer,
            connection: None,
            log_level: Arc::default(),
        }
    }

    /// A handler for a new session: the same gateway, its own log level.
    pub fn fresh(&self) -> Self {
        Self {
            log_level: Arc::default(),
            ..self.clone()
        }
    }

    /// A handler for stdio, authenticating every request with `key`.
    pub fn for_stdio(gw: Arc<Gateway>, key: &str) -> Self {
        let connection = format!("stdio:{}", uuid::Uuid::new_v4());
        Self {
            gw,
            identity: Identity::Key(Arc::from(key)),
            connection: Some(Arc::from(connection.as_str())),
            log_level: Arc::default(),
        }
    }

    async fn who(&self, ctx: &RequestContext<RoleServer>) -> Result<Authenticated, ErrorData> {
        match &self.identity {
            Identity::HttpLayer => ctx
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Authenticated>())
                .cloned()
                // The auth layer runs before rmcp; reaching here without an
                // identity is a wiring bug, and still a refusal.
                .ok_or_else(|| {
                    view_to_error(denial::unauthenticated(
                        &authenticate::AuthError::Missing,
                        "",
                    ))
                }),
            Identity::Key(key) => {
                authenticate::authenticate_bearer(&self.gw, key, Transport::Stdio)
                    .await
                    .map_err(|e| {
                        authenticate::record_failure(&self.gw, key, &e, Some("stdio".into()));
                        view_to_error(denial::unauthenticated(&e, " (check TOLLGATE_AGENT_KEY)"))
                    })
            }
        }
    }
}

impl McpFront {
    /// The connection a request came on: the stdio process, or the HTTP
    /// session (stateless requests have none).
    fn connection(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        if let Some(c) = &self.connection {
            return Some(c.to_string());
        }
        let parts = ctx.extensions.get::<http::request::Parts>()?;
        let session = parts.headers.get("mcp-session-id")?.to_str().ok()?;
        Some(format!("http:{session}"))
    }

    fn request(
        &self,
        ctx: &RequestContext<RoleServer>,
        name: String,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
        meta: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> ToolRequest {
        let hint = |m: &serde_json::Map<String, serde_json::Value>| {
            m.get("tollgate/task")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let task_hint = meta.and_then(hint).or_else(|| hint(&ctx.meta.0.0));
        // Progress only for a client that asked for it with a token.
        let progress = ctx.meta.get_progress_token().map(|token| {
            Arc::new(McpProgress {
                peer: ctx.peer.clone(),
                token,
            }) as Arc<dyn pipeline::Progress>
        });
        // The caller's trace, if it sent one over HTTP (only read when
        // traces are on).
        let trace_parent = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| crate::telemetry::remote_parent(&parts.headers));
        ToolRequest {
            name,
            arguments,
            task_hint,
            connection: self.connection(ctx),
            progress,
            trace_parent,
            kind: ToolKind::Tool,
            client: Some(Arc::new(self.client(ctx))),
            resume: None,
            within: None,
        }
    }

    /// The agent's client as this request's upstream may reach it. Built
    /// for every call, so it is cheap: the capabilities are read only if
    /// an upstream asks.
    fn client(&self, ctx: &RequestContext<RoleServer>) -> McpClient {
        // The stateless revision has no server-to-client requests: an
        // upstream's reach its client inside `input_required` results.
        let stateless = ctx.protocol_version().is_some_and(|v| !v.has_initialize());
        let caps_meta = ctx
            .meta
            .0
            .get("io.modelcontextprotocol/clientCapabilities")
            .cloned();
        #[allow(deprecated)]
        let per_request = ctx.meta.log_level().and_then(|l| level_name(&l));
        let session = *self.log_level.lock().unwrap_or_else(|p| p.into_inner());
        McpClient {
            peer: ctx.peer.clone(),
            caps_meta,
            stateless,
            log_level: per_request.or(session),
        }
    }

    /// An upstream prompt or resource through the pipeline: the same stages
    /// and record as a call, under its catalog name; the upstream's result
    /// as it came, or the refusal as a JSON-RPC error.
    async fn fetch(
        &self,
        ctx: &RequestContext<RoleServer>,
        kind: ToolKind,
        name: String,
        arguments: Option<serde_json::Map<String, Value>>,
    ) -> Result<Value, ErrorData> {
        let who = self.who(ctx).await?;
        let mut request = self.request(ctx, name, arguments, None);
        request.kind = kind;
        let out = match pipeline::call_tool(&self.gw, &who, request, &ctx.ct).await {
            CallReply::Output(out) | CallReply::Approved { output: out, .. } => out,
            CallReply::Refused(view) => return Err(view_to_error(view)),
        };
        match out.raw {
            Some(raw) if !out.is_error => Ok(raw),
            _ => Err(ErrorData::internal_error(out.text, None)),
        }
    }

    /// The agent's granted entries of `kind` (prompts or resources).
    async fn granted(
        &self,
        ctx: &RequestContext<RoleServer>,
        kind: ToolKind,
    ) -> Result<Vec<Arc<crate::catalog::ToolEntry>>, ErrorData> {
        let who = self.who(ctx).await?;
        let probe = self.request(ctx, String::new(), None, None);
        let list = pipeline::list_tools(&self.gw, &who, probe.connection, probe.task_hint)
            .await
            .map_err(|d| view_to_error(d.to_agent()))?;
        // Visible to this agent, possible under its policies, within its
        // task: the same filter as `tools/list`.
        Ok(list
            .tools
            .into_iter()
            .filter(|t| t.kind() == kind)
            .collect())
    }
}

/// Progress of a waiting call as MCP `notifications/progress`.
struct McpProgress {
    peer: Peer<RoleServer>,
    token: ProgressToken,
}

/// The agent's client, for what a call's upstream sends during the call.
struct McpClient {
    peer: Peer<RoleServer>,
    /// The request's own client capabilities (`_meta`), if it sent any;
    /// else the session's (from its `initialize`).
    caps_meta: Option<Value>,
    stateless: bool,
    /// The least severe upstream log level the client asked for.
    log_level: Option<&'static str>,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient")
            .field("stateless", &self.stateless)
            .field("log_level", &self.log_level)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl pipeline::AgentClient for McpClient {
    fn can(&self, what: ClientAsk) -> bool {
        let caps: rmcp::model::ClientCapabilities = match &self.caps_meta {
            Some(v) => serde_json::from_value(v.clone()).unwrap_or_default(),
            None if self.stateless => return false,
            None => match self.peer.peer_info() {
                Some(info) => info.capabilities.clone(),
                None => return false,
            },
        };
        match what {
            ClientAsk::Sampling => caps.sampling.is_some(),
            ClientAsk::Elicitation => caps.elicitation.is_some(),
        }
    }

    fn wants_logs(&self) -> bool {
        self.log_level.is_some()
    }

    fn stateless(&self) -> bool {
        self.stateless
    }

    #[allow(deprecated)]
    async fn ask(&self, what: ClientAsk, params: Value) -> Result<Value, String> {
        let bad = |e: serde_json::Error| format!("the request is malformed: {e}");
        let answer = match what {
            ClientAsk::Sampling => {
                let p: rmcp::model::CreateMessageRequestParams =
                    serde_json::from_value(params).map_err(bad)?;
                self.peer
                    .create_message(p)
                    .await
                    .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            }
            ClientAsk::Elicitation => {
                let p: rmcp::model::ElicitRequestParams =
                    serde_json::from_value(params).map_err(bad)?;
                let request =
                    rmcp::model::ServerRequest::ElicitRequest(rmcp::model::ElicitRequest::new(p));
                match self.peer.send_request(request).await {
                    Ok(rmcp::model::ClientResult::ElicitResult(r)) => {
                        Ok(serde_json::to_value(r).unwrap_or(Value::Null))
                    }
                    Ok(_) => return Err("the agent's client answered something else".into()),
                    Err(e) => Err(e),
                }
            }
        };
        answer.map_err(|e| match e {
            rmcp::ServiceError::McpError(e) => e.message.to_string(),
            e => format!("the agent's client did not answer: {e}"),
        })
    }

    async fn log(&self, level: &str, logger: Option<&str>, data: Value) {
        let (Some(wanted), Some(rank)) = (self.log_level.and_then(log_rank), log_rank(level))
        else {
            return;
        };
        if rank < wanted {
            return;
        }
        let mut note = json!({ "level": level, "data": data });
        if let Some(l) = logger {
            note["logger"] = Value::String(l.to_string());
        }
        #[allow(deprecated)]
        let sent =
            match serde_json::from_value::<rmcp::model::LoggingMessageNotificationParam>(note) {
                Ok(p) => self
                    .peer
                    .notify_logging_message(p)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cannot relay an upstream log message");
        }
    }
}

impl std::fmt::Debug for McpProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpProgress").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl pipeline::Progress for McpProgress {
    async fn report(&self, progress: f64, total: Option<f64>, message: String) {
        let mut p =
            ProgressNotificationParam::new(self.token.clone(), progress).with_message(message);
        if let Some(t) = total {
            p = p.with_total(t);
        }
        if let Err(e) = self.peer.notify_progress(p).await {
            // The client may be gone: the wait notices through cancellation.
            tracing::debug!(error = %e, "cannot send a progress notification");
        }
    }
}

/// The MCP form of a refusal: a JSON-RPC error, or a tool result with
/// `isError` and the reason code in `_meta["tollgate/reason"]`.
fn view_to_mcp(view: AgentView) -> Result<CallToolResult, ErrorData> {
    match view {
        AgentView::Error { .. } => Err(view_to_error(view)),
        AgentView::ToolError { text, reason, meta } => {
            let mut m = serde_json::Map::new();
            m.insert("tollgate/reason".into(), Value::String(reason.into()));
            m.extend(meta);
            Ok(
                CallToolResult::error(vec![ContentBlock::text(text)])
                    .with_meta(Some(MetaObject(m))),
            )
        }
    }
}

/// A refusal as a JSON-RPC error (for requests that are not tool calls, a
/// tool error becomes an internal error carrying its reason).
fn view_to_error(view: AgentView) -> ErrorData {
    match view {
        AgentView::Error {
            code,
            message,
            reason,
            mut data,
        } => {
            data.insert("reason".into(), Value::String(reason.into()));
            ErrorData::new(ErrorCode(code), message, Some(Value::Object(data)))
        }
        AgentView::ToolError { text, reason, .. } => ErrorData::new(
            ErrorCode(codes::GATEWAY_UNAVAILABLE),
            text,
            Some(json!({ "reason": reason })),
        ),
    }
}

/// A gateway tool's MCP definition.
fn gateway_tool(t: pipeline::builtin::GatewayTool) -> Tool {
    let schema = Arc::new(t.input_schema.as_object().cloned().unwrap_or_default());
    let mut annotations = ToolAnnotations::new().read_only(false).destructive(false);
    if t.idempotent {
        annotations = annotations.idempotent(true);
    }
    Tool::new(t.name, t.description, schema).with_annotations(annotations)
}

fn output_result(out: tollgate_connectors::ToolOutput) -> CallToolResult {
    // An upstream MCP server's content blocks go on as they came (images,
    // audio, resource links, embedded resources).
    let content = if out.content.is_empty() {
        vec![ContentBlock::text(out.text)]
    } else {
        out.content
    };
    let mut result = if out.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = out.structured;
    result
}

fn reply_to_mcp(reply: CallReply) -> Result<CallToolResult, ErrorData> {
    match reply {
        CallReply::Output(out) => Ok(output_result(out)),
        CallReply::Approved { output, approval } => {
            let mut result = output_result(output);
            let by = approval
                .get("approved_by")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let mut note = format!(
                "Approved by {by} (request {}).",
                approval
                    .get("request")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
            if let Some(changed) = approval.get("changed").and_then(Value::as_object) {
                let how: Vec<String> = changed
                    .iter()
                    .map(|(k, v)| format!("{k}: {} -> {}", v["from"], v["to"]))
                    .collect();
                note.push_str(&format!(
                    " The approver CHANGED the arguments before approving; the tool ran with: {}.",
                    how.join("; ")
                ));
            }
            // After the tool's own content, so clients that read the first
            // block still get the backend's answer there.
            result.content.push(ContentBlock::text(note));
            let mut meta = result.meta.take().map(|m| m.0).unwrap_or_default();
            meta.insert("tollgate/approval".into(), approval);
            Ok(result.with_meta(Some(MetaObject(meta))))
        }
        CallReply::Refused(view) => view_to_mcp(view),
    }
}

impl ServerHandler for McpFront {
    // Logging is deprecated in the newest revision but what handshake-era
    // clients ask for.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .enable_resources()
                .enable_logging()
                .build(),
        )
            .with_server_info(Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tollgate is a governed tool gateway: every tool call is checked against your grants and \
                 recorded. Tool errors carry a reason code in _meta[\"tollgate/reason\"].",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let who = self.who(&ctx).await?;
        // The same rules as a call: a suspended or retired agent sees why,
        // and a task that cannot be read is an error, never the full list.
        let probe = self.request(&ctx, String::new(), None, None);
        let list = pipeline::list_tools(&self.gw, &who, probe.connection, probe.task_hint)
            .await
            .map_err(|d| view_to_error(d.to_agent()))?;
        let agent = who.agent();
        let mut tools: Vec<Tool> = list
            .tools
            .iter()
            .filter(|t| t.kind() == ToolKind::Tool)
            .map(|t| t.tool.clone())
            .collect();
        tools.extend(
            pipeline::builtin::tools(list.task.is_some(), agent.tasks.max_ttl_seconds)
                .into_iter()
                .map(gateway_tool),
        );
        // The list differs per agent: shared caches must not reuse it.
        Ok(ListToolsResult::with_all_items(tools).with_cache_scope(CacheScope::Private))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let who = self.who(&ctx).await?;
        let CallToolRequestParams {
            name,
            arguments,
            meta,
            input_responses,
            request_state,
            ..
        } = request;
        let mut request = self.request(
            &ctx,
            name.into_owned(),
            arguments,
            meta.as_ref().map(|m| &m.0.0),
        );
        if input_responses.is_some() || request_state.is_some() {
            request.resume = Some(tollgate_connectors::Resume {
                input_responses: input_responses.map(|r| r.into_iter().collect()),
                request_state,
            });
        }
        let reply = pipeline::call_tool(&self.gw, &who, request, &ctx.ct).await;
        // An upstream's `input_required`, every request in it governed:
        // the agent answers it and retries.
        if let CallReply::Output(out) | CallReply::Approved { output: out, .. } = &reply
            && out.input_required
            && let Some(raw) = &out.raw
        {
            let r: rmcp::model::InputRequiredResult =
                serde_json::from_value(raw.clone()).map_err(|e| {
                    ErrorData::internal_error(
                        format!("the upstream's input_required result is unreadable: {e}"),
                        None,
                    )
                })?;
            return Ok(CallToolResponse::InputRequired(r));
        }
        reply_to_mcp(reply).map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let prompts = self
            .granted(&ctx, ToolKind::Prompt)
            .await?
            .iter()
            .filter_map(|t| match &t.listing {
                Some(Listing::Prompt(p)) => Some(p.clone()),
                _ => None,
            })
            .collect();
        Ok(ListPromptsResult::with_all_items(prompts).with_cache_scope(CacheScope::Private))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let name = format!("{}{}", ToolKind::Prompt.prefix(), request.name);
        let raw = self
            .fetch(&ctx, ToolKind::Prompt, name, request.arguments)
            .await?;
        let result: GetPromptResult = serde_json::from_value(raw).map_err(|e| {
            ErrorData::internal_error(format!("the upstream's prompt is unreadable: {e}"), None)
        })?;
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let resources = self
            .granted(&ctx, ToolKind::Resource)
            .await?
            .iter()
            .filter_map(|t| match &t.listing {
                Some(Listing::Resource(r)) => Some(r.clone()),
                _ => None,
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources).with_cache_scope(CacheScope::Private))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let templates = self
            .granted(&ctx, ToolKind::Resource)
            .await?
            .iter()
            .filter_map(|t| match &t.listing {
                Some(Listing::Template(r)) => Some(r.clone()),
                _ => None,
            })
            .collect();
        Ok(ListResourceTemplatesResult::with_all_items(templates)
            .with_cache_scope(CacheScope::Private))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        // By URI; one nobody exposed goes through the pipeline too (as an
        // unknown name), so the attempt is recorded like a call's.
        let (name, arguments) = {
            let catalog = self.gw.catalog();
            match catalog.resource_uris.get(&request.uri) {
                Some(name) => (name.clone(), None),
                None => match catalog
                    .resource_templates
                    .iter()
                    .find(|(t, _)| tollgate_connectors::mcp::template_matches(t, &request.uri))
                {
                    // Through a template: the URI is its argument, so task
                    // constraints and policies can test it.
                    Some((_, name)) => {
                        let mut a = serde_json::Map::new();
                        a.insert("uri".into(), Value::String(request.uri.clone()));
                        (name.clone(), Some(a))
                    }
                    None => (
                        format!("{}{}", ToolKind::Resource.prefix(), request.uri),
                        None,
                    ),
                },
            }
        };
        let raw = self
            .fetch(&ctx, ToolKind::Resource, name, arguments)
            .await
            .map_err(|e| {
                if e.code == ErrorCode(codes::INVALID_PARAMS) {
                    ErrorData::resource_not_found(
                        format!("Resource not found: {}", request.uri),
                        Some(json!({ "uri": request.uri })),
                    )
                } else {
                    e
                }
            })?;
        let result: ReadResourceResult = serde_json::from_value(raw).map_err(|e| {
            ErrorData::internal_error(format!("the upstream's resource is unreadable: {e}"), None)
        })?;
        Ok(result.into())
    }

    /// A session client hears `notifications/tools/list_changed` whenever
    /// the served tools change (a reload, an upstream's tools arriving, a
    /// pin withdrawing one), for as long as its session lives.
    async fn on_initialized(&self, ctx: NotificationContext<RoleServer>) {
        let mut changed = self.gw.tools_changed();
        changed.mark_unchanged();
        let peer = ctx.peer;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tokio::select! {
                    r = changed.changed() => {
                        if r.is_err() || peer.notify_tool_list_changed().await.is_err() {
                            break;
                        }
                    }
                    _ = tick.tick() => {
                        if peer.is_transport_closed() {
                            break;
                        }
                    }
                }
            }
        });
    }

    /// The least severe upstream log messages this session's client wants
    /// relayed (from the upstreams of its own calls only).
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.who(&ctx).await?;
        let level = level_name(&request.level);
        *self.log_level.lock().unwrap_or_else(|p| p.into_inner()) = level;
        Ok(())
    }

    /// rmcp asks this (with no request context) to validate `Mcp-Param-*`
    /// headers. Without knowing the caller, no tool is visible: answering
    /// from the catalog would confirm that hidden tools exist. The pipeline
    /// validates every call's arguments anyway.
    fn get_tool(&self, _name: &str) -> Option<Tool> {
        None
    }
}
