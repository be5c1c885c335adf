//! OpenTelemetry traces from the real binary: `serve` with
//! `TOLLGATE_OTLP_ENDPOINT` pointing at an in-process OTLP/HTTP receiver
//! (axum, decoding `ExportTraceServiceRequest` with opentelemetry-proto).
//! Real rmcp clients make governed calls to a recording backend; the test
//! checks the call spans, their stage spans in pipeline order, the backend
//! span, the `traceparent` the backend received, a caller's own
//! `traceparent`, and that no key, credential or argument is in the
//! export. Without the endpoint, no trace context reaches the backend.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;
use tollgate_tests::{Backend, Hit, ServedBinary, args, run_cli};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");
/// The connector's static backend credential.
const SECRET: &str = "CANARY-9c4e-otel-backend-secret";
/// An argument value: arguments never go into spans.
const ARGUMENT: &str = "CANARY-71ab-otel-argument";
/// A caller's own trace context, sent with its MCP requests.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const CALLER_STATE: &str = "agent=CANARY-tracestate";

/// Every export request the receiver got, decoded, and the raw bodies.
#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Received {
    fn spans(&self) -> Vec<Span> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    fn service_names(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .filter_map(|r| r.resource.as_ref())
            .filter_map(|r| value(&r.attributes, "service.name"))
            .collect()
    }
}

