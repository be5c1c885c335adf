//! Retention without losing evidence: records older than a cut-off are
//! written to an archive file (JSON lines, verifiable on their own), a
//! signed anchor records where the kept chain now begins, and only then
//! are the archived records deleted, a few thousand per transaction so
//! calls never wait long behind a prune. A crash at any point leaves a
//! trail that verifies: before the anchor nothing was deleted; after it,
//! verification starts from the anchor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::chain;
use super::seal::{self, Seal};
use crate::Gateway;
use crate::secrets::Secrets;
use crate::store::{AnchorRow, Store, StoreError};
use crate::util::stamp;

/// Records deleted per transaction.
const DELETE_STEP: u32 = 5000;

/// The first line of an archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveHeader {
    /// Format version.
    pub tollgate_audit_archive: u32,
    /// Chain.
    pub chain: String,
    /// The archive's records follow this seq...
    pub after: i64,
    /// ...whose hash is this (hex).
    pub after_hash: String,
    /// The last record archived.
    pub upto: i64,
    /// Its hash (hex).
    pub upto_hash: String,
    /// How many records.
    pub records: u64,
    /// The anchor's signed seal (compact JWS over chain, upto, upto_hash).
    pub seal: String,
}

/// What one prune did to one chain.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    /// Chain.
    pub chain: String,
    /// First record removed.
    pub from: i64,
    /// Last record removed (the new anchor).
    pub upto: i64,
    /// How many.
    pub records: u64,
    /// Where they were archived.
    pub archive: PathBuf,
}

/// Why a prune stopped.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The archive could not be written: nothing was deleted.
    #[error("cannot write the archive {path}: {source}; nothing was pruned")]
    Archive {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Archives and removes every record older than `before` (RFC 3339), up
/// to the first record that is not (records are kept in chain order, so a
/// younger record stops the prune even if older ones follow it).
pub async fn prune(
    store: &dyn Store,
    secrets: &Secrets,
    before: &str,
    archive_dir: &Path,
    now: &str,
) -> Result<Vec<Pruned>, PruneError> {
    let mut out = Vec::new();
    std::fs::create_dir_all(archive_dir).map_err(|source| PruneError::Archive {
        path: archive_dir.display().to_string(),
        source,
    })?;
    for name in store.audit_chains().await? {
        if let Some(p) = prune_chain(store, secrets, &name, before, archive_dir, now).await? {
            out.push(p);
        }
    }
    Ok(out)
}

async fn prune_chain(
    store: &dyn Store,
    secrets: &Secrets,
    name: &str,
    before: &str,
    dir: &Path,
    now: &str,
) -> Result<Option<Pruned>, PruneError> {
    let (after, after_hash) = match store.anchor(name).await? {
        Some(a) => (a.seq, a.hash),
        None => (0, chain::GENESIS.to_vec()),
    };
    let partial = dir.join(format!("audit-{name}-{}.partial", after + 1));
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| PruneError::Archive {
            path: path.clone(),
            source,
        }
    };
    let mut body = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(io(&partial))?);
    let (mut upto, mut upto_hash, mut records) = (after, after_hash.clone(), 0u64);
    let mut cursor = after;
    'scan: loop {
        let rows = store.audit_range(name, cursor, 20_000).await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            if r.at.as_str() >= before {
                break 'scan;
            }
            let line = serde_json::to_string(r).map_err(|e| PruneError::Archive {
                path: partial.display().to_string(),
                source: e.into(),
            })?;
            writeln!(body, "{line}").map_err(io(&partial))?;
            upto = r.seq;
            upto_hash = r.hash.clone();
            records += 1;
        }
        cursor = rows.last().map_or(cursor, |r| r.seq);
    }
    body.flush().map_err(io(&partial))?;
    drop(body);
    if records == 0 {
        let _ = std::fs::remove_file(&partial);
        return Ok(None);
    }
    let file = dir.join(format!("audit-{name}-{}-{upto}.jsonl", after + 1));
    let seal_text = seal::sign(
        secrets,
        &Seal {
            typ: seal::ANCHOR.into(),
            chain: name.to_string(),
            seq: upto,
            hash: hex::encode(&upto_hash),
            at: now.to_string(),
            archive: Some(file.display().to_string()),
        },
    )?;
    let header = ArchiveHeader {
        tollgate_audit_archive: 1,
        chain: name.to_string(),
        after,
        after_hash: hex::encode(&after_hash),
        upto,
        upto_hash: hex::encode(&upto_hash),
        records,
        seal: seal_text.clone(),
    };
    {
        let mut f = std::fs::File::create(&file).map_err(io(&file))?;
        let head = serde_json::to_string(&header).unwrap_or_default();
        writeln!(f, "{head}").map_err(io(&file))?;
        let mut src = std::fs::File::open(&partial).map_err(io(&partial))?;
        std::io::copy(&mut src, &mut f).map_err(io(&file))?;
        // The archive must be on disk before anything it holds is deleted.
        f.sync_all().map_err(io(&file))?;
    }
    let _ = std::fs::remove_file(&partial);
    store
        .set_anchor(&AnchorRow {
            chain: name.to_string(),
            seq: upto,
            hash: upto_hash,
            at: now.to_string(),
            archive: Some(file.display().to_string()),
            signature: seal_text,
        })
        .await?;
    while store.prune_audit(name, upto, DELETE_STEP).await? > 0 {
        tokio::task::yield_now().await;
    }
    Ok(Some(Pruned {
        chain: name.to_string(),
        from: after + 1,
        upto,
        records,
        archive: file,
    }))
}

/// Automatic retention: every `every`, prunes what is older than `keep`
/// into `dir`.
pub fn spawn(
    gw: Arc<Gateway>,
    keep: Duration,
    dir: PathBuf,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = gw.now();
            let before = stamp(now - keep);
            match prune(gw.store(), &gw.secrets(), &before, &dir, &stamp(now)).await {
                Ok(done) => {
                    for p in done {
                        tracing::info!(chain = %p.chain, records = p.records, upto = p.upto, archive = %p.archive.display(), "audit records archived and pruned");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit retention could not prune; will retry")
                }
            }
        }
    })
}
