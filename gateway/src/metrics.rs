//! The gateway's Prometheus metrics: one registry, owned by the
//! [`crate::Gateway`], that the pipeline, the limits and the audit writer
//! report into, and its text rendering for a scrape. No transport here:
//! `server/` serves [`Metrics::render`] at `/metrics`.
//!
//! What is measured, and the labels (every label value is a fixed code or
//! a declared id, never anything a caller wrote, so an agent cannot grow
//! the label space and nothing secret can appear):
//!
//! - `tollgate_calls_total{decision, outcome, reason}`: every `tools/call`
//!   once, when it ends (`decision` allow/deny, `outcome` ok, tool_error,
//!   failed, cancelled, refused; `reason` the stable denial or failure
//!   code, `none` when there is none);
//! - `tollgate_call_duration_seconds`: whole calls, as the pipeline saw
//!   them (approval waits included);
//! - `tollgate_stage_duration_seconds{stage}`: each pipeline stage;
//! - `tollgate_backend_duration_seconds{connector}`: the connector call;
//! - `tollgate_limit_refusals_total{limit}`: refusals by the kind of limit;
//! - `tollgate_audit_write_duration_seconds`: audit record writes;
//! - `tollgate_pending_approvals`, `tollgate_active_tasks`: read from the
//!   store at scrape time, within [`SCRAPE_STORE_TIMEOUT`]; a read that
//!   fails or takes longer leaves the last values and sets
//!   `tollgate_store_scrape_ok` to 0, so a stuck store cannot stall a
//!   scrape (nor, through it, the gateway).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{ApprovalFilter, ApprovalStatus, Store, TaskFilter};

/// How long a scrape may wait for the store's counts before answering with
/// the last known ones.
pub const SCRAPE_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Default backend latency above which a call is logged as slow.
pub const DEFAULT_SLOW_CALL: Duration = Duration::from_secs(2);

type Labels<const N: usize> = [(&'static str, &'static str); N];
type Hist = fn() -> Histogram;

