//! Persistent state behind one interface, [`Store`], so replicas can later
//! share PostgreSQL while a single node uses the embedded SQLite default
//! (`sqlite.rs`). The store holds agent key hashes, the decision records and
//! gateway secrets; it never holds a secret of an agent or a backend in clear.

pub mod approvals;
pub mod audit;
mod sqlite;
mod sqlite_approvals;
mod sqlite_audit;
mod sqlite_direct;

use async_trait::async_trait;
use serde::Serialize;

pub use approvals::{
    ApprovalEvent, ApprovalFilter, ApprovalRequest, ApprovalStatus, ApprovalVote,
    ApproverKeyRecord, Created, VoteInput, Voted,
};
pub use audit::{
    AnchorRow, AuditBatch, AuditFilter, AuditRow, ChainTail, CheckpointRow, Linker, OpenCall,
    PendingRecord,
};
pub use sqlite::SqliteStore;

/// A store failure. The pipeline treats any of these as "cannot decide" and
/// refuses the call (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database reported an error (on the audit trail's own
    /// connections, `sqlite_direct.rs`).
    #[error("database error: {0}")]
    Direct(String),
    /// Schema migration failed.
    #[error("cannot prepare the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The change is not allowed from the current state.
    #[error("{0}")]
    Conflict(String),
    /// An audit batch lost a race with another writer: `chain_moved` when
    /// the chain's tail is no longer the one the batch was chained on,
    /// else pending records it folds were folded elsewhere first.
    #[error("{}", if *chain_moved { "another writer appended to this audit chain" } else { "pending audit records were folded by another writer" })]
    AuditRace {
        /// The chain's tail moved (else: pending records were taken).
        chain_moved: bool,
    },
    /// The data directory could not be prepared.
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A stored agent key (its hash, never the key).
#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    /// Short public id of the key, shown in listings and audit records.
    pub key_id: String,
    /// The agent it authenticates.
    pub agent_id: String,
    /// Free-text label given at issue time.
    pub label: Option<String>,
    /// RFC 3339 time of issue.
    pub created_at: String,
    /// RFC 3339 time of revocation, if revoked.
    pub revoked_at: Option<String>,
}

/// A live key and its agent's status, read together.
#[derive(Debug, Clone)]
pub struct KeyMatch {
    /// The key.
    pub key: KeyRecord,
    /// The agent's runtime status (`None`: never changed, active).
    pub lifecycle: Option<Lifecycle>,
}

/// One tools/call decision and, once known, its outcome: the body of a
/// `call` record in the trail, with the linked `call.outcome` folded in.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct DecisionRecord {
    /// Record id (UUID v7, time-ordered).
    pub id: String,
    /// RFC 3339 time of the decision.
    pub at: String,
    /// Authenticated agent.
    pub agent_id: String,
    /// The credential that authenticated it (key id).
    pub credential_id: String,
    /// `http` or `stdio`.
    pub transport: String,
    /// Tool name as the agent asked for it.
    pub tool: String,
    /// Connector, when the tool exists.
    pub connector_id: Option<String>,
    /// Tool risk, when the tool exists.
    pub risk: Option<String>,
    /// Keyed HMAC-SHA256 of the canonical arguments; never the arguments.
    pub args_digest: Option<String>,
    /// `allow` or `deny`.
    pub decision: String,
    /// Stable reason code (`allowed`, `unknown_tool`, `tool_not_granted`, ...).
    pub reason_code: String,
    /// Human-readable reason.
    pub reason: String,
    /// `ok`, `tool_error` or `failed`; `interrupted` when the process died
    /// mid-call (outcome unknown, set at the next start); `None` until known
    /// or for denials.
    pub outcome: Option<String>,
    /// Stable code of a failed outcome (`backend_timeout`, ...).
    pub outcome_code: Option<String>,
    /// Backend status (HTTP status code), if one answered.
    pub backend_status: Option<i64>,
    /// Gateway-observed latency of the whole call, in microseconds.
    pub latency_us: Option<i64>,
    /// Owners of the agent and the connector as of the decision (JSON).
    pub owners: Option<serde_json::Value>,
    /// The task the call was made in, if any.
    pub task_id: Option<String>,
    /// The policy decision (JSON: verdict, code, matched policies, approval
    /// route), when the call reached policy.
    pub policy: Option<serde_json::Value>,
    /// The arguments with the fields the manifest marks sensitive replaced
    /// and long values cut: enough to read what was asked, nothing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

