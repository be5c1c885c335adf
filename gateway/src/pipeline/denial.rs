//! Denials and failures, and the one place that turns them into what the
//! agent sees ([`AgentView`]) and what the record says.
//!
//! Every refusal has a stable `code()`; the agent gets a message that says
//! what to do, the record gets the real reason. Agent-facing text never
//! carries a backend secret, a backend address, a stack trace or (for
//! hidden tools) the fact that the tool exists. The view is
//! transport-neutral: `mcp.rs` turns it into a JSON-RPC error or a tool
//! result with `isError`.

use serde_json::{Map, Value, json};
use tollgate_connectors::ConnectorError;

use super::authenticate::AuthError;
use crate::agents::NotAdmitted;

/// JSON-RPC codes in the implementation-defined range (-32000..-32099).
pub mod codes {
    /// The caller could not be authenticated.
    pub const UNAUTHENTICATED: i32 = -32001;
    /// The gateway could not make or record a decision; nothing was run.
    pub const GATEWAY_UNAVAILABLE: i32 = -32002;
    /// The agent may not act now (suspended, retired, review overdue).
    pub const AGENT_NOT_ADMITTED: i32 = -32003;
    /// A rate limit is exhausted; `data.retry_after` says when to retry.
    pub const RATE_LIMITED: i32 = -32004;
    /// JSON-RPC "invalid params" (unknown tools are reported with it, as
    /// MCP servers conventionally do).
    pub const INVALID_PARAMS: i32 = -32602;
}

