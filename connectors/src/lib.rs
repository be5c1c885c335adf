//! Connectors: how Tollgate reaches a backend once every governance stage has
//! passed.
//!
//! This crate owns the [`Connector`] interface and its implementations:
//! [`http::HttpConnector`] for HTTP APIs and [`mcp::McpConnector`] for
//! upstream MCP servers. A connector knows nothing about agents,
//! grants or audit: the gateway hands it a call that has already been
//! authorized, and it returns either tool output or a [`ConnectorError`]
//! classified by source so the gateway can tell the agent what went wrong
//! without leaking backend internals.
//!
//! Each connector kind is a module with its manifest configuration type
//! (serde + schemars, strict), a `build` step that checks the configuration
//! and returns the running connector, and the call itself.

pub mod http;
pub mod mcp;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// One tool call, already authorized, as the connector sees it.
pub struct ConnectorCall<'a> {
    /// The tool's name inside its connector (without the connector prefix).
    pub tool: &'a str,
    /// Arguments, already validated against the tool's input schema.
    pub arguments: &'a Map<String, Value>,
    /// The credential the gateway issued for this backend, if any.
    pub credential: Option<&'a BackendCredential>,
    /// Trace context to send with the request; empty unless the gateway
    /// exports traces.
    pub trace: &'a TraceHeaders,
    /// Where what the backend sends during the call goes besides its
    /// result (an upstream MCP server's progress, log messages and
    /// requests of the agent's client): the gateway's side of the call.
    pub relay: Option<&'a dyn mcp::CallRelay>,
    /// The agent's answers to an upstream's `input_required`, on a retry.
    pub resume: Option<&'a Resume>,
}

impl std::fmt::Debug for ConnectorCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorCall")
            .field("tool", &self.tool)
            .field("credential", &self.credential)
            .field("relay", &self.relay.is_some())
            .finish_non_exhaustive()
    }
}

/// The W3C trace-context headers (`traceparent`, `tracestate`) the gateway
/// wants sent with one backend request, so the backend's own spans join
/// the gateway's trace. Empty when the gateway exports no traces, and then
/// nothing is sent. Only these two names are accepted, so this cannot
/// carry anything else to a backend. How the values are made is the
/// gateway's business: this crate knows nothing of OpenTelemetry.
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders {
    headers: ::http::HeaderMap,
}

impl TraceHeaders {
    /// The header names a trace context may set.
    pub const NAMES: &'static [&'static str] = &["traceparent", "tracestate"];

    /// Sets `name` to `value`; false (and nothing set) when `name` is not
    /// one of [`TraceHeaders::NAMES`] or `value` is not a header value.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        let Some(name) = Self::NAMES.iter().find(|n| name.eq_ignore_ascii_case(n)) else {
            return false;
        };
        match ::http::HeaderValue::from_str(value) {
            Ok(v) => {
                self.headers
                    .insert(::http::HeaderName::from_static(name), v);
                true
            }
            Err(_) => false,
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The headers, for a connector to send.
    pub fn headers(&self) -> &::http::HeaderMap {
        &self.headers
    }
}

/// Headers a tool argument may never set: they carry credentials or
/// routing, which only the gateway decides.
pub const RESERVED_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie", "host"];

/// A credential for a backend: one header and its value. The value is
/// marked sensitive and never shown by `Debug`.
#[derive(Clone)]
pub struct BackendCredential {
    header: ::http::HeaderName,
    value: ::http::HeaderValue,
}

impl BackendCredential {
    /// A credential sent as `header: value`.
    pub fn new(header: &str, value: &str) -> Result<Self, String> {
        let header = ::http::HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("`{header}` is not a header name"))?;
        let mut value = ::http::HeaderValue::from_str(value)
            .map_err(|_| "the credential is not a valid header value".to_string())?;
        value.set_sensitive(true);
        Ok(Self { header, value })
    }

    /// The header name.
    pub fn header(&self) -> &::http::HeaderName {
        &self.header
    }

    /// The header value (the secret).
    pub fn value(&self) -> &::http::HeaderValue {
        &self.value
    }
}

/// What replaces a credential a backend echoes back in its response.
pub const REDACTED: &str = "[REDACTED]";

impl BackendCredential {
    /// Replaces every copy of this credential in `body` (the whole header
    /// value, and the token after an auth scheme such as `Bearer `) with
    /// [`REDACTED`], so a backend that echoes what it received does not
    /// hand the agent the gateway's credential.
    pub fn redact_in(&self, body: &[u8]) -> Option<Vec<u8>> {
        let value = self.value.as_bytes();
        let mut needles: Vec<&[u8]> = vec![value];
        if let Some(space) = value.iter().position(|b| *b == b' ') {
            let token = &value[space + 1..];
            // A bare token is redacted too, when long enough not to match
            // ordinary text by chance.
            if token.len() >= 8 {
                needles.push(token);
            }
        }
        let mut out: Option<Vec<u8>> = None;
        for needle in needles {
            let haystack = out.as_deref().unwrap_or(body);
            if let Some(replaced) = replace_all(haystack, needle, REDACTED.as_bytes()) {
                out = Some(replaced);
            }
        }
        out
    }
}

/// `haystack` with every `needle` replaced, or `None` if there was none.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    let mut found = false;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
            found = true;
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    found.then_some(out)
}

impl std::fmt::Debug for BackendCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackendCredential({}: <redacted>)", self.header)
    }
}

