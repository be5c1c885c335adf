//! Tollgate: a governed MCP tool gateway for AI agents.
//!
//! Agents connect over MCP (Streamable HTTP or stdio) and see the tools that
//! manifests declare; every `tools/call` passes the governance pipeline
//! before a connector reaches a backend. Module map:
//!
//! - [`manifest`]: YAML manifests -> validated types, errors with file:line.
//! - [`catalog`]: the validated runtime form (tools, agents, connectors).
//! - [`pipeline`]: the stages of a call, in order, one module each.
//! - [`policy`]: Cedar policies from `*.cedar` files, the decision per call.
//! - [`limits`]: rate limits (behind an interface), task budgets, in flight.
//! - [`approvals`]: the human approval queue, its rules and webhooks.
//! - [`args`]: arguments normalised to the types a tool's schema declares.
//! - [`mcp`]: the rmcp handler; `tools/list` per agent, `tools/call` -> pipeline.
//! - [`server`]: the HTTP edge (auth layer, Origin, sessions, body limits).
//! - [`identity`]: JWT workload identities from declared issuers (JWKS).
//! - [`reload`]: watches the manifest directory, swaps the catalog whole.
//! - [`tasks`]: tasks, task tokens, expiry; [`broker`]: backend credentials.
//! - [`secrets`]: the gateway's signing keys and digest key; [`clock`]: time.
//! - [`store`]: persistent state behind a trait; SQLite by default.
//! - [`revocation`]: the revocation feed, applied to calls in flight.
//! - [`agents`]: agent lifecycle judgement; [`keys`]: gateway-issued keys.
//! - [`calllog`]: the operator's line per call (and its warnings).
//! - [`metrics`]: the Prometheus registry the pipeline reports into.
//! - [`audit`]: the hash-chained trail, its writer, checkpoints, verify,
//!   prune, export and report.
//! - [`telemetry`]: OpenTelemetry traces (off unless an OTLP endpoint is set).
//! - [`demo`]: the built-in demo backend the shipped manifests use.
//! - [`cli`]: the `tollgate` command line; `main.rs` only calls it.

pub mod admin;
pub mod agents;
pub mod app;
pub mod approvals;
pub mod args;
pub mod audit;
pub mod broker;
pub mod calllog;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod demo;
pub mod http_reply;
pub mod identity;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod manifest;
pub mod mcp;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod reload;
pub mod revocation;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod upstream;
mod util;

use std::sync::{Arc, RwLock};

use catalog::Catalog;
use clock::{Clock, SystemClock};
use secrets::Secrets;
use store::Store;

