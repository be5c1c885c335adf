//! The audit trail's rows as the store keeps them. The store only stores
//! and returns them: hashing, chaining, signing and verification live in
//! `crate::audit`, so every backend shares one definition of the chain.

use serde::{Deserialize, Serialize};

/// One record of the trail, chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    /// The writer's chain.
    pub chain: String,
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// Record id (UUID v7); a call's outcome names its call's id in `ref`.
    pub id: String,
    /// RFC 3339 time of the event.
    pub at: String,
    /// What happened (`call`, `call.outcome`, `task.started`, ...).
    pub kind: String,
    /// The agent concerned, if any.
    pub agent_id: Option<String>,
    /// The task concerned, if any.
    pub task_id: Option<String>,
    /// The tool concerned, if any.
    pub tool: Option<String>,
    /// `allow` or `deny` for a call.
    pub decision: Option<String>,
    /// Stable reason code of a call or an outcome.
    pub reason_code: Option<String>,
    /// How a call ended.
    pub outcome: Option<String>,
    /// The record this one completes (a call's outcome names the call).
    #[serde(rename = "ref")]
    pub ref_id: Option<String>,
    /// The record's content (JSON text, hashed as stored).
    pub body: String,
    /// Hash of the previous record (zeros for the first).
    #[serde(with = "hex_bytes")]
    pub prev: Vec<u8>,
    /// Hash of this record.
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

/// A record captured in the same transaction as a state change (by a
/// trigger), waiting to be folded into a chain.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    /// Queue position.
    pub seq: i64,
    /// When.
    pub at: String,
    /// What happened.
    pub kind: String,
    /// Agent concerned.
    pub agent_id: Option<String>,
    /// Task concerned.
    pub task_id: Option<String>,
    /// Content (JSON text).
    pub body: String,
}

/// An allowed call whose outcome is not in the trail yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCall {
    /// The call record's id.
    pub id: String,
    /// Agent.
    pub agent_id: String,
    /// Task.
    pub task_id: Option<String>,
    /// Tool.
    pub tool: String,
}

/// How rows are chained (defined by `crate::audit::chain`): the store
/// numbers each appended row after its chain's tail and hashes it inside
/// the append's own transaction, so two writers on one chain can never
/// fork it, whatever their interleaving.
#[derive(Debug, Clone, Copy)]
pub struct Linker {
    /// The `prev` of a chain's first record.
    pub genesis: [u8; 32],
    /// The hash of a row as record `seq` after a record hashed `prev`.
    pub hash: fn(&AuditRow, i64, &[u8]) -> [u8; 32],
}

/// One group commit: rows appended to one chain, the calls they open and
/// close, and the pending records they fold in, in one transaction.
#[derive(Debug, Default, Clone)]
pub struct AuditBatch {
    /// The chain appended to.
    pub chain: String,
    /// Rows in chain order; their `seq`, `prev` and `hash` are set by the
    /// store as it links them after the chain's tail.
    pub rows: Vec<AuditRow>,
    /// Allowed calls recorded in `rows`.
    pub opened: Vec<OpenCall>,
    /// Ids of calls whose outcome is in `rows`.
    pub closed: Vec<String>,
    /// Pending records folded into `rows` (deleted with the commit).
    pub folded: Vec<i64>,
    /// Wait for the commit to reach the disk (fsync) before returning.
    pub durable: bool,
}

/// The last record of a chain (or the anchor it starts after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTail {
    /// Its seq.
    pub seq: i64,
    /// Its hash.
    pub hash: Vec<u8>,
}

/// A signed checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRow {
    /// Chain.
    pub chain: String,
    /// Seq of the record it covers.
    pub seq: i64,
    /// Hash of that record.
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
    /// When it was made.
    pub at: String,
    /// Compact JWS over `{chain, seq, hash, at}`.
    pub signature: String,
}

/// Where a pruned chain now begins.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorRow {
    /// Chain.
    pub chain: String,
    /// Seq of the last pruned record.
    pub seq: i64,
    /// Its hash.
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
    /// When the prune ran.
    pub at: String,
    /// Where the pruned records were archived.
    pub archive: Option<String>,
    /// Compact JWS over `{chain, seq, hash, at, archive}`.
    pub signature: String,
}

/// Which records to read back (all filters combine).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this agent's.
    pub agent_id: Option<String>,
    /// Only this task's.
    pub task_id: Option<String>,
    /// Only this tool's.
    pub tool: Option<String>,
    /// Only these kinds (exact, or a prefix ending in `.`).
    pub kind: Option<String>,
    /// Only calls with this decision.
    pub decision: Option<String>,
    /// Only records with this reason code.
    pub reason_code: Option<String>,
    /// Only records with this outcome.
    pub outcome: Option<String>,
    /// At or after (RFC 3339).
    pub since: Option<String>,
    /// Before (RFC 3339).
    pub until: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
    /// Newest first (else oldest first).
    pub newest_first: bool,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
