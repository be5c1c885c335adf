//! Signed checkpoints and anchors: the gateway's signing key over a
//! chain position `(chain, seq, hash)`. A checkpoint lets `verify` notice a
//! trail cut short (the checkpointed record is gone) and proves who
//! vouched for the trail up to there; copied to a file the gateway cannot
//! rewrite, it survives an attacker who also deletes the stored ones. An
//! anchor marks where a pruned chain now begins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::secrets::Secrets;
use crate::store::{AnchorRow, CheckpointRow, StoreError};
use crate::util::stamp;

/// What a checkpoint or anchor signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// `tollgate.audit.checkpoint` or `tollgate.audit.anchor`.
    pub typ: String,
    /// Chain.
    pub chain: String,
    /// Seq of the record.
    pub seq: i64,
    /// Its hash (hex).
    pub hash: String,
    /// When it was made.
    pub at: String,
    /// For an anchor: where the pruned records went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

/// Type of a checkpoint seal.
pub const CHECKPOINT: &str = "tollgate.audit.checkpoint";
/// Type of an anchor seal.
pub const ANCHOR: &str = "tollgate.audit.anchor";

/// Why a seal did not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// No published key has this id (rotated out, or forged).
    #[error("signed by an unknown key `{0}`")]
    UnknownKey(String),
    /// The signature is not valid.
    #[error("its signature is not valid")]
    BadSignature,
    /// Signed, but for another position than the one stored beside it.
    #[error("its signed content does not match the stored position")]
    Mismatch,
}

/// Signs `seal`.
pub fn sign(secrets: &Secrets, seal: &Seal) -> Result<String, StoreError> {
    secrets
        .sign(seal)
        .map_err(|e| StoreError::Conflict(format!("cannot sign an audit checkpoint: {e}")))
}

/// Checks `jws` and returns what it signs.
pub fn open(secrets: &Secrets, jws: &str) -> Result<Seal, SealError> {
    let header = jsonwebtoken::decode_header(jws).map_err(|_| SealError::BadSignature)?;
    let kid = header.kid.unwrap_or_default();
    let key = secrets
        .decoding_key(&kid)
        .ok_or_else(|| SealError::UnknownKey(kid.clone()))?;
    let mut v = Validation::new(Algorithm::ES256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<Seal>(jws, key, &v)
        .map(|d| d.claims)
        .map_err(|_| SealError::BadSignature)
}

/// Checks a stored checkpoint: valid signature over exactly its row.
pub fn check_checkpoint(secrets: &Secrets, c: &CheckpointRow) -> Result<(), SealError> {
    let s = open(secrets, &c.signature)?;
    if s.typ != CHECKPOINT || s.chain != c.chain || s.seq != c.seq || s.hash != hex::encode(&c.hash)
    {
        return Err(SealError::Mismatch);
    }
    Ok(())
}

/// Checks a stored anchor.
pub fn check_anchor(secrets: &Secrets, a: &AnchorRow) -> Result<(), SealError> {
    let s = open(secrets, &a.signature)?;
    if s.typ != ANCHOR || s.chain != a.chain || s.seq != a.seq || s.hash != hex::encode(&a.hash) {
        return Err(SealError::Mismatch);
    }
    Ok(())
}

/// When to checkpoint.
#[derive(Debug, Clone)]
pub struct Policy {
    /// After this many records since the last checkpoint...
    pub every_records: i64,
    /// ...or this long, whichever comes first (if anything was appended).
    pub every: Duration,
    /// Also append each checkpoint (one JSON line) to this file.
    pub export: Option<PathBuf>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            every_records: 1000,
            every: Duration::from_secs(60),
            export: None,
        }
    }
}

/// One line of an exported checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exported {
    /// Chain.
    pub chain: String,
    /// Seq.
    pub seq: i64,
    /// Hash (hex).
    pub hash: String,
    /// When.
    pub at: String,
    /// The signature (compact JWS).
    pub signature: String,
}

/// Makes a checkpoint of the chain's tail if the policy says it is due;
/// returns it. `last` is the last checkpoint made (seq, when).
pub async fn checkpoint_if_due(
    gw: &Gateway,
    policy: &Policy,
    last: &mut Option<(i64, std::time::Instant)>,
) -> Result<Option<CheckpointRow>, StoreError> {
    let chain = gw.audit().chain().to_string();
    let Some(tail) = gw.store().audit_tail(&chain).await? else {
        return Ok(None);
    };
    let (last_seq, last_at) = match last {
        Some(l) => *l,
        None => {
            let stored = gw.store().checkpoints(&chain).await?;
            let seq = stored.last().map_or(0, |c| c.seq);
            *last = Some((seq, std::time::Instant::now()));
            (seq, std::time::Instant::now())
        }
    };
    if tail.seq <= last_seq {
        return Ok(None);
    }
    if tail.seq - last_seq < policy.every_records && last_at.elapsed() < policy.every {
        return Ok(None);
    }
    let at = stamp(gw.now());
    let seal = Seal {
        typ: CHECKPOINT.into(),
        chain: chain.clone(),
        seq: tail.seq,
        hash: hex::encode(&tail.hash),
        at: at.clone(),
        archive: None,
    };
    let row = CheckpointRow {
        chain,
        seq: tail.seq,
        hash: tail.hash,
        at,
        signature: sign(&gw.secrets(), &seal)?,
    };
    gw.store().add_checkpoint(&row).await?;
    if let Some(path) = &policy.export
        && let Err(e) = export_line(path, &row)
    {
        // The stored checkpoint stands; the copy outside is what catches a
        // truncated trail, so its loss is loud.
        tracing::error!(error = %e, file = %path.display(), "cannot export an audit checkpoint");
    }
    *last = Some((row.seq, std::time::Instant::now()));
    Ok(Some(row))
}

fn export_line(path: &Path, c: &CheckpointRow) -> std::io::Result<()> {
    let line = serde_json::to_string(&Exported {
        chain: c.chain.clone(),
        seq: c.seq,
        hash: hex::encode(&c.hash),
        at: c.at.clone(),
        signature: c.signature.clone(),
    })?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")?;
    f.sync_data()
}

/// Reads an exported checkpoint file.
pub fn read_exported(path: &Path) -> std::io::Result<Vec<CheckpointRow>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: Exported = serde_json::from_str(line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: not a checkpoint line: {e}", path.display(), n + 1),
            )
        })?;
        out.push(CheckpointRow {
            chain: e.chain,
            seq: e.seq,
            hash: hex::decode(&e.hash).unwrap_or_default(),
            at: e.at,
            signature: e.signature,
        });
    }
    Ok(out)
}

/// The background job: folds trigger-captured records into the chain
/// every `fold_every`, and checkpoints per `policy`.
pub fn spawn(
    gw: Arc<Gateway>,
    policy: Policy,
    fold_every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(fold_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = gw.audit().fold().await {
                tracing::warn!(error = %e, "cannot fold recorded changes into the audit chain; will retry");
            }
            if let Err(e) = checkpoint_if_due(&gw, &policy, &mut last).await {
                tracing::warn!(error = %e, "cannot write an audit checkpoint; will retry");
            }
        }
    })
}
