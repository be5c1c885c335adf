//! `tollgate audit ...`: the records. Decisions (with their outcomes,
//! `interrupted` for calls a crashed process left unfinished), manifest
//! loads and reloads, admin actions.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::open_store;
use super::output::{self, Table, outln};
use crate::store::DecisionFilter;

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Show recent decisions, newest first.
    List {
        /// Only this agent's decisions.
        #[arg(long)]
        agent: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// Show manifest loads and reloads (applied or rejected), newest first.
    Manifests {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// Show admin actions (admin keys issued and revoked, tasks started and
    /// ended through the admin API), newest first, with who and when.
    Admin {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(data: &Path, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(data).await?;
    match cmd {
        AuditCommand::List { agent, limit, json } => {
            let records = store
                .decisions(&DecisionFilter {
                    agent_id: agent,
                    limit: Some(limit),
                })
                .await?;
            if json {
                output::json(&records)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                "AT", "AGENT", "TOOL", "DECIDE", "REASON", "OUTCOME", "LATENCY",
            ])
            .right(6);
            for r in &records {
                let latency = r
                    .latency_us
                    .map(|u| format!("{:.1}ms", u as f64 / 1000.0))
                    .unwrap_or_default();
                table.row(vec![
                    r.at.clone(),
                    r.agent_id.clone(),
                    r.tool.clone(),
                    r.decision.clone(),
                    r.reason_code.clone(),
                    r.outcome.clone().unwrap_or_else(|| "-".into()),
                    latency,
                ]);
            }
            table.print()?;
            if records.is_empty() {
                eprintln!("no decisions recorded yet");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Manifests { limit, json } => {
            let changes = store.manifest_changes(limit).await?;
            if json {
                output::json(&changes)?;
                return Ok(ExitCode::SUCCESS);
            }
            for c in &changes {
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
                outln!("{} {:<8} {}", c.at, c.outcome, touched.join(", "));
                for e in c.errors.iter().flatten() {
                    outln!("    {e}");
                }
            }
            if changes.is_empty() {
                eprintln!("no manifest loads recorded yet");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Admin { limit, json } => {
            let actions = store.admin_actions(limit).await?;
            if json {
                output::json(&actions)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["AT", "BY", "ACTION", "TARGET", "AGENT", "DETAIL"]);
            for a in &actions {
                table.row(vec![
                    a.at.clone(),
                    a.actor.clone(),
                    a.action.clone(),
                    a.target.clone(),
                    a.agent_id.clone().unwrap_or_else(|| "-".into()),
                    a.detail.clone().unwrap_or_default(),
                ]);
            }
            table.print()?;
            if actions.is_empty() {
                eprintln!("no admin actions recorded yet");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
