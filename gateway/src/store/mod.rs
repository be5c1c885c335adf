//! Persistent state behind one interface, [`Store`], so replicas can later
//! share PostgreSQL while a single node uses the embedded SQLite default
//! (`sqlite.rs`). The store holds agent key hashes, the decision records and
//! gateway secrets; it never holds a secret of an agent or a backend in clear.

mod sqlite;

use async_trait::async_trait;
use serde::Serialize;

pub use sqlite::SqliteStore;

/// A store failure. The pipeline treats any of these as "cannot decide" and
/// refuses the call (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Schema migration failed.
    #[error("cannot prepare the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The change is not allowed from the current state.
    #[error("{0}")]
    Conflict(String),
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

/// One tools/call decision and, once known, its outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
    /// `ok`, `tool_error` or `failed`; `None` until known or for denials.
    pub outcome: Option<String>,
    /// Stable code of a failed outcome (`backend_timeout`, ...).
    pub outcome_code: Option<String>,
    /// Backend status (HTTP status code), if one answered.
    pub backend_status: Option<i64>,
    /// Gateway-observed latency of the whole call, in microseconds.
    pub latency_us: Option<i64>,
    /// Owners of the agent and the connector as of the decision (JSON).
    pub owners: Option<serde_json::Value>,
}

/// What the outcome of an allowed call was.
#[derive(Debug, Clone)]
pub struct OutcomeUpdate {
    /// `ok`, `tool_error` or `failed`.
    pub outcome: &'static str,
    /// Stable code for failures.
    pub outcome_code: Option<&'static str>,
    /// Backend status.
    pub backend_status: Option<u16>,
    /// Whole-call latency in microseconds.
    pub latency_us: i64,
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

/// The state interface. Every method is safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a new key hash for an agent.
    async fn insert_key(
        &self,
        key_id: &str,
        agent_id: &str,
        key_hash: &[u8],
        label: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Finds a live (not revoked) key by its hash.
    async fn find_key(&self, key_hash: &[u8]) -> Result<Option<KeyRecord>, StoreError>;
    /// Lists every key (live and revoked).
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Writes a decision record. Must be durable before it returns `Ok`.
    async fn record_decision(&self, record: &DecisionRecord) -> Result<(), StoreError>;
    /// Adds the outcome to an earlier `allow` record.
    async fn record_outcome(&self, id: &str, outcome: &OutcomeUpdate) -> Result<(), StoreError>;
    /// Reads decisions back, newest first.
    async fn decisions(&self, filter: &DecisionFilter) -> Result<Vec<DecisionRecord>, StoreError>;
    /// An agent's runtime status; `None` means never changed (active).
    async fn agent_lifecycle(&self, agent_id: &str) -> Result<Option<Lifecycle>, StoreError>;
    /// Changes an agent's status and records the change. Retiring also
    /// revokes every key of the agent, in the same transaction. A retired
    /// agent cannot change status again (`Conflict`).
    async fn set_agent_status(
        &self,
        agent_id: &str,
        to: AgentStatus,
        reason: &str,
        changed_by: &str,
    ) -> Result<LifecycleEvent, StoreError>;
    /// An agent's lifecycle changes, oldest first.
    async fn lifecycle_events(&self, agent_id: &str) -> Result<Vec<LifecycleEvent>, StoreError>;
    /// Records a manifest load or reload attempt.
    async fn record_manifest_change(&self, change: &ManifestChange) -> Result<(), StoreError>;
    /// Manifest changes, newest first.
    async fn manifest_changes(&self, limit: u32) -> Result<Vec<ManifestChange>, StoreError>;
    /// Returns the named gateway secret, creating it with `init` on first use.
    async fn secret(&self, name: &str, init: &[u8]) -> Result<Vec<u8>, StoreError>;
}
