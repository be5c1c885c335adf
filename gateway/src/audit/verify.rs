//! `tollgate audit verify`: recomputes every chain from its start (or its
//! signed anchor after a prune), checks every checkpoint's signature and
//! that the record it covers is still there with the same hash, the same
//! for checkpoints exported to a file, and archives against their seals.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::chain::{self, Walker};
use super::prune::ArchiveHeader;
use super::seal::{self, SealError};
use crate::secrets::Secrets;
use crate::store::{AuditRow, CheckpointRow, Store, StoreError};

/// Records read per round trip.
const CHUNK: u32 = 20_000;

/// One thing found wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// Chain.
    pub chain: String,
    /// Stable code: `altered`, `removed`, `unlinked`, `truncated`,
    /// `checkpoint_invalid`, `checkpoint_mismatch`, `anchor_invalid`,
    /// `archive_invalid`.
    pub code: &'static str,
    /// The first record concerned, if one.
    pub seq: Option<i64>,
    /// What it means.
    pub message: String,
}

/// Per chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainSummary {
    /// Chain.
    pub chain: String,
    /// Verification started after this seq (a prune anchor; 0 otherwise).
    pub from: i64,
    /// Last record checked.
    pub last: i64,
    /// Records checked.
    pub records: u64,
    /// Checkpoints checked (stored and exported).
    pub checkpoints: u64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when nothing is wrong.
    pub ok: bool,
    /// Per chain.
    pub chains: Vec<ChainSummary>,
    /// Everything wrong, first finding per chain first.
    pub problems: Vec<Problem>,
    /// Records captured but not yet folded into a chain (not covered).
    pub pending: i64,
}

fn problem(chain: &str, code: &'static str, seq: Option<i64>, message: String) -> Problem {
    Problem {
        chain: chain.to_string(),
        code,
        seq,
        message,
    }
}

fn seal_problem(chain: &str, what: &str, seq: i64, e: &SealError) -> Problem {
    let hint = match e {
        SealError::UnknownKey(_) => {
            " (forged, or signed by a key rotated out: keep old keys with `keys rotate --keep`)"
        }
        _ => "",
    };
    problem(
        chain,
        if what == "anchor" {
            "anchor_invalid"
        } else {
            "checkpoint_invalid"
        },
        Some(seq),
        format!("the {what} at record {seq} is {e}{hint}"),
    )
}

/// Verifies everything in `store`, plus checkpoints exported to
/// `exported` if given.
pub async fn verify(
    store: &Arc<dyn Store>,
    secrets: &Secrets,
    exported: Option<&Path>,
) -> Result<Report, VerifyError> {
    let mut problems = Vec::new();
    let mut chains: Vec<String> = store.audit_chains().await?;
    let mut outside: BTreeMap<String, Vec<CheckpointRow>> = BTreeMap::new();
    if let Some(path) = exported {
        for c in seal::read_exported(path).map_err(|e| VerifyError::Read(e.to_string()))? {
            if !chains.contains(&c.chain) {
                chains.push(c.chain.clone());
            }
            outside.entry(c.chain.clone()).or_default().push(c);
        }
    }
    let mut summaries = Vec::new();
    for name in &chains {
        let mut checks: Vec<CheckpointRow> = store.checkpoints(name).await?;
        checks.extend(outside.remove(name).unwrap_or_default());
        let (summary, mut found) = verify_chain(store, secrets, name, &checks).await?;
        summaries.push(summary);
        problems.append(&mut found);
    }
    Ok(Report {
        ok: problems.is_empty(),
        chains: summaries,
        problems,
        pending: store.audit_pending_count().await?,
    })
}

