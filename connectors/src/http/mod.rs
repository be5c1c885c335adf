//! The HTTP connector: maps a tool call onto one HTTP request and the
//! response back onto tool content.
//!
//! Configuration lives in the `http:` block of a `Connector` manifest
//! ([`HttpConnectorConfig`]) and in each tool's `request:` / `response:`
//! blocks ([`HttpToolConfig`]). [`HttpConnector::build`] checks what can be
//! checked without a network (URL syntax, placeholders against the input
//! schema's properties) so a broken mapping fails at load time, not at call
//! time.

mod config;
mod mapping;

pub use config::{
    BodyMode, HttpConnectorConfig, HttpMethod, HttpToolConfig, RequestMapping, ResponseMapping,
};

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Connector, ConnectorCall, ConnectorError, ToolOutput};

/// A configuration problem found while building an HTTP connector.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HttpConfigError {
    /// The tool concerned, if the problem is in one tool's mapping.
    pub tool: Option<String>,
    /// What is wrong and what to do about it.
    pub message: String,
}

#[derive(Debug)]
struct ToolRoute {
    config: HttpToolConfig,
    timeout: Duration,
    template: mapping::PathTemplate,
}

/// A built HTTP connector, ready to call its backend.
#[derive(Debug)]
pub struct HttpConnector {
    base: reqwest::Url,
    client: reqwest::Client,
    tools: HashMap<String, ToolRoute>,
    max_response_bytes: usize,
}

impl HttpConnector {
    /// Checks the configuration and builds the connector.
    ///
    /// `tools` pairs each tool name with its mapping and the names of the
    /// properties its input schema declares, so placeholders that could never
    /// be filled are reported now.
    pub fn build<'a>(
        config: &HttpConnectorConfig,
        tools: impl IntoIterator<Item = (&'a str, &'a HttpToolConfig, Vec<String>)>,
    ) -> Result<Self, HttpConfigError> {
        let base = config
            .parsed_base_url()
            .map_err(|message| HttpConfigError {
                tool: None,
                message,
            })?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            // Redirects could take a governed request somewhere nobody
            // reviewed; a backend that moves must be re-declared.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HttpConfigError {
                tool: None,
                message: format!("cannot build HTTP client: {e}"),
            })?;
        let mut routes = HashMap::new();
        for (name, tool, properties) in tools {
            let template = mapping::PathTemplate::parse(&tool.request.path).map_err(|message| {
                HttpConfigError {
                    tool: Some(name.to_string()),
                    message,
                }
            })?;
            let mut referenced: Vec<&str> = template.placeholders().collect();
            referenced.extend(tool.request.query.values().map(String::as_str));
            referenced.extend(tool.request.headers.values().map(String::as_str));
            for arg in referenced {
                if !properties.iter().any(|p| p == arg) {
                    return Err(HttpConfigError {
                        tool: Some(name.to_string()),
                        message: format!(
                            "the request mapping uses argument `{arg}`, which the tool's input_schema does not declare in `properties`"
                        ),
                    });
                }
            }
            for header in tool.request.headers.keys() {
                if crate::RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
                    return Err(HttpConfigError {
                        tool: Some(name.to_string()),
                        message: format!(
                            "header `{header}` carries credentials or routing; only the gateway sets it"
                        ),
                    });
                }
                if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(HttpConfigError {
                        tool: Some(name.to_string()),
                        message: format!("`{header}` is not a valid HTTP header name"),
                    });
                }
            }
            let timeout = tool
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(config.timeout());
            routes.insert(
                name.to_string(),
                ToolRoute {
                    config: tool.clone(),
                    timeout,
                    template,
                },
            );
        }
        Ok(Self {
            base,
            client,
            tools: routes,
            max_response_bytes: config.max_response_bytes,
        })
    }
}

#[async_trait]
impl Connector for HttpConnector {
    async fn call(&self, call: ConnectorCall<'_>) -> Result<ToolOutput, ConnectorError> {
        let route = self
            .tools
            .get(call.tool)
            .ok_or_else(|| ConnectorError::UnknownTool(call.tool.to_string()))?;
        let mut request = mapping::build_request(&self.client, &self.base, route, call.arguments)?;
        if !call.trace.is_empty() {
            // Replaces any the mapping set: the gateway's trace context wins.
            request = request.headers(call.trace.headers().clone());
        }
        if let Some(credential) = call.credential {
            request = request.header(credential.header().clone(), credential.value().clone());
        }
        let timeout = route.timeout;
        let response = match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => return Err(ConnectorError::Timeout(timeout)),
            Ok(Err(e)) if e.is_timeout() => return Err(ConnectorError::Timeout(timeout)),
            Ok(Err(e)) => return Err(ConnectorError::Unreachable(describe(&e))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let body = match tokio::time::timeout(
            timeout,
            mapping::read_capped(response, self.max_response_bytes),
        )
        .await
        {
            Err(_) => return Err(ConnectorError::Timeout(timeout)),
            Ok(r) => r?,
        };
        // A backend that echoes the credential it was sent (a debug
        // endpoint, an error page quoting the request) must not hand it to
        // the agent.
        let body = match call.credential.and_then(|c| c.redact_in(&body)) {
            Some(redacted) => {
                tracing::warn!(
                    tool = call.tool,
                    "the backend's response contained the credential sent to it; redacted"
                );
                redacted
            }
            None => body,
        };
        Ok(mapping::to_output(status, &body, &route.config.response))
    }

    fn target(&self) -> String {
        self.base.to_string()
    }
}

/// Describes a transport error without the URL's query string, which could
/// carry argument values.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    match e.url() {
        Some(u) => format!(
            "{kind} ({}://{}{})",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        None => kind.to_string(),
    }
}
