//! Request building and response shaping for the HTTP connector.

use serde_json::{Map, Value};

use super::ToolRoute;
use super::config::{BodyMode, ResponseMapping};
use crate::{ConnectorError, ToolOutput};

/// Bytes encoded in a path segment: everything but RFC 3986 unreserved
/// characters (minus `.`, so `..` cannot form a dot segment).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// Longest backend error message passed on to the agent.
const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// A path such as `/tickets/{ticket_id}/comments`, split once at build time.
#[derive(Debug)]
pub(super) struct PathTemplate {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Literal(String),
    Arg(String),
}

impl PathTemplate {
    pub(super) fn parse(path: &str) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!("request path `{path}` must start with `/`"));
        }
        let mut parts = Vec::new();
        let mut rest = path;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or_else(|| format!("request path `{path}` has an unclosed `{{`"))?;
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let name = &rest[open + 1..close];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "request path `{path}` has an invalid placeholder `{{{name}}}`"
                ));
            }
            parts.push(Part::Arg(name.to_string()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("request path `{path}` has an unmatched `}}`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    pub(super) fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Arg(a) => Some(a.as_str()),
            Part::Literal(_) => None,
        })
    }
}

/// A scalar argument as it appears in a URL or header; objects and arrays
/// are sent as compact JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn build_request(
    client: &reqwest::Client,
    base: &reqwest::Url,
    route: &ToolRoute,
    args: &Map<String, Value>,
) -> Result<reqwest::RequestBuilder, ConnectorError> {
    let mapping = &route.config.request;
    let mut path = base.path().trim_end_matches('/').to_string();
    for part in &route.template.parts {
        match part {
            Part::Literal(l) => path.push_str(l),
            Part::Arg(name) => {
                let v = args.get(name).ok_or_else(|| {
                    ConnectorError::BadRequest(format!("missing path argument `{name}`"))
                })?;
                // Every byte outside the unreserved set is encoded, `/` and
                // `.` included, so `../admin` in an argument stays one
                // segment and cannot climb the path.
                path.extend(percent_encoding::utf8_percent_encode(&scalar(v), SEGMENT));
            }
        }
    }
    let mut url = base.clone();
    url.set_path(&path);
    let mut used: Vec<&str> = route.template.placeholders().collect();
    {
        let mut pairs = url.query_pairs_mut();
        for (param, arg) in &mapping.query {
            used.push(arg);
            if let Some(v) = args.get(arg).filter(|v| !v.is_null()) {
                pairs.append_pair(param, &scalar(v));
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let mut request = client.request(mapping.method.as_reqwest(), url);
    for (header, arg) in &mapping.headers {
        used.push(arg);
        if let Some(v) = args.get(arg).filter(|v| !v.is_null()) {
            let value = http::HeaderValue::from_str(&scalar(v)).map_err(|_| {
                ConnectorError::BadRequest(format!("argument `{arg}` is not a valid header value"))
            })?;
            request = request.header(header.as_str(), value);
        }
    }
    request = match mapping.body_mode() {
        BodyMode::None => request,
        BodyMode::All => request.json(args),
        BodyMode::Rest => {
            let rest: Map<String, Value> = args
                .iter()
                .filter(|(k, _)| !used.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            request.json(&rest)
        }
    };
    Ok(request.header(
        http::header::ACCEPT,
        "application/json, text/plain;q=0.9, */*;q=0.5",
    ))
}

/// Reads the body, refusing to buffer more than `limit` bytes.
pub(super) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ConnectorError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ConnectorError::ResponseTooLarge { limit });
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ConnectorError::ResponseTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => {
                return Err(ConnectorError::Timeout(std::time::Duration::ZERO));
            }
            Err(_) => {
                return Err(ConnectorError::Unreachable(
                    "the response body was cut off".into(),
                ));
            }
        }
    }
}

pub(super) fn to_output(
    status: reqwest::StatusCode,
    body: &[u8],
    mapping: &ResponseMapping,
) -> ToolOutput {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        let selected = match (&json, &mapping.select) {
            (Some(v), Some(ptr)) => v.pointer(ptr).cloned().or(Some(Value::Null)),
            (Some(v), None) => Some(v.clone()),
            (None, _) => None,
        };
        let text = match &selected {
            Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
            None => String::from_utf8_lossy(body).into_owned(),
        };
        // MCP structured content must be an object; wrap anything else.
        let structured = selected.map(|v| match v {
            Value::Object(_) => v,
            other => serde_json::json!({ "result": other }),
        });
        return ToolOutput {
            text,
            structured,
            is_error: false,
            backend_status: Some(status.as_u16()),
            content: Vec::new(),
            raw: None,
            input_required: false,
        };
    }
    let message = json
        .as_ref()
        .and_then(|v| mapping.error_message.as_deref().and_then(|p| v.pointer(p)))
        .map(scalar)
        .or_else(|| {
            let t = String::from_utf8_lossy(body).trim().to_string();
            (!t.is_empty()).then_some(t)
        });
    let reason = status.canonical_reason().unwrap_or("error");
    let mut text = format!("The backend returned HTTP {} {reason}", status.as_u16());
    if let Some(m) = message {
        let m: String = m.chars().take(MAX_ERROR_MESSAGE_CHARS).collect();
        text.push_str(": ");
        text.push_str(&m);
    }
    ToolOutput {
        text,
        structured: None,
        is_error: true,
        backend_status: Some(status.as_u16()),
        content: Vec::new(),
        raw: None,
        input_required: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_rejects_unclosed_and_bad_placeholders() {
        assert!(PathTemplate::parse("/a/{id").is_err());
        assert!(PathTemplate::parse("/a/{}").is_err());
        assert!(PathTemplate::parse("/a/{x y}").is_err());
        assert!(PathTemplate::parse("a/b").is_err());
        let t = PathTemplate::parse("/tickets/{ticket_id}/comments").expect("valid");
        assert_eq!(t.placeholders().collect::<Vec<_>>(), vec!["ticket_id"]);
    }

    #[test]
    fn error_body_message_is_selected_and_capped() {
        let mapping = ResponseMapping {
            select: None,
            error_message: Some("/error".into()),
        };
        let long = "x".repeat(2000);
        let body = serde_json::json!({ "error": long }).to_string();
        let out = to_output(reqwest::StatusCode::BAD_REQUEST, body.as_bytes(), &mapping);
        assert!(out.is_error);
        assert!(
            out.text
                .starts_with("The backend returned HTTP 400 Bad Request: xxx")
        );
        assert!(out.text.len() < 600);
    }

    #[test]
    fn non_object_json_is_wrapped_for_structured_content() {
        let out = to_output(
            reqwest::StatusCode::OK,
            b"[1,2]",
            &ResponseMapping::default(),
        );
        assert_eq!(out.structured, Some(serde_json::json!({"result": [1, 2]})));
        assert!(!out.is_error);
    }
}
