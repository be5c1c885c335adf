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
//!
//! What an upstream MCP server sends during a call besides its result goes
//! through [`Relay`]: progress and log messages to the agent's client when
//! it asked for them; a sampling or elicitation request only as a call of
//! its own, `sampling:<connector>` / `elicitation:<connector>`, through
//! every stage (grant, task, policy, limits, approval, record, revocation
//! fence) by the same agent in the same task. Such an entry's "backend" is
//! the agent's client, reached here only if it declared the capability.

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tollgate_connectors::mcp::{CallRelay, ClientAsk};
use tollgate_connectors::{ConnectorCall, ConnectorError, ToolOutput};
use tracing::Instrument;

use super::credential::Credentialed;
use super::denial::Denial;
use super::fence;
use super::record::{RecordId, Recorded};
use super::{AgentClient, Authenticated, CallReply, Progress, ToolRequest};
use crate::catalog::{ToolEntry, ToolKind};
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

/// The ways back to the agent while its call runs.
#[derive(Debug, Clone, Copy)]
pub struct Back<'a> {
    /// Progress, when the agent sent a progress token.
    pub progress: Option<&'a dyn Progress>,
    /// The agent's client, when the transport can reach it.
    pub client: Option<&'a Arc<dyn AgentClient>>,
    /// The agent's answers to the upstream's last `input_required`.
    pub resume: Option<&'a tollgate_connectors::Resume>,
}

/// What an upstream sends during one call, handled for the gateway.
struct Relay<'a> {
    /// The record of the call this relay serves, and its tool (named in
    /// the records of what the upstream asks during it).
    record: &'a str,
    tool: &'a str,
    gw: &'a Gateway,
    who: &'a Authenticated,
    task: Option<&'a str>,
    connector: &'a str,
    back: Back<'a>,
    cancel: &'a CancellationToken,
}

#[async_trait::async_trait]
impl CallRelay for Relay<'_> {
    fn takes_input_required(&self) -> bool {
        self.back.client.is_some_and(|c| c.stateless())
    }

    fn client_can(&self, what: ClientAsk) -> bool {
        self.back.client.is_some_and(|c| c.can(what))
    }

    fn wants_progress(&self) -> bool {
        self.back.progress.is_some()
    }

    fn wants_logs(&self) -> bool {
        self.back.client.is_some_and(|c| c.wants_logs())
    }

    async fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        if let Some(p) = self.back.progress {
            p.report(progress, total, message.unwrap_or_default()).await;
        }
    }

    async fn log(&self, level: &str, logger: Option<&str>, data: Value) {
        if let Some(client) = self.back.client {
            client.log(level, logger, data).await;
        }
    }

    /// A call of its own, by the same agent in the same task, through
    /// every stage; its answer (or refusal) goes back to the upstream.
    async fn ask(&self, what: ClientAsk, params: Value) -> Result<Value, String> {
        let kind = ToolKind::Ask(what);
        let Value::Object(arguments) = params else {
            return Err("the request's params are not an object".into());
        };
        let request = ToolRequest {
            name: format!("{}{}", kind.prefix(), self.connector),
            arguments: Some(arguments),
            task_hint: self.task.map(str::to_string),
            kind,
            client: self.back.client.cloned(),
            within: Some(format!("call {} of `{}`", self.record, self.tool)),
            ..ToolRequest::default()
        };
        // Boxed: a call inside a call.
        let reply = Box::pin(super::call_tool(self.gw, self.who, request, self.cancel)).await;
        match reply {
            CallReply::Output(out) | CallReply::Approved { output: out, .. } => out
                .raw
                .ok_or_else(|| "the agent's client gave no result".to_string()),
            CallReply::Refused(view) => Err(match view {
                super::AgentView::Error { message, .. } => message,
                super::AgentView::ToolError { text, .. } => text,
            }),
        }
    }
}

/// An upstream's request of the agent's client, already through every
/// stage as a call of its own: sent if the client declared it can answer.
async fn ask_client(
    tool: &ToolEntry,
    arguments: &serde_json::Map<String, Value>,
    back: Back<'_>,
    cancel: &CancellationToken,
) -> Dispatched {
    let ToolKind::Ask(what) = tool.kind() else {
        return Dispatched::Failed(ConnectorError::UnknownTool(tool.full_name.clone()));
    };
    let capability = what.as_str();
    let Some(client) = back.client.filter(|c| c.can(what)) else {
        return Dispatched::Refused(Denial::ClientCannot { capability });
    };
    if client.stateless() {
        // Allowed: it goes to the client inside the upstream's
        // `input_required` result, and its answer comes with the retry.
        return Dispatched::Output(ToolOutput {
            text: format!("the {capability} request goes to the agent's client as input_required"),
            structured: None,
            is_error: false,
            backend_status: None,
            content: Vec::new(),
            raw: Some(Value::Null),
            input_required: false,
        });
    }
    tokio::select! {
        r = client.ask(what, Value::Object(arguments.clone())) => match r {
            Ok(v) => Dispatched::Output(ToolOutput {
                text: format!("the agent's client answered the {capability} request"),
                structured: None,
                is_error: false,
                backend_status: None,
                content: Vec::new(),
                raw: Some(v),
                input_required: false,
            }),
            Err(why) => Dispatched::Failed(ConnectorError::InvalidResponse(format!(
                "the agent's client refused the {capability} request: {why}"
            ))),
        },
        _ = cancel.cancelled() => Dispatched::Cancelled,
    }
}

/// Confirms once more, then calls the backend.
pub async fn dispatch(
    gw: &Gateway,
    credentialed: Recorded<Credentialed>,
    cancel: &CancellationToken,
    back: Back<'_>,
) -> (RecordId, Dispatched) {
    let (record, c) = credentialed.split();
    let scoped = c.confirmed().scoped();
    let task_id = scoped.task().map(|t| t.id.as_str());
    if let Err(d) = fence::check(gw, scoped.call().who(), scoped.task(), task_id).await {
        return (record, Dispatched::Refused(d));
    }
    let tool = c.tool();
    if tool.kind().is_ask() {
        let asked = ask_client(tool, scoped.call().arguments(), back, cancel).await;
        return (record, asked);
    }
    // The backend call's span (disabled unless traces are on), and its
    // trace context for the backend (empty unless they are).
    let span = telemetry::backend_span(&tool.connector_id, &tool.local_name);
    let trace = telemetry::trace_headers(&span);
    let relay = Relay {
        record: record.id(),
        tool: &tool.full_name,
        gw,
        who: scoped.call().who(),
        task: task_id,
        connector: &tool.connector_id,
        back,
        cancel,
    };
    let request = tool.connector.call(ConnectorCall {
        tool: &tool.local_name,
        arguments: scoped.call().arguments(),
        credential: c.credential(),
        trace: &trace,
        relay: Some(&relay),
        resume: back.resume,
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