/// What the outcome of an allowed call was.
#[derive(Debug, Clone)]
pub struct OutcomeUpdate {
    /// How the call ended.
    pub outcome: CallOutcome,
    /// Stable code for failures.
    pub outcome_code: Option<&'static str>,
    /// Backend status.
    pub backend_status: Option<u16>,
    /// Whole-call latency in microseconds.
    pub latency_us: i64,
}

/// A decision's kind, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The call may run (its outcome follows).
    Allow,
    /// The call was refused before anything ran.
    Deny,
}

impl Decision {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// How an allowed call ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The backend (or gateway tool) answered successfully.
    Ok,
    /// The backend answered with an error result.
    ToolError,
    /// The backend could not be reached or did not answer in time.
    Failed,
    /// Refused after the decision was recorded (a revocation, a credential
    /// that could not be issued): nothing reached the backend.
    Refused,
    /// The client went away first.
    Cancelled,
    /// The process stopped mid-call: whether the backend acted is unknown.
    Interrupted,
}

impl CallOutcome {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::ToolError => "tool_error",
            CallOutcome::Failed => "failed",
            CallOutcome::Refused => "refused",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::Interrupted => "interrupted",
        }
    }
}

/// Filter for reading decisions back.
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    /// Only this agent's.
    pub agent_id: Option<String>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
}

/// An agent's runtime status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Calls are admitted (subject to every other check).
    Active,
    /// Calls are refused until the agent is resumed.
    Suspended,
    /// Permanently cut off: keys revoked, calls refused, cannot be resumed.
    Retired,
}

impl AgentStatus {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Suspended => "suspended",
            AgentStatus::Retired => "retired",
        }
    }

    /// Parses a stored name; anything unknown reads as `Suspended` so a
    /// corrupted row fails closed.
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => AgentStatus::Active,
            "retired" => AgentStatus::Retired,
            _ => AgentStatus::Suspended,
        }
    }
}

/// An agent's current runtime status and the change that set it.
#[derive(Debug, Clone, Serialize)]
pub struct Lifecycle {
    /// Current status.
    pub status: AgentStatus,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub changed_by: String,
    /// When (RFC 3339).
    pub changed_at: String,
}

/// One lifecycle change.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleEvent {
    /// Agent.
    pub agent_id: String,
    /// Status before.
    pub from: String,
    /// Status after.
    pub to: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub changed_by: String,
    /// When (RFC 3339).
    pub changed_at: String,
}

/// One manifest load or reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestChange {
    /// When (RFC 3339).
    pub at: String,
    /// `loaded`, `applied` or `rejected`.
    pub outcome: String,
    /// Files as `{path, sha256}` objects.
    pub files: serde_json::Value,
    /// For a rejected change, the errors (`file:line:col: message`).
    pub errors: Option<Vec<String>>,
}

/// A task's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Running: its tools may be called until it expires.
    Active,
    /// Ended by the agent or an operator.
    Completed,
    /// Its TTL ran out.
    Expired,
    /// Ended by an operator or by the agent's suspension or retirement.
    Revoked,
}

impl TaskStatus {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Active => "active",
            TaskStatus::Completed => "completed",
            TaskStatus::Expired => "expired",
            TaskStatus::Revoked => "revoked",
        }
    }

    /// Parses a stored name; anything unknown reads as `Revoked` (closed).
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => TaskStatus::Active,
            "completed" => TaskStatus::Completed,
            "expired" => TaskStatus::Expired,
            _ => TaskStatus::Revoked,
        }
    }
}

/// A task as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskRecord {
    /// Random id.
    pub id: String,
    /// The agent acting in it.
    pub agent_id: String,
    /// Declared purpose.
    pub purpose: String,
    /// Tools it needs (a subset of the agent's grants).
    pub tools: Vec<String>,
    /// Argument constraints, e.g. `amount <= 500`.
    pub constraints: Vec<String>,
    /// Who started it (operator name, admin key name, or the agent).
    pub started_by: String,
    /// `cli`, `admin_api` or `in_band`.
    pub origin: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Status.
    pub status: TaskStatus,
    /// When it ended.
    pub ended_at: Option<String>,
    /// Who ended it.
    pub ended_by: Option<String>,
    /// Why.
    pub end_reason: Option<String>,
    /// The agent credential that started it in band: a key id (`key_…`) or
    /// a workload identity (`jwt:ISSUER/SUBJECT`). `None` for tasks an
    /// operator started. Revoking that key ends the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_with: Option<String>,
    /// RFC 3339 expiry of the JWT that started it, if one did; the task
    /// never outlives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_with_expires_at: Option<String>,
}

