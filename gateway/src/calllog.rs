//! What one finished `tools/call` tells the operator: one INFO line on
//! target `tollgate::call` (agent, tool, task, decision, reason code,
//! outcome, backend status, latencies), a WARN line when the backend was
//! unreachable, timed out or answered 5xx, or was slower than the
//! slow-call threshold, and the call's metrics. Never arguments, results,
//! keys or tokens: only ids, fixed codes and numbers.

use std::time::Duration;

use crate::Gateway;

/// What one call came to, for the operator's log line and the metrics
/// (never arguments or results): computed where `run` ends.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// `allow` once the allow record is written, else `deny`.
    pub decision: &'static str,
    /// `ok`, `tool_error`, `failed`, `cancelled` or `refused`.
    pub outcome: &'static str,
    /// The denial or failure code, if any.
    pub code: Option<&'static str>,
    /// The task the call ran in, if any.
    pub task: Option<String>,
    /// The connector called, if the call reached dispatch.
    pub connector: Option<String>,
    /// The backend's HTTP status, if it answered.
    pub backend_status: Option<u16>,
    /// How long the connector call took, if one was made.
    pub backend_latency: Option<Duration>,
    /// Why the backend could not be reached (for the operator only: may
    /// name the backend's address, never a credential).
    pub failure: Option<String>,
}

impl Summary {
    /// Refused before its decision was recorded.
    pub(crate) fn denied(code: &'static str, task: Option<&str>) -> Self {
        Self {
            decision: "deny",
            outcome: "refused",
            code: Some(code),
            task: task.map(str::to_string),
            ..Self::default()
        }
    }

    /// Allowed (recorded), then ended as `outcome`.
    pub(crate) fn allowed(
        outcome: &'static str,
        code: Option<&'static str>,
        task: Option<&str>,
    ) -> Self {
        Self {
            decision: "allow",
            outcome,
            code,
            task: task.map(str::to_string),
            ..Self::default()
        }
    }
}

/// Logs and counts one finished call of `agent`; `took` is the whole call.
pub fn finished(gw: &Gateway, agent: &str, tool: &str, s: &Summary, took: Duration) {
    gw.metrics()
        .observe_call(s.decision, s.outcome, s.code, took);
    // The tool name is what the agent sent (it may name no tool at all):
    // capped and without control characters, so it cannot forge lines.
    let tool = printable(tool);
    let task = s.task.as_deref().unwrap_or("-");
    let reason = s.code.unwrap_or("-");
    let status = s.backend_status.map(i64::from).unwrap_or(-1);
    let backend_ms = s.backend_latency.map(ms).unwrap_or(-1);
    tracing::info!(
        target: "tollgate::call",
        agent = %agent,
        tool = %tool,
        task = %task,
        decision = %s.decision,
        reason = %reason,
        outcome = %s.outcome,
        backend_status = status,
        backend_ms,
        latency_ms = ms(took),
        "call"
    );
    let connector = s.connector.as_deref().unwrap_or("-");
    if let Some(failure) = &s.failure {
        tracing::warn!(
            target: "tollgate::call",
            agent = %agent, tool = %tool, connector = %connector, reason = %reason, backend_ms,
            detail = %printable(failure),
            "backend unreachable or timed out"
        );
    } else if s.backend_status.is_some_and(|c| c >= 500) {
        tracing::warn!(
            target: "tollgate::call",
            agent = %agent, tool = %tool, connector = %connector, backend_status = status, backend_ms,
            "backend answered with a server error"
        );
    }
    if let Some(latency) = s.backend_latency
        && latency > gw.metrics().slow_call()
    {
        tracing::warn!(
            target: "tollgate::call",
            agent = %agent, tool = %tool, connector = %connector, backend_ms,
            threshold_ms = ms(gw.metrics().slow_call()),
            "slow backend call"
        );
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `s` capped, with control characters replaced, so it cannot forge log
/// lines or span attributes.
pub(crate) fn printable(s: &str) -> String {
    crate::util::capped(s)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