/// Why a call was refused before it reached the backend.
#[derive(Debug, thiserror::Error)]
pub enum Denial {
    /// The key the call authenticated with was revoked while it was in
    /// flight.
    #[error("the credential `{credential}` was revoked")]
    CredentialRevoked {
        /// Key id.
        credential: String,
    },
    /// The agent may not act now (suspended, retired, review overdue, or
    /// its status unreadable): the lifecycle rule's own answer.
    #[error("{0}")]
    NotAdmitted(#[from] NotAdmitted),
    /// No tool of that name exists.
    #[error("unknown tool `{name}`")]
    UnknownTool {
        /// Requested name.
        name: String,
    },
    /// A granted tool of an upstream MCP server that is not served now
    /// (the upstream is down, no longer offers it, or changed its pinned
    /// definition).
    #[error("tool `{name}` is withdrawn: {why}")]
    ToolWithdrawn {
        /// Requested name.
        name: String,
        /// Stable reason code (see `catalog::Withdrawn`).
        code: &'static str,
        /// What happened and what to do.
        why: String,
    },
    /// An upstream asked the agent's client for something (sampling,
    /// elicitation) the client did not declare it can do.
    #[error("the agent's client did not declare the `{capability}` capability")]
    ClientCannot {
        /// The capability (`sampling`, `elicitation`).
        capability: &'static str,
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
    #[error("the decision could not be written to the audit trail")]
    AuditUnavailable,
    /// Policy refused the call (default deny, a `forbid`, the task's
    /// constraints, or a policy that could not be evaluated).
    #[error("`{tool}` refused by policy: {}", decision.summary)]
    Policy {
        /// Tool.
        tool: String,
        /// The decision, with the policies that made it.
        decision: Box<crate::policy::Decision>,
    },
    /// Policy requires a person to approve the call first.
    #[error("`{tool}` needs approval: {}", decision.summary)]
    ApprovalRequired {
        /// Tool.
        tool: String,
        /// The decision, with the approval it needs.
        decision: Box<crate::policy::Decision>,
    },
    /// A rate limit is exhausted for now.
    #[error("rate limit of {limit} reached")]
    RateLimited {
        /// Which limit, and its rate.
        limit: String,
        /// When a call may succeed again.
        retry_after: std::time::Duration,
    },
    /// Too many calls of the task run at once.
    #[error("task `{task}` already has {max} calls running")]
    TaskBusy {
        /// Task id.
        task: String,
        /// Its `max_in_flight`.
        max: u32,
    },
    /// A task budget (calls, or a sum over an argument) would be exceeded.
    #[error("task `{task}`: {detail}")]
    TaskBudget {
        /// Task id.
        task: String,
        /// Which budget, what is left and what the call needed.
        detail: String,
    },
    /// The limits could not be checked (the store failed).
    #[error("the task's budget could not be checked")]
    LimitsUnavailable,
    /// The call waits for people and the agent chose not to wait (or the
    /// tool's mode is non-blocking): it runs once approved, when called
    /// again with the same arguments.
    #[error("`{tool}` is waiting for approval (request {request})")]
    ApprovalPending {
        /// Tool.
        tool: String,
        /// The request.
        request: Box<crate::approvals::Pending>,
    },
    /// An approver denied the call.
    #[error("`{tool}` was denied by {by} (request {request})")]
    ApprovalDenied {
        /// Tool.
        tool: String,
        /// Request id.
        request: String,
        /// Who denied it.
        by: String,
        /// Their reason, unless hidden (boxed: denials stay small).
        reason: Option<Box<str>>,
    },
    /// Nobody decided by the deadline.
    #[error("`{tool}` was not approved in time (request {request})")]
    ApprovalExpired {
        /// Tool.
        tool: String,
        /// Request id.
        request: String,
    },
    /// The request was withdrawn (the caller left, or its agent, key or
    /// task was cut off while it waited).
    #[error("approval request {request} for `{tool}` was withdrawn: {why}")]
    ApprovalWithdrawn {
        /// Tool.
        tool: String,
        /// Request id.
        request: String,
        /// Why.
        why: String,
    },
    /// The approval was used by another call first ("approve once").
    #[error("the approval of request {request} for `{tool}` was already used by another call")]
    ApprovalUsed {
        /// Tool.
        tool: String,
        /// Request id.
        request: String,
    },
    /// The agent has too many requests pending.
    #[error("this agent already has {pending} approval requests pending")]
    ApprovalQueueFull {
        /// How many.
        pending: u32,
    },
    /// The approval queue could not be read or written.
    #[error("the approval queue could not be reached")]
    ApprovalsUnavailable,
}

/// What a refused or failed call looks like to the agent, whatever the
/// transport.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentView {
    /// A protocol-level refusal (JSON-RPC error): the call was not a call
    /// the agent may make at all right now.
    Error {
        /// JSON-RPC error code.
        code: i32,
        /// Message.
        message: String,
        /// Stable reason code (`data.reason`).
        reason: &'static str,
        /// More `data` entries (`retry_after` for rate limits).
        data: Map<String, Value>,
    },
    /// A tool result with `isError: true`: something the model can act on.
    ToolError {
        /// Text for the model.
        text: String,
        /// Stable reason code (`_meta["tollgate/reason"]`).
        reason: &'static str,
        /// More `_meta` entries.
        meta: Map<String, Value>,
    },
}

/// The reply for a request whose credential was refused (stdio re-checks
/// the key on every request; HTTP answers 401 at the edge instead).
pub fn unauthenticated(error: &AuthError, hint: &str) -> AgentView {
    AgentView::Error {
        code: codes::UNAUTHENTICATED,
        message: format!("{error}{hint}"),
        reason: error.code(),
        data: Map::new(),
    }
}

pub use crate::util::{MAX_ECHO, capped};

impl Denial {
    /// Stable reason code for records and agents.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::CredentialRevoked { .. } => "credential_revoked",
            Denial::NotAdmitted(NotAdmitted::Suspended { .. }) => "agent_suspended",
            Denial::NotAdmitted(NotAdmitted::Retired { .. }) => "agent_retired",
            Denial::NotAdmitted(NotAdmitted::ReviewOverdue { .. }) => "agent_review_overdue",
            Denial::NotAdmitted(NotAdmitted::Unavailable) => "lifecycle_unavailable",
            Denial::UnknownTool { .. } => "unknown_tool",
            Denial::NotGranted { .. } => "tool_not_granted",
            Denial::ToolWithdrawn { code, .. } => code,
            Denial::ClientCannot { .. } => "client_capability_missing",
            Denial::InvalidArguments { .. } => "invalid_arguments",
            Denial::AuditUnavailable => "audit_unavailable",
            Denial::TaskRequired { .. } => "task_required",
            Denial::OutsideTask { .. } => "outside_task",
            Denial::TaskNotActive { .. } => "task_ended",
            Denial::TaskUnknown { .. } => "task_unknown",
            Denial::TaskUnavailable => "task_unavailable",
            Denial::CredentialUnavailable { .. } => "credential_unavailable",
            Denial::Policy { decision, .. } => decision.code,
            Denial::ApprovalRequired { .. } => "approval_required",
            Denial::RateLimited { .. } => "rate_limited",
            Denial::TaskBusy { .. } => "task_in_flight_limit",
            Denial::TaskBudget { .. } => "task_budget_exhausted",
            Denial::LimitsUnavailable => "limits_unavailable",
            Denial::ApprovalPending { .. } => "approval_pending",
            Denial::ApprovalDenied { .. } => "approval_denied",
            Denial::ApprovalExpired { .. } => "approval_expired",
            Denial::ApprovalWithdrawn { .. } => "approval_withdrawn",
            Denial::ApprovalUsed { .. } => "approval_used",
            Denial::ApprovalQueueFull { .. } => "approval_queue_full",
            Denial::ApprovalsUnavailable => "approvals_unavailable",
        }
    }

    /// The policy decision behind this refusal, for the record.
    pub fn policy_record(&self) -> Option<Value> {
        match self {
            Denial::Policy { decision, .. } | Denial::ApprovalRequired { decision, .. } => {
                Some(decision.to_record())
            }
            _ => None,
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
    pub fn to_agent(&self) -> AgentView {
        let code = self.code();
        let error = |code: i32, message: String| AgentView::Error {
            code,
            message,
            reason: self.code(),
            data: Map::new(),
        };
        match self {
            // Same answer for both: an agent cannot probe for tools it was
            // not granted.
            Denial::UnknownTool { name } | Denial::NotGranted { name } => AgentView::Error {
                code: codes::INVALID_PARAMS,
                message: format!("Unknown tool: {}", capped(name)),
                reason: "unknown_tool",
                data: Map::new(),
            },
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
                let mut meta = Map::new();
                meta.insert("tollgate/problems".into(), Value::Array(details));
                tool_error(text, code, meta)
            }
            Denial::NotAdmitted(
                NotAdmitted::Suspended { contact, .. }
                | NotAdmitted::Retired { contact, .. }
                | NotAdmitted::ReviewOverdue { contact, .. },
            ) => error(
                codes::AGENT_NOT_ADMITTED,
                format!("{self}; calls are refused. Contact the agent's system owner ({contact})."),
            ),
            Denial::CredentialRevoked { .. } => error(
                codes::UNAUTHENTICATED,
                format!("{self}; the call was not run. Use a valid credential."),
            ),
            Denial::TaskRequired { .. } => tool_error(
                format!(
                    "{self} ({code}). Start one with tollgate.start_task, or ask an operator for a task token."
                ),
                code,
                Map::new(),
            ),
            Denial::OutsideTask { allowed, .. } => tool_error(
                format!("{self} ({code}). This task allows: {}.", allowed.join(", ")),
                code,
                Map::new(),
            ),
            Denial::ToolWithdrawn { .. } => tool_error(
                format!("{self} ({code}). The call was not run."),
                code,
                Map::new(),
            ),
            Denial::ClientCannot { .. } => tool_error(
                format!("{self} ({code}); nothing was sent to it."),
                code,
                Map::new(),
            ),
            Denial::TaskNotActive { .. } | Denial::TaskUnknown { .. } => tool_error(
                format!("{self} ({code}). Start a new task to go on."),
                code,
                Map::new(),
            ),
            Denial::Policy { tool, decision } => {
                let advice = match decision.code {
                    "task_constraint" => {
                        " Change the arguments to fit the task, or ask for a new task."
                    }
                    "policy_error" | "policy_unrepresentable" => {
                        " The call was not run; tell the agent's system owner."
                    }
                    _ => {
                        " The call was not run; ask the agent's business owner if it should be allowed."
                    }
                };
                let mut meta = Map::new();
                meta.insert(
                    "tollgate/policies".into(),
                    json!(decision.policies.iter().map(|p| &p.id).collect::<Vec<_>>()),
                );
                tool_error(
                    format!(
                        "{tool} refused by policy ({code}): {}.{advice}",
                        decision.summary
                    ),
                    code,
                    meta,
                )
            }
            Denial::ApprovalRequired { tool, decision } => {
                let mut meta = Map::new();
                let mut text = format!(
                    "{tool} needs human approval ({code}): {}.",
                    decision.summary
                );
                if let Some(a) = &decision.approval {
                    text.push_str(&format!(
                        " Approver: {} ({}), {} distinct {} within {}s.",
                        a.approvers,
                        a.route,
                        a.count,
                        if a.count == 1 { "person" } else { "people" },
                        a.timeout_seconds
                    ));
                    meta.insert("tollgate/approval".into(), json!(a));
                }
                text.push_str(
                    " No declared approver answers for that route, so the call was not run: declare an `Approver` manifest for it, or change the policy.",
                );
                tool_error(text, code, meta)
            }
            Denial::ApprovalPending { tool, request } => {
                let mut meta = Map::new();
                meta.insert("tollgate/approval".into(), json!(request));
                let look = request
                    .review_url
                    .as_deref()
                    .map(|u| format!(" Approvers review it at {u}."))
                    .unwrap_or_default();
                tool_error(
                    format!(
                        "{tool} needs approval by {} and is waiting ({code}): request {}, deadline {}.{look} Once approved, call it again with exactly the same arguments and it runs once; nothing has run yet.",
                        request.approvers, request.id, request.deadline
                    ),
                    code,
                    meta,
                )
            }
            Denial::ApprovalDenied {
                tool,
                request,
                by,
                reason,
            } => {
                let mut meta = Map::new();
                meta.insert(
                    "tollgate/approval".into(),
                    json!({ "request": request, "status": "denied", "by": by, "reason": reason }),
                );
                let why = reason
                    .as_deref()
                    .map(|r| format!(": \"{}\"", capped(r)))
                    .unwrap_or_default();
                tool_error(
                    format!(
                        "{tool} was denied by {by}{why} ({code}, request {request}). The call was not run."
                    ),
                    code,
                    meta,
                )
            }
            Denial::ApprovalExpired { request, .. }
            | Denial::ApprovalWithdrawn { request, .. }
            | Denial::ApprovalUsed { request, .. } => {
                let mut meta = Map::new();
                meta.insert("tollgate/approval".into(), json!({ "request": request }));
                tool_error(
                    format!("{self} ({code}). The call was not run."),
                    code,
                    meta,
                )
            }
            Denial::ApprovalQueueFull { .. } => tool_error(
                format!(
                    "{self} ({code}). Wait for them to be decided before asking again; the call was not run."
                ),
                code,
                Map::new(),
            ),
            Denial::RateLimited { limit, retry_after } => {
                let secs = retry_after.as_secs_f64();
                AgentView::Error {
                    code: codes::RATE_LIMITED,
                    message: format!(
                        "Rate limit of {limit} reached; retry after {secs:.1} s. The call was not run."
                    ),
                    reason: "rate_limited",
                    data: {
                        let mut d = Map::new();
                        d.insert("limit".into(), json!(limit));
                        // Whole seconds, rounded up, as HTTP's Retry-After.
                        d.insert(
                            "retry_after".into(),
                            json!(
                                retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)
                            ),
                        );
                        d.insert(
                            "retry_after_ms".into(),
                            json!(retry_after.as_millis() as u64),
                        );
                        d
                    },
                }
            }
            Denial::TaskBusy { .. } => tool_error(
                format!("{self} ({code}). Wait for one to finish, then call again."),
                code,
                Map::new(),
            ),
            Denial::TaskBudget { .. } => tool_error(
                format!("{self} ({code}). The call was not run; a new task is needed for more."),
                code,
                Map::new(),
            ),
            Denial::NotAdmitted(NotAdmitted::Unavailable)
            | Denial::AuditUnavailable
            | Denial::TaskUnavailable
            | Denial::LimitsUnavailable
            | Denial::ApprovalsUnavailable
            | Denial::CredentialUnavailable { .. } => error(
                codes::GATEWAY_UNAVAILABLE,
                format!("{self}, so the call was not run. Try again later."),
            ),
        }
    }
}

