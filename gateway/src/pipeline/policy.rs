//! Policy: is this call, with these arguments, in this task, acceptable
//! now? (The decision itself is [`crate::policy`]'s; this stage feeds it
//! the call and turns its answer into a proof or a denial.)
//!
//! Contract: returns [`Decided`] only for a decision of allow or approval
//! required; a deny becomes [`Denial::Policy`] with the decision (matched
//! policies, reasons) for the record. The task's argument constraints are
//! part of the decision. Pure and in memory. The gateway's own tools
//! (start/end task) are governed by the task rules, not by policy.
//! [`explain`] runs the same static checks and the same decision without a
//! call, for `tollgate policy explain` and `tollgate policy test`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::authorize::{self, Checked, Target};
use super::denial::Denial;
use super::scope::Scoped;
use crate::catalog::{AgentEntry, Catalog, ToolEntry};
use crate::policy::{self as engine, CallFacts, Decision, TaskFacts, Verdict};
use crate::store::TaskRecord;
use crate::tasks::constraint;

/// A call policy let through, with the decision (allow, or approval
/// required and by whom). Only [`decide`] builds one.
#[derive(Debug)]
pub struct Decided {
    scoped: Scoped,
    decision: Decision,
}

impl Decided {
    /// The call.
    pub fn scoped(&self) -> &Scoped {
        &self.scoped
    }
    /// The decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
    pub(super) fn into_parts(self) -> (Scoped, Decision) {
        (self.scoped, self.decision)
    }
}

/// Decides the call with the catalog's policy set.
pub fn decide(catalog: &Catalog, scoped: Scoped, now: OffsetDateTime) -> Result<Decided, Denial> {
    let decision = match scoped.call().target() {
        Target::Connector(_) => decide_scoped(catalog, &scoped, now)?,
        Target::Gateway(name) => gateway_tool(name),
    };
    Ok(Decided { scoped, decision })
}

/// The decision for a connector call as scoped, a denial as an error.
fn decide_scoped(
    catalog: &Catalog,
    scoped: &Scoped,
    now: OffsetDateTime,
) -> Result<Decision, Denial> {
    let call = scoped.call();
    let Target::Connector(tool) = call.target() else {
        return Ok(gateway_tool(call.target().name()));
    };
    let decision = decide_tool(
        catalog,
        &call.who().agent().id,
        tool,
        call.arguments(),
        scoped.task(),
        now,
    );
    if decision.verdict == Verdict::Deny {
        return Err(Denial::Policy {
            tool: tool.full_name.clone(),
            decision: Box::new(decision),
        });
    }
    Ok(decision)
}

/// Whether policy on `catalog` (the one in force, after a wait) still lets
/// the call through: anything but a denial.
pub fn still_allows(catalog: &Catalog, scoped: &Scoped, now: OffsetDateTime) -> Result<(), Denial> {
    decide_scoped(catalog, scoped, now).map(|_| ())
}

fn gateway_tool(name: &str) -> Decision {
    Decision {
        verdict: Verdict::Allow,
        code: "gateway_tool",
        summary: format!("`{name}` is governed by the task rules, not by policy"),
        policies: Vec::new(),
        approval: None,
        violated_constraints: Vec::new(),
    }
}

/// The decision for a connector tool: the task's constraints, then policy.
fn decide_tool(
    catalog: &Catalog,
    agent: &str,
    tool: &ToolEntry,
    args: &Map<String, Value>,
    task: Option<&TaskRecord>,
    now: OffsetDateTime,
) -> Decision {
    let violated = task
        .map(|t| constraint::violated(&t.constraints, &tool.tool.input_schema, args))
        .unwrap_or_default();
    let facts = CallFacts {
        agent,
        tool: &tool.full_name,
        args,
        task: task.map(|t| TaskFacts {
            id: &t.id,
            purpose: &t.purpose,
            tools: &t.tools,
            constraints: &t.constraints,
            started_by: &t.started_by,
        }),
        violated: &violated,
        now,
    };
    engine::decide(catalog.policies.as_deref(), &facts)
}

/// What `policy explain` prints: the outcome, the stage that settled it and
/// why; the policy decision when the call got that far.
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    /// `allow`, `deny` or `approval_required`.
    pub verdict: &'static str,
    /// Stable reason code (the one a live call records).
    pub code: &'static str,
    /// The stage that settled it.
    pub stage: &'static str,
    /// Why.
    pub summary: String,
    /// The policy decision, when the call reached policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

impl Explained {
    fn denied(stage: &'static str, d: &Denial) -> Self {
        Self {
            verdict: "deny",
            code: d.code(),
            stage,
            summary: d.record_reason(),
            decision: None,
        }
    }
}

/// Explains what a call would come to, without calling anything: the grant
/// and schema check, the task's scope (for a task given as a record), then
/// the policy decision. Identity, lifecycle, limits and revocation are
/// live state and are not part of it.
pub fn explain(
    catalog: &Catalog,
    agent: &AgentEntry,
    tool_name: &str,
    arguments: Map<String, Value>,
    task: Option<&TaskRecord>,
    now: OffsetDateTime,
) -> Explained {
    let (tool, args): (Arc<ToolEntry>, Map<String, Value>) =
        match authorize::check_tool(catalog, agent, tool_name, arguments) {
            Ok(Checked::Connector(t, a)) => (t, a),
            Ok(Checked::Gateway(name, _)) => {
                let d = gateway_tool(name);
                return Explained {
                    verdict: "allow",
                    code: d.code,
                    stage: "authorize",
                    summary: d.summary.clone(),
                    decision: Some(d),
                };
            }
            Err(e) => return Explained::denied("authorize", &e.0),
        };
    if let Err(d) = super::scope::fits(agent, &tool, task) {
        return Explained::denied("scope", &d);
    }
    let decision = decide_tool(catalog, &agent.id, &tool, &args, task, now);
    Explained {
        verdict: decision.verdict.as_str(),
        code: decision.code,
        stage: if decision.verdict == Verdict::ApprovalRequired {
            "approve"
        } else {
            "policy"
        },
        summary: decision.summary.clone(),
        decision: Some(decision),
    }
}

/// An active task of `agent` listing only `tool`, with `constraints`: what
/// a dry run (`policy explain --in-task`, policy tables) decides within.
pub fn dry_run_task(agent: &str, tool: &str, constraints: Vec<String>) -> TaskRecord {
    TaskRecord {
        id: "dry-run".into(),
        agent_id: agent.to_string(),
        purpose: "dry run".into(),
        tools: vec![tool.to_string()],
        constraints,
        started_by: format!("agent:{agent}"),
        origin: "dry_run".into(),
        created_at: String::new(),
        expires_at: String::new(),
        status: crate::store::TaskStatus::Active,
        ended_at: None,
        ended_by: None,
        end_reason: None,
        started_with: None,
        started_with_expires_at: None,
    }
}