/// What a backend answered, shaped for an MCP tool result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// Text content for the agent (the response body, or the selected part).
    pub text: String,
    /// Structured content, when the backend answered with JSON.
    pub structured: Option<Value>,
    /// True when the backend reported a failure the agent should see as a
    /// tool error (for example an HTTP 4xx or 5xx).
    pub is_error: bool,
    /// The backend's own status (HTTP status code), for the audit record.
    pub backend_status: Option<u16>,
    /// MCP content blocks exactly as an upstream MCP server returned them:
    /// text, images, audio, resource links, embedded resources. When not
    /// empty they are what the agent gets (and `text` is empty).
    pub content: Vec<rmcp::model::ContentBlock>,
    /// The whole result of an operation that is not a tool call (an
    /// upstream's `prompts/get` or `resources/read`), as JSON, for the
    /// front end to hand on; `text` is its summary for records.
    pub raw: Option<Value>,
    /// `raw` is an upstream's `input_required` result (SEP-2322, protocol
    /// 2026-07-28) for the agent to answer and retry the call with; every
    /// request in it was governed before it got here.
    pub input_required: bool,
}

impl ToolOutput {
    /// A tool error with this text (what the agent should see of a failure
    /// the backend reported, or of a refusal on its behalf).
    pub fn tool_error(text: String) -> Self {
        Self {
            text,
            structured: None,
            is_error: true,
            backend_status: None,
            content: Vec::new(),
            raw: None,
            input_required: false,
        }
    }
}

/// A retried call's answers to what an upstream asked for in its
/// `input_required` result, passed on to the upstream as they came (the
/// request state is the upstream's to verify).
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// `inputResponses`, by the keys of the upstream's requests.
    pub input_responses: Option<Map<String, Value>>,
    /// `requestState`, echoed.
    pub request_state: Option<String>,
}

/// Why a connector could not produce tool output. Each variant is a failure
/// of the backend or of the way to it, never of the agent's request.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The backend did not answer within the configured timeout.
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend could not be reached (connection refused, DNS, TLS).
    /// The detail (which may name the backend's host and port) is for logs
    /// only ([`ConnectorError::detail`]); `Display`, which agents see, never
    /// shows it.
    #[error("the backend could not be reached")]
    Unreachable(String),
    /// The backend answered with more bytes than the connector accepts.
    #[error("the backend's response exceeded {limit} bytes")]
    ResponseTooLarge {
        /// The configured cap.
        limit: usize,
    },
    /// The request could not be built from the arguments (for example a path
    /// placeholder whose argument is missing). Manifest validation should
    /// make this unreachable; it is kept as a typed failure, not a panic.
    #[error("the backend request could not be built: {0}")]
    BadRequest(String),
    /// The backend answered with something that breaks its own declared
    /// contract (an upstream tool's structured content that does not
    /// match its output schema).
    #[error("the backend's answer is invalid: {0}")]
    InvalidResponse(String),
    /// The tool is not known to this connector (the catalog and the
    /// connector disagree; a gateway bug, reported rather than ignored).
    #[error("tool `{0}` is not served by this connector")]
    UnknownTool(String),
}

impl ConnectorError {
    /// What went wrong in full, for the gateway's logs (never for agents):
    /// may name the backend's address.
    pub fn detail(&self) -> String {
        match self {
            ConnectorError::Unreachable(detail) => format!("{self}: {detail}"),
            other => other.to_string(),
        }
    }

    /// A stable, machine-readable code for audit records and agent errors.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectorError::Timeout(_) => "backend_timeout",
            ConnectorError::Unreachable(_) => "backend_unreachable",
            ConnectorError::ResponseTooLarge { .. } => "backend_response_too_large",
            ConnectorError::BadRequest(_) => "backend_request_invalid",
            ConnectorError::UnknownTool(_) => "connector_unknown_tool",
            ConnectorError::InvalidResponse(_) => "backend_output_invalid",
        }
    }
}

/// A running connector: the only thing in Tollgate that talks to a backend.
///
/// Contract: `call` is invoked only by the gateway's dispatch stage, after the
/// call has been authenticated, authorized and recorded. It must honour its
/// own timeout and must never panic on backend input.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Performs one tool call against the backend.
    async fn call(&self, call: ConnectorCall<'_>) -> Result<ToolOutput, ConnectorError>;

    /// Where this connector sends calls (for an HTTP connector, its base
    /// URL). The gateway folds it into the fingerprint its credential cache
    /// is keyed by, so a connector re-pointed elsewhere never receives a
    /// credential issued for the old target. Never shown to agents.
    fn target(&self) -> String {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_credential_is_redacted_whole_and_bare() {
        let c = BackendCredential::new("authorization", "Bearer tok-1234567890")
            .expect("a valid header");
        let body = br#"{"auth":"Bearer tok-1234567890","raw":"tok-1234567890","other":"tok"}"#;
        let out = String::from_utf8(c.redact_in(body).expect("redacted")).expect("utf-8");
        assert_eq!(
            out,
            r#"{"auth":"[REDACTED]","raw":"[REDACTED]","other":"tok"}"#
        );
        assert!(c.redact_in(b"nothing here").is_none());
    }

    #[test]
    fn trace_headers_take_only_the_trace_context_names() {
        let mut t = TraceHeaders::default();
        assert!(t.is_empty());
        assert!(!t.set("authorization", "Bearer x"));
        assert!(!t.set("traceparent", "bad\nvalue"));
        assert!(t.set(
            "TraceParent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert!(t.set("tracestate", "tollgate=1"));
        assert_eq!(t.headers().len(), 2);
        assert_eq!(t.get("tracestate"), Some("tollgate=1"));
    }

    #[test]
    fn unreachable_shows_no_address_to_agents() {
        let e = ConnectorError::Unreachable("connection failed (http://10.1.2.3:8443)".into());
        assert_eq!(e.to_string(), "the backend could not be reached");
        assert!(e.detail().contains("10.1.2.3:8443"));
    }
}
