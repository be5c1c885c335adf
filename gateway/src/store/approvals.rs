//! What the store keeps about human approvals: approver keys (hashes),
//! requests, votes and the events of each request.

use serde::Serialize;
use serde_json::Value;

/// A request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for people.
    Pending,
    /// Approved: a matching call may use it (once, or within its task).
    Approved,
    /// Someone with the right to decide said no.
    Denied,
    /// Nobody decided by the deadline (or an approval was not used in time).
    Expired,
    /// The caller left, or its agent, key or task was cut off.
    Withdrawn,
    /// An "approve once" consumed by its call.
    Used,
}

impl ApprovalStatus {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Withdrawn => "withdrawn",
            ApprovalStatus::Used => "used",
        }
    }

    /// Parses a stored name; anything unknown reads as `Withdrawn`, which
    /// lets nothing run (closed).
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "expired" => ApprovalStatus::Expired,
            "used" => ApprovalStatus::Used,
            _ => ApprovalStatus::Withdrawn,
        }
    }

    /// Whether nothing more can happen to the request.
    pub fn is_final(self) -> bool {
        !matches!(self, ApprovalStatus::Pending | ApprovalStatus::Approved)
    }
}

/// One approval request, as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApprovalRequest {
    /// Id (UUID v7).
    pub id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: undecided by then means denied.
    pub deadline: String,
    /// The agent whose call waits.
    pub agent_id: String,
    /// The credential it called with.
    pub credential_id: String,
    /// Its task, if any.
    pub task_id: Option<String>,
    /// The task's purpose.
    pub purpose: Option<String>,
    /// Tool (`connector.tool`).
    pub tool: String,
    /// Connector.
    pub connector_id: String,
    /// Tool risk.
    pub risk: String,
    /// Keyed digest of the exact arguments the approval binds to.
    pub args_digest: String,
    /// The arguments, with sensitive fields `<redacted>`.
    pub arguments: Value,
    /// Policy route (`owner:business`, `role:finance`, ...).
    pub route: String,
    /// Whom the route names (an owner's or role's name).
    pub approvers: String,
    /// Distinct people who must approve.
    pub required: u32,
    /// Four eyes: the agent's system owner may not approve.
    pub four_eyes: bool,
    /// The policy decision (verdict, policies, reasons).
    pub policy: Value,
    /// The agent's and the connector's owners.
    pub owners: Value,
    /// State.
    pub status: ApprovalStatus,
    /// `once` or `task`, once approved.
    pub scope: Option<String>,
    /// Fields an approver changed (an object), applied over the arguments.
    pub patch: Option<Value>,
    /// The changed arguments, redacted like `arguments`.
    pub changed_arguments: Option<Value>,
    /// When it was decided (approved, denied, expired, withdrawn).
    pub decided_at: Option<String>,
    /// The decisive reason (a denial's, a withdrawal's).
    pub reason: Option<String>,
    /// An approval must be used by then (RFC 3339).
    pub use_by: Option<String>,
    /// How many calls used it.
    pub uses: i64,
}

/// One person's vote on a request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApprovalVote {
    /// The request.
    pub request_id: String,
    /// The approver.
    pub approver_id: String,
    /// The approver credential used.
    pub key_id: String,
    /// `approve` or `deny`.
    pub verdict: String,
    /// Their reason.
    pub reason: String,
    /// "Approve for this task" rather than once.
    pub for_task: bool,
    /// The fields they changed, if any.
    pub patch: Option<Value>,
    /// RFC 3339.
    pub at: String,
}

/// One thing that happened to a request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApprovalEvent {
    /// The request.
    pub request_id: String,
    /// RFC 3339.
    pub at: String,
    /// `requested`, `approved`, `denied`, `expired`, `withdrawn`, `used`,
    /// `vote`.
    pub event: String,
    /// Who: an approver id, an agent id, or `tollgate`.
    pub actor: String,
    /// Details (JSON).
    pub detail: Option<Value>,
}

/// What creating a request came to.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new request.
    New(Box<ApprovalRequest>),
    /// An identical request was already pending: this one.
    Existing(Box<ApprovalRequest>),
    /// The agent already has this many requests pending.
    Full(u32),
}

/// A vote to add, and what it does if it completes the quorum.
#[derive(Debug, Clone)]
pub struct VoteInput {
    /// The vote.
    pub vote: ApprovalVote,
    /// The changed arguments (redacted), when the vote carries a patch.
    pub changed: Option<Value>,
    /// When an approval completed by this vote must be used by.
    pub use_by: String,
}

/// What a vote came to.
#[derive(Debug, Clone)]
pub enum Voted {
    /// Recorded; the request as it stands now (pending, approved, denied).
    Recorded(Box<ApprovalRequest>),
    /// The request is not pending any more (its status).
    NotPending(ApprovalStatus),
    /// This person has voted on it already.
    AlreadyVoted,
    /// Another approver approved different changes.
    ConflictingChanges,
    /// No such request.
    NotFound,
}

/// Filter for listing requests.
#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    /// Only these states.
    pub statuses: Vec<ApprovalStatus>,
    /// Only this agent's.
    pub agent_id: Option<String>,
    /// Only this tool's.
    pub tool: Option<String>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
}

/// An approver credential as stored (its hash stays in the store).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApproverKeyRecord {
    /// Public id (`apk_…`).
    pub key_id: String,
    /// The approver.
    pub approver_id: String,
    /// Label given at issue.
    pub label: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once revoked.
    pub revoked_at: Option<String>,
}