/// A backend failure as the agent sees it: a tool error naming the reason,
/// never the backend's address or its raw error. "May be retried" only for
/// a tool declared idempotent or read-only: a timeout on a refund may have
/// been applied.
pub fn failure_to_agent(tool: &str, error: &ConnectorError, retry_safe: bool) -> AgentView {
    let code = error.code();
    let what = match error {
        ConnectorError::Timeout(after) => format!("the backend did not answer within {after:?}"),
        ConnectorError::Unreachable(_) => "the backend could not be reached".to_string(),
        ConnectorError::ResponseTooLarge { limit } => {
            format!("the backend's response exceeded {limit} bytes")
        }
        ConnectorError::BadRequest(_) => "the backend request could not be built".to_string(),
        ConnectorError::UnknownTool(_) => "the connector does not serve this tool".to_string(),
        ConnectorError::InvalidResponse(_) => {
            "the backend's answer does not match the tool's declared output schema".to_string()
        }
    };
    let advice = match error {
        ConnectorError::Timeout(_) | ConnectorError::Unreachable(_) if retry_safe => {
            " The call may be retried later."
        }
        ConnectorError::Timeout(_) => {
            " The backend may have acted on it: check before calling again."
        }
        _ => "",
    };
    tool_error(
        format!("{tool} failed ({code}): {what}.{advice}"),
        code,
        Map::new(),
    )
}

/// The agent's view of a call the client cancelled.
pub fn cancelled() -> AgentView {
    tool_error(
        "cancelled by the client".into(),
        "client_cancelled",
        Map::new(),
    )
}

/// A tool error carrying the reason code in `_meta`, where clients and
/// scripts can read it without parsing text.
pub(crate) fn tool_error(text: String, code: &'static str, meta: Map<String, Value>) -> AgentView {
    AgentView::ToolError {
        text,
        reason: code,
        meta,
    }
}
