//! Stage 4, dispatch: the connector call. The only code in the gateway that
//! reaches a backend.
//!
//! Contract: takes an [`Authorized`] call and the [`Recorded`] proof that its
//! decision is durable, so neither stage can be skipped. The connector
//! enforces its own timeout; cancellation by the client (disconnect or
//! `notifications/cancelled`) drops the backend request.

use tokio_util::sync::CancellationToken;
use tollgate_connectors::{ConnectorCall, ConnectorError, ToolOutput};

use super::authorize::Authorized;
use super::record::Recorded;

/// How the connector call ended.
#[derive(Debug)]
pub enum Dispatched {
    /// The backend answered (possibly with a tool error).
    Output(ToolOutput),
    /// The backend could not be reached or did not answer in time.
    Failed(ConnectorError),
    /// The client went away first.
    Cancelled,
}

/// Calls the backend.
pub async fn dispatch(
    call: &Authorized,
    _proof: &Recorded,
    cancel: &CancellationToken,
) -> Dispatched {
    let tool = call.tool();
    let request = tool.connector.call(ConnectorCall {
        tool: &tool.local_name,
        arguments: call.arguments(),
    });
    tokio::select! {
        result = request => match result {
            Ok(output) => Dispatched::Output(output),
            Err(e) => Dispatched::Failed(e),
        },
        _ = cancel.cancelled() => Dispatched::Cancelled,
    }
}
