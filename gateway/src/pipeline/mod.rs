//! The governance pipeline: every `tools/call` passes these stages, in this
//! order, in [`call_tool`]; `tools/list` is answered by [`list_tools`] from
//! the same stage functions, so a tool is listed exactly when the static
//! stages would let a call to it through. Each stage is a module with a
//! small contract and hands the next a value only it can build, by value,
//! so skipping or reordering a stage does not compile:
//!
//! ```text
//! authenticate -> Authenticated -> admit -> Admitted -> authorize -> Authorized
//!   -> scope -> Scoped -> policy -> Decided -> limits -> Limited
//!   -> approve -> Approved -> record::allow -> Recorded<Approved>
//!   -> confirm -> Recorded<Confirmed> -> credential -> Recorded<Credentialed>
//!   -> dispatch (confirms again) -> record::outcome -> Closed
//! ```
//!
//! Every refusal is a [`Denial`] with a stable code; `denial.rs` is the one
//! place that turns it into what the agent sees. The pipeline speaks the
//! gateway's language ([`CallReply`]); `mcp.rs` maps it to MCP.

pub mod admit;
pub mod approve;
pub mod authenticate;
pub mod authorize;
pub mod builtin;
pub mod confirm;
pub mod credential;
pub mod denial;
pub mod dispatch;
pub mod fence;
pub mod limits;
pub mod policy;
pub mod record;
pub mod scope;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tollgate_connectors::ToolOutput;

pub use authenticate::{Authenticated, Transport};
pub use denial::{AgentView, Denial};

use crate::Gateway;
use crate::calllog::Summary;
use crate::catalog::ToolEntry;
use crate::store::{CallOutcome, TaskRecord};
use authorize::Target;
use dispatch::Dispatched;
use record::{Closed, Outcome, RecordId};

/// The stage modules, in pipeline order. `ARCHITECTURE.md` lists the same
/// stages in the same order; a test keeps the three in step.
pub const STAGES: &[&str] = &[
    "authenticate",
    "admit",
    "authorize",
    "scope",
    "policy",
    "limits",
    "approve",
    "record",
    "confirm",
    "credential",
    "dispatch",
];

/// A `tools/call` as it arrives.
#[derive(Debug, Default)]
pub struct ToolRequest {
    /// Tool name.
    pub name: String,
    /// Arguments, if any.
    pub arguments: Option<Map<String, Value>>,
    /// Task named in the request's `_meta["tollgate/task"]`.
    pub task_hint: Option<String>,
    /// The connection (HTTP session or stdio process) it came on, for tasks
    /// started in band.
    pub connection: Option<String>,
    /// Where to report progress while the call waits (for approval).
    pub progress: Option<Arc<dyn Progress>>,
    /// The caller's trace context (`traceparent`), when traces are on.
    pub trace_parent: Option<crate::telemetry::RemoteParent>,
    /// What is asked for: a tool (`tools/call`), or an upstream's prompt or
    /// resource (`prompts/get`, `resources/read`), which go through the
    /// same stages under their own names (`prompt:...`, `resource:...`),
    /// or an upstream's request of the agent's client made during a call
    /// (`sampling:...`, `elicitation:...`).
    pub kind: crate::catalog::ToolKind,
    /// The agent's client, for what a backend sends during the call (log
    /// messages it asked for, sampling and elicitation requests); `None`
    /// where the transport cannot reach it.
    pub client: Option<Arc<dyn AgentClient>>,
    /// On a retry: the agent's answers to what an upstream asked for in
    /// its `input_required` result (passed on to it as they came).
    pub resume: Option<tollgate_connectors::Resume>,
    /// For an upstream's request of the agent's client: the call it came
    /// during (`call <record id> of <tool>`), for the record.
    pub within: Option<String>,
}

