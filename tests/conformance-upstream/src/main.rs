//! The conformance upstream: an MCP server, built on rmcp, that implements
//! the tools, resources and prompts the official conformance suite
//! (`@modelcontextprotocol/conformance`) calls in its server scenarios.
//!
//! `tests/conformance/run.sh` runs the suite against it, directly or
//! through Tollgate. Streamable HTTP on `--listen` (the bound address is
//! printed as `listening on http://ADDR/mcp`), or stdio with `--stdio`.

// Logging, sampling and elicitation are deprecated by SEP-2577 (2026-07-28)
// but the 2025 scenarios exercise them.
#![allow(
    deprecated,
    reason = "the 2025 scenarios call logging, sampling and elicitation"
)]

mod mrtr;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientResult, CompleteRequestParams,
    CompleteResult, CompletionInfo, ContentBlock, ElicitRequest, ElicitRequestParams,
    ElicitationSchema, ErrorData, GetPromptRequestParams, GetPromptResponse, GetPromptResult,
    Implementation, JsonObject, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    PaginatedRequestParams, ProgressNotificationParam, Prompt, PromptArgument, PromptMessage,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Reference, Resource,
    ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig, ServerRequest,
    SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext, SubscriptionSink};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler, ServiceExt as _};
use serde_json::{Value, json};
use std::io::Write as _;

/// A 1x1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A WAV header with no samples (44.1 kHz, mono, 16 bit).
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEARKwAAIhYAQACABAAZGF0YQAAAAA=";

mod proxy;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-conformance-upstream",
    about = "MCP conformance-suite server (Streamable HTTP or stdio)"
)]
struct Args {
    /// Address to serve Streamable HTTP on (path /mcp).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve one session on stdin/stdout instead of HTTP.
    #[arg(long)]
    stdio: bool,
    /// Instead of serving MCP, forward every request to this base URL
    /// (e.g. a Tollgate at http://127.0.0.1:8930) with the agent key in
    /// TOLLGATE_AGENT_KEY as its bearer token.
    #[arg(long, value_name = "URL", conflicts_with = "stdio")]
    proxy_to: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Upstream {
    subscriptions: Arc<Mutex<HashSet<String>>>,
    log_level: Arc<Mutex<Option<LoggingLevel>>>,
    states: mrtr::States,
    /// The open `subscriptions/listen` streams (2026-07-28).
    listeners: Arc<Mutex<Vec<SubscriptionSink>>>,
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

fn no_args() -> JsonObject {
    object(json!({ "type": "object", "properties": {} }))
}

fn tool(name: &'static str, description: &'static str, schema: JsonObject) -> Tool {
    Tool::new(name, description, Arc::new(schema))
}

fn tools() -> Vec<Tool> {
    vec![
        tool("test_simple_text", "Returns simple text content", no_args()),
        tool("test_image_content", "Returns image content", no_args()),
        tool("test_audio_content", "Returns audio content", no_args()),
        tool(
            "test_embedded_resource",
            "Returns an embedded resource",
            no_args(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, image and resource content",
            no_args(),
        ),
        tool(
            "test_tool_with_logging",
            "Sends three log notifications while it runs",
            no_args(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress 0, 50, 100 of 100",
            no_args(),
        ),
        tool(
            "test_error_handling",
            "Always returns a tool error",
            no_args(),
        ),
        tool(
            "test_sampling",
            "Asks the client for an LLM completion (sampling/createMessage)",
            object(json!({
                "type": "object",
                "properties": { "prompt": { "type": "string", "description": "The prompt to send" } },
                "required": ["prompt"]
            })),
        ),
        tool(
            "test_elicitation",
            "Asks the client for user input (elicitation/create)",
            object(json!({
                "type": "object",
                "properties": { "message": { "type": "string", "description": "The message to show" } },
                "required": ["message"]
            })),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicitation with a default for every primitive type (SEP-1034)",
            no_args(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicitation with the five enum forms (SEP-1330)",
            no_args(),
        ),
        tool(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            // The suite's schema (0.2: SEP-2106 adds $anchor, allOf/anyOf
            // and if/then/else to 0.1's $schema/$defs/additionalProperties).
            object(json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "$anchor": "addressDef",
                        "type": "object",
                        "properties": {
                            "street": { "type": "string" },
                            "city": { "type": "string" }
                        }
                    }
                },
                "properties": {
                    "name": { "type": "string" },
                    "address": { "$ref": "#/$defs/address" },
                    "contactMethod": { "type": "string", "enum": ["phone", "email"] },
                    "phone": { "type": "string" },
                    "email": { "type": "string" }
                },
                "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
                "if": {
                    "properties": { "contactMethod": { "const": "phone" } },
                    "required": ["contactMethod"]
                },
                "then": { "required": ["phone"] },
                "else": { "required": ["email"] },
                "additionalProperties": false
            })),
        ),
        tool(
            "test_reconnection",
            "A call that takes a moment (SSE polling tests)",
            no_args(),
        ),
        // SEP-2243 (2026-07-28): `region` travels in an Mcp-Param-Region
        // header too; rmcp checks the header against the body, given the
        // schema through get_tool.
        tool(
            "test_custom_header",
            "Echoes a parameter that is mirrored into the Mcp-Param-Region header",
            object(json!({
                "type": "object",
                "properties": {
                    "region": { "type": "string", "description": "Any text", "x-mcp-header": "Region" }
                },
                "required": ["region"]
            })),
        ),
        // The 2026-07-28 server-stateless scenario's diagnostic tools.
        tool(
            "test_missing_capability",
            "Needs the client's sampling capability (-32021 without it)",
            no_args(),
        ),
        tool(
            "test_streaming_elicitation",
            "Asks for input through an InputRequiredResult, never a request on the stream",
            no_args(),
        ),
        tool(
            "test_logging_tool",
            "Logs only when the request's _meta asks for a log level",
            no_args(),
        ),
        tool(
            "test_trigger_tool_change",
            "Sends notifications/tools/list_changed to the listen streams",
            no_args(),
        ),
        tool(
            "test_trigger_prompt_change",
            "Sends notifications/prompts/list_changed to the listen streams",
            no_args(),
        ),
    ]
}

fn all_tools() -> Vec<Tool> {
    let mut all = tools();
    all.extend(
        mrtr::TOOLS
            .iter()
            .map(|(name, description)| tool(name, description, no_args())),
    );
    all
}

fn text(s: impl Into<String>) -> ContentBlock {
    ContentBlock::text(s)
}

fn ok(content: Vec<ContentBlock>) -> Result<CallToolResponse, ErrorData> {
    Ok(CallToolResult::success(content).into())
}

fn tool_error(message: impl Into<String>) -> Result<CallToolResponse, ErrorData> {
    Ok(CallToolResult::error(vec![text(message)]).into())
}

fn action_name(action: &impl serde::Serialize) -> String {
    match serde_json::to_value(action) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "unknown".into(),
    }
}

