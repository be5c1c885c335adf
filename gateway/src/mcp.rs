//! The MCP front end: an rmcp [`ServerHandler`] over the catalog. It owns
//! the protocol surface only: who the caller is comes from the edge (HTTP
//! auth layer or the stdio key), and every `tools/call` goes to
//! [`pipeline::call_tool`]. Methods not implemented here (resources,
//! prompts, ...) keep rmcp's "method not found" default: nothing is passed
//! through ungoverned.

use std::sync::Arc;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, ErrorCode, ErrorData, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};

use crate::Gateway;
use crate::pipeline::{self, Authenticated, ToolRequest, Transport, authenticate, denial::codes};

/// How this handler learns who is calling.
#[derive(Debug, Clone)]
enum Identity {
    /// From the [`Authenticated`] the HTTP auth layer put in the request.
    HttpLayer,
    /// From a key given at startup (stdio), re-checked on every request so
    /// a revoked key stops working without a restart.
    Key(Arc<str>),
}

/// One MCP server handler; cheap to clone (the HTTP service builds one per
/// session or request).
#[derive(Debug, Clone)]
pub struct McpFront {
    gw: Arc<Gateway>,
    identity: Identity,
    /// For stdio: this process's connection key (tasks started in band
    /// bind to it). HTTP uses the session id instead.
    connection: Option<Arc<str>>,
}

impl McpFront {
    /// A handler for the HTTP edge.
    pub fn for_http(gw: Arc<Gateway>) -> Self {
        Self {
            gw,
            identity: Identity::HttpLayer,
            connection: None,
        }
    }

    /// A handler for stdio, authenticating every request with `key`.
    pub fn for_stdio(gw: Arc<Gateway>, key: &str) -> Self {
        let connection = format!("stdio:{}", uuid::Uuid::new_v4());
        Self {
            gw,
            identity: Identity::Key(Arc::from(key)),
            connection: Some(Arc::from(connection.as_str())),
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
                    unauthenticated(
                        "credential_missing",
                        "no authenticated principal on this request",
                    )
                }),
            Identity::Key(key) => {
                authenticate::authenticate_bearer(&self.gw, key, Transport::Stdio)
                    .await
                    .map_err(|e| {
                        unauthenticated(e.code(), &format!("{e} (check TOLLGATE_AGENT_KEY)"))
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
        ToolRequest {
            name,
            arguments,
            task_hint,
            connection: self.connection(ctx),
        }
    }
}

fn unauthenticated(code: &str, message: &str) -> ErrorData {
    ErrorData::new(
        ErrorCode(codes::UNAUTHENTICATED),
        message.to_string(),
        Some(serde_json::json!({ "reason": code })),
    )
}

impl ServerHandler for McpFront {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build())
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
        // A suspended or retired agent sees why, not a stale tool list.
        if let Err(denial) = pipeline::admit::admit(&self.gw, &who).await {
            return Err(match denial.to_agent() {
                pipeline::AgentReply::Error(e) => e,
                pipeline::AgentReply::ToolError(_) => {
                    ErrorData::internal_error(denial.to_string(), None)
                }
            });
        }
        // Within a task, only the task's tools (and the way to end it).
        let probe = self.request(&ctx, String::new(), None, None);
        let task = match pipeline::scope::task_id_for(&self.gw, &who, &probe) {
            Some(id) => pipeline::scope::load(&self.gw, &id, &who.agent().id)
                .await
                .ok(),
            None => None,
        };
        let agent = who.agent();
        let mut tools: Vec<Tool> = match &task {
            Some(t) => agent
                .listed
                .iter()
                .filter(|tool| t.tools.iter().any(|n| *n == tool.name))
                .cloned()
                .collect(),
            None => agent.listed.as_ref().clone(),
        };
        tools.extend(pipeline::builtin::tools(
            task.is_some(),
            agent.tasks.max_ttl_seconds,
        ));
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
            ..
        } = request;
        let request = self.request(
            &ctx,
            name.into_owned(),
            arguments,
            meta.as_ref().map(|m| &m.0.0),
        );
        pipeline::call_tool(&self.gw, &who, request, &ctx.ct)
            .await
            .map(Into::into)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.gw.catalog().tools.get(name).map(|t| t.tool.clone())
    }
}