/// The agent's client as a running call's backend may reach it.
/// Transport-neutral (the MCP front end implements it), so the stages
/// never see rmcp. What reaches it is decided by the pipeline: a request
/// only as a governed, recorded entry of its own (see `dispatch`).
#[async_trait::async_trait]
pub trait AgentClient: Send + Sync + std::fmt::Debug {
    /// Whether the client declared it can answer `what`.
    fn can(&self, what: tollgate_connectors::mcp::ClientAsk) -> bool;
    /// Whether the client asked for log messages (set a level).
    fn wants_logs(&self) -> bool;
    /// Whether the client speaks the stateless revision (2026-07-28): it
    /// is never asked mid-call; an upstream's requests reach it inside an
    /// `input_required` result, which it answers by retrying the call.
    fn stateless(&self) -> bool;
    /// Sends the request (its MCP params); the client's result, or why
    /// there is none.
    async fn ask(
        &self,
        what: tollgate_connectors::mcp::ClientAsk,
        params: Value,
    ) -> Result<Value, String>;
    /// Passes on an upstream's log message if the client asked for
    /// messages of this level (MCP level names); otherwise drops it.
    async fn log(&self, level: &str, logger: Option<&str>, data: Value);
}

/// Where a waiting call reports progress: MCP progress notifications, when
/// the client sent a progress token. Transport-neutral, so the stages never
/// see rmcp.
#[async_trait::async_trait]
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// `progress` of `total` (seconds waited, of the deadline), and what is
    /// happening. Failures to deliver are the transport's to log.
    async fn report(&self, progress: f64, total: Option<f64>, message: String);
}

/// What a call came to, in the gateway's terms.
#[derive(Debug)]
pub enum CallReply {
    /// The tool ran and answered (the answer may itself be an error).
    Output(ToolOutput),
    /// The tool ran after a person approved it; `approval` says who, and
    /// how they changed the arguments (the agent must know it did not run
    /// exactly what it asked for).
    Approved {
        /// The tool's answer.
        output: ToolOutput,
        /// Request, approvers, scope, changes.
        approval: Value,
    },
    /// Refused, or failed, with what the agent should see.
    Refused(AgentView),
}

/// Runs one tool call through every stage.
///
/// Authentication happened at the edge for this very request (HTTP layer or
/// stdio handler), which is why this takes an [`Authenticated`]: there is no
/// way to call it for an unauthenticated request.
pub async fn call_tool(
    gw: &Gateway,
    who: &Authenticated,
    request: ToolRequest,
    cancel: &CancellationToken,
) -> CallReply {
    use tracing::Instrument;
    let started = Instant::now();
    let tool = request.name.clone();
    // One span per call when traces are on (a disabled span otherwise).
    let span = crate::telemetry::call_span(&who.agent().id, &tool, request.trace_parent.as_ref());
    let (reply, _closed, summary) = run(gw, who, request, cancel, started)
        .instrument(span.clone())
        .await;
    crate::telemetry::call_finished(&span, &summary);
    crate::calllog::finished(gw, &who.agent().id, &tool, &summary, started.elapsed());
    reply
}

/// Times one stage into the metrics, and into the call's trace.
fn stage(gw: &Gateway, name: &'static str, since: Instant) {
    gw.metrics().observe_stage(name, since.elapsed());
    crate::telemetry::stage(name, since);
}