/// The running gateway's shared state: the catalog in force, the store,
/// the gateway's own secrets and its clock. Cheap to share
/// (`Arc<Gateway>`); every request reads the catalog once.
#[derive(Debug)]
pub struct Gateway {
    catalog: RwLock<Arc<Catalog>>,
    store: Arc<dyn Store>,
    secrets: RwLock<Arc<Secrets>>,
    clock: Arc<dyn Clock>,
    pub(crate) broker: broker::Broker,
    revocations: Arc<revocation::Watcher>,
    /// Task bound to a connection (HTTP session or stdio process) by the
    /// in-band `tollgate.start_task` tool: connection key -> task id.
    pub(crate) bound_tasks: std::sync::Mutex<std::collections::HashMap<String, String>>,
    limiter: Arc<dyn limits::RateLimiter>,
    pub(crate) in_flight: Arc<limits::InFlight>,
    approvals: approvals::Approvals,
    metrics: metrics::Metrics,
    audit: audit::Audit,
    /// How manifests are loaded here, so a reload loads them the same way
    /// as the start did (the demo backend's real address).
    load_options: manifest::LoadOptions,
    /// Bumped when a new catalog changes the tools an agent could see, so
    /// connected clients get `notifications/tools/list_changed`.
    tools_changed: tokio::sync::watch::Sender<u64>,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(v) => v.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn write<T>(lock: &RwLock<T>, value: T) {
    match lock.write() {
        Ok(mut v) => *v = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

impl Gateway {
    /// Builds the gateway over a loaded catalog, an open store and the
    /// gateway's secrets, on the system clock.
    pub fn new(catalog: Catalog, store: Arc<dyn Store>, secrets: Secrets) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics = metrics::Metrics::new();
        let audit_write = metrics.audit_write_histogram();
        let audit = audit::Audit::new(
            store.clone(),
            audit::DEFAULT_CHAIN,
            Arc::new(move |took| audit_write.observe(took.as_secs_f64())),
        );
        Self {
            catalog: RwLock::new(Arc::new(catalog)),
            store,
            secrets: RwLock::new(Arc::new(secrets)),
            limiter: Arc::new(limits::LocalRateLimiter::new(clock.clone())),
            in_flight: Arc::default(),
            clock,
            broker: broker::Broker::default(),
            revocations: Arc::new(revocation::Watcher::default()),
            bound_tasks: std::sync::Mutex::new(std::collections::HashMap::new()),
            approvals: approvals::Approvals::default(),
            metrics,
            audit,
            load_options: manifest::LoadOptions::default(),
            tools_changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Loads manifests with `options` on every reload.
    pub fn with_load_options(mut self, options: manifest::LoadOptions) -> Self {
        self.load_options = options;
        self
    }

    /// How this gateway loads its manifests.
    pub fn load_options(&self) -> manifest::LoadOptions {
        self.load_options.clone()
    }

    /// The running upstream MCP servers, if this gateway serves any.
    pub fn upstreams(&self) -> Option<&Arc<upstream::Upstreams>> {
        self.load_options.upstreams.as_ref()
    }

    /// A receiver that changes whenever the served tools do (a reload, an
    /// upstream's tools appearing, a pin withdrawing one).
    pub fn tools_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tools_changed.subscribe()
    }

    /// Appends to audit chain `chain` (replicas sharing a store each need
    /// their own).
    pub fn with_audit_chain(mut self, chain: &str) -> Self {
        if chain != self.audit.chain() {
            let audit_write = self.metrics.audit_write_histogram();
            self.audit = audit::Audit::new(
                self.store.clone(),
                chain,
                Arc::new(move |took| audit_write.observe(took.as_secs_f64())),
            );
        }
        self
    }

    /// Replaces the clock (tests move a [`clock::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.limiter = Arc::new(limits::LocalRateLimiter::new(clock.clone()));
        self.clock = clock;
        self
    }

    /// Replaces the rate limiter (a shared store's, for several replicas).
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn limits::RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> &dyn limits::RateLimiter {
        self.limiter.as_ref()
    }

    /// How many tasks have calls running now (bounded by the calls in
    /// flight; tests check it returns to zero).
    pub fn in_flight_tasks(&self) -> usize {
        self.in_flight.tasks_running()
    }

    /// The catalog in force. Hold the `Arc` for the whole request so one
    /// request sees one consistent catalog even across a reload.
    pub fn catalog(&self) -> Arc<Catalog> {
        read(&self.catalog)
    }

    /// Replaces the catalog atomically; requests in flight keep the old one.
    pub fn replace_catalog(&self, catalog: Catalog) {
        // Limits still declared keep their state (no free burst on reload);
        // the others are forgotten, so memory follows the manifests.
        self.limiter.retain(&catalog.rate_keys());
        let before = read(&self.catalog);
        let same_tools = before.tools.len() == catalog.tools.len()
            && before
                .tools
                .iter()
                .zip(catalog.tools.iter())
                .all(|((a, ta), (b, tb))| a == b && ta.tool == tb.tool);
        write(&self.catalog, Arc::new(catalog));
        if !same_tools {
            self.tools_changed.send_modify(|n| *n += 1);
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The gateway's secrets in force.
    pub fn secrets(&self) -> Arc<Secrets> {
        read(&self.secrets)
    }

    /// Replaces the secrets (after a key rotation).
    pub fn replace_secrets(&self, secrets: Secrets) {
        write(&self.secrets, Arc::new(secrets));
    }

    /// The revocation feed as this process has applied it.
    pub fn revocations(&self) -> &revocation::Watcher {
        &self.revocations
    }

    /// Starts following the revocation feed: from its current end, then
    /// polled in the background. Until this runs, every confirmation reads
    /// the store (correct, just slower).
    pub async fn watch_revocations(
        &self,
    ) -> Result<tokio::task::JoinHandle<()>, store::StoreError> {
        self.revocations.start_at_end(self.store.as_ref()).await?;
        Ok(self.revocations.clone().spawn(self.store.clone()))
    }

    /// The approval queue's in-process part (waiters, review address,
    /// webhooks).
    pub fn approvals(&self) -> &approvals::Approvals {
        &self.approvals
    }

    /// The gateway's metrics (Prometheus registry).
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// The audit trail's writer.
    pub fn audit(&self) -> &audit::Audit {
        &self.audit
    }

    /// Now, by the gateway's clock.
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }
}
