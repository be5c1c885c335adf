//! Revocation always wins: the bound between a committed suspension,
//! retirement, key revocation or task end and the last dispatch it can
//! miss.
//!
//! **The guarantee.** Once such a change has committed (from the CLI, the
//! admin API, the sweeper or any other process serving the same data
//! directory), no dispatch to a backend starts later than
//! [`REVOCATION_BOUND`] (100 ms) after that commit.
//!
//! **How it is met without a store round trip per call.** The store keeps a
//! revocation feed written by triggers in the same transaction as the change
//! (`migrations/sqlite/0006_revocation_feed.sql`). A [`Watcher`] polls the
//! feed every [`POLL_INTERVAL`] and keeps the recent entries in memory. Each
//! call takes a [`Fence`] (the feed position already applied) *before* the
//! state it is judged on is read from the store. Right before its
//! credential is issued and again right before dispatch, [`Watcher::confirm`]
//! asks: has anything that concerns this agent, key or task been committed
//! after the fence?
//!
//! - If the watcher polled successfully within [`MAX_STALENESS`] and no
//!   applied entry after the fence concerns the call, the call goes on: any
//!   commit older than the start of that poll is among the applied entries.
//! - If an entry concerns it, the state is read again from the store and
//!   judged afresh (a resume after a suspension is not a refusal).
//! - If the watcher is stale (a stuck store, a starved task), the state is
//!   read from the store directly; a failed read refuses the call.
//!
//! So a dispatch that starts more than `MAX_STALENESS` after a commit has
//! either seen the commit through the feed or read it from the store. The
//! check runs immediately before the connector is called, with nothing that
//! waits in between.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{RevocationEvent, RevocationKind, Store, StoreError};

/// The promise: no dispatch starts later than this after a revocation
/// committed.
pub const REVOCATION_BOUND: Duration = Duration::from_millis(100);

/// How often the feed is polled. Cheap (one indexed query that usually
/// returns nothing) and far inside the bound.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How old the last successful poll may be before calls stop trusting the
/// in-memory feed and read the store themselves. Half the bound, so the
/// check itself and a slow scheduler still fit.
pub const MAX_STALENESS: Duration = Duration::from_millis(50);

/// How long applied entries are kept in memory. A call whose fence is older
/// than the oldest kept entry re-reads the store (long waits only).
const KEEP: Duration = Duration::from_secs(600);

/// Most entries read per poll; more are read on the next one at once.
const BATCH: u32 = 1000;

/// The feed position a call's state was read at. Taken before the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence(i64);

/// What a call depends on.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The agent.
    pub agent_id: &'a str,
    /// The key it authenticated with (`key_…`), if a gateway key.
    pub key_id: Option<&'a str>,
    /// The task it runs in, if any.
    pub task_id: Option<&'a str>,
}

/// What [`Watcher::confirm`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing concerning the call was committed after its fence.
    Unchanged,
    /// Something was, or the feed could not vouch: judge the state again
    /// from the store.
    Reread,
}

#[derive(Debug)]
struct Applied {
    /// When each entry was applied, for pruning.
    entries: VecDeque<(Instant, RevocationEvent)>,
    /// Entries at or below this seq are no longer in memory.
    floor: i64,
}

/// Hook run for every applied entry (the broker drops cached credentials).
pub type Hook = Arc<dyn Fn(&RevocationEvent) + Send + Sync>;

/// The in-memory view of the revocation feed. One per process.
pub struct Watcher {
    applied_seq: AtomicI64,
    /// Nanoseconds since `base` at which the last successful poll started.
    fresh_at: AtomicU64,
    base: Instant,
    applied: RwLock<Applied>,
    poke: tokio::sync::Notify,
    hooks: RwLock<Vec<Hook>>,
    max_staleness: Duration,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("applied_seq", &self.applied_seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Watcher {
    fn default() -> Self {
        Self::new(MAX_STALENESS)
    }
}

impl Watcher {
    /// A watcher that has applied nothing yet: until its first poll every
    /// confirmation reads the store.
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            applied_seq: AtomicI64::new(0),
            fresh_at: AtomicU64::new(0),
            base: Instant::now(),
            applied: RwLock::new(Applied {
                entries: VecDeque::new(),
                floor: 0,
            }),
            poke: tokio::sync::Notify::new(),
            hooks: RwLock::new(Vec::new()),
            max_staleness,
        }
    }

    /// Starts from the feed's current end: what was committed before this
    /// process started is already in the store state calls will read.
    pub async fn start_at_end(&self, store: &dyn Store) -> Result<(), StoreError> {
        let started = Instant::now();
        let seq = store.latest_revocation().await?;
        let mut applied = self.applied.write().unwrap_or_else(|p| p.into_inner());
        applied.floor = seq;
        self.applied_seq.store(seq, Ordering::SeqCst);
        self.mark_fresh(started);
        Ok(())
    }

    /// Registers a hook run for every entry applied from now on.
    pub fn on_revocation(&self, hook: Hook) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    /// The fence for a call about to read its state.
    pub fn fence(&self) -> Fence {
        Fence(self.applied_seq.load(Ordering::SeqCst))
    }