/// An OTLP/HTTP (protobuf) trace receiver on port 0; returns its base URL.
async fn receiver() -> (String, Received) {
    async fn export(State(got): State<Received>, body: Bytes) -> impl axum::response::IntoResponse {
        got.raw.lock().unwrap().extend_from_slice(&body);
        match ExportTraceServiceRequest::decode(body) {
            Ok(r) => {
                got.requests.lock().unwrap().push(r);
                // An empty ExportTraceServiceResponse: full success.
                (
                    axum::http::StatusCode::OK,
                    [("content-type", "application/x-protobuf")],
                )
            }
            Err(_) => (
                axum::http::StatusCode::BAD_REQUEST,
                [("content-type", "text/plain")],
            ),
        }
    }
    let got = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// A connector whose backend credential is [`SECRET`], with one tool the
/// agent `tester` is granted and one it is not; the agent's key, issued by
/// the real binary.
fn setup(backend: &Backend) -> (tempfile::TempDir, tempfile::TempDir, String) {
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("test.yaml"),
        format!(
            r#"kind: Connector
id: zeta
description: zeta API
owners:
  system: {{ name: zeta-team, contact: zeta@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http:
  base_url: {}/api
auth:
  static: {{ header: x-api-key, value: {{ file: zeta.secret }} }}
tools:
  - name: read
    description: Read
    risk: low
    input_schema: {{ type: object, properties: {{ id: {{ type: string }} }} }}
    http:
      request: {{ method: GET, path: "/things", query: {{ id: id }} }}
  - name: purge
    description: Granted to nobody
    risk: low
    input_schema: {{ type: object }}
    http:
      request: {{ method: DELETE, path: "/things" }}
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
tools: [zeta.read]
"#,
            backend.url
        ),
    )
    .unwrap();
    std::fs::write(manifests.path().join("zeta.secret"), SECRET).unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = run_cli(
        BIN,
        data.path(),
        manifests.path(),
        &["agents", "issue-key", "tester"],
    );
    assert_eq!(out.status.code(), Some(0));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (data, manifests, key)
}

/// An rmcp client sending `headers` with every request.
async fn client(
    url: &str,
    key: &str,
    headers: &[(&'static str, &str)],
) -> RunningService<RoleClient, ()> {
    let mut config =
        StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string());
    for (name, v) in headers {
        config.custom_headers.insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap()
}

fn read_call() -> CallToolRequestParams {
    CallToolRequestParams::new("zeta.read").with_arguments(args(json!({ "id": ARGUMENT })))
}

fn value(attributes: &[KeyValue], key: &str) -> Option<String> {
    let v = attributes.iter().find(|kv| kv.key == key)?;
    match v.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    value(&span.attributes, key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header<'a>(hit: &'a Hit, name: &str) -> Option<&'a str> {
    hit.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The W3C `traceparent` parts: (trace id, parent span id).
fn traceparent(v: &str) -> (String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "not a traceparent: {v}");
    assert_eq!(parts[0], "00", "{v}");
    (parts[1].to_string(), parts[2].to_string())
}

/// Stops the binary as Ctrl-C does (SIGINT), so it sends its last spans,
/// and waits (bounded) until it has exited; returns its stderr.
fn interrupt(served: &mut ServedBinary) -> String {
    let pid = served.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let logs = served.kill();
    let exited = exited.unwrap_or_else(|| panic!("no exit 30 s after SIGINT:\n{logs}"));
    assert!(exited.success(), "{exited:?}\n{logs}");
    logs
}

#[tokio::test(flavor = "multi_thread")]
async fn a_governed_call_is_one_trace_with_its_stages_in_order_and_the_backend_joins_it() {
    let backend = Backend::start().await;
    let (otlp, received) = receiver().await;
    let (data, manifests, key) = setup(&backend);
    let mut served = ServedBinary::start(
        BIN,
        data.path(),
        manifests.path(),
        &[
            ("TOLLGATE_OTLP_ENDPOINT", otlp.as_str()),
            // Traces do not depend on how much is logged: only the call
            // lines are.
            ("RUST_LOG", "warn,tollgate::call=info"),
        ],
    );

    // 1: allowed, from a client with no trace of its own.
    let plain = client(&served.url, &key, &[]).await;
    let r = plain.call_tool(read_call()).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{:?}", r.content);
    // 2: refused by authorize (not granted).
    let refused = plain
        .call_tool(CallToolRequestParams::new("zeta.purge").with_arguments(args(json!({}))))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    plain.cancel().await.unwrap();
    // 3: allowed, from a client inside its own trace.
    let caller_parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let traced = client(
        &served.url,
        &key,
        &[
            ("traceparent", caller_parent.as_str()),
            ("tracestate", CALLER_STATE),
        ],
    )
    .await;
    let r = traced.call_tool(read_call()).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{:?}", r.content);
    traced.cancel().await.unwrap();

    // The default batch delay is 5 s: the spans arrive because the exit
    // sends what is queued.
    let logs = interrupt(&mut served);
    assert!(!logs.contains(&key));
    // The call lines are as without traces: the call span is not in them.
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("tollgate::call"))
        .collect();
    assert_eq!(lines.len(), 3, "{logs}");
    assert!(lines.iter().all(|l| !l.contains("tools/call")), "{logs}");
    let spans = received.spans();
    assert!(!spans.is_empty(), "nothing exported:\n{logs}");
    assert!(
        received.service_names().iter().all(|n| n == "tollgate"),
        "{:?}",
        received.service_names()
    );

    // Nothing secret, and no argument, in what was exported.
    let raw = received.raw.lock().unwrap().clone();
    let raw = String::from_utf8_lossy(&raw);
    for (what, canary) in [
        ("agent key", key.as_str()),
        ("backend credential", SECRET),
        ("argument", ARGUMENT),
        ("caller's tracestate", "CANARY-tracestate"),
    ] {
        assert!(!raw.contains(canary), "the {what} is in the exported spans");
    }

    let calls: Vec<&Span> = spans.iter().filter(|s| s.name == "tools/call").collect();
    assert_eq!(calls.len(), 3, "{spans:#?}");
    // Start order is call order.
    let mut calls = calls;
    calls.sort_by_key(|s| s.start_time_unix_nano);
    let children = |parent: &Span| -> Vec<&Span> {
        let mut c: Vec<&Span> = spans
            .iter()
            .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
            .collect();
        c.sort_by_key(|s| s.start_time_unix_nano);
        c
    };
    let stage_names = |parent: &Span| -> Vec<String> {
        children(parent)
            .into_iter()
            .filter(|s| attr(s, "tollgate.stage").is_some())
            .map(|s| s.name.clone())
            .collect()
    };
    let hits: Vec<Hit> = backend.hits();
    assert_eq!(hits.len(), 2, "{hits:?}");

    // Call 1: a root span with every stage after authentication (that one
    // runs at the HTTP edge, before the call exists), in pipeline order,
    // and the backend call.
    let call = calls[0];
    assert!(call.parent_span_id.is_empty(), "{call:?}");
    assert_eq!(call.kind, SpanKind::Server as i32);
    for (k, v) in [
        ("tollgate.agent", "tester"),
        ("tollgate.tool", "zeta.read"),
        ("tollgate.decision", "allow"),
        ("tollgate.outcome", "ok"),
        ("tollgate.connector", "zeta"),
        ("mcp.method.name", "tools/call"),
    ] {
        assert_eq!(attr(call, k).as_deref(), Some(v), "{k} in {call:?}");
    }
    let expected: Vec<String> = tollgate::pipeline::STAGES
        .iter()
        .filter(|s| **s != "authenticate")
        .map(|s| s.to_string())
        .collect();
    assert_eq!(stage_names(call), expected);
    for s in children(call) {
        assert!(
            s.start_time_unix_nano >= call.start_time_unix_nano
                && s.end_time_unix_nano <= call.end_time_unix_nano,
            "{} is outside its call",
            s.name
        );
    }
    let backend_spans: Vec<&Span> = children(call)
        .into_iter()
        .filter(|s| s.name == "backend")
        .collect();
    assert_eq!(backend_spans.len(), 1, "{:#?}", children(call));
    let backend_span = backend_spans[0];
    assert_eq!(backend_span.kind, SpanKind::Client as i32);
    assert_eq!(
        attr(backend_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(backend_span, "tollgate.connector").as_deref(),
        Some("zeta")
    );
    // The backend request carried the backend span's context.
    let sent = header(&hits[0], "traceparent").expect("a traceparent at the backend");
    assert_eq!(
        traceparent(sent),
        (hex(&call.trace_id), hex(&backend_span.span_id))
    );
    assert!(header(&hits[0], "tracestate").is_none(), "{:?}", hits[0]);

    // Call 2: refused by authorize; its span says so, with the stages it
    // passed, and there is no backend call.
    let call = calls[1];
    assert!(call.parent_span_id.is_empty());
    assert_eq!(attr(call, "tollgate.decision").as_deref(), Some("deny"));
    assert_eq!(attr(call, "tollgate.outcome").as_deref(), Some("refused"));
    assert_eq!(
        attr(call, "tollgate.reason").as_deref(),
        Some("tool_not_granted")
    );
    assert_eq!(attr(call, "tollgate.tool").as_deref(), Some("zeta.purge"));
    assert_eq!(stage_names(call), ["admit", "authorize"]);
    assert!(children(call).iter().all(|s| s.name != "backend"));

    // Call 3: a child of the caller's span, in the caller's trace; the
    // backend is in that trace too, but gets none of the caller's
    // tracestate.
    let call = calls[2];
    assert_eq!(hex(&call.trace_id), CALLER_TRACE);
    assert_eq!(hex(&call.parent_span_id), CALLER_SPAN);
    assert_eq!(stage_names(call), expected);
    let backend_span = children(call)
        .into_iter()
        .find(|s| s.name == "backend")
        .expect("a backend span");
    let sent = header(&hits[1], "traceparent").expect("a traceparent at the backend");
    assert_eq!(
        traceparent(sent),
        (CALLER_TRACE.to_string(), hex(&backend_span.span_id))
    );
    assert!(header(&hits[1], "tracestate").is_none(), "{:?}", hits[1]);

    // Only the gateway's call spans are exported: no other crate's spans.
    let known: HashSet<&str> = ["tools/call", "backend"]
        .into_iter()
        .chain(expected.iter().map(String::as_str))
        .collect();
    for s in &spans {
        assert!(
            known.contains(s.name.as_str()),
            "unexpected span {}",
            s.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_endpoint_no_trace_context_reaches_the_backend() {
    let backend = Backend::start().await;
    let (data, manifests, key) = setup(&backend);
    let mut served = ServedBinary::start(BIN, data.path(), manifests.path(), &[]);
    // Even a caller that sends its own trace context.
    let c = client(
        &served.url,
        &key,
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", CALLER_STATE),
        ],
    )
    .await;
    let r = c.call_tool(read_call()).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{:?}", r.content);
    c.cancel().await.unwrap();
    let logs = served.kill();
    assert!(!logs.contains("exporting traces"), "{logs}");
    let hits = backend.hits();
    assert_eq!(hits.len(), 1);
    for name in ["traceparent", "tracestate"] {
        assert!(header(&hits[0], name).is_none(), "{name}: {:?}", hits[0]);
    }
}
