//! MCP sessions at the edge: which credential opened each one, how many each
//! credential has open, and when an idle one is closed.
//!
//! - A session is usable only by the credential that opened it (403
//!   `session_foreign` otherwise; 404 `session_unknown` once it is gone).
//! - A credential has at most `max_per_credential` sessions. A further
//!   `initialize` is refused with 429 `session_limit` rather than evicting
//!   the least recently used session: eviction would cut a session another
//!   process of the same agent is still using, silently, while a refusal
//!   tells the misbehaving client what to do (close sessions it no longer
//!   uses). Concurrent `initialize`s reserve their slot first, so they
//!   cannot overshoot the cap.
//! - A session with no request in progress for `idle_timeout` is closed: the
//!   rmcp session (its worker and buffers), the binding, and the task bound
//!   to it in band (`gw.bound_tasks`, key `http:<id>`). A session whose
//!   response is still being produced or streamed is never idle. rmcp
//!   sessions the edge never bound (the client vanished mid-`initialize`)
//!   are closed after the same idle time.
//!
//! Times are real (monotonic) time, like the connection timers: these are
//! transport limits, not governance decisions.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use tokio::time::Instant;

use crate::Gateway;

#[derive(Debug)]
pub(super) struct Sessions {
    gw: Arc<Gateway>,
    manager: Arc<LocalSessionManager>,
    max_per_credential: usize,
    idle_timeout: Duration,
    table: Mutex<Table>,
    reaper_started: AtomicBool,
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<String, Binding>,
    /// Sessions open or being opened, per credential.
    per_principal: HashMap<String, usize>,
    /// rmcp sessions with no binding, and since when they were seen so.
    orphans: HashMap<String, Instant>,
}

#[derive(Debug)]
struct Binding {
    principal: String,
    last_seen: Instant,
    in_flight: usize,
}

impl Table {
    fn release(&mut self, principal: &str) {
        if let Some(n) = self.per_principal.get_mut(principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_principal.remove(principal);
            }
        }
    }
}

/// A request in progress in a session: the session is not idle until it is
/// dropped (when the response has been sent in full).
#[derive(Debug)]
pub(super) struct InUse {
    sessions: Weak<Sessions>,
    id: String,
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Some(s) = self.sessions.upgrade() {
            let mut t = s.lock();
            if let Some(b) = t.by_id.get_mut(&self.id) {
                b.in_flight = b.in_flight.saturating_sub(1);
                b.last_seen = Instant::now();
            }
        }
    }
}

/// A slot held for an `initialize` in progress; released if no session
/// comes of it.
#[derive(Debug)]
pub(super) struct Reservation {
    sessions: Weak<Sessions>,
    principal: String,
    used: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.used
            && let Some(s) = self.sessions.upgrade()
        {
            s.lock().release(&self.principal);
        }
    }
}

