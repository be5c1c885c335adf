//! The governance pipeline: every `tools/call` passes these stages, in this
//! order, in [`call_tool`]. Each stage is a module with a small contract and
//! hands the next stage a value only it can build, so a stage cannot be
//! skipped without the code failing to compile:
//!
//! ```text
//! authenticate -> Authenticated -> admit -> Admitted -> authorize -> Authorized
//!   -> scope -> Scoped -> record::allow -> Recorded -> recheck (admit, scope)
//!   -> credential -> Credentialed -> dispatch -> record::outcome
//! ```
//!
//! Every refusal is a [`Denial`] with a stable code; `denial.rs` is the one
//! place that turns it into what the agent sees.

pub mod admit;
pub mod authenticate;
pub mod authorize;
pub mod builtin;
pub mod credential;
pub mod denial;
pub mod dispatch;
pub mod record;
pub mod scope;

use std::time::Instant;

use rmcp::model::{CallToolResult, ContentBlock, ErrorData};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

pub use authenticate::{Authenticated, Transport};
pub use denial::{AgentReply, Denial};

use crate::Gateway;
use dispatch::Dispatched;
use record::Outcome;

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
) -> Result<CallToolResult, ErrorData> {
    let started = Instant::now();
    let catalog = gw.catalog();
    let task_id = scope::task_id_for(gw, who, &request);
    let refused = |denial: Denial| refuse(gw, who, &request, denial, task_id.as_deref(), started);

    // Admit before looking at the tool: a suspended, retired or overdue
    // agent is refused whatever it asks for.
    let admitted = match admit::admit(gw, who).await {
        Ok(a) => a,
        Err(denial) => return refused(denial).await,
    };

    // The gateway's own tools (start and end a task) are governed by the
    // same identity and admission, and recorded like any call.
    if builtin::is_builtin(&request.name) {
        return builtin::call(gw, &admitted, &request, task_id.as_deref(), started).await;
    }

    // Authorize next: it is pure and in memory, so unknown tools, missing
    // grants and bad arguments are refused before anything is written or
    // sent, and the backend never sees a malformed call.
    let arguments = request.arguments.clone();
    let authorized = match authorize::authorize(&catalog, &admitted, &request.name, arguments) {
        Ok(a) => a,
        Err(denial) => return refused(denial).await,
    };

    // Scope: the call must fit its task (or need none). After authorize, so
    // a task can only narrow what the grants allow.
    let scoped = match scope::scope(gw, authorized, task_id.as_deref()).await {
        Ok(s) => s,
        Err(denial) => return refused(denial).await,
    };

    // Record before dispatch: a call whose decision is not durable must not
    // run (fail closed).
    let recorded = match record::allow(gw, &scoped).await {
        Ok(r) => r,
        Err(denial) => return denial.to_agent().into_result(),
    };

    // Status and task once more, right before anything leaves the gateway:
    // a suspension, retirement or task end while this call was in flight
    // wins. Then the credential, last, so nothing is minted for a call that
    // will not run.
    let ready = match admit::recheck(gw, &admitted).await {
        Ok(()) => match scope::recheck(gw, &scoped).await {
            Ok(()) => credential::issue(gw, &scoped).await,
            Err(d) => Err(d),
        },
        Err(d) => Err(d),
    };
    let credentialed = match ready {
        Ok(c) => c,
        Err(denial) => {
            let outcome = Outcome {
                outcome: "refused",
                code: Some(denial.code()),
                backend_status: None,
            };
            record::outcome(gw, recorded, outcome, elapsed_us(started)).await;
            return denial.to_agent().into_result();
        }
    };

    // Dispatch last: the only step with an effect outside the gateway.
    let dispatched = dispatch::dispatch(&scoped, &recorded, &credentialed, cancel).await;

    let (outcome, result) = match dispatched {
        Dispatched::Output(out) => {
            let outcome = Outcome {
                outcome: if out.is_error { "tool_error" } else { "ok" },
                code: out.is_error.then_some("backend_error_status"),
                backend_status: out.backend_status,
            };
            let mut result = if out.is_error {
                CallToolResult::error(vec![ContentBlock::text(out.text)])
            } else {
                CallToolResult::success(vec![ContentBlock::text(out.text)])
            };
            result.structured_content = out.structured;
            (outcome, result)
        }
        Dispatched::Failed(e) => {
            let outcome = Outcome {
                outcome: "failed",
                code: Some(e.code()),
                backend_status: None,
            };
            (outcome, denial::failure_to_agent(&request.name, &e))
        }
        Dispatched::Cancelled => {
            let outcome = Outcome {
                outcome: "cancelled",
                code: Some("client_cancelled"),
                backend_status: None,
            };
            (
                outcome,
                CallToolResult::error(vec![ContentBlock::text("cancelled by the client")]),
            )
        }
    };
    record::outcome(gw, recorded, outcome, elapsed_us(started)).await;
    Ok(result)
}

async fn refuse(
    gw: &Gateway,
    who: &Authenticated,
    request: &ToolRequest,
    denial: Denial,
    task_id: Option<&str>,
    started: Instant,
) -> Result<CallToolResult, ErrorData> {
    let latency = elapsed_us(started);
    if let Err(e) = record::deny(
        gw,
        who,
        &request.name,
        request.arguments.as_ref(),
        &denial,
        task_id,
        latency,
    )
    .await
    {
        // Refused either way; a lost denial record is logged, not hidden.
        tracing::error!(error = %e, code = denial.code(), "cannot record a denial");
    }
    tracing::info!(agent = %who.agent().id, tool = %request.name, code = denial.code(), "call refused");
    denial.to_agent().into_result()
}

pub(crate) fn elapsed_us(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX)
}