/// The stages in order. Every path ends in a record: a denial record, or
/// the outcome of an allowed one; the [`Closed`] it returns can only come
/// from there.
async fn run(
    gw: &Gateway,
    who: &Authenticated,
    request: ToolRequest,
    cancel: &CancellationToken,
    started: Instant,
) -> (CallReply, Closed, Summary) {
    let catalog = gw.catalog();
    let task_id = scope::task_id_for(gw, who, &request);
    let ToolRequest {
        name,
        arguments,
        connection,
        progress,
        kind,
        client,
        resume,
        within,
        ..
    } = request;
    let refused = Refusal {
        gw,
        who,
        name: &name,
        task_id: task_id.as_deref(),
        started,
        within: within.as_deref(),
    };

    // Admit before looking at the tool: a suspended, retired or overdue
    // agent is refused whatever it asks for.
    let t = Instant::now();
    let admitted = admit::admit(gw, who).await;
    stage(gw, "admit", t);
    let admitted = match admitted {
        Ok(a) => a,
        Err(d) => return refused.close(d, raw_digest(gw, arguments.as_ref())).await,
    };

    let mut arguments = arguments;
    let mut admitted = Some(admitted);
    // An approval an approver gave with changed arguments: the changed call
    // goes through authorize, scope, policy and limits again, once.
    let mut granted: Option<approve::UsedApproval> = None;
    let mut _in_flight = None;
    let wait = approve::Wait {
        cancel,
        progress: progress.as_deref(),
    };
    let (approved, exhausted) = loop {
        let admitted = match admitted.take() {
            Some(a) => a,
            None => match admit::admit(gw, who).await {
                Ok(a) => a,
                Err(d) => return refused.close(d, raw_digest(gw, arguments.as_ref())).await,
            },
        };
        // Authorize next: pure and in memory, so unknown tools, missing
        // grants and bad arguments are refused before anything is written
        // or sent, and the backend never sees a malformed call.
        let key = gw.secrets();
        let t = Instant::now();
        let authorized = authorize::authorize(
            &catalog,
            key.digest_key(),
            admitted,
            &name,
            kind,
            arguments.take(),
        );
        stage(gw, "authorize", t);
        let authorized = match authorized {
            Ok(a) => a,
            Err((d, digest)) => return refused.close(d, Some(digest)).await,
        };
        let digest = authorized.digest().to_string();

        // Scope: the call must fit its task (or need none). After
        // authorize, so a task can only narrow what the grants allow.
        let t = Instant::now();
        let scoped = scope::scope(gw, authorized, task_id.as_deref()).await;
        stage(gw, "scope", t);
        let scoped = match scoped {
            Ok(s) => s,
            Err(d) => return refused.close(d, Some(digest)).await,
        };

        // Policy: after the static checks, so it decides only calls the
        // grants and the task allow, with validated arguments; in memory.
        let t = Instant::now();
        let decided = policy::decide(&catalog, scoped, gw.now());
        stage(gw, "policy", t);
        let decided = match decided {
            Ok(d) => d,
            Err(d) => return refused.close(d, Some(digest)).await,
        };

        // Limits: after policy, so a call policy refuses spends nothing;
        // rates in memory first, then the task's budgets in the store.
        let t = Instant::now();
        let limited = limits::take(gw, &catalog, decided).await;
        stage(gw, "limits", t);
        let mut limited = match limited {
            Ok(l) => l,
            Err(d) => return refused.close(d, Some(digest)).await,
        };
        // Held until the call is over, however it ends.
        _in_flight = limited.hold_in_flight();
        let exhausted = limited.exhausted().map(str::to_string);

        // Approve: after limits, so a flood of calls cannot fill the
        // approval queue; before the record, so an unapproved call writes
        // only a denial. A blocking wait happens here.
        let t = Instant::now();
        let gate = approve::approve(gw, limited, granted.take(), wait).await;
        stage(gw, "approve", t);
        match gate {
            Ok(a) => break (a, exhausted),
            Err(approve::Gate::Refused(d)) => return refused.close(d, Some(digest)).await,
            Err(approve::Gate::Changed {
                arguments: changed,
                approval,
            }) => {
                // The first pass's slot and reservations are given back
                // before the changed call takes its own.
                _in_flight = None;
                arguments = Some(changed);
                granted = Some(*approval);
            }
        }
    };

    let approval_note = approved.approval().map(approve::UsedApproval::summary);

    let digest = approved.scoped().call().digest().to_string();

    // Record before anything can have an effect: a call whose decision is
    // not durable must not run (fail closed).
    let t = Instant::now();
    let recorded = record::allow(gw, approved, within.as_deref()).await;
    stage(gw, "record", t);
    let recorded = match recorded {
        Ok(r) => r,
        Err(d) => return refused.close(d, Some(digest)).await,
    };

    // Confirm no revocation committed since the state was read, before a
    // credential is minted for the call.
    let t = Instant::now();
    let confirmed = confirm::confirm(gw, recorded).await;
    stage(gw, "confirm", t);
    let confirmed = match confirmed {
        Ok(c) => c,
        Err((record, d)) => return close_refused(gw, record, d, task_id.as_deref(), started).await,
    };

    let tool = match confirmed.stage().scoped().call().target() {
        Target::Connector(tool) => tool.clone(),
        Target::Gateway(builtin) => {
            // The gateway's own tools have no backend and no credential.
            let builtin = *builtin;
            let (record, c) = confirmed.split();
            let call = c.scoped().call();
            let result = builtin::run(
                gw,
                call.who(),
                builtin,
                call.arguments(),
                connection.as_deref(),
                task_id.as_deref(),
            )
            .await;
            return close_builtin(gw, record, result, task_id.as_deref(), started).await;
        }
    };

    // The credential, last among the checks, so nothing is minted for a
    // call that will not run.
    let t = Instant::now();
    let credentialed = credential::issue(gw, confirmed, tool.clone()).await;
    stage(gw, "credential", t);
    let credentialed = match credentialed {
        Ok(c) => c,
        Err((record, d)) => return close_refused(gw, record, d, task_id.as_deref(), started).await,
    };

    // Dispatch: confirms once more, then the only step with an effect
    // outside the gateway.
    let t = Instant::now();
    let (record, dispatched) = dispatch::dispatch(
        gw,
        credentialed,
        cancel,
        dispatch::Back {
            progress: progress.as_deref(),
            client: client.as_ref(),
            resume: resume.as_ref(),
        },
    )
    .await;
    let backend_latency = t.elapsed();
    stage(gw, "dispatch", t);
    // A call refused by dispatch's last confirmation never reached the
    // backend: no backend latency for it.
    let reached = !matches!(dispatched, Dispatched::Refused(_));
    if reached {
        gw.metrics()
            .observe_backend(&tool.connector_id, backend_latency);
    }
    let (reply, closed, mut summary) =
        close_dispatched(gw, record, &tool, dispatched, task_id.as_deref(), started).await;
    summary.connector = Some(tool.connector_id.clone());
    summary.backend_latency = reached.then_some(backend_latency);
    let reply = match (reply, approval_note) {
        (CallReply::Output(output), Some(approval)) => CallReply::Approved { output, approval },
        (reply, _) => reply,
    };
    let closed = (reply, closed, summary);
    if let (Some(budget), Some(task)) = (exhausted, task_id.as_deref()) {
        end_exhausted(gw, task, &budget).await;
    }
    closed
}

