//! The composition root: the one place a running gateway is assembled.
//! `tollgate serve` and the integration tests' `TestGateway` both go
//! through [`App`], so tests run the same start-up steps and background
//! jobs as production.
//!
//! Start-up, in order ([`App::build`]):
//! 1. load and validate the manifests (bad manifests stop us before any
//!    port is bound);
//! 2. open the store and the gateway's secrets; build the [`Gateway`] (on
//!    the system clock, or a given one: tests move a `ManualClock`);
//! 3. crash recovery ([`recover`]): allowed calls a dead process left
//!    without an outcome are marked `interrupted`;
//! 4. record the manifest load.
//!
//! Serving ([`App::serve_http`], [`App::serve_stdio`]) starts the
//! background jobs ([`App::spawn_jobs`]: the task sweeper, the manifest
//! reload watcher, the demo backend) and stops them when serving ends.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Gateway;
use crate::clock::Clock;
use crate::manifest::{self, ManifestErrors};
use crate::pipeline::authenticate::{self, Transport};
use crate::secrets::{Secrets, SecretsError};
use crate::server::{self, HttpOptions};
use crate::store::{SqliteStore, Store, StoreError};

/// Default period of the task sweeper (expiry, upstream revocations, key
/// reload, store maintenance).
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Default period of the manifest reload watcher.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Longest the start waits for upstream MCP servers' first tool lists
/// (each is also bounded by its own `connect_timeout_ms`).
const UPSTREAM_SETTLE: Duration = Duration::from_secs(60);

/// Longest a stopping gateway waits for its upstream MCP servers' child
/// processes to be killed and reaped.
const UPSTREAM_STOP: Duration = Duration::from_secs(5);

/// Everything needed to assemble a gateway.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (SQLite store, secrets file); created on first use.
    pub data: PathBuf,
    /// Manifest directory.
    pub manifests: PathBuf,
    /// The clock; `None`: the system clock.
    pub clock: Option<Arc<dyn Clock>>,
    /// HTTP edge settings (ignored over stdio).
    pub http: HttpOptions,
    /// How often to look for manifest changes; `None`: never.
    pub reload_interval: Option<Duration>,
    /// How often the task sweeper runs.
    pub sweep_interval: Duration,
    /// Start the built-in demo backend when the manifests declare one.
    pub demo_backend: bool,
    /// Where the demo backend listens instead of its manifest's `listen`
    /// (port 0: one the OS picks); the connectors that name the declared
    /// address follow it.
    pub demo_listen: Option<SocketAddr>,
    /// Backend latency above which a call is logged as slow.
    pub slow_call: Duration,
    /// The audit trail's settings.
    pub audit: AuditOptions,
}

/// How the audit trail is written, sealed and kept.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// How long a call's pre-record may take before the call is refused.
    pub timeout: Duration,
    /// When to write signed checkpoints, and where to copy them.
    pub checkpoints: crate::audit::seal::Policy,
    /// How often changes captured by the store are folded into the chain.
    pub fold_every: Duration,
    /// Keep records this long, then archive and prune them; `None`: keep.
    pub retain: Option<Duration>,
    /// Where pruned records are archived (default `DATA/audit-archive`).
    pub archive_dir: Option<PathBuf>,
    /// This writer's chain (one per replica sharing a store).
    pub chain: String,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            timeout: crate::audit::DEFAULT_TIMEOUT,
            checkpoints: crate::audit::seal::Policy::default(),
            fold_every: Duration::from_millis(250),
            retain: None,
            archive_dir: None,
            chain: crate::audit::DEFAULT_CHAIN.into(),
        }
    }
}

impl Config {
    /// Production defaults over `data` and `manifests`.
    pub fn new(data: impl Into<PathBuf>, manifests: impl Into<PathBuf>) -> Self {
        Self {
            data: data.into(),
            manifests: manifests.into(),
            clock: None,
            http: HttpOptions::default(),
            reload_interval: Some(DEFAULT_RELOAD_INTERVAL),
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            demo_backend: true,
            demo_listen: None,
            slow_call: crate::metrics::DEFAULT_SLOW_CALL,
            audit: AuditOptions::default(),
        }
    }

