//! Record: writes each decision to the audit trail, and the outcome of
//! each allowed call after it ran.
//!
//! Contract: [`allow`] returns a [`Recorded`] only once the `allow` record
//! is committed and synced (group commit, bounded by the audit timeout:
//! a stuck store refuses the call, it is never waited on forever); every
//! later stage takes and returns a `Recorded`, so a call
//! whose decision could not be written cannot reach a backend (fail
//! closed). A `Recorded` is closed only by [`outcome`], which hands back the
//! [`Closed`] proof the pipeline must return: a path that forgets the
//! outcome does not compile (and a `Recorded` dropped anyway is logged).
//! Records hold an HMAC of the arguments, never the arguments: the digest
//! lets an investigator who holds the arguments prove they match, and shows
//! nothing to anyone else.

use serde_json::{Value, json};

use super::approve::Approved;
use super::authenticate::Authenticated;
use super::authorize::Target;
use super::denial::{Denial, capped};
use crate::Gateway;
use crate::audit::{AuditError, Entry};
use crate::catalog::ToolEntry;
use crate::store::{CallOutcome, Decision, DecisionRecord, OpenCall, OutcomeUpdate};
use crate::util::stamp;

pub use crate::args::digest as args_digest;

/// Proof that an `allow` decision is in the store, carrying the proof of
/// the stage the call has reached (`Recorded<Approved>`, then
/// `Recorded<Confirmed>`, `Recorded<Credentialed>`). Only [`allow`] builds
/// one; only [`outcome`] closes it.
#[must_use = "an allowed call must be closed with record::outcome"]
#[derive(Debug)]
pub struct Recorded<T> {
    record: RecordId,
    stage: T,
}

/// The id of an `allow` record still waiting for its outcome. Dropping one
/// without [`outcome`] is a bug; it is logged, and the record is left for
/// start-up recovery to mark `interrupted`.
#[must_use = "an allowed call must be closed with record::outcome"]
#[derive(Debug)]
pub struct RecordId {
    call: OpenCall,
    open: bool,
}

impl RecordId {
    /// The record's id.
    pub fn id(&self) -> &str {
        &self.call.id
    }
}

impl Drop for RecordId {
    fn drop(&mut self) {
        if self.open {
            tracing::error!(record = %self.call.id, "an allowed call was dropped without an outcome");
        }
    }
}

/// Proof that a call's last record was written (its outcome, or its
/// denial). Only this module builds one.
#[derive(Debug)]
pub struct Closed(());

impl<T> Recorded<T> {
    /// The stage the call has reached.
    pub fn stage(&self) -> &T {
        &self.stage
    }
    /// The record id.
    pub fn id(&self) -> &str {
        &self.record.call.id
    }
    /// Moves to the next stage's proof, keeping the record open. Only the
    /// pipeline's stages call it.
    pub(super) fn advance<U>(self, next: impl FnOnce(T) -> U) -> Recorded<U> {
        Recorded {
            record: self.record,
            stage: next(self.stage),
        }
    }
    /// Splits off the open record, for a stage that ends the call.
    pub(super) fn split(self) -> (RecordId, T) {
        (self.record, self.stage)
    }
}

/// How a dispatched (or recorded, then refused) call ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// How it ended.
    pub outcome: CallOutcome,
    /// Stable code for anything but success.
    pub code: Option<&'static str>,
    /// Backend status, if one answered.
    pub backend_status: Option<u16>,
}

/// The accountable people as of this decision: the agent's owners and who
/// approved its deployment, and the connector's owners. Copied into every
/// record because manifests change; the record must not.
fn owners(who: &Authenticated, tool: Option<&ToolEntry>) -> Value {
    let a = who.agent();
    let o = &a.owners;
    let mut v = json!({
        "agent": {
            "business": { "name": o.business.name, "contact": o.business.contact },
            "system": { "name": o.system.name, "contact": o.system.contact },
            "security": { "name": o.security.name, "contact": o.security.contact },
            "approved_by": a.deployment.approved_by,
            "approved_at": a.deployment.approved_at,
        },
    });
    if let Some(t) = tool {
        v["connector"] = json!({
            "system": { "name": t.owners.system.name, "contact": t.owners.system.contact },
            "security": { "name": t.owners.security.name, "contact": t.owners.security.contact },
        });
    }
    v
}

fn base(
    gw: &Gateway,
    who: &Authenticated,
    tool_name: &str,
    tool: Option<&ToolEntry>,
    digest: Option<String>,
) -> DecisionRecord {
    DecisionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        at: stamp(gw.now()),
        agent_id: who.agent().id.clone(),
        credential_id: who.credential_id().to_string(),
        transport: who.transport().as_str().to_string(),
        // Agent-chosen: capped before it is written.
        tool: capped(tool_name),
        connector_id: tool.map(|t| t.connector_id.clone()),
        risk: tool.map(|t| t.risk.as_str().to_string()),
        args_digest: digest,
        decision: String::new(),
        reason_code: String::new(),
        reason: String::new(),
        outcome: None,
        outcome_code: None,
        backend_status: None,
        latency_us: None,
        owners: Some(owners(who, tool)),
        task_id: None,
        policy: None,
        arguments: None,
    }
}

/// Longest string argument kept in the trail's copy; longer ones are
/// replaced by their length (the digest still covers them).
const KEPT_STRING: usize = 256;