/// 100 µs to ~105 s in 21 doubling steps: the in-memory stages sit at the
/// bottom, backend calls and approval waits at the top.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// The registry and every metric in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<Labels<3>, Counter>,
    call_seconds: Histogram,
    stage_seconds: Family<Labels<1>, Histogram, Hist>,
    backend_seconds: Family<Vec<(&'static str, String)>, Histogram, Hist>,
    limit_refusals: Family<Labels<1>, Counter>,
    audit_write_seconds: Histogram,
    pending_approvals: Gauge,
    active_tasks: Gauge,
    store_ok: Gauge,
    upstream_up: Family<Vec<(&'static str, String)>, Gauge>,
    upstream_restarts: Family<Vec<(&'static str, String)>, Gauge>,
    withdrawn_tools: Gauge,
    /// Backend latency above which a call is logged as slow, in ms.
    slow_call_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (at zero).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let calls = Family::<Labels<3>, Counter>::default();
        registry.register(
            "calls",
            "Tool calls by decision, outcome and reason code",
            calls.clone(),
        );
        let call_seconds = latency();
        registry.register(
            "call_duration_seconds",
            "Whole tool calls through the pipeline",
            call_seconds.clone(),
        );
        let stage_seconds = Family::<Labels<1>, Histogram, Hist>::new_with_constructor(latency);
        registry.register(
            "stage_duration_seconds",
            "Time spent in each pipeline stage",
            stage_seconds.clone(),
        );
        let backend_seconds =
            Family::<Vec<(&'static str, String)>, Histogram, Hist>::new_with_constructor(latency);
        registry.register(
            "backend_duration_seconds",
            "Connector calls to backends, by connector",
            backend_seconds.clone(),
        );
        let limit_refusals = Family::<Labels<1>, Counter>::default();
        registry.register(
            "limit_refusals",
            "Calls refused by a limit, by kind of limit",
            limit_refusals.clone(),
        );
        let audit_write_seconds = latency();
        registry.register(
            "audit_write_duration_seconds",
            "Audit record writes",
            audit_write_seconds.clone(),
        );
        let pending_approvals = Gauge::default();
        registry.register(
            "pending_approvals",
            "Approval requests waiting for a decision",
            pending_approvals.clone(),
        );
        let active_tasks = Gauge::default();
        registry.register("active_tasks", "Tasks active now", active_tasks.clone());
        let store_ok = Gauge::default();
        registry.register(
            "store_scrape_ok",
            "1 if the last scrape read the store's counts in time, else 0",
            store_ok.clone(),
        );
        let upstream_up = Family::<Vec<(&'static str, String)>, Gauge>::default();
        registry.register(
            "upstream_up",
            "1 if the connector's upstream MCP server is connected, else 0",
            upstream_up.clone(),
        );
        let upstream_restarts = Family::<Vec<(&'static str, String)>, Gauge>::default();
        registry.register(
            "upstream_restarts",
            "Times the connector's upstream MCP server was started again after it died",
            upstream_restarts.clone(),
        );
        let withdrawn_tools = Gauge::default();
        registry.register(
            "withdrawn_tools",
            "Upstream MCP tools declared but not served (upstream down, tool gone, pin broken)",
            withdrawn_tools.clone(),
        );
        Self {
            registry,
            calls,
            call_seconds,
            stage_seconds,
            backend_seconds,
            limit_refusals,
            audit_write_seconds,
            pending_approvals,
            active_tasks,
            store_ok,
            upstream_up,
            upstream_restarts,
            withdrawn_tools,
            slow_call_ms: AtomicU64::new(millis(DEFAULT_SLOW_CALL)),
        }
    }

    /// Counts one finished call and its duration.
    pub fn observe_call(
        &self,
        decision: &'static str,
        outcome: &'static str,
        reason: Option<&'static str>,
        took: Duration,
    ) {
        self.calls
            .get_or_create(&[
                ("decision", decision),
                ("outcome", outcome),
                ("reason", reason.unwrap_or("none")),
            ])
            .inc();
        self.call_seconds.observe(took.as_secs_f64());
    }

    /// Times one pipeline stage (`stage` is a name from
    /// [`crate::pipeline::STAGES`]).
    pub fn observe_stage(&self, stage: &'static str, took: Duration) {
        self.stage_seconds
            .get_or_create(&[("stage", stage)])
            .observe(took.as_secs_f64());
    }

    /// Times one connector call (`connector`: a declared connector id).
    pub fn observe_backend(&self, connector: &str, took: Duration) {
        self.backend_seconds
            .get_or_create(&vec![("connector", connector.to_string())])
            .observe(took.as_secs_f64());
    }

    /// Counts a refusal by a limit of `kind` (`agent_rate`,
    /// `agent_tool_rate`, `connector_rate`, `task_in_flight`,
    /// `task_budget`, ...).
    pub fn limit_refused(&self, kind: &'static str) {
        self.limit_refusals.get_or_create(&[("limit", kind)]).inc();
    }

    /// Times one audit record write (called by the audit writer).
    pub fn observe_audit_write(&self, took: Duration) {
        self.audit_write_seconds.observe(took.as_secs_f64());
    }

    /// The audit write histogram, for the audit writer to report into.
    pub fn audit_write_histogram(&self) -> Histogram {
        self.audit_write_seconds.clone()
    }

    /// Backend latency above which a call is logged as slow.
    pub fn slow_call(&self) -> Duration {
        Duration::from_millis(self.slow_call_ms.load(Ordering::Relaxed))
    }

    /// Sets the slow-call threshold.
    pub fn set_slow_call(&self, threshold: Duration) {
        self.slow_call_ms
            .store(millis(threshold), Ordering::Relaxed);
    }

    /// Sets the upstream MCP servers' gauges: each connector's health
    /// (`up`, restarts) and how many declared tools are withdrawn.
    pub fn set_upstreams<'a>(
        &self,
        health: impl IntoIterator<Item = (&'a str, &'a tollgate_connectors::mcp::Health)>,
        withdrawn: usize,
    ) {
        for (connector, h) in health {
            let labels = vec![("connector", connector.to_string())];
            self.upstream_up
                .get_or_create(&labels)
                .set(i64::from(h.state == "up"));
            self.upstream_restarts
                .get_or_create(&labels)
                .set(i64::try_from(h.restarts).unwrap_or(i64::MAX));
        }
        self.withdrawn_tools
            .set(i64::try_from(withdrawn).unwrap_or(i64::MAX));
    }

    /// Reads the gauges that live in the store (pending approvals, active
    /// tasks), bounded by [`SCRAPE_STORE_TIMEOUT`], then renders every
    /// metric in the OpenMetrics text format.
    pub async fn render(&self, store: &dyn Store) -> String {
        let counts = tokio::time::timeout(SCRAPE_STORE_TIMEOUT, store_counts(store)).await;
        match counts {
            Ok(Ok((pending, active))) => {
                self.pending_approvals.set(pending);
                self.active_tasks.set(active);
                self.store_ok.set(1);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: cannot read the store's counts; serving the last ones");
                self.store_ok.set(0);
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = millis(SCRAPE_STORE_TIMEOUT),
                    "metrics: the store's counts took too long; serving the last ones"
                );
                self.store_ok.set(0);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail; if the encoder ever did, the
        // scrape gets what was written so far rather than nothing.
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        out
    }
}

async fn store_counts(store: &dyn Store) -> Result<(i64, i64), crate::store::StoreError> {
    let pending = store
        .approvals(&ApprovalFilter {
            statuses: vec![ApprovalStatus::Pending],
            ..ApprovalFilter::default()
        })
        .await?
        .len();
    let active = store
        .tasks(&TaskFilter {
            active_only: true,
            ..TaskFilter::default()
        })
        .await?
        .len();
    Ok((
        i64::try_from(pending).unwrap_or(i64::MAX),
        i64::try_from(active).unwrap_or(i64::MAX),
    ))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_render_with_their_labels() {
        let m = Metrics::new();
        m.observe_call(
            "deny",
            "refused",
            Some("tool_not_granted"),
            Duration::from_millis(3),
        );
        m.observe_stage("authorize", Duration::from_micros(40));
        m.observe_backend("inventory", Duration::from_millis(12));
        m.limit_refused("agent_rate");
        m.observe_audit_write(Duration::from_millis(1));
        let mut out = String::new();
        encode(&mut out, &m.registry).expect("encoding into a String");
        assert!(out.contains(
            r#"tollgate_calls_total{decision="deny",outcome="refused",reason="tool_not_granted"} 1"#
        ));
        assert!(out.contains(r#"tollgate_stage_duration_seconds_count{stage="authorize"} 1"#));
        assert!(
            out.contains(r#"tollgate_backend_duration_seconds_count{connector="inventory"} 1"#)
        );
        assert!(out.contains(r#"tollgate_limit_refusals_total{limit="agent_rate"} 1"#));
        assert!(out.contains("tollgate_audit_write_duration_seconds_count 1"));
    }
}