async fn verify_chain(
    store: &Arc<dyn Store>,
    secrets: &Secrets,
    name: &str,
    checks: &[CheckpointRow],
) -> Result<(ChainSummary, Vec<Problem>), VerifyError> {
    let mut problems = Vec::new();
    let mut walker = Walker::after(0, chain::GENESIS.to_vec());
    if let Some(anchor) = store.anchor(name).await? {
        if let Err(e) = seal::check_anchor(secrets, &anchor) {
            problems.push(seal_problem(name, "anchor", anchor.seq, &e));
        }
        walker = Walker::after(anchor.seq, anchor.hash.clone());
    }
    let from = walker.seq;
    // Expected hash per checkpointed seq, signatures checked first.
    let mut expect: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut checkpoints = 0;
    for c in checks.iter().filter(|c| c.seq > from) {
        checkpoints += 1;
        match seal::check_checkpoint(secrets, c) {
            Err(e) => problems.push(seal_problem(name, "checkpoint", c.seq, &e)),
            Ok(()) => {
                if let Some(other) = expect.insert(c.seq, c.hash.clone())
                    && other != c.hash
                {
                    problems.push(problem(
                        name,
                        "checkpoint_mismatch",
                        Some(c.seq),
                        format!(
                            "two validly signed checkpoints disagree about record {}",
                            c.seq
                        ),
                    ));
                }
            }
        }
    }
    let mut broken = false;
    // Read the next chunk while hashing this one: hashing and reading each
    // take about half the time.
    let mut next = tokio::spawn(fetch(store.clone(), name.to_string(), walker.seq));
    loop {
        let rows = Arc::new(next.await.map_err(|e| VerifyError::Read(e.to_string()))??);
        if rows.is_empty() {
            break;
        }
        let after = rows.last().map_or(walker.seq, |r| r.seq);
        next = tokio::spawn(fetch(store.clone(), name.to_string(), after));
        let hashes = hash_all(rows.clone()).await?;
        for (row, h) in rows.iter().zip(hashes.iter()) {
            if let Err(b) = walker.check(row, h) {
                problems.push(problem(name, b.code(), Some(b.seq()), b.to_string()));
                broken = true;
                break;
            }
            if let Some(want) = expect.get(&row.seq)
                && *want != row.hash
            {
                problems.push(problem(
                    name,
                    "checkpoint_mismatch",
                    Some(row.seq),
                    format!(
                        "record {} is not the record a signed checkpoint covers: the trail was rewritten from there on",
                        row.seq
                    ),
                ));
                broken = true;
                break;
            }
        }
        if broken {
            next.abort();
            break;
        }
    }
    if !broken && let Some((&seq, _)) = expect.range(walker.seq + 1..).next_back() {
        problems.push(problem(
            name,
            "truncated",
            Some(walker.seq + 1),
            format!(
                "the trail ends at record {} but a signed checkpoint covers record {seq}: records {}..{seq} were removed from the end",
                walker.seq,
                walker.seq + 1
            ),
        ));
    }
    Ok((
        ChainSummary {
            chain: name.to_string(),
            from,
            last: walker.seq,
            records: walker.checked,
            checkpoints,
        },
        problems,
    ))
}

async fn fetch(
    store: Arc<dyn Store>,
    chain: String,
    after: i64,
) -> Result<Vec<AuditRow>, VerifyError> {
    Ok(store.audit_range(&chain, after, CHUNK).await?)
}

/// Hashes on the blocking pool, split across the machine's cores.
async fn hash_all(rows: Arc<Vec<AuditRow>>) -> Result<Vec<[u8; 32]>, VerifyError> {
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get());
    let size = rows.len().div_ceil(parts).max(1);
    let mut tasks = Vec::new();
    for start in (0..rows.len()).step_by(size) {
        let rows = rows.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let end = (start + size).min(rows.len());
            rows[start..end].iter().map(chain::hash).collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::with_capacity(rows.len());
    for t in tasks {
        out.extend(t.await.map_err(|e| VerifyError::Read(e.to_string()))?);
    }
    Ok(out)
}

/// Verifies an archive written by a prune: its records chain from its
/// header's start to its end, and its signed seal vouches for that end.
pub fn verify_archive(secrets: &Secrets, path: &Path) -> Result<Report, VerifyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| VerifyError::Read(format!("{}: {e}", path.display())))?;
    let mut lines = text.lines();
    let header: ArchiveHeader = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            VerifyError::Read(format!(
                "{}:1: not a Tollgate audit archive (no header line)",
                path.display()
            ))
        })?;
    let name = header.chain.clone();
    let mut problems = Vec::new();
    match seal::open(secrets, &header.seal) {
        Err(e) => problems.push(problem(
            &name,
            "archive_invalid",
            Some(header.upto),
            format!("the archive's seal {e}"),
        )),
        Ok(s) => {
            if s.chain != name || s.seq != header.upto || s.hash != header.upto_hash {
                problems.push(problem(
                    &name,
                    "archive_invalid",
                    Some(header.upto),
                    "the archive's header does not match its signed seal".into(),
                ));
            }
        }
    }
    let mut walker = Walker::after(
        header.after,
        hex::decode(&header.after_hash).unwrap_or_default(),
    );
    for (n, line) in lines.enumerate() {
        let row: AuditRow = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                problems.push(problem(
                    &name,
                    "archive_invalid",
                    None,
                    format!("{}:{}: not a record: {e}", path.display(), n + 2),
                ));
                break;
            }
        };
        if let Err(b) = walker.next(&row) {
            problems.push(problem(&name, b.code(), Some(b.seq()), b.to_string()));
            break;
        }
    }
    if problems.is_empty()
        && (walker.seq != header.upto || hex::encode(&walker.hash) != header.upto_hash)
    {
        problems.push(problem(
            &name,
            "truncated",
            Some(walker.seq + 1),
            format!(
                "the archive ends at record {} but its seal covers record {}",
                walker.seq, header.upto
            ),
        ));
    }
    Ok(Report {
        ok: problems.is_empty(),
        chains: vec![ChainSummary {
            chain: name,
            from: header.after,
            last: walker.seq,
            records: walker.checked,
            checkpoints: 1,
        }],
        problems,
        pending: 0,
    })
}

/// Verification could not run (distinct from "ran and found a problem").
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read.
    #[error("{0}")]
    Read(String),
}
