//! Group commit: one task per process appends everything queued since its
//! last commit in one transaction, so many concurrent calls share one
//! sync. A waiter is answered only after the transaction that holds its
//! record committed (with an fsync when any record of the batch asked for
//! durability), never before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Entry, chain};
use crate::store::{AuditBatch, AuditRow, ChainTail, OpenCall, Store, StoreError};

/// Most records in one commit.
const MAX_BATCH: usize = 4096;

pub(super) enum Msg {
    Append {
        entry: Box<Entry>,
        durable: bool,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
    Flush(oneshot::Sender<()>),
}

pub(super) struct Flusher {
    pub store: Arc<dyn Store>,
    pub chain: String,
    pub observe: Arc<dyn Fn(Duration) + Send + Sync>,
}

struct Job {
    entry: Box<Entry>,
    durable: bool,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

impl Flusher {
    pub async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let mut tail: Option<ChainTail> = None;
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
                    Msg::Append {
                        entry,
                        durable,
                        done,
                    } => jobs.push(Job {
                        entry,
                        durable,
                        done,
                    }),
                    Msg::Flush(tx) => flushes.push(tx),
                }
            }
            if !jobs.is_empty() {
                self.commit(&mut tail, jobs).await;
            }
            for f in flushes {
                let _ = f.send(());
            }
        }
    }

    async fn commit(&self, tail: &mut Option<ChainTail>, mut jobs: Vec<Job>) {
        let started = Instant::now();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let start = match tail.clone() {
                Some(t) => t,
                None => match self.store.audit_tail(&self.chain).await {
                    Ok(t) => t.unwrap_or(ChainTail {
                        seq: 0,
                        hash: chain::GENESIS.to_vec(),
                    }),
                    Err(e) => break Err(e),
                },
            };
            let (batch, end) = self.chain_batch(&start, &jobs);
            match self.store.audit_append(&batch).await {
                Ok(()) => {
                    *tail = Some(end);
                    break Ok(());
                }
                Err(StoreError::Conflict(why)) if attempt < 4 => {
                    // Another writer appended to this chain, or folded
                    // pending records first: re-read the tail; pending
                    // records already folded elsewhere are dropped here
                    // (the next fold re-reads what is still pending).
                    tracing::debug!(%why, "audit chain moved under this writer; re-chaining");
                    *tail = None;
                    if why.contains("pending") {
                        jobs.retain_mut(|j| {
                            if j.entry.pending_seq.is_some() {
                                if let Some(done) = j.done.take() {
                                    let _ = done.send(Ok(()));
                                }
                                false
                            } else {
                                true
                            }
                        });
                        if jobs.is_empty() {
                            break Ok(());
                        }
                    }
                }
                Err(e) => {
                    *tail = None;
                    break Err(e);
                }
            }
        };
        (self.observe)(started.elapsed());
        let answer = result.map_err(|e| e.to_string());
        if let Err(e) = &answer {
            tracing::error!(error = %e, records = jobs.len(), "cannot append to the audit trail");
        }
        for j in jobs {
            if let Some(done) = j.done {
                let _ = done.send(answer.clone());
            }
        }
    }

    fn chain_batch(&self, start: &ChainTail, jobs: &[Job]) -> (AuditBatch, ChainTail) {
        let mut batch = AuditBatch {
            rows: Vec::with_capacity(jobs.len()),
            ..AuditBatch::default()
        };
        let mut seq = start.seq;
        let mut prev = start.hash.clone();
        for j in jobs {
            let e = &j.entry;
            seq += 1;
            let mut row = AuditRow {
                chain: self.chain.clone(),
                seq,
                id: e.id.clone(),
                at: e.at.clone(),
                kind: e.kind.clone(),
                agent_id: e.agent_id.clone(),
                task_id: e.task_id.clone(),
                tool: e.tool.clone(),
                decision: e.decision.clone(),
                reason_code: e.reason_code.clone(),
                outcome: e.outcome.clone(),
                ref_id: e.ref_id.clone(),
                body: e.body.clone(),
                prev,
                hash: Vec::new(),
            };
            row.hash = chain::hash(&row).to_vec();
            prev = row.hash.clone();
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
            batch.rows.push(row);
        }
        (batch, ChainTail { seq, hash: prev })
    }
}
