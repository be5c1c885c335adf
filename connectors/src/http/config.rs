//! Manifest types for the HTTP connector. Strict on purpose: an unknown
//! field is a typo that would otherwise silently change a governed call.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_max_response_bytes() -> usize {
    1024 * 1024
}

/// How to reach an HTTP backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectorConfig {
    /// Base URL every tool path is appended to, e.g. `https://api.internal/v2`.
    pub base_url: String,
    /// Whole-call timeout in milliseconds (connect, send, read). Default 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connect timeout in milliseconds. Default 2000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Largest response body accepted, in bytes; a larger one is a tool error.
    /// Default 1 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

impl HttpConnectorConfig {
    /// The base URL, parsed and checked (http or https, no query, no fragment).
    pub fn parsed_base_url(&self) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| format!("base_url `{}` is not a valid URL: {e}", self.base_url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "base_url `{}` must use http or https",
                self.base_url
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "base_url `{}` must not have a query or fragment",
                self.base_url
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "base_url `{}` must not carry credentials; declare backend authentication instead",
                self.base_url
            ));
        }
        Ok(url)
    }

    /// The whole-call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// How one tool maps onto an HTTP request and back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpToolConfig {
    /// The request to send.
    pub request: RequestMapping,
    /// How the response becomes tool content.
    #[serde(default)]
    pub response: ResponseMapping,
    /// Overrides the connector's timeout for this tool, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// HTTP methods a tool may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub(crate) fn as_reqwest(self) -> reqwest::Method {
        match self {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        }
    }
}

/// Which arguments go into the JSON request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyMode {
    /// No body.
    None,
    /// Every argument not used by the path, query or headers, as a JSON object.
    Rest,
    /// Every argument, as a JSON object.
    All,
}

/// The HTTP request a tool call becomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestMapping {
    /// HTTP method.
    pub method: HttpMethod,
    /// Path appended to the base URL; `{name}` is replaced by the argument
    /// `name`, percent-encoded as one path segment.
    pub path: String,
    /// Query parameters: parameter name -> argument name. An absent optional
    /// argument is left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Request headers: header name -> argument name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Body: `none`, `rest` or `all`. Default: `none` for GET and DELETE,
    /// `rest` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyMode>,
}

impl RequestMapping {
    /// The body mode in force, with the method's default applied.
    pub fn body_mode(&self) -> BodyMode {
        self.body.unwrap_or(match self.method {
            HttpMethod::Get | HttpMethod::Delete => BodyMode::None,
            _ => BodyMode::Rest,
        })
    }
}

/// How an HTTP response becomes tool content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseMapping {
    /// JSON pointer selecting the part of a successful JSON body to return
    /// (e.g. `/data`); the whole body when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<String>,
    /// JSON pointer to a human-readable message in an error body (e.g.
    /// `/error/message`), shown to the agent in the tool error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}