/// The arguments as the trail keeps them: sensitive fields replaced, long
/// strings cut to their length, so the copy says what was asked without
/// holding secrets or bulk data.
fn trail_copy(args: &serde_json::Map<String, Value>, sensitive: &[String]) -> Value {
    fn cut(v: Value) -> Value {
        match v {
            Value::String(s) if s.len() > KEPT_STRING => {
                Value::String(format!("<{} bytes>", s.len()))
            }
            Value::Array(a) => Value::Array(a.into_iter().map(cut).collect()),
            Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, cut(v))).collect()),
            other => other,
        }
    }
    cut(crate::approvals::redact(args, sensitive))
}

/// Records an `allow` decision; the call may proceed only with the result.
/// `within`: for an upstream's request of the agent's client, the call it
/// was made during (so the trail shows why it happened).
pub async fn allow(
    gw: &Gateway,
    approved: Approved,
    within: Option<&str>,
) -> Result<Recorded<Approved>, Denial> {
    let scoped = approved.scoped();
    let call = scoped.call();
    let who = call.who();
    let digest = call.digest().to_string();
    let mut r = match call.target() {
        Target::Connector(tool) => {
            let mut r = base(gw, who, &tool.full_name, Some(tool), Some(digest));
            r.arguments = Some(trail_copy(call.arguments(), &tool.sensitive));
            r.reason = format!(
                "`{}` is granted to `{}` and the arguments match its schema",
                tool.full_name, r.agent_id
            );
            r
        }
        Target::Gateway(name) => {
            let mut r = base(gw, who, name, None, Some(digest));
            r.connector_id = Some("tollgate".into());
            r.reason = format!("gateway tool `{name}` for an admitted agent");
            r
        }
    };
    r.decision = Decision::Allow.as_str().into();
    r.reason_code = "allowed".into();
    if let Some(t) = scoped.task() {
        r.reason
            .push_str(&format!("; within task `{}` (\"{}\")", t.id, t.purpose));
        r.task_id = Some(t.id.clone());
    } else if let Some(t) = scoped.named_task() {
        r.task_id = Some(t.to_string());
    }
    if let Some(w) = within {
        r.reason
            .push_str(&format!("; asked by the upstream during {w}"));
    }
    let decision = approved.decision();
    r.reason.push_str(&format!("; {}", decision.summary));
    if let Some(a) = approved.approval() {
        r.reason.push_str(&format!(
            "; approved by {} (request {})",
            a.approved_by.join(", "),
            a.request.id
        ));
    }
    r.policy = Some(approved.record());
    let call = OpenCall {
        id: r.id.clone(),
        agent_id: r.agent_id.clone(),
        task_id: r.task_id.clone(),
        tool: r.tool.clone(),
    };
    match gw.audit().append_durable(Entry::call(&r)).await {
        Ok(()) => Ok(Recorded {
            record: RecordId { call, open: true },
            stage: approved,
        }),
        Err(e) => {
            tracing::error!(error = %e, tool = %r.tool, agent = %r.agent_id, "cannot record decision; refusing the call");
            if let AuditError::Timeout(_) = e {
                // The record may still land after the call was refused: its
                // outcome, queued behind it, says the call never ran.
                gw.audit().append(Entry::outcome(
                    &call,
                    &stamp(gw.now()),
                    &OutcomeUpdate {
                        outcome: CallOutcome::Refused,
                        outcome_code: Some("audit_unavailable"),
                        backend_status: None,
                        latency_us: 0,
                    },
                ));
            }
            Err(Denial::AuditUnavailable)
        }
    }
}

/// Where a denied call stood: its task, how long it took, and the call it
/// was made during (an upstream's request of the agent's client).
#[derive(Debug, Clone, Copy)]
pub struct Where<'a> {
    /// The task named or bound, if any.
    pub task_id: Option<&'a str>,
    /// Time since the call arrived.
    pub latency_us: i64,
    /// The call this one was made during.
    pub within: Option<&'a str>,
}

/// Records a denial. The call is refused whatever happens here; a lost
/// denial record is logged, not hidden. Waits for the record (bounded),
/// so a denial is in the trail when the agent hears of it, except when
/// the trail itself is what failed.
pub async fn deny(
    gw: &Gateway,
    who: &Authenticated,
    tool_name: &str,
    digest: Option<String>,
    denial: &Denial,
    at: Where<'_>,
) -> Closed {
    let Where {
        task_id,
        latency_us,
        within,
    } = at;
    let tool = gw.catalog().tools.get(tool_name).cloned();
    let mut r = base(gw, who, tool_name, tool.as_deref(), digest);
    r.decision = Decision::Deny.as_str().into();
    r.reason_code = denial.code().into();
    r.reason = denial.record_reason();
    if let Some(w) = within {
        r.reason
            .push_str(&format!("; asked by the upstream during {w}"));
    }
    r.latency_us = Some(latency_us);
    r.task_id = task_id.map(capped);
    r.policy = denial.policy_record();
    let entry = Entry::call(&r);
    if matches!(denial, Denial::AuditUnavailable) {
        gw.audit().append_wait(entry).await;
    } else if let Err(e) = gw.audit().append_durable(entry).await {
        tracing::error!(error = %e, code = denial.code(), "cannot record a denial");
    }
    Closed(())
}

/// Queues the outcome of a call, linked to its `allow` record, closing
/// it. Not waited for: the call already happened; a lost outcome shows as
/// `interrupted` after the next start.
pub async fn outcome(gw: &Gateway, mut record: RecordId, o: Outcome, latency_us: i64) -> Closed {
    record.open = false;
    let update = OutcomeUpdate {
        outcome: o.outcome,
        outcome_code: o.code,
        backend_status: o.backend_status,
        latency_us,
    };
    gw.audit()
        .append_wait(Entry::outcome(&record.call, &stamp(gw.now()), &update))
        .await;
    Closed(())
}
