//! Stage 7, dispatch: the connector call. The only code in the gateway that
//! reaches a backend.
//!
//! Contract: takes the [`Scoped`] call, the [`Recorded`] proof that its
//! decision is durable and the [`Credentialed`] proof that the credential
//! step ran, so no stage can be skipped. The connector enforces its own
//! timeout; cancellation by the client (disconnect or
//! `notifications/cancelled`) drops the backend request.

use tokio_util::sync::CancellationToken;
use tollgate_connectors::{ConnectorCall, ConnectorError, ToolOutput};

use super::credential::Credentialed;
use super::record::Recorded;
use super::scope::Scoped;

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
    scoped: &Scoped,
    _proof: &Recorded,
    credentialed: &Credentialed,
    cancel: &CancellationToken,
) -> Dispatched {
    let call = scoped.call();
    let tool = call.tool();
    let request = tool.connector.call(ConnectorCall {
        tool: &tool.local_name,
        arguments: call.arguments(),
        credential: credentialed.credential(),
    });
    tokio::select! {
        result = request => match result {
            Ok(output) => Dispatched::Output(output),
            Err(e) => Dispatched::Failed(e),
        },
        _ = cancel.cancelled() => Dispatched::Cancelled,
    }
}
