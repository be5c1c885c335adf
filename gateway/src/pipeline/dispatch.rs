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

use tokio_util::sync::CancellationToken;
use tollgate_connectors::{ConnectorCall, ConnectorError, ToolOutput, TraceHeaders};

use super::credential::Credentialed;
use super::denial::Denial;
use super::fence;
use super::record::{RecordId, Recorded};
use crate::Gateway;

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

/// Confirms once more, then calls the backend.
pub async fn dispatch(
    gw: &Gateway,
    credentialed: Recorded<Credentialed>,
    cancel: &CancellationToken,
) -> (RecordId, Dispatched) {
    let (record, c) = credentialed.split();
    let scoped = c.confirmed().scoped();
    let task_id = scoped.task().map(|t| t.id.as_str());
    if let Err(d) = fence::check(gw, scoped.call().who(), scoped.task(), task_id).await {
        return (record, Dispatched::Refused(d));
    }
    let tool = c.tool();
    let trace = TraceHeaders::default();
    let request = tool.connector.call(ConnectorCall {
        tool: &tool.local_name,
        arguments: scoped.call().arguments(),
        credential: c.credential(),
        trace: &trace,
    });
    let dispatched = tokio::select! {
        result = request => match result {
            Ok(output) => Dispatched::Output(output),
            Err(e) => Dispatched::Failed(e),
        },
        _ = cancel.cancelled() => Dispatched::Cancelled,
    };
    (record, dispatched)
}
