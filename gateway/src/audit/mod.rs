//! The audit trail: what each agent accessed, why, who approved it, and
//! proof that nobody altered the record afterwards.
//!
//! Owns: the record kinds ([`kind`]), the in-process writer that chains
//! and group-commits records ([`Audit`]), folding trigger-captured records
//! into the chain ([`Audit::fold`]), start-up recovery of calls a crashed
//! process left open ([`Audit::recover`]), signed checkpoints and anchors
//! ([`seal`]), verification ([`verify`]), pruning with archives
//! ([`prune`]), and the readers (`export`, `report`).
//!
//! Contract: [`Audit::append_durable`] returns `Ok` only after the record
//! is committed and synced to disk, within the configured timeout; any
//! failure or timeout is an `Err` the caller must treat as "not recorded".
//! [`Audit::append`] queues without waiting (outcomes, which follow a
//! durable pre-record). Records are chained in the order the writer
//! commits them; one chain per writer (`chain`), so replicas sharing a
//! store each keep their own and `verify` checks each.

pub mod chain;
pub mod export;
pub mod prune;
pub mod report;
pub mod seal;
pub mod verify;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::store::{CallOutcome, DecisionRecord, OpenCall, OutcomeUpdate, PendingRecord, Store};

/// Record kinds written by the gateway itself (the rest come from
/// triggers: `task.started`, `credential.revoked`, `approval.vote`, ...).
pub mod kind {
    /// A tools/call decision (`allow` or `deny`), body = the decision.
    pub const CALL: &str = "call";
    /// How an allowed call ended; `ref` names the call.
    pub const OUTCOME: &str = "call.outcome";
    /// A credential that did not authenticate.
    pub const AUTH_FAILURE: &str = "auth.failure";
}

/// The chain a single gateway appends to. Replicas sharing a store each
/// need their own (`--audit-chain`).
pub const DEFAULT_CHAIN: &str = "main";

/// How long a durable append may take before the call is refused.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Records the queue holds before new ones are refused (a stuck store must
/// not grow memory without bound).
const QUEUE: usize = 65_536;

/// Authentication failures recorded per second at most (burst: 10x): a
/// flood of bad credentials cannot fill the disk. Suppressed ones are
/// counted into the next recorded one.
const AUTH_FAILURES_PER_SEC: u32 = 5;

/// A record on its way into the chain.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Record id (UUID v7).
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    /// Kind.
    pub kind: String,
    /// Agent.
    pub agent_id: Option<String>,
    /// Task.
    pub task_id: Option<String>,
    /// Tool.
    pub tool: Option<String>,
    /// Decision of a call.
    pub decision: Option<String>,
    /// Reason code.
    pub reason_code: Option<String>,
    /// Outcome of a call.
    pub outcome: Option<String>,
    /// Record it completes.
    pub ref_id: Option<String>,
    /// Content (JSON text).
    pub body: String,
    /// An allowed call: tracked until its outcome arrives.
    pub opens: bool,
    /// The pending record this folds in.
    pub pending_seq: Option<i64>,
}

impl Entry {
    fn new(kind: &str, at: &str, body: Value) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            at: at.to_string(),
            kind: kind.to_string(),
            agent_id: None,
            task_id: None,
            tool: None,
            decision: None,
            reason_code: None,
            outcome: None,
            ref_id: None,
            body: body.to_string(),
            opens: false,
            pending_seq: None,
        }
    }

    /// A call's decision record.
    pub fn call(r: &DecisionRecord) -> Self {
        Self {
            id: r.id.clone(),
            at: r.at.clone(),
            kind: kind::CALL.into(),
            agent_id: Some(r.agent_id.clone()),
            task_id: r.task_id.clone(),
            tool: Some(r.tool.clone()),
            decision: Some(r.decision.clone()),
            reason_code: Some(r.reason_code.clone()),
            outcome: r.outcome.clone(),
            ref_id: None,
            body: serde_json::to_string(r).unwrap_or_default(),
            opens: r.decision == "allow" && r.outcome.is_none(),
            pending_seq: None,
        }
    }

    /// The outcome of call `call`, linked to it by `ref`.
    pub fn outcome(call: &OpenCall, at: &str, o: &OutcomeUpdate) -> Self {
        let mut e = Self::new(
            kind::OUTCOME,
            at,
            json!({
                "outcome": o.outcome.as_str(),
                "outcome_code": o.outcome_code,
                "backend_status": o.backend_status,
                "latency_us": o.latency_us,
            }),
        );
        e.agent_id = Some(call.agent_id.clone());
        e.task_id = call.task_id.clone();
        e.tool = Some(call.tool.clone());
        e.outcome = Some(o.outcome.as_str().into());
        e.reason_code = o.outcome_code.map(str::to_string);
        e.ref_id = Some(call.id.clone());
        e
    }

    /// A record captured by a trigger.
    pub fn pending(p: &PendingRecord) -> Self {
        let body: Value = serde_json::from_str(&p.body).unwrap_or(Value::Null);
        let mut e = Self::new(&p.kind, &p.at, body);
        e.agent_id = p.agent_id.clone();
        e.task_id = p.task_id.clone();
        e.pending_seq = Some(p.seq);
        e
    }
}

