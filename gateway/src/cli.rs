//! The `tollgate` command line. `main.rs` calls [`main`]; everything else a
//! command needs lives in the library, so tests drive the same code.
//!
//! Exit codes: 0 success, 1 the command ran and failed (invalid manifests,
//! unknown agent, store or network error), 2 usage error (from clap).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rmcp::ServiceExt;
use serde_json::json;

use crate::Gateway;
use crate::catalog::Catalog;
use crate::manifest::{self, ManifestErrors};
use crate::pipeline::authenticate::{self, Transport};
use crate::server::{self, HttpOptions};
use crate::store::{AgentStatus, DecisionFilter, SqliteStore, Store};

/// Tollgate: a governed MCP tool gateway for AI agents.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, long_about = None)]
pub struct Cli {
    /// Data directory (SQLite store); created on first use.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_DATA",
        default_value = "./.tollgate"
    )]
    pub data: PathBuf,
    /// Manifest directory.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_MANIFESTS",
        default_value = "./manifests"
    )]
    pub manifests: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (Streamable HTTP at /mcp, or stdio with --stdio).
    Serve(ServeArgs),
    /// Validate a manifest directory; exit 1 listing every error.
    Check {
        /// Directory to check (default: --manifests).
        dir: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the manifest JSON Schema.
    Schema,
    /// Inspect agents and issue their keys.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Read the decision records.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Start, inspect and end tasks.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// The gateway's signing keys (task tokens, backend JWTs).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Keys for the admin HTTP API (/admin/tasks).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8930")]
    listen: SocketAddr,
    /// Serve one agent over stdin/stdout; its key comes from TOLLGATE_AGENT_KEY.
    #[arg(long)]
    stdio: bool,
    /// Extra `Host` header value to accept (repeatable); loopback names are
    /// always accepted. Needed when listening on a non-loopback address.
    #[arg(long = "allowed-host")]
    allowed_hosts: Vec<String>,
    /// Browser origin to accept besides loopback ones (repeatable), e.g.
    /// `https://console.example.com`.
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Public base URL of the gateway (e.g. `https://tollgate.example.com`),
    /// advertised in the OAuth protected resource metadata. Default: taken
    /// from each request's Host header.
    #[arg(long)]
    public_url: Option<String>,
    /// How often to look for manifest changes, in milliseconds (0: never).
    #[arg(long, default_value_t = 1000)]
    reload_interval_ms: u64,
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// List declared agents, their owners, grants and keys.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one agent: owners, approval, review date, status, grants, keys,
    /// status history.
    Show {
        /// Agent id.
        agent: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue a new key for AGENT; prints the key alone on stdout, once.
    IssueKey {
        /// Agent id.
        agent: String,
        /// A label to tell keys apart later (e.g. where it is deployed).
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke one key (say, a leaked one) at once; the agent's other
    /// credentials keep working.
    RevokeKey {
        /// Key id, as shown by `agents show` (`key_…`).
        key_id: String,
    },
    /// Suspend AGENT: its calls are refused until it is resumed.
    Suspend(StatusChange),
    /// Resume a suspended AGENT.
    Resume(StatusChange),
    /// Retire AGENT for good: keys revoked, calls refused, no way back.
    Retire(StatusChange),
}

#[derive(Debug, Args)]
struct StatusChange {
    /// Agent id.
    agent: String,
    /// Why (recorded with the change).
    #[arg(long)]
    reason: String,
    /// Who is making the change (default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Print the change as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// Start a task for an agent; prints its id, token and expiry.
    Start {
        /// The agent that will act.
        #[arg(long)]
        agent: String,
        /// What the task is for.
        #[arg(long)]
        purpose: String,
        /// Tools it needs, comma-separated (names or globs within the
        /// agent's grants).
        #[arg(long, value_delimiter = ',', required = true)]
        tools: Vec<String>,
        /// How long it may run: 900, 900s, 15m, 2h.
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Argument constraint, e.g. `amount <= 500` (repeatable).
        #[arg(long = "constraint")]
        constraints: Vec<String>,
        /// Who is starting it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Print JSON (id, token, expiry, ...).
        #[arg(long)]
        json: bool,
    },
    /// List tasks, newest first.
    List {
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
        /// Only active tasks.
        #[arg(long)]
        active: bool,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show one task and the credentials issued for it.
    Show {
        /// Task id.
        task: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a task now: its token and credentials are revoked.
    End {
        /// Task id.
        task: String,
        /// Why (recorded).
        #[arg(long, default_value = "ended by an operator")]
        reason: String,
        /// Who (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Issue an admin API key for NAME (a person or an orchestrator);
    /// prints the key alone on stdout, once.
    IssueKey {
        /// Who will use it; recorded as `started_by` on the tasks it starts.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List the signing keys published at /.well-known/jwks.json.
    List,
    /// Add a new signing key; older ones stay published until pruned.
    Rotate {
        /// Keep at most this many keys (at least 2).
        #[arg(long, default_value_t = 3)]
        keep: usize,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Show recent decisions, newest first.
    List {
        /// Only this agent's decisions.
        #[arg(long)]
        agent: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show manifest loads and reloads (applied or rejected), newest first.
    Manifests {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Logs go to stderr: stdout belongs to command output and to MCP stdio.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            init_logging("info,rmcp=warn");
            serve(&cli.data, &cli.manifests, args).await
        }
        Command::Check { dir, json } => Ok(check(dir.as_deref().unwrap_or(&cli.manifests), json)),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&manifest::types::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Agents(cmd) => {
            init_logging("warn");
            agents(&cli.data, &cli.manifests, cmd).await
        }
        Command::Audit(cmd) => {
            init_logging("warn");
            audit(&cli.data, cmd).await
        }
        Command::Tasks(cmd) => {
            init_logging("warn");
            tasks(&cli.data, &cli.manifests, cmd).await
        }
        Command::Keys(cmd) => keys(&cli.data, cmd),
        Command::Admin(AdminCommand::IssueKey { name }) => {
            init_logging("warn");
            if name.trim().is_empty() {
                bail!("NAME must say who will use the key");
            }
            let store = open_store(&cli.data).await?;
            let k = crate::admin::new_admin_key();
            store
                .insert_admin_key(&k.key_id, name.trim(), &k.hash)
                .await?;
            eprintln!(
                "Issued admin key {} for `{}`. Tollgate keeps only its hash: store the key now.",
                k.key_id,
                name.trim()
            );
            println!("{}", k.key);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<Catalog> {
    manifest::load_dir(dir).map_err(|ManifestErrors(errors)| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!(
            "{} manifest error(s) in {}:\n{}\n(run `tollgate check {}` after fixing them)",
            errors.len(),
            dir.display(),
            list.join("\n"),
            dir.display()
        )
    })
}

fn check(dir: &Path, as_json: bool) -> ExitCode {
    match manifest::load_dir(dir) {
        Ok(c) => {
            if !as_json {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
            }
            if as_json {
                let out = json!({
                    "warnings": c.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "valid": true,
                    "files": c.sources.len(),
                    "tools": c.tools.keys().collect::<Vec<_>>(),
                    "agents": sorted(c.agents.keys()),
                });
                println!("{out}");
            } else {
                println!(
                    "ok: {} file(s), {} tool(s), {} agent(s) in {}",
                    c.sources.len(),
                    c.tools.len(),
                    c.agents.len(),
                    dir.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(ManifestErrors(errors)) => {
            if as_json {
                let list: Vec<_> = errors
                    .iter()
                    .map(|e| json!({ "file": e.file, "line": e.line, "column": e.column, "message": e.message }))
                    .collect();
                println!("{}", json!({ "valid": false, "errors": list }));
            } else {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{} error(s) in {}", errors.len(), dir.display());
            }
            ExitCode::FAILURE
        }
    }
}

fn sorted<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<_> = keys.collect();
    v.sort();
    v
}

async fn open_gateway(data: &Path, catalog: Catalog) -> anyhow::Result<Gateway> {
    let secrets = crate::secrets::Secrets::load_or_create(data)?;
    Ok(Gateway::new(catalog, open_store(data).await?, secrets))
}

fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn keys(data: &Path, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let secrets = match cmd {
        KeysCommand::List => crate::secrets::Secrets::load_or_create(data)?,
        KeysCommand::Rotate { keep } => {
            crate::secrets::Secrets::load_or_create(data)?;
            let s = crate::secrets::Secrets::rotate(data, keep)?;
            eprintln!("New signing key in use. A running gateway picks it up within a second.");
            s
        }
    };
    println!("issuer  {}", secrets.issuer());
    let ids = secrets.key_ids();
    for (i, (kid, created)) in ids.iter().enumerate() {
        let role = if i + 1 == ids.len() {
            "signing"
        } else {
            "published"
        };
        println!("{kid}  {role:<9}  created {created}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn tasks(data: &Path, manifests: &Path, cmd: TasksCommand) -> anyhow::Result<ExitCode> {
    use crate::store::{TaskFilter, TaskStatus};
    let gw = open_gateway(data, load(manifests)?).await?;
    match cmd {
        TasksCommand::Start {
            agent,
            purpose,
            tools,
            ttl,
            constraints,
            by,
            json: as_json,
        } => {
            let ttl = crate::tasks::parse_ttl(&ttl).map_err(anyhow::Error::msg)?;
            let req = crate::tasks::StartTask {
                agent_id: agent,
                purpose,
                tools,
                constraints,
                ttl,
                started_by: operator(by),
                origin: "cli",
            };
            let started = crate::tasks::start(&gw, req).await?;
            let t = &started.task;
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "task_id": t.id, "agent": t.agent_id, "purpose": t.purpose, "tools": t.tools,
                        "constraints": t.constraints, "expires_at": t.expires_at, "task_token": started.token,
                    }))?
                );
            } else {
                eprintln!("Task {} for `{}` until {}", t.id, t.agent_id, t.expires_at);
                eprintln!("  tools: {}", t.tools.join(", "));
                if !t.constraints.is_empty() {
                    eprintln!("  constraints: {}", t.constraints.join("; "));
                }
                eprintln!("Task token (the agent's bearer credential for this task; shown once):");
                println!("{}", started.token);
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::List {
            agent,
            active,
            limit,
            json: as_json,
        } => {
            let list = gw
                .store()
                .tasks(&TaskFilter {
                    agent_id: agent,
                    active_only: active,
                    limit: Some(limit),
                })
                .await?;
            if as_json {
                for t in &list {
                    println!("{}", serde_json::to_string(t)?);
                }
            } else {
                println!(
                    "{:<38} {:<14} {:<10} {:<27} PURPOSE",
                    "TASK", "AGENT", "STATUS", "EXPIRES"
                );
                for t in &list {
                    println!(
                        "{:<38} {:<14} {:<10} {:<27} {}",
                        t.id,
                        t.agent_id,
                        t.status.as_str(),
                        t.expires_at,
                        t.purpose
                    );
                }
                if list.is_empty() {
                    eprintln!("no tasks");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Show {
            task,
            json: as_json,
        } => {
            let Some(t) = gw.store().task(&task).await? else {
                bail!("no task `{task}` (see `tollgate tasks list`)")
            };
            let creds = gw.store().task_credentials(&task).await?;
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "task": t, "credentials": creds }))?
                );
            } else {
                println!("task         {}", t.id);
                println!("agent        {}", t.agent_id);
                println!("purpose      {}", t.purpose);
                println!("tools        {}", t.tools.join(", "));
                if !t.constraints.is_empty() {
                    println!("constraints  {}", t.constraints.join("; "));
                }
                println!(
                    "started      {} by {} ({})",
                    t.created_at, t.started_by, t.origin
                );
                println!("expires      {}", t.expires_at);
                println!("status       {}", t.status.as_str());
                if let (Some(at), Some(by)) = (&t.ended_at, &t.ended_by) {
                    println!(
                        "ended        {at} by {by}: {}",
                        t.end_reason.as_deref().unwrap_or("")
                    );
                }
                for c in &creds {
                    let state = match &c.revoked_at {
                        Some(r) => format!("revoked {r}"),
                        None => "live".into(),
                    };
                    println!(
                        "credential   {} {} for {} ({state}; issued {}, expires {})",
                        c.id,
                        c.kind,
                        c.connector_id,
                        c.issued_at,
                        c.expires_at.as_deref().unwrap_or("never")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::End { task, reason, by } => {
            let ended =
                crate::tasks::end(&gw, &task, TaskStatus::Revoked, &operator(by), &reason).await?;
            println!(
                "{}: ended ({}); its token and credentials are revoked",
                ended.id,
                ended.status.as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn open_store(data: &Path) -> anyhow::Result<Arc<dyn Store>> {
    let store = SqliteStore::open(data)
        .await
        .with_context(|| format!("cannot open the store in {}", data.display()))?;
    Ok(Arc::new(store))
}

async fn serve(data: &Path, manifests: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Bad manifests stop us before any port is bound.
    let catalog = load(manifests)?;
    for w in &catalog.warnings {
        tracing::warn!("{w}");
    }
    let demo = catalog.demo_backend;
    let gw = Arc::new(open_gateway(data, catalog).await?);
    crate::tasks::spawn_sweeper(gw.clone(), Duration::from_secs(1));
    gw.watch_revocations()
        .await
        .context("cannot read the revocation feed")?;

    if let Some(addr) = demo {
        // Over HTTP the demo backend verifies credentials against the
        // gateway's published keys, as a real backend would; over stdio
        // there is no HTTP endpoint to publish them.
        let jwks = (!args.stdio).then(|| {
            let mut at = args.listen;
            if at.ip().is_unspecified() {
                at.set_ip(if at.is_ipv4() {
                    [127, 0, 0, 1].into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("http://{at}/.well-known/jwks.json")
        });
        start_demo_backend(addr, jwks).await?;
    }

    if let Err(e) = crate::reload::record_startup(&gw).await {
        tracing::error!(error = %e, "cannot record the manifest load");
    }
    if args.reload_interval_ms > 0 {
        crate::reload::spawn(
            gw.clone(),
            manifests.to_path_buf(),
            Duration::from_millis(args.reload_interval_ms),
        );
    }

    if args.stdio {
        let key = std::env::var("TOLLGATE_AGENT_KEY")
            .context("--stdio needs the agent's key in TOLLGATE_AGENT_KEY (issue one with `tollgate agents issue-key AGENT`)")?;
        // Checked once now for a clear startup error; the handler re-checks
        // on every request.
        let who = authenticate::authenticate_bearer(&gw, &key, Transport::Stdio)
            .await
            .map_err(|e| anyhow::anyhow!("TOLLGATE_AGENT_KEY was refused: {e}"))?;
        tracing::info!(agent = %who.agent().id, "serving MCP over stdio");
        let service = crate::mcp::McpFront::for_stdio(gw, &key)
            .serve(rmcp::transport::stdio())
            .await
            .context("the stdio session could not start")?;
        service
            .waiting()
            .await
            .context("the stdio session failed")?;
        return Ok(ExitCode::SUCCESS);
    }

    let mut options = HttpOptions {
        max_body_bytes: args.max_body_bytes,
        ..HttpOptions::default()
    };
    options.allowed_hosts.extend(args.allowed_hosts);
    options.allowed_origins = args.allowed_origins;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (pass --listen ADDR to use another address)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening on a non-loopback address; make sure TLS terminates in front of Tollgate");
    }
    eprintln!("Tollgate is serving MCP at http://{addr}/mcp  (Ctrl-C to stop)");
    server::serve(listener, gw, &options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the built-in demo backend. When its port is taken by another
/// Tollgate (say an HTTP gateway, while a desktop client launches a stdio
/// one on the same manifests), that one's demo backend is used instead.
async fn start_demo_backend(addr: SocketAddr, jwks: Option<String>) -> anyhow::Result<()> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!(%addr, "demo backend listening");
            tokio::spawn(async move {
                if let Err(e) = crate::demo::serve(listener, jwks).await {
                    tracing::error!(error = %e, "demo backend stopped");
                }
            });
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(%addr, "demo backend address in use; assuming another Tollgate serves it");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot start the demo backend on {addr}: {e}; edit or remove the DemoBackend manifest"
        )),
    }
}

async fn agents(data: &Path, manifests: &Path, cmd: AgentsCommand) -> anyhow::Result<ExitCode> {
    let catalog = load(manifests)?;
    let store = open_store(data).await?;
    match cmd {
        AgentsCommand::IssueKey { agent, label } => {
            let Some(entry) = catalog.agents.get(&agent) else {
                let known: Vec<_> = sorted(catalog.agents.keys())
                    .into_iter()
                    .map(String::as_str)
                    .collect();
                bail!(
                    "no agent `{agent}` in {} (declared: {})",
                    manifests.display(),
                    known.join(", ")
                );
            };
            if !entry.gateway_keys {
                bail!(
                    "agent `{agent}` does not accept gateway keys (credentials.gateway_keys is false)"
                );
            }
            let issued = authenticate::new_key();
            store
                .insert_key(&issued.key_id, &agent, &issued.hash, label.as_deref())
                .await?;
            eprintln!(
                "Issued {} for agent `{agent}`. Tollgate keeps only its hash: store the key now.",
                issued.key_id
            );
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", issued.key)?;
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Show {
            agent,
            json: as_json,
        } => {
            let a = known_agent(&catalog, manifests, &agent)?;
            let lifecycle = store.agent_lifecycle(&agent).await?;
            let events = store.lifecycle_events(&agent).await?;
            let keys: Vec<_> = store
                .list_keys()
                .await?
                .into_iter()
                .filter(|k| k.agent_id == agent)
                .collect();
            let status = lifecycle
                .as_ref()
                .map(|l| l.status)
                .unwrap_or(AgentStatus::Active);
            let overdue = time::OffsetDateTime::now_utc().date() >= a.review_by;
            let workload: Vec<_> = catalog
                .workloads
                .iter()
                .filter(|(_, owner)| **owner == agent)
                .map(|((issuer, subject), _)| json!({ "issuer": issuer, "subject": subject }))
                .collect();
            if as_json {
                let out = json!({
                    "id": a.id, "description": a.description,
                    "owners": { "business": a.owners.business, "system": a.owners.system, "security": a.owners.security },
                    "deployment": a.deployment, "review_by": a.review_by.to_string(), "review_overdue": overdue,
                    "status": status, "status_changed": lifecycle, "status_history": events,
                    "grants": a.grants, "tools": a.granted, "keys": keys, "workload_identities": workload,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("agent        {}", a.id);
                println!("description  {}", a.description);
                println!(
                    "status       {}{}",
                    status.as_str(),
                    if overdue {
                        " (review overdue: treated as suspended)"
                    } else {
                        ""
                    }
                );
                if let Some(l) = &lifecycle {
                    println!(
                        "             set by {} at {}: {}",
                        l.changed_by, l.changed_at, l.reason
                    );
                }
                println!(
                    "owners       business {} <{}>",
                    a.owners.business.name, a.owners.business.contact
                );
                println!(
                    "             system   {} <{}>",
                    a.owners.system.name, a.owners.system.contact
                );
                println!(
                    "             security {} <{}>",
                    a.owners.security.name, a.owners.security.contact
                );
                println!(
                    "approved     by {} on {}",
                    a.deployment.approved_by, a.deployment.approved_at
                );
                println!("review by    {}", a.review_by);
                println!("grants       {}", a.grants.join(", "));
                println!(
                    "tools        {}",
                    a.granted.iter().cloned().collect::<Vec<_>>().join(", ")
                );
                for w in &workload {
                    println!(
                        "identity     {}: {}",
                        w["issuer"].as_str().unwrap_or(""),
                        w["subject"].as_str().unwrap_or("")
                    );
                }
                for k in &keys {
                    let state = k
                        .revoked_at
                        .as_deref()
                        .map(|r| format!("revoked {r}"))
                        .unwrap_or_else(|| "live".into());
                    println!(
                        "key          {} ({state}, issued {}{})",
                        k.key_id,
                        k.created_at,
                        k.label
                            .as_deref()
                            .map(|l| format!(", {l}"))
                            .unwrap_or_default()
                    );
                }
                for e in &events {
                    println!(
                        "history      {} {} -> {} by {}: {}",
                        e.changed_at, e.from, e.to, e.changed_by, e.reason
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::RevokeKey { key_id } => {
            if store.revoke_key(&key_id).await? {
                println!("{key_id}: revoked; requests presenting it get 401 from now on");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no live key `{key_id}` (see `tollgate agents show AGENT` for key ids)")
            }
        }
        AgentsCommand::Suspend(c) => {
            change_status(
                store.as_ref(),
                &catalog,
                manifests,
                c,
                AgentStatus::Suspended,
            )
            .await
        }
        AgentsCommand::Resume(c) => {
            change_status(store.as_ref(), &catalog, manifests, c, AgentStatus::Active).await
        }
        AgentsCommand::Retire(c) => {
            change_status(store.as_ref(), &catalog, manifests, c, AgentStatus::Retired).await
        }
        AgentsCommand::List { json: as_json } => {
            let keys = store.list_keys().await?;
            let mut ids = sorted(catalog.agents.keys());
            ids.dedup();
            if as_json {
                let list: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        let a = &catalog.agents[*id];
                        let k: Vec<_> = keys.iter().filter(|k| &k.agent_id == *id).collect();
                        json!({
                            "id": a.id, "description": a.description,
                            "owners": {
                                "business": a.owners.business, "system": a.owners.system, "security": a.owners.security,
                            },
                            "grants": a.grants, "tools": a.granted, "keys": k,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<20} {:<20} {:>5} {:>5}  DESCRIPTION",
                    "AGENT", "BUSINESS OWNER", "TOOLS", "KEYS"
                );
                for id in ids {
                    let a = &catalog.agents[id];
                    let live = keys
                        .iter()
                        .filter(|k| &k.agent_id == id && k.revoked_at.is_none())
                        .count();
                    println!(
                        "{:<20} {:<20} {:>5} {:>5}  {}",
                        a.id,
                        a.owners.business.name,
                        a.granted.len(),
                        live,
                        a.description
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn known_agent<'a>(
    catalog: &'a Catalog,
    manifests: &Path,
    agent: &str,
) -> anyhow::Result<&'a crate::catalog::AgentEntry> {
    match catalog.agents.get(agent) {
        Some(a) => Ok(a),
        None => {
            let known: Vec<_> = sorted(catalog.agents.keys())
                .into_iter()
                .map(String::as_str)
                .collect();
            bail!(
                "no agent `{agent}` in {} (declared: {})",
                manifests.display(),
                known.join(", ")
            )
        }
    }
}

async fn change_status(
    store: &dyn Store,
    catalog: &Catalog,
    manifests: &Path,
    c: StatusChange,
    to: AgentStatus,
) -> anyhow::Result<ExitCode> {
    known_agent(catalog, manifests, &c.agent)?;
    if c.reason.trim().is_empty() {
        bail!("--reason must say why (it is recorded with the change)");
    }
    let by = operator(c.by);
    let event = store
        .set_agent_status(&c.agent, to, c.reason.trim(), &by)
        .await?;
    if c.json {
        println!("{}", serde_json::to_string(&event)?);
    } else {
        println!(
            "{}: {} -> {} (by {}, {})",
            event.agent_id, event.from, event.to, event.changed_by, event.changed_at
        );
        if to == AgentStatus::Retired {
            println!(
                "Its keys are revoked and every call from it is refused from now on; retirement cannot be undone."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit(data: &Path, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(data).await?;
    match cmd {
        AuditCommand::List {
            agent,
            limit,
            json: as_json,
        } => {
            let records = store
                .decisions(&DecisionFilter {
                    agent_id: agent,
                    limit: Some(limit),
                })
                .await?;
            if as_json {
                for r in &records {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                println!(
                    "{:<27} {:<14} {:<24} {:<6} {:<20} {:<11} {:>9}",
                    "AT", "AGENT", "TOOL", "DECIDE", "REASON", "OUTCOME", "LATENCY"
                );
                for r in &records {
                    let latency = r
                        .latency_us
                        .map(|u| format!("{:.1}ms", u as f64 / 1000.0))
                        .unwrap_or_default();
                    println!(
                        "{:<27} {:<14} {:<24} {:<6} {:<20} {:<11} {:>9}",
                        r.at,
                        r.agent_id,
                        r.tool,
                        r.decision,
                        r.reason_code,
                        r.outcome.as_deref().unwrap_or("-"),
                        latency
                    );
                }
                if records.is_empty() {
                    eprintln!("no decisions recorded yet");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Manifests {
            limit,
            json: as_json,
        } => {
            let changes = store.manifest_changes(limit).await?;
            for c in &changes {
                if as_json {
                    println!("{}", serde_json::to_string(c)?);
                    continue;
                }
                let touched: Vec<String> = c
                    .files
                    .as_array()
                    .map(|files| {
                        files
                            .iter()
                            .filter(|f| f["change"] != "unchanged")
                            .map(|f| {
                                format!(
                                    "{} {}",
                                    f["change"].as_str().unwrap_or(""),
                                    f["path"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!("{} {:<8} {}", c.at, c.outcome, touched.join(", "));
                for e in c.errors.iter().flatten() {
                    println!("    {e}");
                }
            }
            if changes.is_empty() {
                eprintln!("no manifest loads recorded yet");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