impl Upstream {
    async fn elicit(
        &self,
        ctx: &RequestContext<RoleServer>,
        message: String,
        schema: Value,
        done: &str,
    ) -> Result<CallToolResponse, ErrorData> {
        let schema: ElicitationSchema = match serde_json::from_value(schema) {
            Ok(schema) => schema,
            Err(e) => return tool_error(format!("Elicitation schema rejected by rmcp: {e}")),
        };
        let params = ElicitRequestParams::FormElicitationParams {
            meta: None,
            message,
            requested_schema: schema,
        };
        // Through send_request: rmcp's create_elicitation needs its
        // `elicitation` feature, which would change the workspace's rmcp.
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        match ctx.peer.send_request(request).await {
            Ok(ClientResult::ElicitResult(result)) => {
                let content = result
                    .content
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "null".into());
                ok(vec![text(format!(
                    "{done}: action={}, content={content}",
                    action_name(&result.action)
                ))])
            }
            Ok(other) => tool_error(format!("Elicitation error: unexpected reply {other:?}")),
            Err(e) => tool_error(format!("Elicitation error: {e}")),
        }
    }

    async fn log(&self, ctx: &RequestContext<RoleServer>, message: &str) {
        let _ = ctx
            .peer
            .notify_logging_message(
                LoggingMessageNotificationParam::new(LoggingLevel::Info, json!(message))
                    .with_logger("conformance-upstream"),
            )
            .await;
    }
}