/// Ends a task whose budget the call just spent to the last unit: its
/// credentials are revoked with it, so the backend sees nothing further.
pub(crate) async fn end_exhausted(gw: &Gateway, task: &str, budget: &str) {
    let reason = format!("budget exhausted: {budget}");
    match crate::tasks::end(
        gw,
        task,
        crate::store::TaskStatus::Completed,
        "tollgate",
        &reason,
    )
    .await
    {
        Ok(_) => tracing::info!(%task, %budget, "task budget exhausted; task ended"),
        Err(e) => tracing::warn!(%task, error = %e, "cannot end a task whose budget is exhausted"),
    }
}

/// What a refusal before the `allow` record needs to write its own.
struct Refusal<'a> {
    gw: &'a Gateway,
    who: &'a Authenticated,
    name: &'a str,
    task_id: Option<&'a str>,
    started: Instant,
    within: Option<&'a str>,
}

impl Refusal<'_> {
    async fn close(&self, d: Denial, digest: Option<String>) -> (CallReply, Closed, Summary) {
        let closed = record::deny(
            self.gw,
            self.who,
            self.name,
            digest,
            &d,
            record::Where {
                task_id: self.task_id,
                latency_us: elapsed_us(self.started),
                within: self.within,
            },
        )
        .await;
        let summary = Summary::denied(d.code(), self.task_id);
        (CallReply::Refused(d.to_agent()), closed, summary)
    }
}

fn raw_digest(gw: &Gateway, arguments: Option<&Map<String, Value>>) -> Option<String> {
    arguments.map(|a| record::args_digest(gw.secrets().digest_key(), a))
}

async fn close_refused(
    gw: &Gateway,
    record: RecordId,
    d: Denial,
    task: Option<&str>,
    started: Instant,
) -> (CallReply, Closed, Summary) {
    let outcome = Outcome {
        outcome: CallOutcome::Refused,
        code: Some(d.code()),
        backend_status: None,
    };
    let summary = Summary::allowed("refused", Some(d.code()), task);
    let closed = record::outcome(gw, record, outcome, elapsed_us(started)).await;
    (CallReply::Refused(d.to_agent()), closed, summary)
}