/// The reason recorded on tasks ended because the key that started them was
/// revoked.
pub const STARTING_KEY_REVOKED: &str = "starting key revoked";

/// How a task ends.
#[derive(Debug, Clone)]
pub struct TaskEnd {
    /// The final status (not `Active`).
    pub status: TaskStatus,
    /// Who ended it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// Filter for listing tasks.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this agent's.
    pub agent_id: Option<String>,
    /// Only active ones.
    pub active_only: bool,
    /// At most this many.
    pub limit: Option<u32>,
}

/// A credential issued to reach a backend, as recorded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CredentialRecord {
    /// Id (the JWT `jti` for minted tokens).
    pub id: String,
    /// The task it was issued for (`None`: one call outside any task).
    pub task_id: Option<String>,
    /// Agent.
    pub agent_id: String,
    /// The connector (backend) it is for.
    pub connector_id: String,
    /// `gateway_jwt`, `oauth2_client_credentials`, `token_exchange`, `static`.
    pub kind: String,
    /// Keyed HMAC of the secret value.
    pub digest: String,
    /// Scope granted.
    pub scope: Option<String>,
    /// Audience it is bound to.
    pub audience: Option<String>,
    /// RFC 3339.
    pub issued_at: String,
    /// RFC 3339; `None` for static secrets (which do not expire).
    pub expires_at: Option<String>,
    /// RFC 3339, once revoked.
    pub revoked_at: Option<String>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// The issuer must still be told about the revocation.
    pub upstream_pending: bool,
}

/// An admin API key as stored (its hash stays in the store).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdminKeyRecord {
    /// Public id (`admin_…`), shown in listings and admin action records.
    pub key_id: String,
    /// Who uses it (a person or an orchestrator).
    pub name: String,
    /// The agents it may act on; `None`: every agent.
    pub agents: Option<Vec<String>>,
    /// RFC 3339 time of issue.
    pub created_at: String,
    /// RFC 3339 time of revocation, if revoked.
    pub revoked_at: Option<String>,
}

impl AdminKeyRecord {
    /// Whether this key may act on `agent_id`.
    pub fn may_act_on(&self, agent_id: &str) -> bool {
        self.agents
            .as_ref()
            .is_none_or(|a| a.iter().any(|x| x == agent_id))
    }
}

/// One admin action, as recorded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdminAction {
    /// When (RFC 3339).
    pub at: String,
    /// Who: the admin key id (admin API) or `cli:USER` (command line).
    pub actor: String,
    /// `admin_key_issued`, `admin_key_revoked`, `task_started`, `task_ended`.
    pub action: String,
    /// What it acted on: a key id or a task id.
    pub target: String,
    /// The agent concerned, if any.
    pub agent_id: Option<String>,
    /// Free text (a reason, a scope).
    pub detail: Option<String>,
}

