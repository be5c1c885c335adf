//! The governance pipeline: every `tools/call` passes these stages, in this
//! order, in [`call_tool`]. Each stage is a module with a small contract and
//! hands the next stage a value only it can build, so a stage cannot be
//! skipped without the code failing to compile:
//!
//! ```text
//! authenticate -> Authenticated -> admit -> Admitted -> authorize -> Authorized
//!     -> record::allow -> Recorded -> admit::recheck -> dispatch -> record::outcome
//! ```
//!
//! Every refusal is a [`Denial`] with a stable code; `denial.rs` is the one
//! place that turns it into what the agent sees.

pub mod admit;
pub mod authenticate;
pub mod authorize;
pub mod denial;
pub mod dispatch;
pub mod record;

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
#[derive(Debug)]
pub struct ToolRequest {
    /// Tool name.
    pub name: String,
    /// Arguments, if any.
    pub arguments: Option<Map<String, Value>>,
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

    // Admit before looking at the tool: a suspended, retired or overdue
    // agent is refused whatever it asks for.
    let admitted = match admit::admit(gw, who).await {
        Ok(a) => a,
        Err(denial) => return refuse(gw, who, &request, denial, started).await,
    };

    // Authorize next: it is pure and in memory, so unknown tools, missing
    // grants and bad arguments are refused before anything is written or
    // sent, and the backend never sees a malformed call.
    let arguments = request.arguments.clone();
    let authorized = match authorize::authorize(&catalog, &admitted, &request.name, arguments) {
        Ok(a) => a,
        Err(denial) => return refuse(gw, who, &request, denial, started).await,
    };

    // Record before dispatch: a call whose decision is not durable must not
    // run (fail closed). Credentials (later stages) come after every check.
    let recorded = match record::allow(gw, &authorized).await {
        Ok(r) => r,
        Err(denial) => return denial.to_agent().into_result(),
    };

    // Status once more, right before the only step with an effect outside
    // the gateway: a retirement while this call was in flight wins.
    if let Err(denial) = admit::recheck(gw, &authorized).await {
        let outcome = Outcome {
            outcome: "refused",
            code: Some(denial.code()),
            backend_status: None,
        };
        record::outcome(gw, recorded, outcome, elapsed_us(started)).await;
        return denial.to_agent().into_result();
    }

    // Dispatch last: the only step with an effect outside the gateway.
    let dispatched = dispatch::dispatch(&authorized, &recorded, cancel).await;

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
    started: Instant,
) -> Result<CallToolResult, ErrorData> {
    if let Err(e) = record::deny(
        gw,
        who,
        &request.name,
        request.arguments.as_ref(),
        &denial,
        elapsed_us(started),
    )
    .await
    {
        // Refused either way; a lost denial record is logged, not hidden.
        tracing::error!(error = %e, code = denial.code(), "cannot record a denial");
    }
    tracing::info!(agent = %who.agent().id, tool = %request.name, code = denial.code(), "call refused");
    denial.to_agent().into_result()
}

fn elapsed_us(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX)
}
