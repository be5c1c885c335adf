//! OpenTelemetry traces, off unless `serve --otlp-endpoint URL` (or
//! `TOLLGATE_OTLP_ENDPOINT`) turns them on.
//!
//! When on, every `tools/call` is one span, `tools/call` (server kind),
//! with the agent, the tool, and once the call is over its task, decision,
//! outcome and reason code; under it, one span per pipeline stage that ran
//! (timed where `pipeline::run` already times stages for the metrics, so
//! they are in pipeline order) and a `backend` span (client kind) around
//! the connector call. The backend request carries the W3C `traceparent`
//! of that span, so the backend's own spans join the trace. A call whose
//! HTTP request carried a `traceparent` is a child of that remote span;
//! the caller's `tracestate` and sampling flag are not taken (the gateway
//! samples every call, unless `OTEL_TRACES_SAMPLER` says otherwise, and
//! nothing the agent chose besides the trace id reaches a backend).
//!
//! Spans hold ids, names, fixed codes and numbers: never arguments,
//! results, keys, tokens or backend credentials.
//!
//! Export: OTLP over HTTP with protobuf, to `URL/v1/traces`, in batches
//! from the SDK's own thread with reqwest's blocking client (the reqwest
//! the gateway already uses; no gRPC stack). A collector that is down
//! costs dropped spans, never a slower call: the queue is bounded and
//! drops when full. The usual `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT` and `OTEL_RESOURCE_ATTRIBUTES` variables
//! apply; `OTEL_SERVICE_NAME` defaults to `tollgate`.
//!
//! Off, nothing is built: every function here first asks [`enabled`] (one
//! atomic load) and returns a disabled span or empty headers, so the call
//! path does no more than before. The stage modules only see plain
//! `tracing` spans and [`TraceHeaders`]; the OpenTelemetry types stay here.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, TraceContextExt, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tollgate_connectors::TraceHeaders;
use tracing::Span;
use tracing::field::Empty;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, filter};

use crate::calllog::Summary;

/// The `tracing` target of the spans exported as traces. The log layer
/// leaves them out (they would prefix every log line), and the trace layer
/// takes nothing else (no events, no other crate's spans).
pub const TARGET: &str = "tollgate::trace";

/// Where OTLP/HTTP receivers take traces, under the endpoint's base URL.
const TRACES_PATH: &str = "/v1/traces";

/// How long the exit waits for the last spans to be sent.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracer, once traces are on (at most once per process).
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether traces are exported.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The running export: keep it until exit, then [`Traces::shutdown`].
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    endpoint: String,
}

impl Traces {
    /// Starts exporting to the OTLP/HTTP receiver at `endpoint` (a base URL
    /// such as `http://collector:4318`; `/v1/traces` is added unless the
    /// path already ends with it). Fails on a URL that is not http(s), or
    /// when traces are already on in this process.
    pub fn start(endpoint: &str) -> anyhow::Result<Self> {
        let url = traces_url(endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.as_str())
            .build()
            .context("cannot set up the OTLP trace exporter")?;
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "tollgate".to_string());
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let mut builder = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter);
        // The SDK's default follows the caller's sampling flag, which would
        // let an agent keep its calls out of the traces; every call is
        // sampled unless the operator chose a sampler.
        if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() {
            builder = builder.with_sampler(Sampler::AlwaysOn);
        }
        let provider = builder.build();
        let tracer = provider.tracer("tollgate");
        TRACER
            .set(tracer.clone())
            .map_err(|_| anyhow::anyhow!("traces are already being exported"))?;
        Ok(Self {
            provider,
            tracer,
            endpoint: redacted(&url),
        })
    }

    /// Where spans go (without any user or password in the URL).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `tracing` layer that turns the gateway's call spans (target
    /// [`TARGET`], nothing else) into OpenTelemetry spans.
    pub fn layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync + 'static>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let only_call_spans = filter::filter_fn(|m| m.is_span() && m.target() == TARGET)
            // The call spans are INFO: traces stay on whatever RUST_LOG
            // quiets.
            .with_max_level_hint(LevelFilter::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Contexts are read from the spans themselves; activating one
            // on every poll would cost for nothing.
            .with_context_activation(false)
            .with_filter(only_call_spans)
            .boxed()
    }

    /// Sends what is still queued (waiting at most 5 s) and stops.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the last traces may not have been sent"),
            Err(e) => tracing::warn!(error = %e, "the trace exporter did not shut down"),
        }
    }
}