    /// Uses these audit settings.
    pub fn with_audit(mut self, audit: AuditOptions) -> Self {
        self.audit = audit;
        self
    }

    /// Serves the demo backend on `at` instead of the declared address.
    pub fn with_demo_listen(mut self, at: Option<SocketAddr>) -> Self {
        self.demo_listen = at;
        self
    }

    /// Logs calls whose backend took longer than `threshold` as slow.
    pub fn with_slow_call(mut self, threshold: Duration) -> Self {
        self.slow_call = threshold;
        self
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Uses these HTTP edge settings.
    pub fn with_http(mut self, http: HttpOptions) -> Self {
        self.http = http;
        self
    }

    /// Watches the manifests every `every` (`None`: never).
    pub fn with_reload_interval(mut self, every: Option<Duration>) -> Self {
        self.reload_interval = every;
        self
    }

    /// Runs the sweeper every `every`.
    pub fn with_sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every;
        self
    }
}

/// Why the gateway could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The manifests are invalid.
    #[error(
        "{count} manifest error(s) in {dir}:\n{list}\n(run `tollgate check {dir}` after fixing them)"
    )]
    Manifests {
        /// Manifest directory.
        dir: String,
        /// How many errors.
        count: usize,
        /// One indented line per error (`file:line:column: message`).
        list: String,
    },
    /// The store could not be opened.
    #[error("cannot open the store in {data}: {source}")]
    Store {
        /// Data directory.
        data: String,
        /// Cause.
        source: StoreError,
    },
    /// The gateway's secrets could not be read or created.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The demo backend could not start.
    #[error(
        "cannot start the demo backend on {addr}: {source}; pass --demo-listen ADDR (or TOLLGATE_DEMO_LISTEN), or edit or remove the DemoBackend manifest"
    )]
    DemoBackend {
        /// Its address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The demo backend's address is taken by something this gateway
    /// cannot share it with.
    #[error(
        "the demo backend's address {addr} is already in use by {holder}; its backend would refuse this gateway's calls. Give this gateway its own with --demo-listen 127.0.0.1:0 (or TOLLGATE_DEMO_LISTEN=127.0.0.1:0), or stop the other program"
    )]
    DemoBackendTaken {
        /// The address.
        addr: SocketAddr,
        /// Who holds it, in words.
        holder: &'static str,
    },
    /// `--demo-listen` names an address off this machine.
    #[error("--demo-listen {0}: the demo backend must listen on loopback (127.0.0.1 or ::1)")]
    DemoNotLoopback(SocketAddr),
    /// The stdio agent key was refused.
    #[error("TOLLGATE_AGENT_KEY was refused: {0}")]
    StdioKey(String),
    /// The stdio session failed.
    #[error("the stdio session {0}")]
    Stdio(String),
    /// The HTTP server failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// An assembled gateway, ready to serve.
#[derive(Debug)]
pub struct App {
    config: Config,
    gw: Arc<Gateway>,
    /// The demo backend's listener, bound at build (so a clash stops the
    /// start) and served with the background jobs.
    demo: Option<TcpListener>,
    /// Answered on the demo backend's identity path.
    instance: String,
    /// Where `/metrics` is served on its own, if anywhere.
    metrics_listener: Option<TcpListener>,
    /// Held while this process serves the data directory (see [`recover`]).
    _serving: ServingLock,
}

