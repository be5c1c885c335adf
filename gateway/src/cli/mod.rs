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
pub mod config_file;
mod connectors;
mod keys;
pub mod output;
pub mod policy;
mod serve;
mod tasks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};

use crate::Gateway;
use crate::catalog::Catalog;
use crate::logging::LogFormat;
use crate::manifest::{self, ManifestErrors};
use crate::store::{SqliteStore, Store};

/// The version and the commit it was built from (`tollgate --version`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TOLLGATE_GIT_COMMIT"),
    ")"
);

/// Tollgate: a governed MCP tool gateway for AI agents.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version = VERSION,
    about,
    long_about = None,
    after_help = "Every flag that names an environment variable can also be set in a \
configuration file (`tollgate.toml` in the working directory, or --config FILE), by the \
flag's name: flag > environment variable > file > default."
)]
pub struct Cli {
    /// Configuration file (TOML; settings named like the flags). Default:
    /// ./tollgate.toml when it exists.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Upstream MCP servers (`mcp` connectors): status, pin, diff.
    #[command(
        subcommand,
        after_help = "Exit status: 0 as pinned (status, diff) or pins written (pin); \
1 an upstream unreachable, a tool missing or changed, or the manifest not editable; 2 usage error."
    )]
    Connectors(connectors::ConnectorsCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Install, e.g.: tollgate completions bash > ~/.local/share/bash-completion/completions/tollgate\n\
                  tollgate completions zsh > \"${fpath[1]}/_tollgate\"\n\
                  tollgate completions fish > ~/.config/fish/completions/tollgate.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `tollgate man | man -l -`; with --dir,
    /// write tollgate.1 and a page per subcommand (tollgate-serve.1, ...)
    /// there instead.
    Man {
        /// A directory (e.g. /usr/local/share/man/man1) for every page.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// With --dir: print the files written as JSON (an array).
        #[arg(long)]
        json: bool,
    },
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let args = match config_file::apply(Cli::command(), std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
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
        Command::Connectors(cmd) => {
            log("warn");
            connectors::run(&cli.manifests, cmd).await
        }
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
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tollgate", &mut out);
            output::write_stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir, json } => man(dir.as_deref(), json),
    }
}

/// The man pages, from the clap definition, with what clap_mangen leaves
/// out on the main page: the environment variables and the files.
fn man(dir: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    page.extend_from_slice(man_environment(&Cli::command()).as_bytes());
    let Some(dir) = dir else {
        output::write_stdout(&page)?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages to {}", dir.display()))?;
    let main = dir.join("tollgate.1");
    std::fs::write(&main, &page).with_context(|| format!("cannot write {}", main.display()))?;
    let mut written: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .map(|p| p.display().to_string())
        .collect();
    written.sort();
    if json {
        output::json(&written)?;
    } else {
        output::outln!("wrote {} man pages to {}", written.len(), dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// ENVIRONMENT and FILES sections in roff: every variable any command
/// reads, with its flag.
fn man_environment(cmd: &clap::Command) -> String {
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for arg in cmd.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                let env = env.to_string_lossy().into_owned();
                if !out.iter().any(|(e, _)| *e == env) {
                    out.push((env, format!("{path}--{long}").trim().to_string()));
                }
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path}{} ", sub.get_name()), out);
        }
    }
    let mut vars = Vec::new();
    walk(cmd, "", &mut vars);
    vars.sort();
    let esc = |s: &str| s.replace('\\', "\\\\").replace('-', "\\-");
    let mut roff = String::from(".SH ENVIRONMENT\n");
    for (env, flag) in vars {
        roff.push_str(&format!(
            ".TP\n\\fB{}\\fR\nas \\fB{}\\fR\n",
            esc(&env),
            esc(&flag)
        ));
    }
    roff.push_str(concat!(
        ".SH FILES\n.TP\n\\fBtollgate.toml\\fR\n",
        "Optional settings, named like the flags that have an environment variable ",
        "(in the working directory, or \\fB\\-\\-config\\fR FILE). ",
        "Precedence: flag, environment variable, file, default.\n"
    ));
    roff
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's leaf path (`agents issue-key`), with the command.
    fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        let subs: Vec<_> = cmd.get_subcommands().collect();
        if subs.is_empty() {
            out.push((path.clone(), cmd.clone()));
        }
        for sub in subs {
            let p = format!("{path} {}", sub.get_name()).trim().to_string();
            leaves(sub, p, out);
        }
    }

    /// One convention for scripts: every command that reports something
    /// takes `--json`. The exceptions produce a document of their own kind.
    #[test]
    fn every_command_that_reports_takes_json() {
        let own_format = [
            "serve",
            "schema",
            "completions",
            "man",
            "policy schema",
            "audit export",
            "audit report",
        ];
        let mut all = Vec::new();
        leaves(&Cli::command(), String::new(), &mut all);
        assert!(all.len() > 30, "{}", all.len());
        let missing: Vec<&str> = all
            .iter()
            .filter(|(path, cmd)| {
                !own_format.contains(&path.as_str())
                    && !cmd.get_arguments().any(|a| a.get_long() == Some("json"))
            })
            .map(|(path, _)| path.as_str())
            .collect();
        assert!(missing.is_empty(), "without --json: {missing:?}");
    }

    #[test]
    fn the_version_names_the_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.contains(" (commit "), "{VERSION}");
    }
}