/// The receiver's trace URL for `endpoint`.
fn traces_url(endpoint: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(endpoint.trim())
        .with_context(|| format!("the OTLP endpoint `{endpoint}` is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!(
            "the OTLP endpoint must be an http:// or https:// URL (OTLP over HTTP, e.g. http://collector:4318)"
        );
    }
    if !url.path().ends_with(TRACES_PATH) {
        let path = format!("{}{TRACES_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// `url` without user information, query or fragment, for the logs.
fn redacted(url: &reqwest::Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// A caller's trace context from its HTTP request: the `traceparent` only
/// (its `tracestate` is not carried on). Opaque outside this module.
#[derive(Clone)]
pub struct RemoteParent(SpanContext);

impl std::fmt::Debug for RemoteParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteParent({})", self.0.trace_id())
    }
}

/// The remote parent a request's headers name, when traces are on and
/// there is exactly one valid `traceparent`.
pub fn remote_parent(headers: &http::HeaderMap) -> Option<RemoteParent> {
    if !enabled() {
        return None;
    }
    parse_remote(headers)
}

fn parse_remote(headers: &http::HeaderMap) -> Option<RemoteParent> {
    let mut values = headers.get_all("traceparent").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let carrier = OnlyTraceparent(value.to_str().ok()?);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        RemoteParent(SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags(),
            true,
            TraceState::default(),
        ))
    })
}

struct OnlyTraceparent<'a>(&'a str);

impl Extractor for OnlyTraceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The span of one `tools/call` by `agent` of `tool` (as the agent named
/// it: capped, without control characters); disabled when traces are off.
pub fn call_span(agent: &str, tool: &str, parent: Option<&RemoteParent>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let tool = crate::calllog::printable(tool);
    let span = tracing::info_span!(
        target: TARGET,
        "tools/call",
        otel.kind = "server",
        mcp.method.name = "tools/call",
        tollgate.agent = %agent,
        tollgate.tool = %tool,
        tollgate.task = Empty,
        tollgate.decision = Empty,
        tollgate.outcome = Empty,
        tollgate.reason = Empty,
        tollgate.connector = Empty,
        otel.status_code = Empty,
    );
    if let Some(RemoteParent(remote)) = parent {
        // Before anything asks for the span's context: the parent is fixed
        // once the span is built.
        let _ = span.set_parent(Context::new().with_remote_span_context(remote.clone()));
    }
    span
}

/// Writes what the call came to onto its span.
pub fn call_finished(span: &Span, s: &Summary) {
    if span.is_disabled() {
        return;
    }
    span.record("tollgate.decision", s.decision);
    span.record("tollgate.outcome", s.outcome);
    if let Some(code) = s.code {
        span.record("tollgate.reason", code);
    }
    if let Some(task) = &s.task {
        span.record("tollgate.task", crate::calllog::printable(task).as_str());
    }
    if let Some(connector) = &s.connector {
        span.record("tollgate.connector", connector.as_str());
    }
    if s.outcome == "failed" {
        span.record("otel.status_code", "ERROR");
    }
}

/// A stage of the current call that started at `since` and has just
/// ended, as a child of the call's span. Built after the fact, from the
/// timing the metrics already take, so the pipeline needs no span
/// handling of its own. Nothing when traces are off or outside a call.
pub fn stage(name: &'static str, since: Instant) {
    let Some(tracer) = TRACER.get() else {
        return;
    };
    let parent = Span::current().context();
    if !parent.span().span_context().is_valid() {
        return;
    }
    let end = SystemTime::now();
    let start = end.checked_sub(since.elapsed()).unwrap_or(end);
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes([KeyValue::new("tollgate.stage", name)])
        .start_with_context(tracer, &parent);
    span.end_with_timestamp(end);
}

/// The span of one backend call through `connector`; disabled when traces
/// are off.
pub fn backend_span(connector: &str, tool: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "backend",
        otel.kind = "client",
        tollgate.connector = %connector,
        tollgate.backend_tool = %tool,
        http.response.status_code = Empty,
        "error.type" = Empty,
        otel.status_code = Empty,
    )
}