impl App {
    /// Loads the manifests, opens the store and secrets, builds the
    /// gateway, recovers from a crash and records the manifest load.
    pub async fn build(config: Config) -> Result<Self, AppError> {
        let load = |options| {
            manifest::load_dir_with(&config.manifests, options).map_err(|ManifestErrors(errors)| {
                let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
                AppError::Manifests {
                    dir: config.manifests.display().to_string(),
                    count: errors.len(),
                    list: list.join("\n"),
                }
            })
        };
        let mut options = manifest::LoadOptions {
            upstreams: Some(crate::upstream::Upstreams::new()),
            ..manifest::LoadOptions::default()
        };
        let mut catalog = load(options.clone())?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.data).await.map_err(
            |source| AppError::Store {
                data: config.data.display().to_string(),
                source,
            },
        )?);
        let secrets = Secrets::load_or_create(&config.data)?;
        let instance = instance_id(&config.data);
        let mut demo = None;
        if let Some(declared) = catalog.demo_backend.filter(|_| config.demo_backend) {
            let want = config.demo_listen.unwrap_or(declared);
            if !want.ip().is_loopback() {
                return Err(AppError::DemoNotLoopback(want));
            }
            let (listener, at) = bind_demo_backend(want, &instance).await?;
            demo = listener;
            if at != declared {
                options.demo_at = Some(at);
                catalog = load(options.clone())?;
                tracing::info!(%declared, %at, "demo backend moved; connectors that name {declared} call {at}");
            }
        }
        // Upstream MCP servers started with the first load: wait (bounded
        // by their connect timeouts) for their tools, so the first
        // `tools/list` is complete; one that is still not there is
        // withdrawn and comes in later through the reload loop.
        if let Some(upstreams) = options
            .upstreams
            .as_ref()
            .filter(|_| !catalog.withdrawn.is_empty())
        {
            upstreams.settle(UPSTREAM_SETTLE).await;
            catalog = load(options.clone())?;
            for (name, w) in &catalog.withdrawn {
                tracing::warn!(tool = %name, code = w.code, "tool withdrawn: {}", w.why);
            }
        }
        for w in &catalog.warnings {
            tracing::warn!("{w}");
        }
        crate::reload::log_policy_mode(None, &catalog);
        let mut gw = Gateway::new(catalog, store, secrets)
            .with_audit_chain(&config.audit.chain)
            .with_load_options(options);
        if let Some(clock) = &config.clock {
            gw = gw.with_clock(clock.clone());
        }
        gw.metrics().set_slow_call(config.slow_call);
        gw.audit().set_timeout(config.audit.timeout);
        let gw = Arc::new(gw);
        let serving = recover(&gw, &config.data).await;
        if let Err(e) = crate::reload::record_startup(&gw).await {
            tracing::error!(error = %e, "cannot record the manifest load");
        }
        Ok(Self {
            config,
            gw,
            demo,
            instance,
            metrics_listener: None,
            _serving: serving,
        })
    }

    /// Where the demo backend listens, if this gateway serves one.
    pub fn demo_backend_addr(&self) -> Option<SocketAddr> {
        self.demo.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Also serves `/metrics`, unauthenticated, on `listener` (bound by the
    /// caller before serving starts, like the main listener).
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// The start-up summary: what was loaded, from where, served where.
    /// Its message names the MCP address, so it is the one line to look
    /// for in JSON logs too.
    fn log_summary(&self, listen: &str) {
        let catalog = self.gw.catalog();
        let at = if listen == "stdio" {
            "stdio".to_string()
        } else {
            format!("http://{listen}/mcp")
        };
        let metrics = match (&self.metrics_listener, &self.config.http.metrics_token) {
            (Some(l), _) => l
                .local_addr()
                .map(|a| format!("http://{a}/metrics"))
                .unwrap_or_else(|_| "own listener".into()),
            (None, Some(_)) => "/metrics (token)".into(),
            (None, None) => "off".into(),
        };
        tracing::info!(
            manifests = %self.config.manifests.display(),
            data = %self.config.data.display(),
            connectors = catalog.connectors.len(),
            tools = catalog.tools.len(),
            agents = catalog.agents.len(),
            policies = catalog.policies.as_ref().map_or(0, |p| p.len()),
            approvers = catalog.approvers.len(),
            listen,
            metrics = %metrics,
            slow_call_ms = u64::try_from(self.config.slow_call.as_millis()).unwrap_or(u64::MAX),
            "gateway started; serving MCP at {at}"
        );
    }

    /// The gateway's shared state (tests inspect the store through it).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gw.clone()
    }

    /// Serves MCP over HTTP on `listener` until `shutdown` resolves, with
    /// the background jobs running; they stop when serving ends.
    pub async fn serve_http(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let jwks = listener.local_addr().ok().map(|mut at| {
            if at.ip().is_unspecified() {
                at.set_ip(if at.is_ipv4() {
                    [127, 0, 0, 1].into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("http://{at}/.well-known/jwks.json")
        });
        let listen = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        self.log_summary(&listen);
        let demo = self.demo.take();
        let mut jobs = self.spawn_jobs(jwks, demo).await?;
        if let Some(l) = self.metrics_listener.take() {
            let gw = self.gw.clone();
            jobs.0.push(tokio::spawn(async move {
                if let Err(e) = server::serve_metrics(l, gw, std::future::pending()).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            }));
        }
        let _jobs = jobs;
        let served = server::serve(listener, self.gw.clone(), &self.config.http, shutdown)
            .await
            .map_err(AppError::Serve);
        // Outcomes still queued reach the trail before the process ends.
        self.gw.audit().flush().await;
        // Calls the grace period cut off have no outcome: say so now, not
        // at the next start.
        let ServingLock(lock) = std::mem::replace(&mut self._serving, ServingLock(None));
        drop(lock);
        close_unfinished(&self.gw, &self.config.data).await;
        if let Some(upstreams) = self.gw.upstreams() {
            upstreams.shutdown(UPSTREAM_STOP).await;
        }
        served
    }

    /// Serves one agent over stdin/stdout, authenticated by `key` (checked
    /// now for a clear start-up error; the handler checks it again on every
    /// request), until the client closes the session.
    pub async fn serve_stdio(mut self, key: &str) -> Result<(), AppError> {
        let who = match authenticate::authenticate_bearer(&self.gw, key, Transport::Stdio).await {
            Ok(who) => who,
            Err(e) => {
                authenticate::record_failure(&self.gw, key, &e, Some("stdio".into()));
                // Nothing else will fold it: this process stops here.
                self.gw.audit().flush().await;
                return Err(AppError::StdioKey(e.to_string()));
            }
        };
        tracing::info!(agent = %who.agent().id, "serving MCP over stdio");
        self.log_summary("stdio");
        // Over stdio there is no HTTP endpoint to publish the JWKS on.
        let demo = self.demo.take();
        let _jobs = self.spawn_jobs(None, demo).await?;
        let service = crate::mcp::McpFront::for_stdio(self.gw.clone(), key)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| AppError::Stdio(format!("could not start: {e}")))?;
        let waited = service.waiting().await;
        self.gw.audit().flush().await;
        if let Some(upstreams) = self.gw.upstreams() {
            upstreams.shutdown(UPSTREAM_STOP).await;
        }
        waited.map_err(|e| AppError::Stdio(format!("failed: {e}")))?;
        Ok(())
    }

    /// Starts every background job. This is the one place they are
    /// spawned: add new jobs (rate-limit windows, approval timeouts, ...)
    /// here, as a `JoinHandle` pushed onto `jobs`, and they run in
    /// production and in every integration test alike. They are aborted
    /// when the returned [`Jobs`] is dropped.
    async fn spawn_jobs(
        &self,
        jwks_url: Option<String>,
        demo: Option<TcpListener>,
    ) -> Result<Jobs, AppError> {
        let mut jobs = Jobs(Vec::new());
        // The revocation feed: suspensions, retirements, key revocations
        // and task ends committed by any process reach calls in flight
        // within the bound (revocation.rs).
        jobs.0.push(
            self.gw
                .watch_revocations()
                .await
                .map_err(|source| AppError::Store {
                    data: self.config.data.display().to_string(),
                    source,
                })?,
        );
        // Task expiry, pending upstream revocations, signing-key reload,
        // store maintenance.
        jobs.0.push(crate::tasks::spawn_sweeper(
            self.gw.clone(),
            self.config.sweep_interval,
        ));
        if let Some(every) = self.config.reload_interval.filter(|d| !d.is_zero()) {
            jobs.0.push(crate::reload::spawn(
                self.gw.clone(),
                self.config.manifests.clone(),
                every,
            ));
        }
        // The audit trail: fold changes other processes committed (tasks,
        // keys, approvals, ...) into the chain, and seal it with signed
        // checkpoints; prune by age when retention is set.
        let audit = &self.config.audit;
        jobs.0.push(crate::audit::seal::spawn(
            self.gw.clone(),
            audit.checkpoints.clone(),
            audit.fold_every,
        ));
        if let Some(keep) = audit.retain {
            let dir = audit
                .archive_dir
                .clone()
                .unwrap_or_else(|| self.config.data.join("audit-archive"));
            let every = (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            jobs.0.push(crate::audit::prune::spawn(
                self.gw.clone(),
                keep,
                dir,
                every,
            ));
        }
        if let Some(listener) = demo {
            let instance = self.instance.clone();
            if let Ok(at) = listener.local_addr() {
                tracing::info!(%at, "demo backend listening");
            }
            jobs.0.push(tokio::spawn(async move {
                if let Err(e) = crate::demo::serve_as(listener, jwks_url, Some(instance)).await {
                    tracing::error!(error = %e, "demo backend stopped");
                }
            }));
        }
        Ok(jobs)
    }
}

/// Background jobs; aborted on drop, so none outlives the serving it
/// belongs to (a test's gateway, or the process).
#[derive(Debug)]
pub struct Jobs(Vec<JoinHandle<()>>);

impl Drop for Jobs {
    fn drop(&mut self) {
        for job in &self.0 {
            job.abort();
        }
    }
}

/// Assembles the gateway from `config` and serves HTTP on `listener` until
/// `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    App::build(config)
        .await?
        .serve_http(listener, shutdown)
        .await
}

/// Assembles the gateway from `config` and serves one agent (`key`) over
/// stdin/stdout.
pub async fn run_stdio(config: Config, key: &str) -> Result<(), AppError> {
    App::build(config).await?.serve_stdio(key).await
}

/// Which data directory a gateway serves, as its demo backend tells it
/// (a digest: the path itself is no one's business).
fn instance_id(data: &Path) -> String {
    use sha2::Digest;
    let path = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let digest = sha2::Sha256::digest(path.to_string_lossy().as_bytes());
    hex::encode(&digest[..12])
}

/// Binds the demo backend's address. When it is taken, the holder is asked
/// who it is: another Tollgate on this data directory (say an HTTP gateway,
/// while a desktop client launches a stdio one on the same manifests)
/// signs with the same keys, so its backend is shared (`None`); anyone
/// else's would refuse our credentials, so the start stops with a clear
/// error instead of failing every demo call later.
async fn bind_demo_backend(
    want: SocketAddr,
    instance: &str,
) -> Result<(Option<TcpListener>, SocketAddr), AppError> {
    match TcpListener::bind(want).await {
        Ok(listener) => {
            let at = listener
                .local_addr()
                .map_err(|source| AppError::DemoBackend { addr: want, source })?;
            Ok((Some(listener), at))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            match demo_holder(want).await.as_deref() {
                Some(theirs) if theirs == instance => {
                    tracing::info!(%want, "the demo backend is served by another Tollgate on this data directory; sharing it");
                    Ok((None, want))
                }
                Some(_) => Err(AppError::DemoBackendTaken {
                    addr: want,
                    holder: "another Tollgate's demo backend (a different data directory)",
                }),
                None => Err(AppError::DemoBackendTaken {
                    addr: want,
                    holder: "a program that is not a Tollgate demo backend",
                }),
            }
        }
        Err(source) => Err(AppError::DemoBackend { addr: want, source }),
    }
}

/// The instance a demo backend at `at` names, if it answers as one.
async fn demo_holder(at: SocketAddr) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .ok()?;
    let reply: serde_json::Value = client
        .get(format!("http://{at}{}", crate::demo::IDENTITY_PATH))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    reply["instance"].as_str().map(str::to_string)
}

/// At the end of a graceful stop: allowed calls still without an outcome
/// (cut off when the grace period ran out) are recorded `interrupted`
/// (`gateway_shutdown`). As with crash recovery, only when no other
/// process serves this data directory, since its calls in flight would
/// look the same; otherwise the next lone start marks them.
async fn close_unfinished(gw: &Gateway, data: &Path) {
    let Ok((_, file)) = open_serving_lock(data) else {
        return;
    };
    if file.try_lock().is_err() {
        tracing::info!(
            "another Tollgate serves this data directory; calls left open are marked at the next start"
        );
        return;
    }
    match gw
        .audit()
        .close_open_calls(&crate::util::stamp(gw.now()), "gateway_shutdown")
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            calls = n,
            "{n} call(s) did not finish within the shutdown grace period; recorded as `interrupted` (the backend may or may not have acted)"
        ),
        Err(e) => tracing::error!(error = %e, "cannot record the calls cut off by the shutdown"),
    }
}