/// Why a record could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store refused or failed the write.
    #[error("the audit store failed: {0}")]
    Store(String),
    /// The write did not finish in time.
    #[error("the audit store did not answer within {0:?}")]
    Timeout(Duration),
    /// The writer's queue is full (the store is not keeping up).
    #[error("the audit queue is full")]
    Full,
}

/// The handle through which the process appends to its chain.
pub struct Audit {
    tx: mpsc::Sender<writer::Msg>,
    /// The writer starts on first use, inside whatever runtime uses it.
    start: Mutex<Option<(mpsc::Receiver<writer::Msg>, writer::Flusher)>>,
    store: Arc<dyn Store>,
    chain: String,
    timeout_ms: AtomicU64,
    auth_limiter: governor::DefaultDirectRateLimiter,
    auth_suppressed: AtomicU64,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("chain", &self.chain).finish()
    }
}

impl Audit {
    /// A writer for `chain` on `store`; `observe` gets each commit's time.
    pub fn new(
        store: Arc<dyn Store>,
        chain: &str,
        observe: Arc<dyn Fn(Duration) + Send + Sync>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let flusher = writer::Flusher {
            store: store.clone(),
            chain: chain.to_string(),
            observe,
        };
        let per_sec =
            std::num::NonZeroU32::new(AUTH_FAILURES_PER_SEC).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::per_second(per_sec)
            .allow_burst(per_sec.saturating_mul(
                std::num::NonZeroU32::new(10).unwrap_or(std::num::NonZeroU32::MIN),
            ));
        Self {
            tx,
            start: Mutex::new(Some((rx, flusher))),
            store,
            chain: chain.to_string(),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
            auth_limiter: governor::RateLimiter::direct(quota),
            auth_suppressed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// The chain this writer appends to.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Sets how long a durable append may take.
    pub fn set_timeout(&self, t: Duration) {
        self.timeout_ms
            .store(t.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// How long a durable append may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    fn ensure_started(&self) {
        let mut start = match self.start.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if let Some((rx, flusher)) = start.take() {
            tokio::spawn(flusher.run(rx));
        }
    }

    fn send(&self, msg: writer::Msg) -> Result<(), AuditError> {
        self.ensure_started();
        self.tx.try_send(msg).map_err(|_| AuditError::Full)
    }

    /// Appends `entry` and waits until it is committed and synced, within
    /// the timeout.
    pub async fn append_durable(&self, entry: Entry) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.send(writer::Msg::Append(writer::Job {
            entry: Box::new(entry),
            durable: true,
            done: Some(done),
        }))?;
        let timeout = self.timeout();
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(AuditError::Store(e)),
            Ok(Err(_)) => Err(AuditError::Store("the audit writer stopped".into())),
            Err(_) => Err(AuditError::Timeout(timeout)),
        }
    }

    /// Queues `entry` without waiting. A full queue drops it (counted and
    /// logged): this is for records whose loss recovery makes visible (an
    /// outcome left open reads `interrupted`).
    pub fn append(&self, entry: Entry) {
        if self
            .send(writer::Msg::Append(writer::Job {
                entry: Box::new(entry),
                durable: false,
                done: None,
            }))
            .is_err()
        {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(dropped = n, "audit queue full: a record was dropped");
        }
    }

    /// Queues `entry`, waiting (at most the audit timeout) for room when
    /// the queue is full: backpressure instead of a silent drop while the
    /// store catches up; a store that stays stuck still cannot hold the
    /// caller forever (the record is then dropped, counted and logged).
    pub async fn append_wait(&self, entry: Entry) {
        self.ensure_started();
        let msg = writer::Msg::Append(writer::Job {
            entry: Box::new(entry),
            durable: false,
            done: None,
        });
        let msg = match self.tx.try_send(msg) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(m)) => m,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the audit writer stopped: a record was dropped");
                return;
            }
        };
        if self.tx.send_timeout(msg, self.timeout()).await.is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(
                dropped = n,
                "audit queue full for too long: a record was dropped"
            );
        }
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(writer::Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Records an authentication failure, at most a few per second: the
    /// ones suppressed in between are counted in the next one recorded.
    pub fn auth_failure(&self, at: &str, reason: &str, presented: Value, remote: Option<String>) {
        if self.auth_limiter.check().is_err() {
            self.auth_suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.auth_suppressed.swap(0, Ordering::Relaxed);
        let mut e = Entry::new(
            kind::AUTH_FAILURE,
            at,
            json!({
                "reason": reason,
                "presented": presented,
                "remote": remote,
                "suppressed_before": suppressed,
            }),
        );
        e.reason_code = Some(reason.to_string());
        if let Some(agent) = presented.get("agent").and_then(Value::as_str) {
            e.agent_id = Some(agent.to_string());
        }
        self.append(e);
    }

    /// Folds records captured by triggers into this chain, oldest first;
    /// returns how many were folded.
    pub async fn fold(&self) -> Result<usize, AuditError> {
        let mut total = 0;
        loop {
            let pending = self
                .store
                .audit_pending(1000)
                .await
                .map_err(|e| AuditError::Store(e.to_string()))?;
            if pending.is_empty() {
                return Ok(total);
            }
            let n = pending.len();
            self.append_all(pending.iter().map(Entry::pending), false)
                .await?;
            total += n;
            if n < 1000 {
                return Ok(total);
            }
        }
    }

    /// Closes every call a stopped process left without an outcome as
    /// `interrupted` (whether the backend acted is unknown). Only safe
    /// when no other process serves calls on this store.
    pub async fn recover(&self, at: &str) -> Result<usize, AuditError> {
        self.close_open_calls(at, "outcome_unknown").await
    }

    /// Closes every call still without an outcome as `interrupted`, with
    /// reason `code` (`outcome_unknown` after a crash, `gateway_shutdown`
    /// when a graceful stop's grace period ran out). Same caveat as
    /// [`Audit::recover`].
    pub async fn close_open_calls(
        &self,
        at: &str,
        code: &'static str,
    ) -> Result<usize, AuditError> {
        let open = self
            .store
            .open_calls()
            .await
            .map_err(|e| AuditError::Store(e.to_string()))?;
        let update = OutcomeUpdate {
            outcome: CallOutcome::Interrupted,
            outcome_code: Some(code),
            backend_status: None,
            latency_us: 0,
        };
        self.append_all(open.iter().map(|c| Entry::outcome(c, at, &update)), true)
            .await?;
        Ok(open.len())
    }

    /// Appends `entries` and waits (without the call-path timeout: these
    /// are maintenance jobs) until every one is committed.
    async fn append_all(
        &self,
        entries: impl Iterator<Item = Entry>,
        durable: bool,
    ) -> Result<(), AuditError> {
        let mut waits = Vec::new();
        for entry in entries {
            let (done, wait) = oneshot::channel();
            self.send(writer::Msg::Append(writer::Job {
                entry: Box::new(entry),
                durable,
                done: Some(done),
            }))?;
            waits.push(wait);
        }
        for w in waits {
            match w.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(AuditError::Store(e)),
                Err(_) => return Err(AuditError::Store("the audit writer stopped".into())),
            }
        }
        Ok(())
    }

    /// The store the trail lives in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
