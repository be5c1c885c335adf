//! `tollgate tasks ...`: start, list, show and end tasks as an operator.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use super::output::{self, Table, outln};
use super::{open_gateway, operator};
use crate::store::{TaskFilter, TaskStatus};

#[derive(Debug, Subcommand)]
pub(super) enum TasksCommand {
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
        /// Print JSON (an object: id, token, expiry, ...).
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
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// Show one task and the credentials issued for it.
    Show {
        /// Task id.
        task: String,
        /// Print JSON (an object).
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
        /// Print JSON (an object).
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(
    data: &Path,
    manifests: &Path,
    cmd: TasksCommand,
) -> anyhow::Result<ExitCode> {
    let gw = open_gateway(data, super::load(manifests)?).await?;
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
                output::json(&json!({
                    "task_id": t.id, "agent": t.agent_id, "purpose": t.purpose, "tools": t.tools,
                    "constraints": t.constraints, "expires_at": t.expires_at, "task_token": started.token,
                }))?;
            } else {
                eprintln!("Task {} for `{}` until {}", t.id, t.agent_id, t.expires_at);
                eprintln!("  tools: {}", t.tools.join(", "));
                if !t.constraints.is_empty() {
                    eprintln!("  constraints: {}", t.constraints.join("; "));
                }
                eprintln!("Task token (the agent's bearer credential for this task; shown once):");
                outln!("{}", started.token);
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
                output::json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["TASK", "AGENT", "STATUS", "EXPIRES", "PURPOSE"]);
            for t in &list {
                table.row(vec![
                    t.id.clone(),
                    t.agent_id.clone(),
                    t.status.as_str().into(),
                    t.expires_at.clone(),
                    t.purpose.clone(),
                ]);
            }
            table.print()?;
            if list.is_empty() {
                eprintln!("no tasks");
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
                output::json(&json!({ "task": t, "credentials": creds }))?;
                return Ok(ExitCode::SUCCESS);
            }
            outln!("task         {}", t.id);
            outln!("agent        {}", t.agent_id);
            outln!("purpose      {}", t.purpose);
            outln!("tools        {}", t.tools.join(", "));
            if !t.constraints.is_empty() {
                outln!("constraints  {}", t.constraints.join("; "));
            }
            outln!(
                "started      {} by {} ({})",
                t.created_at,
                t.started_by,
                t.origin
            );
            outln!("expires      {}", t.expires_at);
            outln!("status       {}", t.status.as_str());
            if let (Some(at), Some(by)) = (&t.ended_at, &t.ended_by) {
                outln!(
                    "ended        {at} by {by}: {}",
                    t.end_reason.as_deref().unwrap_or("")
                );
            }
            for c in &creds {
                let state = match &c.revoked_at {
                    Some(r) => format!("revoked {r}"),
                    None => "live".into(),
                };
                outln!(
                    "credential   {} {} for {} ({state}; issued {}, expires {})",
                    c.id,
                    c.kind,
                    c.connector_id,
                    c.issued_at,
                    c.expires_at.as_deref().unwrap_or("never")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::End {
            task,
            reason,
            by,
            json,
        } => {
            let ended =
                crate::tasks::end(&gw, &task, TaskStatus::Revoked, &operator(by), &reason).await?;
            if json {
                output::json(&serde_json::json!({
                    "task": ended.id,
                    "status": ended.status.as_str(),
                    "reason": reason,
                }))?;
            } else {
                outln!(
                    "{}: ended ({}); its token and credentials are revoked",
                    ended.id,
                    ended.status.as_str()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