impl Sessions {
    pub(super) fn new(
        gw: Arc<Gateway>,
        manager: Arc<LocalSessionManager>,
        max_per_credential: usize,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            gw,
            manager,
            max_per_credential: max_per_credential.max(1),
            idle_timeout,
            table: Mutex::default(),
            reaper_started: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request of `principal` in session `id`.
    pub(super) fn enter(
        self: &Arc<Self>,
        id: &str,
        principal: &str,
    ) -> Result<InUse, Box<Response>> {
        let mut t = self.lock();
        match t.by_id.get_mut(id) {
            Some(b) if b.principal == principal => {
                b.in_flight += 1;
                b.last_seen = Instant::now();
                Ok(InUse {
                    sessions: Arc::downgrade(self),
                    id: id.to_string(),
                })
            }
            Some(_) => Err(Box::new(super::refuse(
                StatusCode::FORBIDDEN,
                "session_foreign",
                "this session was opened by another credential",
            ))),
            None => Err(Box::new(super::refuse(
                StatusCode::NOT_FOUND,
                "session_unknown",
                "unknown or expired session; initialize a new one",
            ))),
        }
    }

    /// Holds a session slot for an `initialize` of `principal`, or refuses.
    pub(super) fn reserve(self: &Arc<Self>, principal: &str) -> Result<Reservation, Box<Response>> {
        let mut t = self.lock();
        let open = t.per_principal.entry(principal.to_string()).or_default();
        if *open >= self.max_per_credential {
            tracing::warn!(
                credential = principal,
                limit = self.max_per_credential,
                "session limit reached; initialize refused"
            );
            return Err(Box::new(super::refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "session_limit",
                &format!(
                    "this credential already has {} open MCP sessions, the limit; close sessions it no longer uses (HTTP DELETE with their Mcp-Session-Id) or wait until idle ones expire after {} s",
                    self.max_per_credential,
                    self.idle_timeout.as_secs()
                ),
            )));
        }
        *open += 1;
        Ok(Reservation {
            sessions: Arc::downgrade(self),
            principal: principal.to_string(),
            used: false,
        })
    }

    /// Binds the new session `id` to the credential that reserved it.
    pub(super) fn open(&self, mut reservation: Reservation, id: &str) {
        reservation.used = true;
        let mut t = self.lock();
        t.orphans.remove(id);
        t.by_id.insert(
            id.to_string(),
            Binding {
                principal: reservation.principal.clone(),
                last_seen: Instant::now(),
                in_flight: 0,
            },
        );
    }

    /// The client closed session `id` (rmcp has dropped it already).
    pub(super) fn forget(&self, id: &str) {
        let mut t = self.lock();
        if let Some(b) = t.by_id.remove(id) {
            t.release(&b.principal);
        }
        drop(t);
        self.unbind_task(id);
    }

    fn unbind_task(&self, id: &str) {
        self.gw
            .bound_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("http:{id}"));
    }

    /// Sessions bound right now.
    pub(super) fn bound(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Sessions rmcp holds right now.
    pub(super) async fn rmcp_sessions(&self) -> usize {
        self.manager.sessions.read().await.len()
    }

    /// Starts the task that closes idle sessions, once, from inside the
    /// runtime serving requests. It ends when the edge is dropped.
    pub(super) fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let every =
            (self.idle_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(sessions) = weak.upgrade() else {
                    return;
                };
                sessions.reap().await;
            }
        });
    }

    /// Closes every session idle for longer than the idle timeout.
    async fn reap(&self) {
        let now = Instant::now();
        let live: Vec<String> = self
            .manager
            .sessions
            .read()
            .await
            .keys()
            .map(|k| k.to_string())
            .collect();
        let mut due: Vec<String> = Vec::new();
        {
            let mut t = self.lock();
            let idle = self.idle_timeout;
            let expired: Vec<String> = t
                .by_id
                .iter()
                .filter(|(_, b)| b.in_flight == 0 && now.duration_since(b.last_seen) >= idle)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                if let Some(b) = t.by_id.remove(&id) {
                    t.release(&b.principal);
                }
                due.push(id);
            }
            // Sessions rmcp holds that nobody bound: an `initialize` whose
            // client went away before the edge saw the answer.
            let unbound: HashSet<String> = live
                .into_iter()
                .filter(|id| !t.by_id.contains_key(id))
                .collect();
            t.orphans.retain(|id, _| unbound.contains(id));
            for id in unbound {
                let since = *t.orphans.entry(id.clone()).or_insert(now);
                if now.duration_since(since) >= idle {
                    t.orphans.remove(&id);
                    due.push(id);
                }
            }
        }
        for id in due {
            tracing::info!(session = %id, "closing idle MCP session");
            if let Err(e) = self.manager.close_session(&id.as_str().into()).await {
                tracing::warn!(session = %id, error = %e, "cannot close an idle session");
            }
            self.unbind_task(&id);
        }
    }
}