/// The state interface. Every method is safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a new key hash for an agent, created `at` (the caller's
    /// clock: the store never reads one).
    async fn insert_key(
        &self,
        key_id: &str,
        agent_id: &str,
        key_hash: &[u8],
        label: Option<&str>,
        at: &str,
    ) -> Result<(), StoreError>;
    /// Finds a live (not revoked) key by its hash, with its agent's current
    /// runtime status.
    async fn find_key(&self, key_hash: &[u8]) -> Result<Option<KeyMatch>, StoreError>;
    /// Revokes one key (of any agent) and ends the tasks it started, as
    /// [`Store::revoke_key_ending_tasks`] does; false if no live key has
    /// that id.
    async fn revoke_key(&self, key_id: &str, at: &str) -> Result<bool, StoreError>;
    /// Lists every key (live and revoked).
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Reads call decisions back from the trail, newest first, each with
    /// its outcome when one is recorded.
    async fn decisions(&self, filter: &DecisionFilter) -> Result<Vec<DecisionRecord>, StoreError>;
    /// The last record of `chain` (or the anchor a pruned chain starts
    /// after); `None` for a chain not started.
    async fn audit_tail(&self, chain: &str) -> Result<Option<ChainTail>, StoreError>;
    /// Appends one group commit in one transaction: the rows are numbered
    /// and hashed (`link`) after the chain's tail as read inside that
    /// transaction, so concurrent writers on one chain are serialised,
    /// never forked. Returns the new tail. A pending record another writer
    /// folded first fails the whole batch with [`StoreError::AuditRace`].
    /// Owned, so a store may hand it to another thread.
    async fn audit_append(
        &self,
        batch: std::sync::Arc<AuditBatch>,
        link: Linker,
    ) -> Result<ChainTail, StoreError>;
    /// Records captured by triggers, oldest first, not yet chained.
    async fn audit_pending(&self, limit: u32) -> Result<Vec<PendingRecord>, StoreError>;
    /// How many records wait to be chained.
    async fn audit_pending_count(&self) -> Result<i64, StoreError>;
    /// Records matching `filter`.
    async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError>;
    /// Up to `limit` records of `chain` with seq > `after`, in order.
    async fn audit_range(
        &self,
        chain: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError>;
    /// Every chain that has records, checkpoints or an anchor.
    async fn audit_chains(&self) -> Result<Vec<String>, StoreError>;
    /// Allowed calls without an outcome record.
    async fn open_calls(&self) -> Result<Vec<OpenCall>, StoreError>;
    /// Stores a signed checkpoint.
    async fn add_checkpoint(&self, c: &CheckpointRow) -> Result<(), StoreError>;
    /// The checkpoints of `chain`, oldest first.
    async fn checkpoints(&self, chain: &str) -> Result<Vec<CheckpointRow>, StoreError>;
    /// The anchor of a pruned chain.
    async fn anchor(&self, chain: &str) -> Result<Option<AnchorRow>, StoreError>;
    /// Sets (replaces) the anchor of `anchor.chain`.
    async fn set_anchor(&self, anchor: &AnchorRow) -> Result<(), StoreError>;
    /// Deletes up to `limit` records of `chain` with seq <= `upto` (and
    /// checkpoints before it); returns how many records went. Called in
    /// small steps so calls never wait long behind a prune.
    async fn prune_audit(&self, chain: &str, upto: i64, limit: u32) -> Result<u64, StoreError>;
    /// Housekeeping the gateway runs every second off the call path (for
    /// SQLite: a passive WAL checkpoint).
    async fn maintenance(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Stores a new admin API key hash for `name`.
    async fn insert_admin_key(
        &self,
        key_id: &str,
        name: &str,
        key_hash: &[u8],
        at: &str,
    ) -> Result<(), StoreError>;
    /// An agent's runtime status; `None` means never changed (active).
    async fn agent_lifecycle(&self, agent_id: &str) -> Result<Option<Lifecycle>, StoreError>;
    /// Changes an agent's status and records the change. Retiring also
    /// revokes every key of the agent, in the same transaction. A retired
    /// agent cannot change status again (`Conflict`). `at` is when, by the
    /// caller's clock.
    async fn set_agent_status(
        &self,
        agent_id: &str,
        to: AgentStatus,
        reason: &str,
        changed_by: &str,
        at: &str,
    ) -> Result<LifecycleEvent, StoreError>;
    /// An agent's lifecycle changes, oldest first.
    async fn lifecycle_events(&self, agent_id: &str) -> Result<Vec<LifecycleEvent>, StoreError>;
    /// Records a manifest load or reload attempt.
    async fn record_manifest_change(&self, change: &ManifestChange) -> Result<(), StoreError>;
    /// Manifest changes, newest first.
    async fn manifest_changes(&self, limit: u32) -> Result<Vec<ManifestChange>, StoreError>;
    /// Stores a new task. A task started with a key (`started_with` =
    /// `key_…`) is stored only if that key is live at that moment
    /// (`Conflict` otherwise), so a revocation racing the start cannot leave
    /// a task behind.
    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError>;
    /// One task.
    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// Tasks, newest first.
    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError>;
    /// Ends an active task with `status` and revokes every credential issued
    /// for it, in one transaction. `None` if the task was not active.
    async fn end_task(&self, id: &str, end: &TaskEnd) -> Result<Option<TaskRecord>, StoreError>;
    /// Ends every active task whose expiry is at or before `now` (status
    /// `expired`), revoking their credentials.
    async fn expire_tasks(&self, now: &str) -> Result<Vec<TaskRecord>, StoreError>;
    /// Records an issued credential (its digest, never the secret).
    async fn record_credential(&self, c: &CredentialRecord) -> Result<(), StoreError>;
    /// One credential record.
    async fn credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError>;
    /// Credentials issued for a task, oldest first.
    async fn task_credentials(&self, task_id: &str) -> Result<Vec<CredentialRecord>, StoreError>;
    /// Revoked credentials whose issuer still has to be told (RFC 7009).
    async fn pending_upstream_revocations(&self) -> Result<Vec<CredentialRecord>, StoreError>;
    /// Marks the upstream revocation of a credential as done.
    async fn upstream_revoked(&self, id: &str) -> Result<(), StoreError>;
    /// The newest revocation-feed sequence number (0 when the feed is empty).
    async fn latest_revocation(&self) -> Result<i64, StoreError>;
    /// Revocations committed after `after`, oldest first, at most `limit`.
    async fn revocations_since(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<RevocationEvent>, StoreError>;
    /// Whether a key exists and is not revoked.
    async fn key_live(&self, key_id: &str) -> Result<bool, StoreError>;
    /// Revokes one key and, in the same transaction, ends every active task
    /// it started (status `revoked`, reason [`STARTING_KEY_REVOKED`]),
    /// revoking their credentials like any task end. `None` if no live key
    /// has that id; otherwise the tasks ended. Credentials an external
    /// issuer handed out are flagged for upstream revocation, which the
    /// serving gateway's sweeper completes; a caller inside the serving
    /// process runs `tasks::after_key_revoked` for each ended task at once.
    async fn revoke_key_ending_tasks(
        &self,
        key_id: &str,
        at: &str,
    ) -> Result<Option<Vec<TaskRecord>>, StoreError>;
    /// One task, with whether the key that started it is still live
    /// (`None`: not started with a key), read together for the task-token
    /// check.
    async fn task_with_starting_key(
        &self,
        id: &str,
    ) -> Result<Option<(TaskRecord, Option<bool>)>, StoreError>;
    /// Revokes one credential (replaced, minted while its task ended, its
    /// agent suspended); `upstream_pending` when its issuer must still be
    /// told. False if it was already revoked or is unknown.
    async fn revoke_credential(
        &self,
        id: &str,
        at: &str,
        reason: &str,
        upstream_pending: bool,
    ) -> Result<bool, StoreError>;
    /// Adds `amount` to a task budget if the sum stays at or under `max`,
    /// atomically; the new sum, or `None` when it would not fit.
    async fn reserve_budget(
        &self,
        task_id: &str,
        budget: &str,
        amount: i64,
        max: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// Gives back an amount reserved for a call that did not run.
    async fn release_budget(
        &self,
        task_id: &str,
        budget: &str,
        amount: i64,
    ) -> Result<(), StoreError>;
    /// How much of a task budget is spent.
    async fn budget_used(&self, task_id: &str, budget: &str) -> Result<i64, StoreError>;
    /// Stores a new admin key (hash only) and records who issued it, in one
    /// transaction.
    async fn issue_admin_key(
        &self,
        key: &AdminKeyRecord,
        key_hash: &[u8],
        action: &AdminAction,
    ) -> Result<(), StoreError>;
    /// The live admin key with this hash.
    async fn find_admin(&self, key_hash: &[u8]) -> Result<Option<AdminKeyRecord>, StoreError>;
    /// Every admin key (live and revoked), oldest first.
    async fn admin_keys(&self) -> Result<Vec<AdminKeyRecord>, StoreError>;
    /// Revokes a live admin key and records who did it, in one transaction;
    /// false if no live key has that id.
    async fn revoke_admin_key(
        &self,
        key_id: &str,
        action: &AdminAction,
    ) -> Result<bool, StoreError>;
    /// Records an admin action.
    async fn record_admin_action(&self, action: &AdminAction) -> Result<(), StoreError>;
    /// Admin actions, newest first.
    async fn admin_actions(&self, limit: u32) -> Result<Vec<AdminAction>, StoreError>;

    /// Stores a new approver credential hash.
    async fn insert_approver_key(
        &self,
        key: &ApproverKeyRecord,
        key_hash: &[u8],
    ) -> Result<(), StoreError>;
    /// The live approver credential with this hash.
    async fn find_approver_key(
        &self,
        key_hash: &[u8],
    ) -> Result<Option<ApproverKeyRecord>, StoreError>;
    /// The live (unrevoked) approver credential with this id: the review
    /// page keeps only the id in its session and checks it on every request.
    async fn approver_key_live(
        &self,
        key_id: &str,
    ) -> Result<Option<ApproverKeyRecord>, StoreError>;
    /// Every approver credential, oldest first.
    async fn approver_keys(&self) -> Result<Vec<ApproverKeyRecord>, StoreError>;
    /// Revokes a live approver credential; false if none has that id.
    async fn revoke_approver_key(&self, key_id: &str, at: &str) -> Result<bool, StoreError>;
    /// Creates a request, in one transaction with its checks: an identical
    /// pending request (same agent, task, tool, digest) is returned instead,
    /// and an agent with `max_pending` requests pending gets `Full`.
    async fn create_approval(
        &self,
        request: &ApprovalRequest,
        max_pending: u32,
    ) -> Result<Created, StoreError>;
    /// One request.
    async fn approval(&self, id: &str) -> Result<Option<ApprovalRequest>, StoreError>;
    /// Requests, newest first.
    async fn approvals(&self, filter: &ApprovalFilter) -> Result<Vec<ApprovalRequest>, StoreError>;
    /// A request's votes, oldest first.
    async fn approval_votes(&self, id: &str) -> Result<Vec<ApprovalVote>, StoreError>;
    /// A request's events, oldest first.
    async fn approval_events(&self, id: &str) -> Result<Vec<ApprovalEvent>, StoreError>;
    /// Adds a vote in one transaction: the request must be pending and the
    /// person must not have voted; a deny decides it, and the `required`-th
    /// distinct approval approves it (scope `task` if that vote says so).
    async fn vote_approval(&self, input: &VoteInput) -> Result<Voted, StoreError>;
    /// The approved request a call with this binding may use now: same
    /// agent, task, tool and argument digest, approved, unused (or scoped to
    /// the task), not past its `use_by`.
    async fn approved_for(
        &self,
        agent_id: &str,
        task_id: Option<&str>,
        tool: &str,
        args_digest: &str,
        now: &str,
    ) -> Result<Option<ApprovalRequest>, StoreError>;
    /// Uses an approval, atomically: an `once` approval turns `used` and
    /// only one caller gets `true`; a `task` one counts a use.
    async fn use_approval(&self, id: &str, actor: &str, at: &str) -> Result<bool, StoreError>;
    /// Moves a request that is in one of `from` to `to` (expired,
    /// withdrawn) and records why; false if it was in none of them.
    async fn close_approval(
        &self,
        id: &str,
        from: &[ApprovalStatus],
        to: ApprovalStatus,
        actor: &str,
        reason: &str,
        at: &str,
    ) -> Result<bool, StoreError>;
    /// Expires pending requests past their deadline and approvals past
    /// their `use_by`, and withdraws those whose task is no longer active;
    /// the requests changed.
    async fn sweep_approvals(&self, now: &str) -> Result<Vec<ApprovalRequest>, StoreError>;
    /// Records an event on a request.
    async fn record_approval_event(&self, event: &ApprovalEvent) -> Result<(), StoreError>;
}

/// What a revocation-feed entry takes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// The agent's status changed (`subject` is the new status).
    AgentStatus,
    /// One key was revoked (`subject` is the key id).
    KeyRevoked,
    /// A task ended (`subject` is the task id).
    TaskEnded,
}

impl RevocationKind {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::AgentStatus => "agent_status",
            RevocationKind::KeyRevoked => "key_revoked",
            RevocationKind::TaskEnded => "task_ended",
        }
    }

    /// Parses a stored name; unknown names are `None` (and treated as
    /// touching the whole agent by the watcher).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "agent_status" => Some(RevocationKind::AgentStatus),
            "key_revoked" => Some(RevocationKind::KeyRevoked),
            "task_ended" => Some(RevocationKind::TaskEnded),
            _ => None,
        }
    }
}

/// One committed revocation, as the watcher reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEvent {
    /// Position in the feed (commit order).
    pub seq: i64,
    /// What changed; `None` for a kind this version does not know.
    pub kind: Option<RevocationKind>,
    /// The agent it concerns.
    pub agent_id: String,
    /// The key id, task id or new status.
    pub subject: String,
}
