//! Group commit: one task per process appends everything queued since its
//! last commit in one transaction, so many concurrent calls share one
//! sync. A waiter is answered only after the transaction that holds its
//! record committed (with an fsync when any record of the batch asked for
//! durability), never before. The store links the rows after the chain's
//! tail inside that transaction, so this writer keeps no tail of its own
//! and a second writer on the same chain (a CLI folding records, another
//! replica misconfigured onto this chain) serialises with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Entry, chain};
use crate::store::{AuditBatch, AuditRow, OpenCall, Store, StoreError};

/// Most records in one commit.
const MAX_BATCH: usize = 4096;

/// Attempts at one batch when other writers keep moving the chain.
const ATTEMPTS: u32 = 4;

/// Where a waiter hears whether its record committed.
pub(super) type Done = oneshot::Sender<Result<(), String>>;

pub(super) enum Msg {
    Append(Job),
    Flush(oneshot::Sender<()>),
}

/// One record to append, and who waits for it.
pub(super) struct Job {
    pub entry: Box<Entry>,
    /// The commit that holds it must be synced before `done` hears.
    pub durable: bool,
    pub done: Option<Done>,
}

pub(super) struct Flusher {
    pub store: Arc<dyn Store>,
    pub chain: String,
    pub observe: Arc<dyn Fn(Duration) + Send + Sync>,
}

/// Per row of a batch: who waits, and the pending record it folds in.
struct Waiter {
    done: Option<Done>,
    pending_seq: Option<i64>,
}

impl Flusher {
    pub async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let mut msgs = Vec::with_capacity(64);
        loop {
            msgs.clear();
            if rx.recv_many(&mut msgs, MAX_BATCH).await == 0 {
                return; // every sender is gone: the gateway was dropped
            }
            let mut jobs = Vec::with_capacity(msgs.len());
            let mut flushes = Vec::new();
            for m in msgs.drain(..) {
                match m {
                    Msg::Append(job) => jobs.push(job),
                    Msg::Flush(tx) => flushes.push(tx),
                }
            }
            if !jobs.is_empty() {
                self.commit(jobs).await;
            }
            for f in flushes {
                let _ = f.send(());
            }
        }
    }

    async fn commit(&self, jobs: Vec<Job>) {
        let started = Instant::now();
        let (batch, mut waiters) = self.batch(jobs);
        // Shared with the store's thread during each attempt; changed in
        // place between attempts (no copy: the store dropped its handle).
        let mut batch = Arc::new(batch);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.store.audit_append(batch.clone(), chain::LINKER).await {
                Ok(_) => break Ok(()),
                Err(StoreError::AuditRace { chain_moved }) if attempt < ATTEMPTS => {
                    // Another writer folded pending records of this batch
                    // first (or, in a store that links optimistically,
                    // appended first): drop what it folded and try again
                    // (the next fold re-reads what is still pending).
                    tracing::debug!(chain_moved, "audit batch raced another writer; retrying");
                    if !chain_moved {
                        drop_folded(Arc::make_mut(&mut batch), &mut waiters);
                        if batch.rows.is_empty() {
                            break Ok(());
                        }
                    }
                }
                Err(e) => break Err(e),
            }
        };
        (self.observe)(started.elapsed());
        let answer = result.map_err(|e| e.to_string());
        if let Err(e) = &answer {
            tracing::error!(error = %e, records = waiters.len(), "cannot append to the audit trail");
        }
        for w in waiters {
            if let Some(done) = w.done {
                let _ = done.send(answer.clone());
            }
        }
    }

    /// The rows of a batch (moved out of the entries; the store links
    /// them) with the open-call bookkeeping, and who waits for each.
    fn batch(&self, jobs: Vec<Job>) -> (AuditBatch, Vec<Waiter>) {
        let mut batch = AuditBatch {
            chain: self.chain.clone(),
            rows: Vec::with_capacity(jobs.len()),
            ..AuditBatch::default()
        };
        let mut waiters = Vec::with_capacity(jobs.len());
        for j in jobs {
            let e = *j.entry;
            if e.opens {
                batch.opened.push(OpenCall {
                    id: e.id.clone(),
                    agent_id: e.agent_id.clone().unwrap_or_default(),
                    task_id: e.task_id.clone(),
                    tool: e.tool.clone().unwrap_or_default(),
                });
            }
            if e.kind == super::kind::OUTCOME
                && let Some(r) = &e.ref_id
            {
                batch.closed.push(r.clone());
            }
            if let Some(p) = e.pending_seq {
                batch.folded.push(p);
            }
            batch.durable |= j.durable;
            waiters.push(Waiter {
                done: j.done,
                pending_seq: e.pending_seq,
            });
            batch.rows.push(AuditRow {
                chain: self.chain.clone(),
                seq: 0,
                id: e.id,
                at: e.at,
                kind: e.kind,
                agent_id: e.agent_id,
                task_id: e.task_id,
                tool: e.tool,
                decision: e.decision,
                reason_code: e.reason_code,
                outcome: e.outcome,
                ref_id: e.ref_id,
                body: e.body,
                prev: Vec::new(),
                hash: Vec::new(),
            });
        }
        (batch, waiters)
    }
}

/// Takes the folded pending records out of `batch` (another writer folded
/// them first); their waiters hear `Ok`, the record is in the trail.
fn drop_folded(batch: &mut AuditBatch, waiters: &mut Vec<Waiter>) {
    let mut keep = waiters.iter().map(|w| w.pending_seq.is_none());
    batch.rows.retain(|_| keep.next().unwrap_or(true));
    waiters.retain_mut(|w| {
        if w.pending_seq.is_none() {
            return true;
        }
        if let Some(done) = w.done.take() {
            let _ = done.send(Ok(()));
        }
        false
    });
    batch.folded.clear();
}