    /// Asks the poller to look now (after an in-process change).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    fn mark_fresh(&self, poll_started: Instant) {
        let nanos = u64::try_from(poll_started.duration_since(self.base).as_nanos()).unwrap_or(0);
        // Only forward: a slow poll that finishes after a faster one must
        // not make the view look fresher than it is.
        self.fresh_at.fetch_max(nanos.max(1), Ordering::SeqCst);
    }

    fn is_fresh(&self) -> bool {
        let at = self.fresh_at.load(Ordering::SeqCst);
        if at == 0 {
            return false;
        }
        let poll_started = self.base + Duration::from_nanos(at);
        poll_started.elapsed() <= self.max_staleness
    }

    /// Whether anything concerning `subject` was committed after `fence`,
    /// as far as the feed can tell; `Reread` when it cannot tell.
    pub fn confirm(&self, subject: Subject<'_>, fence: Fence) -> Verdict {
        if !self.is_fresh() {
            return Verdict::Reread;
        }
        let applied = self.applied.read().unwrap_or_else(|p| p.into_inner());
        if fence.0 < applied.floor {
            return Verdict::Reread;
        }
        let touched = applied
            .entries
            .iter()
            .rev()
            .take_while(|(_, e)| e.seq > fence.0)
            .any(|(_, e)| concerns(e, subject));
        if touched {
            Verdict::Reread
        } else {
            Verdict::Unchanged
        }
    }

    /// One poll: applies what is new. Returns how many entries it applied.
    pub async fn poll(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let started = Instant::now();
        let after = self.applied_seq.load(Ordering::SeqCst);
        let events = store.revocations_since(after, BATCH).await?;
        let n = events.len();
        if let Some(last) = events.last() {
            let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
            {
                let mut applied = self.applied.write().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                for e in &events {
                    applied.entries.push_back((now, e.clone()));
                }
                while let Some((at, e)) = applied.entries.front() {
                    if at.elapsed() <= KEEP {
                        break;
                    }
                    applied.floor = e.seq;
                    applied.entries.pop_front();
                }
                self.applied_seq.store(last.seq, Ordering::SeqCst);
            }
            for e in &events {
                tracing::info!(kind = ?e.kind, agent = %e.agent_id, "revocation applied");
                for hook in &hooks {
                    hook(e);
                }
            }
        }
        // A full batch means there is more: the view is not fresh until the
        // rest is read.
        if n < BATCH as usize {
            self.mark_fresh(started);
        }
        Ok(n)
    }

    /// Polls until the process ends (spawned by the app).
    pub fn spawn(self: Arc<Self>, store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match self.poll(store.as_ref()).await {
                    Ok(n) if n >= BATCH as usize => continue,
                    Ok(_) => {
                        if failing {
                            tracing::info!("revocation feed readable again");
                            failing = false;
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::error!(error = %e, "cannot read the revocation feed; calls re-read the store until it recovers");
                            failing = true;
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    _ = self.poke.notified() => {}
                }
            }
        })
    }
}

fn concerns(e: &RevocationEvent, s: Subject<'_>) -> bool {
    if e.agent_id != s.agent_id {
        return false;
    }
    match e.kind {
        Some(RevocationKind::AgentStatus) | None => true,
        Some(RevocationKind::KeyRevoked) => s.key_id == Some(e.subject.as_str()),
        Some(RevocationKind::TaskEnded) => s.task_id == Some(e.subject.as_str()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(seq: i64, kind: RevocationKind, agent: &str, subject: &str) -> RevocationEvent {
        RevocationEvent {
            seq,
            kind: Some(kind),
            agent_id: agent.into(),
            subject: subject.into(),
        }
    }

    fn fresh_watcher(events: Vec<RevocationEvent>) -> Watcher {
        let w = Watcher::new(Duration::from_secs(3600));
        {
            let mut a = w.applied.write().unwrap();
            let now = Instant::now();
            for e in events {
                w.applied_seq.store(e.seq, Ordering::SeqCst);
                a.entries.push_back((now, e));
            }
        }
        w.mark_fresh(Instant::now());
        w
    }

    const SUBJECT: Subject<'static> = Subject {
        agent_id: "a",
        key_id: Some("key_1"),
        task_id: Some("task_1"),
    };

    #[test]
    fn an_unpolled_watcher_always_rereads() {
        let w = Watcher::default();
        assert_eq!(w.confirm(SUBJECT, w.fence()), Verdict::Reread);
    }

    #[test]
    fn only_entries_after_the_fence_that_concern_the_call_count() {
        let w = fresh_watcher(vec![
            event(1, RevocationKind::AgentStatus, "a", "suspended"),
            event(2, RevocationKind::KeyRevoked, "a", "key_other"),
            event(3, RevocationKind::TaskEnded, "a", "task_other"),
            event(4, RevocationKind::AgentStatus, "b", "retired"),
        ]);
        // Fence after the suspension: the rest concerns other keys, tasks
        // and agents.
        assert_eq!(w.confirm(SUBJECT, Fence(1)), Verdict::Unchanged);
        // Fence before it: the suspension concerns the call.
        assert_eq!(w.confirm(SUBJECT, Fence(0)), Verdict::Reread);
    }

    #[test]
    fn its_key_and_its_task_concern_the_call() {
        let w = fresh_watcher(vec![event(5, RevocationKind::KeyRevoked, "a", "key_1")]);
        assert_eq!(w.confirm(SUBJECT, Fence(4)), Verdict::Reread);
        let w = fresh_watcher(vec![event(5, RevocationKind::TaskEnded, "a", "task_1")]);
        assert_eq!(w.confirm(SUBJECT, Fence(4)), Verdict::Reread);
    }

    #[test]
    fn a_stale_watcher_rereads() {
        // No staleness allowed: a poll that started any time ago is stale.
        let w = Watcher::new(Duration::ZERO);
        w.mark_fresh(Instant::now());
        assert_eq!(w.confirm(SUBJECT, w.fence()), Verdict::Reread);
    }

    #[test]
    fn a_fence_below_the_kept_window_rereads() {
        let w = fresh_watcher(vec![]);
        w.applied.write().unwrap().floor = 10;
        assert_eq!(w.confirm(SUBJECT, Fence(3)), Verdict::Reread);
        assert_eq!(w.confirm(SUBJECT, Fence(10)), Verdict::Unchanged);
    }
}