/// `DATA/serving.lock` (created if missing), unlocked, with its path.
fn open_serving_lock(data: &Path) -> std::io::Result<(PathBuf, File)> {
    let path = data.join("serving.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    Ok((path, file))
}

/// The lock a serving process holds on `DATA/serving.lock` (shared) for as
/// long as it serves; released by the OS when the process dies, however it
/// dies.
#[derive(Debug)]
pub struct ServingLock(#[allow(dead_code)] Option<File>);

/// Crash recovery at start-up: decision records that say `allow` but have
/// no outcome belong to calls whose process died mid-call (after the record,
/// before the outcome); they are marked `interrupted` (outcome unknown: the
/// backend may or may not have acted), and `tollgate audit list` shows them
/// so.
///
/// Marking at start-up assumes that no other live process is serving calls
/// on this data directory: its calls in flight would look exactly like a
/// dead process's. On one host this is enforced with file locks: every
/// serving process holds a shared lock on `DATA/serving.lock`, and recovery
/// runs only when an exclusive lock can be taken, i.e. when no other
/// serving process is alive (say an HTTP gateway and a stdio one share the
/// directory: the second one skips recovery, and the next start with no
/// one else serving does it). Locks do not span hosts: replicas sharing one
/// database (PostgreSQL) need an instance id on every decision record and a
/// liveness lease per instance (a heartbeat row renewed by the sweeper);
/// recovery then marks only the records of instances whose lease expired.
pub async fn recover(gw: &Gateway, data: &Path) -> ServingLock {
    let (path, file) = match open_serving_lock(data) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %data.join("serving.lock").display(), error = %e, "cannot open the serving lock; skipping crash recovery");
            return ServingLock(None);
        }
    };
    match file.try_lock() {
        Ok(()) => match gw.audit().recover(&crate::util::stamp(gw.now())).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                calls = n,
                "marked {n} allowed call(s) without an outcome as `interrupted`: a previous process stopped mid-call (see `tollgate audit list`)"
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot mark interrupted calls; they stay without an outcome")
            }
        },
        Err(std::fs::TryLockError::WouldBlock) => tracing::info!(
            "another Tollgate is serving this data directory; crash recovery left to the next start"
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(error = %e, "cannot lock {}; skipping crash recovery", path.display())
        }
    }
    // Downgrade (or take) the shared lock for as long as we serve. Another
    // process's recovery holds the exclusive lock only for one UPDATE.
    let file = tokio::task::spawn_blocking(move || file.lock_shared().map(|()| file)).await;
    match file {
        Ok(Ok(f)) => ServingLock(Some(f)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot hold the serving lock");
            ServingLock(None)
        }
        Err(_) => ServingLock(None),
    }
}