/// What the backend call came to: the backend's status if it answered,
/// else the failure's code.
pub fn backend_finished(span: &Span, status: Option<u16>, failure: Option<&'static str>) {
    if span.is_disabled() {
        return;
    }
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status));
    }
    if let Some(code) = failure {
        span.record("error.type", code);
    }
    if failure.is_some() || status.is_some_and(|s| s >= 500) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The W3C trace context of `span`, for the backend request it covers;
/// empty when traces are off.
pub fn trace_headers(span: &Span) -> TraceHeaders {
    let mut headers = TraceHeaders::default();
    if span.is_disabled() || !enabled() {
        return headers;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderSink(&mut headers));
    headers
}

struct HeaderSink<'a>(&'a mut TraceHeaders);

impl Injector for HeaderSink<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes an empty `tracestate` when there is none.
        if !value.is_empty() {
            self.0.set(key, &value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_a_base_url_or_the_traces_url() {
        let u = |s| traces_url(s).map(|u| u.to_string());
        assert_eq!(
            u("http://collector:4318").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            u("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            u("https://otel.example.com/prefix/v1/traces").unwrap(),
            "https://otel.example.com/prefix/v1/traces"
        );
        assert!(u("collector:4317").is_err());
        assert!(u("grpc://collector:4317").is_err());
        assert!(u("not a url").is_err());
    }

    #[test]
    fn the_logged_endpoint_has_no_password() {
        let url = traces_url("http://user:hunter2@collector:4318/?k=secret").unwrap();
        let shown = redacted(&url);
        assert_eq!(shown, "http://collector:4318/v1/traces");
    }

    fn traceparent(values: &[&'static str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append("traceparent", http::HeaderValue::from_static(v));
        }
        h.insert("tracestate", http::HeaderValue::from_static("agent=chosen"));
        h
    }

    #[test]
    fn a_remote_parent_keeps_the_trace_and_span_ids_and_drops_the_tracestate() {
        const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let p = parse_remote(&traceparent(&[TP])).expect("a valid traceparent");
        assert_eq!(
            p.0.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(p.0.span_id().to_string(), "b7ad6b7169203331");
        assert!(p.0.is_remote());
        assert_eq!(p.0.trace_state().header(), "");
        // Malformed, all-zero or repeated: no parent.
        assert!(parse_remote(&traceparent(&["00-xyz-b7ad6b7169203331-01"])).is_none());
        assert!(
            parse_remote(&traceparent(&[
                "00-00000000000000000000000000000000-b7ad6b7169203331-01"
            ]))
            .is_none()
        );
        assert!(parse_remote(&traceparent(&[TP, TP])).is_none());
        assert!(parse_remote(&http::HeaderMap::new()).is_none());
    }

    #[test]
    fn off_means_no_span_and_no_headers() {
        // No test in this binary turns traces on.
        assert!(!enabled());
        let span = call_span("a", "t", None);
        assert!(span.is_disabled());
        assert!(trace_headers(&backend_span("c", "t")).is_empty());
        let h = traceparent(&["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]);
        assert!(remote_parent(&h).is_none());
    }
}
