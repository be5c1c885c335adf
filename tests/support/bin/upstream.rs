//! An upstream MCP server for the tests (rmcp), over stdio (`--stdio`) or
//! Streamable HTTP (`--listen ADDR`, prints `listening on URL`). What it
//! receives is appended to the file named by `UPSTREAM_EVENTS`, one JSON
//! object per line, so a test checks what the upstream really got (every
//! JSON-RPC method and the headers over HTTP, cancellations, crashes).
//!
//! `UPSTREAM_LINGER`, when set, keeps a stdio server alive for two
//! minutes after its client closed the connection.
//!
//! `UPSTREAM_DESC_FILE`, when set, is the description of tool `mutable`,
//! read at every `tools/list`; when the file changes the server sends
//! `notifications/tools/list_changed` (a definition changing under a pin).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{
    NotificationContext, Peer, RequestContext, SubscriptionContext, SubscriptionSink,
};
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

fn event(v: Value) {
    if let Ok(path) = std::env::var("UPSTREAM_EVENTS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{v}");
        }
    }
}

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

fn description() -> String {
    std::env::var("UPSTREAM_DESC_FILE")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| "A tool whose definition can change.".into())
}

fn tools() -> Vec<Tool> {
    let object = json!({ "type": "object", "properties": {} });
    let doubled = json!({
        "type": "object",
        "properties": { "double": { "type": "integer" } },
        "required": ["double"]
    });
    vec![
        Tool::new(
            "echo",
            "Echo the text back.",
            schema(json!({
                "type": "object",
                "properties": { "text": { "type": "string" } },
                "required": ["text"],
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "kinds",
            "Every kind of content at once.",
            schema(object.clone()),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "structured",
            "Doubles n, as structured content.",
            schema(json!({
                "type": "object",
                "properties": { "n": { "type": "integer" } },
                "required": ["n"]
            })),
        )
        .with_raw_output_schema(schema(doubled.clone()))
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "bad_structured",
            "Declares an output schema and breaks it.",
            schema(object.clone()),
        )
        .with_raw_output_schema(schema(doubled))
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new("fails", "Always a tool error.", schema(object.clone()))
            .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "slow",
            "Reports progress for `steps` steps of `step_ms`.",
            schema(json!({
                "type": "object",
                "properties": {
                    "steps": { "type": "integer", "minimum": 1 },
                    "step_ms": { "type": "integer", "minimum": 0 }
                },
                "required": ["steps", "step_ms"]
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "crash",
            "Exits the server mid-call.",
            schema(object.clone()),
        ),
        Tool::new(
            "whoami",
            "The HTTP headers this call came with.",
            schema(object.clone()),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new("destroy", "Deletes everything.", schema(object.clone()))
            .with_annotations(ToolAnnotations::new().read_only(false).destructive(true)),
        Tool::new(
            "hidden",
            "Not exposed by any manifest.",
            schema(object.clone()),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new("mutable", description(), schema(object.clone()))
            .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "ask",
            "Asks the client for sampling or elicitation (after delay_ms), and returns its answer.",
            schema(json!({
                "type": "object",
                "properties": {
                    "what": { "type": "string", "enum": ["sampling", "elicitation"] },
                    "max_tokens": { "type": "integer" },
                    "delay_ms": { "type": "integer" }
                },
                "required": ["what"]
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "mrtr",
            "On the stateless revision: asks for a sampling result through an input_required result, then answers with it.",
            schema(object.clone()),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "chatty",
            "Logs at debug, info and warning (tagged), after pre_ms, then holds hold_ms.",
            schema(json!({
                "type": "object",
                "properties": {
                    "tag": { "type": "string" },
                    "pre_ms": { "type": "integer" },
                    "hold_ms": { "type": "integer" }
                },
                "required": ["tag"]
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
    ]
}

#[derive(Clone, Default)]
struct Upstream {
    /// Handshake-era clients (told of list changes unasked).
    peers: Arc<Mutex<Vec<Peer<RoleServer>>>>,
    /// `subscriptions/listen` streams (2026-07-28 clients).
    sinks: Arc<Mutex<Vec<SubscriptionSink>>>,
}

fn headers(ctx: &RequestContext<RoleServer>) -> Value {
    ctx.extensions
        .get::<http::request::Parts>()
        .map(|p| {
            let mut m = serde_json::Map::new();
            for (k, v) in &p.headers {
                m.insert(
                    k.as_str().to_string(),
                    Value::String(v.to_str().unwrap_or("?").to_string()),
                );
            }
            Value::Object(m)
        })
        .unwrap_or(Value::Null)
}

impl ServerHandler for Upstream {
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
        .with_server_info(Implementation::new("tollgate-test-upstream", "1.0.0"))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let sink = context.sink().clone();
        let id = sink.id().clone();
        event(json!({ "event": "listening" }));
        if let Ok(mut s) = self.sinks.lock() {
            s.push(sink);
        }
        context.cancelled().await;
        if let Ok(mut s) = self.sinks.lock() {
            s.retain(|x| *x.id() != id);
        }
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, ErrorData> {
        Ok(rmcp::model::ListPromptsResult::with_all_items(vec![
            rmcp::model::Prompt::new(
                "greet",
                Some("Greets someone by name."),
                Some(vec![
                    rmcp::model::PromptArgument::new("who")
                        .with_description("Whom to greet")
                        .with_required(true),
                ]),
            ),
            rmcp::model::Prompt::new("secret-prompt", Some("Not exposed."), None),
        ]))
    }

    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, ErrorData> {
        event(
            json!({ "method": "prompts/get", "name": request.name, "arguments": request.arguments }),
        );
        let who = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("who"))
            .and_then(Value::as_str)
            .unwrap_or("nobody")
            .to_string();
        Ok(
            rmcp::model::GetPromptResult::new(vec![rmcp::model::PromptMessage::new_text(
                rmcp::model::Role::User,
                format!("Say hello to {who}."),
            )])
            .with_description("A greeting")
            .into(),
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        Ok(rmcp::model::ListResourcesResult::with_all_items(vec![
            rmcp::model::Resource::new("file:///srv/readme.txt", "readme")
                .with_mime_type("text/plain"),
            rmcp::model::Resource::new("file:///srv/private.txt", "private"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, ErrorData> {
        Ok(rmcp::model::ListResourceTemplatesResult::with_all_items(
            vec![rmcp::model::ResourceTemplate::new(
                "db://items/{id}",
                "item",
            )],
        ))
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, ErrorData> {
        event(json!({ "method": "resources/read", "uri": request.uri }));
        Ok(
            rmcp::model::ReadResourceResult::new(vec![rmcp::model::ResourceContents::text(
                format!("contents of {}", request.uri),
                request.uri.clone(),
            )])
            .into(),
        )
    }

    async fn on_initialized(&self, ctx: NotificationContext<RoleServer>) {
        if let Ok(mut p) = self.peers.lock() {
            p.push(ctx.peer);
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        event(json!({ "method": "tools/list", "headers": headers(&ctx) }));
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.clone().unwrap_or_default();
        event(json!({
            "method": "tools/call",
            "tool": request.name,
            "arguments": args,
            "headers": headers(&ctx),
        }));
        let result = match &*request.name {
            "echo" => CallToolResult::success(vec![ContentBlock::text(format!(
                "echo: {}",
                args.get("text").and_then(Value::as_str).unwrap_or("")
            ))]),
            "kinds" => CallToolResult::success(vec![
                ContentBlock::text("some text"),
                ContentBlock::image("iVBORw0KGgo=", "image/png"),
                ContentBlock::audio("UklGRiQAAABXQVZF", "audio/wav"),
                ContentBlock::resource_link(rmcp::model::Resource::new(
                    "file:///srv/report.txt",
                    "report",
                )),
                ContentBlock::embedded_text("file:///srv/note.txt", "an embedded note"),
            ]),
            "structured" => {
                let n = args.get("n").and_then(Value::as_i64).unwrap_or(0);
                let mut r = CallToolResult::success(vec![ContentBlock::text(format!("{}", n * 2))]);
                r.structured_content = Some(json!({ "double": n * 2 }));
                r
            }
            "bad_structured" => {
                let mut r = CallToolResult::success(vec![ContentBlock::text("oops")]);
                r.structured_content = Some(json!({ "double": "not a number" }));
                r
            }
            "fails" => CallToolResult::error(vec![ContentBlock::text("it failed upstream")]),
            "slow" => {
                let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(1);
                let step =
                    Duration::from_millis(args.get("step_ms").and_then(Value::as_u64).unwrap_or(0));
                let token = ctx.meta.get_progress_token();
                for i in 1..=steps {
                    tokio::select! {
                        _ = ctx.ct.cancelled() => {
                            event(json!({ "event": "cancelled", "tool": "slow", "step": i }));
                            return Err(ErrorData::internal_error("cancelled", None));
                        }
                        _ = tokio::time::sleep(step) => {}
                    }
                    if let Some(t) = &token {
                        let p = ProgressNotificationParam::new(t.clone(), i as f64)
                            .with_total(steps as f64)
                            .with_message(format!("step {i} of {steps}"));
                        let _ = ctx.peer.notify_progress(p).await;
                    }
                }
                event(json!({ "event": "finished", "tool": "slow" }));
                CallToolResult::success(vec![ContentBlock::text(format!("{steps} steps done"))])
            }
            "crash" => {
                event(json!({ "event": "crash" }));
                std::process::exit(3);
            }
            "whoami" => {
                // Also as a log message: an echoed credential must not reach
                // the gateway's log either.
                #[allow(deprecated)]
                if let Ok(note) =
                    serde_json::from_value::<rmcp::model::LoggingMessageNotificationParam>(
                        json!({ "level": "info", "logger": "whoami", "data": headers(&ctx) }),
                    )
                {
                    #[allow(deprecated)]
                    let _ = ctx.peer.notify_logging_message(note).await;
                }
                CallToolResult::success(vec![ContentBlock::text(headers(&ctx).to_string())])
            }
            "mrtr" => {
                event(json!({
                    "event": "mrtr",
                    "input_responses": request.input_responses,
                    "request_state": request.request_state,
                    "client_capabilities": ctx.client_capabilities(),
                }));
                match request.input_responses.as_ref().and_then(|r| r.get("q")) {
                    Some(answer) if request.request_state.as_deref() == Some("round-1") => {
                        CallToolResult::success(vec![ContentBlock::text(format!(
                            "answer: {answer}"
                        ))])
                    }
                    Some(_) => {
                        return Err(ErrorData::invalid_params(
                            "requestState failed its check",
                            None,
                        ));
                    }
                    None => {
                        let r: rmcp::model::InputRequiredResult = serde_json::from_value(json!({
                            "resultType": "input_required",
                            "inputRequests": {
                                "q": {
                                    "method": "sampling/createMessage",
                                    "params": {
                                        "messages": [{ "role": "user", "content": { "type": "text", "text": "Say hello" } }],
                                        "maxTokens": 50
                                    }
                                }
                            },
                            "requestState": "round-1"
                        }))
                        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                        return Ok(rmcp::model::CallToolResponse::InputRequired(r));
                    }
                }
            }
            "ask" => {
                let ms = |k: &str| {
                    Duration::from_millis(args.get(k).and_then(Value::as_u64).unwrap_or(0))
                };
                tokio::time::sleep(ms("delay_ms")).await;
                let what = args
                    .get("what")
                    .and_then(Value::as_str)
                    .unwrap_or("sampling");
                let answer = if what == "elicitation" {
                    let params: rmcp::model::ElicitRequestParams = serde_json::from_value(json!({
                        "message": "Which colour?",
                        "requestedSchema": {
                            "type": "object",
                            "properties": { "colour": { "type": "string" } },
                            "required": ["colour"]
                        }
                    }))
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                    let request = rmcp::model::ServerRequest::ElicitRequest(
                        rmcp::model::ElicitRequest::new(params),
                    );
                    ctx.peer
                        .send_request(request)
                        .await
                        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                } else {
                    let tokens = args
                        .get("max_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(100);
                    #[allow(deprecated)]
                    let params = rmcp::model::CreateMessageRequestParams::new(
                        vec![rmcp::model::SamplingMessage::user_text("Say hello")],
                        tokens as u32,
                    );
                    #[allow(deprecated)]
                    ctx.peer
                        .create_message(params)
                        .await
                        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                };
                match answer {
                    Ok(v) => {
                        event(json!({ "event": "asked", "what": what, "ok": true, "answer": v }));
                        CallToolResult::success(vec![ContentBlock::text(format!("answer: {v}"))])
                    }
                    Err(e) => {
                        event(
                            json!({ "event": "asked", "what": what, "ok": false, "error": e.to_string() }),
                        );
                        CallToolResult::error(vec![ContentBlock::text(format!("refused: {e}"))])
                    }
                }
            }
            "chatty" => {
                let ms = |k: &str| {
                    Duration::from_millis(args.get(k).and_then(Value::as_u64).unwrap_or(0))
                };
                let tag = args
                    .get("tag")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                tokio::time::sleep(ms("pre_ms")).await;
                for level in ["debug", "info", "warning"] {
                    #[allow(deprecated)]
                    let note: rmcp::model::LoggingMessageNotificationParam =
                        serde_json::from_value(json!({
                            "level": level,
                            "logger": "chatty",
                            "data": format!("{tag} at {level}")
                        }))
                        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                    #[allow(deprecated)]
                    let _ = ctx.peer.notify_logging_message(note).await;
                }
                event(json!({ "event": "logged", "tag": tag }));
                tokio::time::sleep(ms("hold_ms")).await;
                CallToolResult::success(vec![ContentBlock::text("said")])
            }
            "destroy" | "hidden" | "mutable" => {
                CallToolResult::success(vec![ContentBlock::text(format!("{} ran", request.name))])
            }
            other => {
                return Err(ErrorData::invalid_params(format!("no tool {other}"), None));
            }
        };
        Ok(result.into())
    }
}

/// Sends `tools/list_changed` to every connected client when the
/// description file changes.
fn watch_description(up: Upstream) {
    let Ok(path) = std::env::var("UPSTREAM_DESC_FILE") else {
        return;
    };
    tokio::spawn(async move {
        let mut last = std::fs::read_to_string(&path).ok();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = std::fs::read_to_string(&path).ok();
            if now != last {
                last = now;
                let peers = up.peers.lock().map(|p| p.clone()).unwrap_or_default();
                for peer in peers {
                    let _ = peer.notify_tool_list_changed().await;
                }
                let sinks = up.sinks.lock().map(|s| s.clone()).unwrap_or_default();
                for sink in sinks {
                    let _ = sink.notify_tool_list_changed().await;
                }
            }
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let up = Upstream::default();
    event(json!({ "event": "started", "pid": std::process::id() }));
    watch_description(up.clone());
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--stdio") {
        eprintln!("test upstream on stdio");
        up.serve(rmcp::transport::stdio()).await?.waiting().await?;
        // A server that does not exit when its client goes (the gateway
        // must kill it).
        if std::env::var("UPSTREAM_LINGER").is_ok() {
            event(json!({ "event": "lingering" }));
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        return Ok(());
    }
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "127.0.0.1:0".into());
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let service = StreamableHttpService::new(
        move || Ok(up.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_legacy_session_mode(true),
    );
    // Every JSON-RPC method that arrives, with its headers, before rmcp.
    let log = axum::middleware::from_fn(
        |req: axum::extract::Request, next: axum::middleware::Next| async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let method = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_string));
            let mut h = serde_json::Map::new();
            for (k, v) in &parts.headers {
                h.insert(
                    k.to_string(),
                    Value::String(v.to_str().unwrap_or("?").into()),
                );
            }
            event(json!({ "http": parts.method.as_str(), "rpc": method, "headers": h }));
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        },
    );
    let app = axum::Router::new().nest_service("/mcp", service).layer(log);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
