//! Denials and failures, and the one place that turns them into what the
//! agent sees and what the record says.
//!
//! Every refusal has a stable `code()`; the agent gets a message that says
//! what to do, the record gets the real reason. Agent-facing text never
//! carries a backend secret, a stack trace or (for hidden tools) the fact
//! that the tool exists.

use rmcp::model::{CallToolResult, ContentBlock, ErrorCode, ErrorData};
use serde_json::{Map, Value, json};
use tollgate_connectors::ConnectorError;

use super::authenticate::AuthError;

/// JSON-RPC codes in the implementation-defined range (-32000..-32099).
pub mod codes {
    /// The caller could not be authenticated.
    pub const UNAUTHENTICATED: i32 = -32001;
    /// The gateway could not make or record a decision; nothing was run.
    pub const GATEWAY_UNAVAILABLE: i32 = -32002;
    /// The agent may not act now (suspended, retired, review overdue).
    pub const AGENT_NOT_ADMITTED: i32 = -32003;
}

/// Why a call was refused before it reached the backend.
#[derive(Debug, thiserror::Error)]
pub enum Denial {
    /// No credential, or not a valid one (stdio re-checks per request).
    #[error("authentication failed: {0}")]
    Unauthenticated(#[from] AuthError),
    /// The agent is suspended.
    #[error("agent `{agent}` is suspended (since {since})")]
    AgentSuspended {
        /// Agent id.
        agent: String,
        /// When it was suspended.
        since: String,
        /// Whom to contact (system owner).
        contact: String,
    },
    /// The agent is retired.
    #[error("agent `{agent}` is retired (since {since})")]
    AgentRetired {
        /// Agent id.
        agent: String,
        /// When it was retired.
        since: String,
        /// Whom to contact (system owner).
        contact: String,
    },
    /// The agent's review date has come.
    #[error("agent `{agent}` was due for review on {review_by} and is treated as suspended")]
    ReviewOverdue {
        /// Agent id.
        agent: String,
        /// The review date.
        review_by: String,
        /// Whom to contact (system owner).
        contact: String,
    },
    /// The agent's status could not be read.
    #[error("the agent's status could not be checked")]
    LifecycleUnavailable,
    /// No tool of that name exists.
    #[error("unknown tool `{name}`")]
    UnknownTool {
        /// Requested name.
        name: String,
    },
    /// The tool exists but is not granted to this agent.
    #[error("tool `{name}` is not granted to this agent")]
    NotGranted {
        /// Requested name.
        name: String,
    },
    /// The arguments do not match the tool's input schema.
    #[error("arguments do not match the input schema of `{tool}`")]
    InvalidArguments {
        /// Tool name.
        tool: String,
        /// (JSON pointer into the arguments, problem) pairs.
        problems: Vec<(String, String)>,
    },
    /// The tool needs a task and the call has none.
    #[error("`{tool}` can only be called within a task ({why})")]
    TaskRequired {
        /// Tool.
        tool: String,
        /// Why a task is needed.
        why: String,
    },
    /// The tool is not among the task's tools.
    #[error("`{tool}` is not part of task `{task}` (\"{purpose}\")")]
    OutsideTask {
        /// Tool.
        tool: String,
        /// Task id.
        task: String,
        /// Its purpose.
        purpose: String,
        /// What the task allows.
        allowed: Vec<String>,
    },
    /// The arguments break one of the task's constraints.
    #[error("`{tool}` arguments break the constraint `{constraint}` of task `{task}`")]
    ConstraintViolated {
        /// Tool.
        tool: String,
        /// Task id.
        task: String,
        /// The constraint.
        constraint: String,
    },
    /// The task named by the request has ended.
    #[error("task `{task}` is {status}")]
    TaskNotActive {
        /// Task id.
        task: String,
        /// Its status.
        status: &'static str,
    },
    /// The request names a task that does not exist (or is not this agent's).
    #[error("no task `{task}` for this agent")]
    TaskUnknown {
        /// Task id as given.
        task: String,
    },
    /// The task could not be read.
    #[error("the task could not be checked")]
    TaskUnavailable,
    /// No credential could be issued for the backend.
    #[error("the credential for connector `{connector}` could not be issued")]
    CredentialUnavailable {
        /// Connector.
        connector: String,
    },
    /// The decision could not be recorded, so the call was not run.
    #[error("the decision could not be recorded")]
    AuditUnavailable,
}

/// What a refused or failed call looks like to the agent.
#[derive(Debug)]
pub enum AgentReply {
    /// A JSON-RPC error (protocol-level refusal).
    Error(ErrorData),
    /// A tool result with `isError: true` (something the model can act on).
    ToolError(CallToolResult),
}

impl AgentReply {
    /// As the return value of a `tools/call` handler.
    pub fn into_result(self) -> Result<CallToolResult, ErrorData> {
        match self {
            AgentReply::ToolError(r) => Ok(r),
            AgentReply::Error(e) => Err(e),
        }
    }
}

impl Denial {
    /// Stable reason code for records and agents.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::Unauthenticated(e) => e.code(),
            Denial::AgentSuspended { .. } => "agent_suspended",
            Denial::AgentRetired { .. } => "agent_retired",
            Denial::ReviewOverdue { .. } => "agent_review_overdue",
            Denial::LifecycleUnavailable => "lifecycle_unavailable",
            Denial::UnknownTool { .. } => "unknown_tool",
            Denial::NotGranted { .. } => "tool_not_granted",
            Denial::InvalidArguments { .. } => "invalid_arguments",
            Denial::AuditUnavailable => "audit_unavailable",
            Denial::TaskRequired { .. } => "task_required",
            Denial::OutsideTask { .. } => "outside_task",
            Denial::ConstraintViolated { .. } => "task_constraint",
            Denial::TaskNotActive { .. } => "task_ended",
            Denial::TaskUnknown { .. } => "task_unknown",
            Denial::TaskUnavailable => "task_unavailable",
            Denial::CredentialUnavailable { .. } => "credential_unavailable",
        }
    }

    /// The reason as written to the record: no argument values, which may
    /// hold secrets; only where in the arguments the problems are.
    pub fn record_reason(&self) -> String {
        match self {
            Denial::InvalidArguments { tool, problems } => {
                let at: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
                format!(
                    "arguments do not match the input schema of `{tool}` at {}",
                    at.join(", ")
                )
            }
            other => other.to_string(),
        }
    }

    /// What the agent sees.
    pub fn to_agent(&self) -> AgentReply {
        let code = self.code();
        match self {
            Denial::Unauthenticated(_) => AgentReply::Error(ErrorData::new(
                ErrorCode(codes::UNAUTHENTICATED),
                format!("{self}"),
                Some(json!({ "reason": code })),
            )),
            // Same answer for both: an agent cannot probe for tools it was
            // not granted.
            Denial::UnknownTool { name } | Denial::NotGranted { name } => {
                AgentReply::Error(ErrorData::invalid_params(
                    format!("Unknown tool: {name}"),
                    Some(json!({ "reason": "unknown_tool" })),
                ))
            }
            Denial::InvalidArguments { tool, problems } => {
                let mut text = format!("Invalid arguments for {tool} ({code}):");
                for (at, problem) in problems {
                    text.push_str(&format!("\n- {at}: {problem}"));
                }
                text.push_str(
                    "\nFix the arguments to match the tool's input schema and call again.",
                );
                let details: Vec<Value> = problems
                    .iter()
                    .map(|(at, p)| json!({ "at": at, "problem": p }))
                    .collect();
                AgentReply::ToolError(tool_error(
                    text,
                    code,
                    Some(json!({ "tollgate/problems": details })),
                ))
            }
            Denial::AgentSuspended { contact, .. }
            | Denial::AgentRetired { contact, .. }
            | Denial::ReviewOverdue { contact, .. } => AgentReply::Error(ErrorData::new(
                ErrorCode(codes::AGENT_NOT_ADMITTED),
                format!("{self}; calls are refused. Contact the agent's system owner ({contact})."),
                Some(json!({ "reason": code })),
            )),
            Denial::TaskRequired { .. } => AgentReply::ToolError(tool_error(
                format!(
                    "{self} ({code}). Start one with tollgate.start_task, or ask an operator for a task token."
                ),
                code,
                None,
            )),
            Denial::OutsideTask { allowed, .. } => AgentReply::ToolError(tool_error(
                format!("{self} ({code}). This task allows: {}.", allowed.join(", ")),
                code,
                None,
            )),
            Denial::ConstraintViolated { .. } => AgentReply::ToolError(tool_error(
                format!(
                    "{self} ({code}). Change the arguments to fit the task, or ask for a new task."
                ),
                code,
                None,
            )),
            Denial::TaskNotActive { .. } | Denial::TaskUnknown { .. } => {
                AgentReply::ToolError(tool_error(
                    format!("{self} ({code}). Start a new task to go on."),
                    code,
                    None,
                ))
            }
            Denial::LifecycleUnavailable
            | Denial::AuditUnavailable
            | Denial::TaskUnavailable
            | Denial::CredentialUnavailable { .. } => AgentReply::Error(ErrorData::new(
                ErrorCode(codes::GATEWAY_UNAVAILABLE),
                format!("{self}, so the call was not run. Try again later."),
                Some(json!({ "reason": code })),
            )),
        }
    }
}

/// A backend failure as the agent sees it: a tool error naming the reason.
pub fn failure_to_agent(tool: &str, error: &ConnectorError) -> CallToolResult {
    let code = error.code();
    let advice = match error {
        ConnectorError::Timeout(_) | ConnectorError::Unreachable(_) => {
            " The call may be retried later."
        }
        _ => "",
    };
    tool_error(
        format!("{tool} failed ({code}): {error}.{advice}"),
        code,
        None,
    )
}

/// A tool error carrying the reason code in `_meta`, where clients and
/// scripts can read it without parsing text.
pub(crate) fn tool_error(text: String, code: &str, extra: Option<Value>) -> CallToolResult {
    let mut meta = Map::new();
    meta.insert("tollgate/reason".into(), Value::String(code.into()));
    if let Some(Value::Object(extra)) = extra {
        meta.extend(extra);
    }
    CallToolResult::error(vec![ContentBlock::text(text)])
        .with_meta(Some(rmcp::model::MetaObject(meta)))
}
