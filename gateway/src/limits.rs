//! Limits: how much an agent may call. Owns the declared limits in their
//! checked form ([`RateSpec`], [`BudgetSpec`]), the rate limiter behind a
//! small interface ([`RateLimiter`]; in-process GCRA by `governor` here, a
//! shared store can back it when several replicas run), and the count of a
//! task's calls in flight.
//!
//! Task budgets (calls, and sums over an argument) live in the store, which
//! checks and adds in one atomic step, so two concurrent calls cannot both
//! squeeze under a budget, a restart does not refill it, and replicas
//! sharing a store share it.
//!
//! Time comes from the gateway's clock, so tests move a clock instead of
//! sleeping.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use governor::clock::Clock as GovernorClock;
use governor::state::{InMemoryState, NotKeyed};

use crate::clock::Clock;
use crate::manifest::types::RateLimit;

/// A checked rate: `count` calls per `per`, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateSpec {
    /// Calls per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
    /// Calls allowed back to back.
    pub burst: u32,
}

/// New approval requests an agent may file unless its manifest says
/// otherwise: 30 an hour, at most 10 back to back.
pub const DEFAULT_APPROVAL_RATE: RateSpec = RateSpec {
    count: 30,
    per: Duration::from_secs(3600),
    burst: 10,
};

impl RateSpec {
    /// Parses a manifest rate (`60/minute`, burst optional).
    pub fn parse(r: &RateLimit) -> Result<Self, String> {
        let bad = || {
            format!(
                "rate `{}` must look like `60/minute` (N per second, minute, hour or day)",
                r.rate
            )
        };
        let (n, unit) = r.rate.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "second" => Duration::from_secs(1),
            "minute" => Duration::from_secs(60),
            "hour" => Duration::from_secs(3600),
            "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("rate `{}` must allow at least one call", r.rate));
        }
        let burst = r.burst.unwrap_or(count);
        if burst == 0 {
            return Err("burst must be at least 1".into());
        }
        Ok(Self { count, per, burst })
    }

    fn quota(&self) -> governor::Quota {
        let one = NonZeroU32::MIN;
        let period = self.per / self.count;
        governor::Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| governor::Quota::per_second(one))
            .allow_burst(NonZeroU32::new(self.burst).unwrap_or(one))
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            _ => "day",
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.burst != self.count {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

/// What a rate limit counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// All calls of one agent.
    Agent(String),
    /// One agent's calls to one tool.
    AgentTool(String, String),
    /// All agents' calls to one connector.
    Connector(String),
    /// New approval requests of one agent.
    ApprovalRequests(String),
}

impl RateKey {
    /// The kind of limit, as a fixed label (metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            RateKey::Agent(_) => "agent_rate",
            RateKey::AgentTool(..) => "agent_tool_rate",
            RateKey::Connector(_) => "connector_rate",
            RateKey::ApprovalRequests(_) => "approval_request_rate",
        }
    }
}

impl fmt::Display for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateKey::Agent(a) => write!(f, "agent `{a}`"),
            RateKey::AgentTool(a, t) => write!(f, "agent `{a}` on `{t}`"),
            RateKey::Connector(c) => write!(f, "connector `{c}` (all agents)"),
            RateKey::ApprovalRequests(a) => write!(f, "approval requests of agent `{a}`"),
        }
    }
}

/// Rate limiting behind an interface: in-process here; a shared store
/// (Redis) can implement it for limits that must hold across replicas.
pub trait RateLimiter: Send + Sync + fmt::Debug {
    /// Takes one call from `key`'s allowance under `spec`, or says how long
    /// to wait. A key whose spec changed starts afresh; an unchanged one
    /// keeps its state (a reload grants no free burst).
    fn take(&self, key: &RateKey, spec: RateSpec) -> Result<(), Duration>;
    /// Forgets every key not in `declared` (after a reload), so memory is
    /// bounded by what the manifests declare.
    fn retain(&self, declared: &HashSet<RateKey>);
}

/// `governor`'s view of the gateway clock.
#[derive(Debug, Clone)]
struct GatewayTime(Arc<dyn Clock>);

impl GovernorClock for GatewayTime {
    type Instant = SystemTime;
    fn now(&self) -> SystemTime {
        self.0.now().into()
    }
}

type Direct = governor::RateLimiter<
    NotKeyed,
    InMemoryState,
    GatewayTime,
    governor::middleware::NoOpMiddleware<SystemTime>,
>;

/// In-process GCRA limits, one small limiter per declared key.
#[derive(Debug)]
pub struct LocalRateLimiter {
    clock: Arc<dyn Clock>,
    limiters: RwLock<HashMap<RateKey, (RateSpec, Arc<Direct>)>>,
}