async fn close_builtin(
    gw: &Gateway,
    record: RecordId,
    result: Result<ToolOutput, (&'static str, String)>,
    task: Option<&str>,
    started: Instant,
) -> (CallReply, Closed, Summary) {
    let (outcome, reply) = match result {
        Ok(out) => (
            Outcome {
                outcome: CallOutcome::Ok,
                code: None,
                backend_status: None,
            },
            CallReply::Output(out),
        ),
        Err((code, message)) => (
            Outcome {
                outcome: CallOutcome::ToolError,
                code: Some(code),
                backend_status: None,
            },
            CallReply::Refused(denial::tool_error(
                format!("{message} ({code})"),
                code,
                Map::new(),
            )),
        ),
    };
    let summary = Summary::allowed(outcome.outcome.as_str(), outcome.code, task);
    let closed = record::outcome(gw, record, outcome, elapsed_us(started)).await;
    (reply, closed, summary)
}

async fn close_dispatched(
    gw: &Gateway,
    record: RecordId,
    tool: &ToolEntry,
    dispatched: Dispatched,
    task: Option<&str>,
    started: Instant,
) -> (CallReply, Closed, Summary) {
    let failure = match &dispatched {
        Dispatched::Failed(e) => Some(e.detail()),
        _ => None,
    };
    let (outcome, reply) = match dispatched {
        Dispatched::Output(out) => (
            Outcome {
                outcome: if out.is_error {
                    CallOutcome::ToolError
                } else {
                    CallOutcome::Ok
                },
                code: out.is_error.then_some("backend_error_status"),
                backend_status: out.backend_status,
            },
            CallReply::Output(out),
        ),
        Dispatched::Failed(e) => (
            Outcome {
                outcome: CallOutcome::Failed,
                code: Some(e.code()),
                backend_status: None,
            },
            CallReply::Refused(denial::failure_to_agent(
                &tool.full_name,
                &e,
                retry_safe(tool),
            )),
        ),
        Dispatched::Cancelled => (
            Outcome {
                outcome: CallOutcome::Cancelled,
                code: Some("client_cancelled"),
                backend_status: None,
            },
            CallReply::Refused(denial::cancelled()),
        ),
        Dispatched::Refused(d) => return close_refused(gw, record, d, task, started).await,
    };
    let mut summary = Summary::allowed(outcome.outcome.as_str(), outcome.code, task);
    summary.backend_status = outcome.backend_status;
    summary.failure = failure;
    let closed = record::outcome(gw, record, outcome, elapsed_us(started)).await;
    (reply, closed, summary)
}

/// Whether calling `tool` twice is harmless: declared read-only or
/// idempotent. Only then does a failure say "may be retried".
fn retry_safe(tool: &ToolEntry) -> bool {
    tool.tool
        .annotations
        .as_ref()
        .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
}

/// What `tools/list` answers for one agent on one connection.
#[derive(Debug)]
pub struct ToolList {
    /// Connector tools the agent could call now, sorted by name.
    pub tools: Vec<Arc<ToolEntry>>,
    /// The task the connection (or token, or hint) works in, if any.
    pub task: Option<TaskRecord>,
}

/// The tools an agent sees: admitted (else the denial), then every tool
/// that passes authorize's lookup and grant rule, that some policy could
/// permit (when policies are loaded) and, within a task, the task's tool
/// scope — the static part of [`call_tool`]. A task that cannot
/// be read is a denial, never a fall-back to the full grant set.
pub async fn list_tools(
    gw: &Gateway,
    who: &Authenticated,
    connection: Option<String>,
    task_hint: Option<String>,
) -> Result<ToolList, Denial> {
    let catalog = gw.catalog();
    admit::admit(gw, who).await?;
    let probe = ToolRequest {
        connection,
        task_hint,
        ..ToolRequest::default()
    };
    let task = match scope::task_id_for(gw, who, &probe) {
        Some(id) => Some(scope::load(gw, &id, &who.agent().id).await?),
        None => None,
    };
    let tools = catalog
        .tools
        .iter()
        .filter(|(name, _)| authorize::visible(&catalog, who, name))
        // A tool no permit could ever allow this agent is not listed.
        .filter(|(name, _)| {
            catalog
                .policies
                .as_ref()
                .is_none_or(|p| p.may_permit(&who.agent().id, name))
        })
        .filter(|(name, _)| {
            task.as_ref()
                .is_none_or(|t| t.tools.iter().any(|n| n == *name))
        })
        .map(|(_, t)| t.clone())
        .collect();
    Ok(ToolList { tools, task })
}

pub(crate) fn elapsed_us(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX)
}
