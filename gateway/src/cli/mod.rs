//! The `tollgate` command line. `main.rs` calls [`main`]; every command
//! group has its own file (`serve`, `check`, `agents`, `tasks`, `keys`,
//! `admin`, `audit`, `policy`, `approvals`), all output goes through [`output`], and the running
//! gateway is assembled by [`crate::app`], as in the tests.
//!
//! Exit codes: 0 success (also when stdout is closed early, as by
//! `| head`), 1 the command ran and failed (invalid manifests, unknown
//! agent, store or network error), 2 usage error (from clap, and `check`
//! on a directory it cannot check).

mod admin;
mod agents;
mod approvals;
mod audit;
mod check;
mod keys;
pub mod output;
pub mod policy;
mod serve;
mod tasks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::Gateway;
use crate::catalog::Catalog;
use crate::logging::LogFormat;
use crate::manifest::{self, ManifestErrors};
use crate::store::{SqliteStore, Store};

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
    /// Log line format on stderr (levels: RUST_LOG).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (Streamable HTTP at /mcp, or stdio with --stdio).
    Serve(serve::ServeArgs),
    /// Validate a manifest directory: every error and warning, with
    /// file:line:column.
    #[command(
        after_help = "Exit status: 0 valid (warnings are printed but allowed), \
1 errors in the manifests, 2 usage error or a directory that cannot be checked \
(unreadable, or no *.yaml/*.yml files in it)."
    )]
    Check(check::CheckArgs),
    /// Print the manifest JSON Schema.
    Schema,
    /// Inspect agents and issue their keys.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// Read the records: decisions, manifest loads, admin actions.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Start, inspect and end tasks.
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// The gateway's signing keys (task tokens, backend JWTs).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Keys for the admin HTTP API (/admin/tasks).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Dry-run policy decisions, run policy tables, print the Cedar schema.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// People who approve high-risk calls, and their credentials.
    #[command(subcommand)]
    Approvers(approvals::ApproversCommand),
    /// Review the approval queue of a running gateway (as the approver in
    /// TOLLGATE_APPROVER_KEY).
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
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
        // The reader of our stdout went away (`| head`): it has what it
        // wanted; not an error.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let log = |default: &str| crate::logging::init(default, cli.log_format);
    match cli.command {
        // Sets up its own logging, with traces when asked for.
        Command::Serve(args) => serve::run(&cli.data, &cli.manifests, args, cli.log_format).await,
        Command::Check(args) => check::check(&cli.manifests, args),
        Command::Schema => check::schema(),
        Command::Agents(cmd) => {
            log("warn");
            agents::run(&cli.data, &cli.manifests, cmd).await
        }
        Command::Audit(cmd) => {
            log("warn");
            audit::run(&cli.data, &cli.manifests, cmd).await
        }
        Command::Tasks(cmd) => {
            log("warn");
            tasks::run(&cli.data, &cli.manifests, cmd).await
        }
        Command::Keys(cmd) => keys::run(&cli.data, cmd),
        Command::Admin(cmd) => {
            log("warn");
            admin::run(&cli.data, &cli.manifests, cmd).await
        }
        Command::Policy(cmd) => {
            log("warn");
            policy::run(&cli.data, &cli.manifests, cmd).await
        }
        Command::Approvers(cmd) => {
            log("warn");
            approvals::approvers(&cli.data, &cli.manifests, cmd).await
        }
        Command::Approvals(cmd) => {
            log("warn");
            approvals::approvals(cmd).await
        }
    }
}

/// Loads the manifests, or says what to fix.
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

fn sorted<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<_> = keys.collect();
    v.sort();
    v
}

async fn open_store(data: &Path) -> anyhow::Result<Arc<dyn Store>> {
    let store = SqliteStore::open(data)
        .await
        .with_context(|| format!("cannot open the store in {}", data.display()))?;
    Ok(Arc::new(store))
}

async fn open_gateway(data: &Path, catalog: Catalog) -> anyhow::Result<Gateway> {
    let secrets = crate::secrets::Secrets::load_or_create(data)?;
    Ok(Gateway::new(catalog, open_store(data).await?, secrets))
}

/// Who is running the command: `--by`, else the login name.
fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The agent `agent` of the catalog, or an error listing the declared ones.
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
