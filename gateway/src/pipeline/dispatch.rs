//! Dispatch: the connector call. The only code in the gateway that reaches
//! a backend.
//!
//! Contract: takes a `Recorded<Credentialed>`, so the record, the
//! revocation confirmation and the credential all came first. Right before
//! the connector is called it confirms once more (`fence::check`): a
//! revocation committed while the credential was being issued wins, and
//! nothing that can wait stands between that check and the request. The
//! connector enforces its own timeout; cancellation by the client
//! (disconnect or `notifications/cancelled`) drops the backend request.
//! When traces are on, the connector call is the `backend` span and the
//! request carries its trace context (`telemetry`); off, neither exists.
//! An upstream tool's structured content is checked against its declared
//! output schema here, before the agent or the record sees it.

use tokio_util::sync::CancellationToken;
use tollgate_connectors::mcp::ProgressRelay;
use tollgate_connectors::{ConnectorCall, ConnectorError, ToolOutput};
use tracing::Instrument;

use super::Progress;
use super::credential::Credentialed;
use super::denial::Denial;
use super::fence;
use super::record::{RecordId, Recorded};
use crate::catalog::ToolEntry;
use crate::{Gateway, telemetry};

/// How the connector call ended.
#[derive(Debug)]
pub enum Dispatched {
    /// The backend answered (possibly with a tool error).
    Output(ToolOutput),
    /// The backend could not be reached or did not answer in time.
    Failed(ConnectorError),
    /// The client went away first.
    Cancelled,
    /// Refused by the last confirmation: nothing was sent.
    Refused(Denial),
}

/// The backend's progress for a call (an upstream MCP server's), passed
/// on to the agent when it asked for progress.
struct Relay<'a>(&'a dyn Progress);

#[async_trait::async_trait]
impl ProgressRelay for Relay<'_> {
    async fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        self.0
            .report(progress, total, message.unwrap_or_default())
            .await;
    }
}

/// Confirms once more, then calls the backend.
pub async fn dispatch(
    gw: &Gateway,
    credentialed: Recorded<Credentialed>,
    cancel: &CancellationToken,
    progress: Option<&dyn Progress>,
) -> (RecordId, Dispatched) {
    let (record, c) = credentialed.split();
    let scoped = c.confirmed().scoped();
    let task_id = scoped.task().map(|t| t.id.as_str());
    if let Err(d) = fence::check(gw, scoped.call().who(), scoped.task(), task_id).await {
        return (record, Dispatched::Refused(d));
    }
    let tool = c.tool();
    // The backend call's span (disabled unless traces are on), and its
    // trace context for the backend (empty unless they are).
    let span = telemetry::backend_span(&tool.connector_id, &tool.local_name);
    let trace = telemetry::trace_headers(&span);
    let relay = progress.map(Relay);
    let request = tool.connector.call(ConnectorCall {
        tool: &tool.local_name,
        arguments: scoped.call().arguments(),
        credential: c.credential(),
        trace: &trace,
        progress: relay.as_ref().map(|r| r as &dyn ProgressRelay),
    });
    let dispatched = async {
        tokio::select! {
            result = request => match result {
                Ok(output) => match conforms(tool, &output) {
                    Ok(()) => Dispatched::Output(output),
                    Err(e) => Dispatched::Failed(e),
                },
                Err(e) => Dispatched::Failed(e),
            },
            _ = cancel.cancelled() => Dispatched::Cancelled,
        }
    }
    .instrument(span.clone())
    .await;
    match &dispatched {
        Dispatched::Output(out) => telemetry::backend_finished(&span, out.backend_status, None),
        Dispatched::Failed(e) => telemetry::backend_finished(&span, None, Some(e.code())),
        Dispatched::Cancelled => {
            telemetry::backend_finished(&span, None, Some("client_cancelled"));
        }
        Dispatched::Refused(_) => {}
    }
    (record, dispatched)
}

/// A successful result of a tool that declares an output schema must carry
/// structured content that matches it (as MCP requires of servers): an
/// upstream that breaks its own contract is a backend failure, not output
/// to hand on.
fn conforms(tool: &ToolEntry, out: &ToolOutput) -> Result<(), ConnectorError> {
    let Some(validator) = &tool.output_validator else {
        return Ok(());
    };
    if out.is_error {
        return Ok(());
    }
    match &out.structured {
        None => Err(ConnectorError::InvalidResponse(
            "the tool declares an output schema but returned no structured content".into(),
        )),
        Some(v) => match validator.validate(v) {
            Ok(()) => Ok(()),
            Err(e) => Err(ConnectorError::InvalidResponse(format!(
                "its structured content does not match its output schema at {}: {e}",
                e.instance_path()
            ))),
        },
    }
}