impl LocalRateLimiter {
    /// Limits on the gateway's clock.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            limiters: RwLock::new(HashMap::new()),
        }
    }

    fn limiter(&self, key: &RateKey, spec: RateSpec) -> Arc<Direct> {
        {
            let map = self.limiters.read().unwrap_or_else(|p| p.into_inner());
            if let Some((s, l)) = map.get(key)
                && *s == spec
            {
                return l.clone();
            }
        }
        let mut map = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((s, l)) if *s == spec => l.clone(),
            _ => {
                let l = Arc::new(Direct::direct_with_clock(
                    spec.quota(),
                    GatewayTime(self.clock.clone()),
                ));
                map.insert(key.clone(), (spec, l.clone()));
                l
            }
        }
    }
}

impl RateLimiter for LocalRateLimiter {
    fn take(&self, key: &RateKey, spec: RateSpec) -> Result<(), Duration> {
        let limiter = self.limiter(key, spec);
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now().into()))
    }

    fn retain(&self, declared: &HashSet<RateKey>) {
        let mut map = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| declared.contains(k));
    }
}

/// A budget over one numeric argument, as checked at load.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BudgetSpec {
    /// Tools whose calls count.
    pub tools: Vec<String>,
    /// The argument summed.
    pub argument: String,
    /// The most the sum may reach, in units of 1/10,000.
    pub max_units: i64,
}

impl BudgetSpec {
    /// The budget's name in the store and in messages: `sum(amount)`.
    pub fn name(&self) -> String {
        format!("sum({})", self.argument)
    }
}

/// A task's limits, as checked at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskLimitSpec {
    /// Most connector calls per task.
    pub max_calls: Option<u64>,
    /// Most calls of one task at once.
    pub max_in_flight: Option<u32>,
    /// Budgets over arguments.
    pub budgets: Vec<BudgetSpec>,
}

/// The store's name for a task's call budget.
pub const CALLS_BUDGET: &str = "calls";

/// Calls in flight per task, process-wide. An entry exists only while a
/// call of that task runs, so memory is bounded by the calls in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    running: Mutex<HashMap<String, u32>>,
}

impl InFlight {
    /// Counts a call of `task` in, unless `max` are already running.
    pub fn enter(self: &Arc<Self>, task: &str, max: u32) -> Option<InFlightGuard> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(task.to_string()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                running.remove(task);
            }
            return None;
        }
        *n += 1;
        Some(InFlightGuard {
            table: self.clone(),
            task: task.to_string(),
        })
    }

    /// How many tasks have calls running (for tests of boundedness).
    pub fn tasks_running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One call in flight; counted out when dropped, however the call ends.
#[derive(Debug)]
pub struct InFlightGuard {
    table: Arc<InFlight>,
    task: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut running = self.table.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.task) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.task);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn spec(rate: &str, burst: Option<u32>) -> RateSpec {
        RateSpec::parse(&RateLimit {
            rate: rate.into(),
            burst,
        })
        .expect("valid")
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(spec("60/minute", None).to_string(), "60/minute");
        assert_eq!(spec("2/second", Some(5)).to_string(), "2/second (burst 5)");
        for bad in ["0/minute", "5/week", "five/minute", "5"] {
            assert!(
                RateSpec::parse(&RateLimit {
                    rate: bad.into(),
                    burst: None
                })
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_rate_refuses_at_the_declared_count_and_refills_with_the_clock() {
        let clock = Arc::new(ManualClock::new());
        let limits = LocalRateLimiter::new(clock.clone());
        let key = RateKey::Agent("a".into());
        let s = spec("3/minute", None);
        for _ in 0..3 {
            assert!(limits.take(&key, s).is_ok());
        }
        let wait = limits.take(&key, s).expect_err("fourth call refused");
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        clock.advance(Duration::from_secs(20));
        assert!(limits.take(&key, s).is_ok());
        assert!(limits.take(&key, s).is_err());
        // Same spec again (a reload that kept it): no fresh burst.
        assert!(limits.take(&key, spec("3/minute", None)).is_err());
        // A changed spec starts afresh.
        assert!(limits.take(&key, spec("4/minute", None)).is_ok());
        limits.retain(&HashSet::new());
        assert!(limits.limiters.read().expect("lock").is_empty());
    }

    #[test]
    fn in_flight_entries_exist_only_while_calls_run() {
        let table = Arc::new(InFlight::default());
        let a = table.enter("t1", 2).expect("first");
        let b = table.enter("t1", 2).expect("second");
        assert!(table.enter("t1", 2).is_none());
        drop(a);
        let c = table.enter("t1", 2).expect("room again");
        drop(b);
        drop(c);
        assert_eq!(table.tasks_running(), 0);
    }
}