impl ServerHandler for Upstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_tool_list_changed()
                .enable_prompts_list_changed()
                .enable_logging()
                .enable_completions()
                .build(),
        )
        .with_server_info(Implementation::new(
            "tollgate-conformance-upstream",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions("MCP conformance suite upstream for Tollgate's tests")
    }

    // The schema lets rmcp's Streamable HTTP server validate SEP-2243
    // Mcp-Param-* headers against the call's arguments.
    fn get_tool(&self, name: &str) -> Option<Tool> {
        all_tools().into_iter().find(|t| t.name == name)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(all_tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let client = ctx.client_capabilities();
        if let Some(reply) = mrtr::call_tool(
            &self.states,
            &request.name,
            request.input_responses.as_ref(),
            request.request_state.as_deref(),
            client.as_ref(),
        ) {
            return reply;
        }
        let args = request.arguments.clone().unwrap_or_default();
        let arg = |name: &str| args.get(name).and_then(Value::as_str).map(str::to_owned);
        match request.name.as_ref() {
            "test_simple_text" => ok(vec![text("This is a simple text response for testing.")]),
            "test_image_content" => ok(vec![ContentBlock::image(PNG, "image/png")]),
            "test_audio_content" => ok(vec![ContentBlock::audio(WAV, "audio/wav")]),
            "test_embedded_resource" => ok(vec![ContentBlock::resource(
                ResourceContents::text(
                    "This is an embedded resource content.",
                    "test://embedded-resource",
                )
                .with_mime_type("text/plain"),
            )]),
            "test_multiple_content_types" => ok(vec![
                text("Multiple content types test:"),
                ContentBlock::image(PNG, "image/png"),
                ContentBlock::resource(
                    ResourceContents::text(
                        r#"{"test":"data","value":123}"#,
                        "test://mixed-content-resource",
                    )
                    .with_mime_type("application/json"),
                ),
            ]),
            "test_tool_with_logging" => {
                self.log(&ctx, "Tool execution started").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.log(&ctx, "Tool processing data").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.log(&ctx, "Tool execution completed").await;
                ok(vec![text("Logging test completed")])
            }
            "test_tool_with_progress" => {
                let token = ctx.meta.get_progress_token();
                for (i, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if let Some(token) = &token {
                        let _ = ctx
                            .peer
                            .notify_progress(
                                ProgressNotificationParam::new(token.clone(), progress)
                                    .with_total(100.0),
                            )
                            .await;
                    }
                }
                ok(vec![text("Progress test completed")])
            }
            "test_error_handling" => {
                tool_error("This tool intentionally returns an error for testing")
            }
            "test_sampling" => {
                let prompt = arg("prompt").unwrap_or_else(|| "Hello".into());
                let params = rmcp::model::CreateMessageRequestParams::new(
                    vec![rmcp::model::SamplingMessage::user_text(prompt)],
                    100,
                );
                match ctx.peer.create_message(params).await {
                    Ok(result) => {
                        let content =
                            serde_json::to_value(&result.message.content).unwrap_or(Value::Null);
                        let first = match &content {
                            Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
                            other => other.clone(),
                        };
                        let reply = first
                            .get("text")
                            .and_then(Value::as_str)
                            .map_or_else(|| content.to_string(), str::to_owned);
                        ok(vec![text(format!("LLM response: {reply}"))])
                    }
                    Err(e) => tool_error(format!("Sampling error: {e}")),
                }
            }
            "test_elicitation" => {
                let message =
                    arg("message").unwrap_or_else(|| "Please provide your information".into());
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "username": { "type": "string", "description": "User's response" },
                        "email": { "type": "string", "description": "User's email address" }
                    },
                    "required": ["username", "email"]
                });
                self.elicit(&ctx, message, schema, "User response").await
            }
            "test_elicitation_sep1034_defaults" => {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "name": { "type": "string", "description": "User's name", "default": "John Doe" },
                        "age": { "type": "integer", "description": "User's age", "default": 30 },
                        "score": { "type": "number", "description": "User's score", "default": 95.5 },
                        "status": {
                            "type": "string",
                            "description": "User's status",
                            "enum": ["active", "inactive", "pending"],
                            "default": "active"
                        },
                        "verified": { "type": "boolean", "description": "Whether user is verified", "default": true }
                    }
                });
                let message = "Please provide values (all have defaults)".to_owned();
                self.elicit(&ctx, message, schema, "Elicitation completed")
                    .await
            }
            "test_elicitation_sep1330_enums" => {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "untitledSingle": { "type": "string", "enum": ["option1", "option2", "option3"] },
                        "titledSingle": {
                            "type": "string",
                            "oneOf": [
                                { "const": "value1", "title": "First Option" },
                                { "const": "value2", "title": "Second Option" },
                                { "const": "value3", "title": "Third Option" }
                            ]
                        },
                        "legacyEnum": {
                            "type": "string",
                            "enum": ["opt1", "opt2", "opt3"],
                            "enumNames": ["Option One", "Option Two", "Option Three"]
                        },
                        "untitledMulti": {
                            "type": "array",
                            "items": { "type": "string", "enum": ["option1", "option2", "option3"] }
                        },
                        "titledMulti": {
                            "type": "array",
                            "items": {
                                "anyOf": [
                                    { "const": "value1", "title": "First Choice" },
                                    { "const": "value2", "title": "Second Choice" },
                                    { "const": "value3", "title": "Third Choice" }
                                ]
                            }
                        }
                    }
                });
                let message = "Test enum schema improvements".to_owned();
                self.elicit(&ctx, message, schema, "Elicitation completed")
                    .await
            }
            "json_schema_2020_12_tool" => {
                let name = arg("name").unwrap_or_else(|| "world".into());
                ok(vec![text(format!("Hello, {name}!"))])
            }
            "test_missing_capability" => {
                let declared = ctx
                    .client_capabilities()
                    .is_some_and(|c| c.sampling.is_some());
                if declared {
                    ok(vec![text("The client declared sampling")])
                } else {
                    let required = serde_json::from_value(json!({ "sampling": {} }))
                        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                    Err(ErrorData::missing_required_client_capability(required))
                }
            }
            "test_streaming_elicitation" => mrtr::call_tool(
                &self.states,
                "test_input_required_result_elicitation",
                request.input_responses.as_ref(),
                None,
                None,
            )
            .unwrap_or_else(|| tool_error("no elicitation tool")),
            "test_logging_tool" => {
                // 2026-07-28: no notifications/message unless the request
                // names a level in _meta (io.modelcontextprotocol/logLevel).
                if ctx.meta.log_level().is_some() {
                    self.log(&ctx, "Logging tool ran").await;
                }
                ok(vec![text("Logging tool completed")])
            }
            "test_trigger_tool_change" | "test_trigger_prompt_change" => {
                let sinks = self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
                let tools = request.name == "test_trigger_tool_change";
                let mut sent = 0;
                for sink in sinks {
                    let accepted = sink.accepted();
                    let wanted = if tools {
                        accepted.tools_list_changed == Some(true)
                    } else {
                        accepted.prompts_list_changed == Some(true)
                    };
                    if !wanted {
                        continue;
                    }
                    let result = if tools {
                        sink.notify_tool_list_changed().await
                    } else {
                        sink.notify_prompt_list_changed().await
                    };
                    sent += usize::from(result.is_ok());
                }
                ok(vec![text(format!("Notified {sent} listen stream(s)"))])
            }
            "test_custom_header" => {
                let region = arg("region").unwrap_or_default();
                ok(vec![text(format!("region={region}"))])
            }
            "test_reconnection" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ok(vec![text("Reconnection test completed")])
            }
            other => Err(ErrorData::invalid_params(
                format!("Unknown tool: {other}"),
                None,
            )),
        }
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let sink = context.sink().clone();
        let id = sink.id().clone();
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.push(sink);
        }
        context.cancelled().await;
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.retain(|s| *s.id() != id);
        }
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new("test://static-text", "Static Text Resource")
                .with_description("A static text resource for testing")
                .with_mime_type("text/plain"),
            Resource::new("test://static-binary", "Static Binary Resource")
                .with_description("A static binary resource (a PNG) for testing")
                .with_mime_type("image/png"),
            Resource::new("test://watched-resource", "Watched Resource")
                .with_description("A resource clients can subscribe to")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("test://template/{id}/data", "Template Resource")
                .with_description("A resource template with an {id} parameter")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let contents = match uri {
            "test://static-text" => {
                ResourceContents::text("This is the content of the static text resource.", uri)
                    .with_mime_type("text/plain")
            }
            "test://static-binary" => ResourceContents::blob(PNG, uri).with_mime_type("image/png"),
            "test://watched-resource" => {
                ResourceContents::text("This resource can be watched.", uri)
                    .with_mime_type("text/plain")
            }
            _ => match uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                Some(id) => {
                    let body = json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
                    ResourceContents::text(body.to_string(), uri).with_mime_type("application/json")
                }
                None => {
                    return Err(ErrorData::resource_not_found(
                        format!("Resource not found: {uri}"),
                        Some(json!({ "uri": uri })),
                    ));
                }
            },
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if let Ok(mut subs) = self.subscriptions.lock() {
            subs.insert(request.uri.to_string());
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if let Ok(mut subs) = self.subscriptions.lock() {
            subs.remove(request.uri.as_str());
        }
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let required = |name: &str, description: &str| {
            PromptArgument::new(name)
                .with_description(description)
                .with_required(true)
        };
        Ok(ListPromptsResult::with_all_items(vec![
            Prompt::new(
                "test_simple_prompt",
                Some("A simple prompt without arguments"),
                None,
            ),
            Prompt::new(
                "test_prompt_with_arguments",
                Some("A prompt with two arguments"),
                Some(vec![
                    required("arg1", "First test argument"),
                    required("arg2", "Second test argument"),
                ]),
            ),
            Prompt::new(
                "test_prompt_with_embedded_resource",
                Some("A prompt with an embedded resource"),
                Some(vec![required(
                    "resourceUri",
                    "URI of the resource to embed",
                )]),
            ),
            Prompt::new(
                "test_prompt_with_image",
                Some("A prompt with an image"),
                None,
            ),
            Prompt::new(
                mrtr::PROMPT,
                Some("A prompt that first asks the client for context"),
                None,
            ),
        ]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let args = request.arguments.clone().unwrap_or_default();
        let arg = |name: &str| {
            args.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        if request.name == mrtr::PROMPT {
            return mrtr::get_prompt(request.input_responses.as_ref());
        }
        let messages = match request.name.as_str() {
            "test_simple_prompt" => vec![PromptMessage::new_text(
                Role::User,
                "This is a simple prompt for testing.",
            )],
            "test_prompt_with_arguments" => vec![PromptMessage::new_text(
                Role::User,
                format!(
                    "Prompt with arguments: arg1='{}', arg2='{}'",
                    arg("arg1"),
                    arg("arg2")
                ),
            )],
            "test_prompt_with_embedded_resource" => {
                let uri = match arg("resourceUri") {
                    u if u.is_empty() => "test://example-resource".to_owned(),
                    u => u,
                };
                vec![
                    PromptMessage::new(
                        Role::User,
                        ContentBlock::resource(
                            ResourceContents::text("Embedded resource content for testing.", uri)
                                .with_mime_type("text/plain"),
                        ),
                    ),
                    PromptMessage::new_text(
                        Role::User,
                        "Please process the embedded resource above.",
                    ),
                ]
            }
            "test_prompt_with_image" => vec![
                PromptMessage::new(Role::User, ContentBlock::image(PNG, "image/png")),
                PromptMessage::new_text(Role::User, "Please analyze the image above."),
            ],
            other => {
                return Err(ErrorData::invalid_params(
                    format!("Unknown prompt: {other}"),
                    None,
                ));
            }
        };
        Ok(GetPromptResult::new(messages).into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let candidates: &[&str] = match (&request.r#ref, request.argument.name.as_str()) {
            (Reference::Prompt(_), "arg1" | "arg2") => {
                &["paris", "park", "party", "test", "testing"]
            }
            (Reference::Resource(_), "id") => &["1", "2", "3", "123"],
            _ => &[],
        };
        let prefix = request.argument.value.as_str();
        let values = candidates
            .iter()
            .filter(|c| c.starts_with(prefix))
            .map(|c| (*c).to_owned())
            .collect();
        let info = CompletionInfo::new(values).map_err(|e| ErrorData::internal_error(e, None))?;
        Ok(CompleteResult::new(info))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if let Ok(mut level) = self.log_level.lock() {
            *level = Some(request.level);
        }
        Ok(())
    }
}

async fn serve_http(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // The default allowed hosts are the loopback names: the suite's
    // dns-rebinding-protection scenario expects other Host values refused.
    let config = StreamableHttpServerConfig::default();
    let upstream = Upstream::default();
    let service = StreamableHttpService::new(
        move || Ok(upstream.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}/mcp")?;
    stdout.flush()?;
    axum::serve(listener, router).await?;
    Ok(())
}

async fn serve_stdio() -> anyhow::Result<()> {
    let service = Upstream::default().serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(target) = args.proxy_to {
        return proxy::serve(args.listen, target).await;
    }
    if args.stdio {
        serve_stdio().await
    } else {
        serve_http(args.listen).await
    }
}
