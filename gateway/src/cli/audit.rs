//! `tollgate audit ...`: the trail. Decisions (with their outcomes,
//! `interrupted` for calls a crashed process left unfinished), manifest
//! loads and reloads, admin actions; `verify`, `query`, `export`,
//! `report` and `prune` over the hash-chained trail (`crate::audit`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use super::open_store;
use super::output::{self, Table, outln};
use crate::audit::{self, Audit, export, report, verify};
use crate::secrets::Secrets;
use crate::store::{AuditFilter, AuditRow, DecisionFilter, Store};
use crate::util::stamp;

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
    /// Recompute the hash chain and check every signed checkpoint. Exits 0
    /// when the trail is intact, 1 naming the first record altered,
    /// removed or reordered, or a checkpoint that does not check.
    Verify {
        /// Also check the checkpoints exported to this file (the
        /// `--audit-checkpoint-file` of `serve`): catches a trail whose
        /// tail was cut together with its stored checkpoints.
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
        /// Verify this archive (written by a prune) instead of the store.
        #[arg(long, value_name = "FILE")]
        archive: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find records: every filter narrows the result, newest first.
    Query {
        #[command(flatten)]
        filter: Filter,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON (an array of records).
        #[arg(long)]
        json: bool,
    },
    /// Write records, oldest first, as JSON lines or OCSF events.
    Export {
        /// `jsonl` (records as stored, with hashes) or `ocsf` (OCSF 1.3.0
        /// API Activity events, class 6003).
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        #[command(flatten)]
        filter: Filter,
        /// Write to this file instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// An incident report in Markdown for one agent: owners and who
    /// approved its deployment, tasks, what it accessed, denials,
    /// approvals, credentials, failed authentications; from the trail.
    Report {
        /// The agent.
        #[arg(long)]
        agent: String,
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// From this time (RFC 3339, a date, or an age such as `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Archive and remove records older than a time. A signed anchor marks
    /// where the kept trail begins, so `verify` still passes, and the
    /// archive verifies on its own (`verify --archive FILE`).
    Prune {
        /// Remove records before this time (RFC 3339, a date, or an age
        /// such as `90d`).
        #[arg(long)]
        before: String,
        /// Where the archive is written (default: DATA/audit-archive).
        #[arg(long, value_name = "DIR")]
        archive_dir: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Format {
    /// One JSON record per line.
    Jsonl,
    /// One OCSF API Activity event per line.
    Ocsf,
}

/// Filters shared by `query` and `export`.
#[derive(Debug, clap::Args)]
pub(super) struct Filter {
    /// Only this agent's records.
    #[arg(long)]
    agent: Option<String>,
    /// Only this task's records.
    #[arg(long)]
    task: Option<String>,
    /// Only this tool's records.
    #[arg(long)]
    tool: Option<String>,
    /// Only calls with this decision (`allow` or `deny`).
    #[arg(long)]
    decision: Option<String>,
    /// Only records with this reason code (`tool_not_granted`, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Only call outcomes of this kind (`ok`, `failed`, `interrupted`, ...).
    #[arg(long)]
    outcome: Option<String>,
    /// Only records of this kind (`call`, `task.started`; `task.` for
    /// every task record).
    #[arg(long)]
    kind: Option<String>,
    /// From this time (RFC 3339, a date, or an age such as `24h`, `7d`).
    #[arg(long)]
    since: Option<String>,
    /// Before this time (same forms).
    #[arg(long)]
    until: Option<String>,
}

impl Filter {
    fn to_store(&self, now: time::OffsetDateTime) -> anyhow::Result<AuditFilter> {
        Ok(AuditFilter {
            agent_id: self.agent.clone(),
            task_id: self.task.clone(),
            tool: self.tool.clone(),
            kind: self.kind.clone(),
            decision: self.decision.clone(),
            reason_code: self.reason.clone(),
            outcome: self.outcome.clone(),
            since: self.since.as_deref().map(|t| when(t, now)).transpose()?,
            until: self.until.as_deref().map(|t| when(t, now)).transpose()?,
            limit: None,
            newest_first: false,
        })
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("agent", &self.agent),
            ("task", &self.task),
            ("tool", &self.tool),
            ("decision", &self.decision),
            ("reason", &self.reason),
            ("outcome", &self.outcome),
            ("kind", &self.kind),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
        parts.join(" ")
    }
}

/// A time on the command line: RFC 3339, a date (midnight UTC), or an age
/// (`30m`, `24h`, `7d`) counted back from now.
fn when(text: &str, now: time::OffsetDateTime) -> anyhow::Result<String> {
    use time::format_description::well_known::Rfc3339;
    let t = text.trim();
    if let Ok(at) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return Ok(stamp(at));
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(t, &date_format) {
        return Ok(stamp(d.midnight().assume_utc()));
    }
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num.parse().map_err(|_| {
        anyhow::anyhow!("`{t}` is not a time: use RFC 3339 (2026-12-01T09:00:00Z), a date (2026-12-01) or an age (30m, 24h, 7d)")
    })?;
    let age = match unit {
        "s" => time::Duration::seconds(n),
        "m" => time::Duration::minutes(n),
        "h" => time::Duration::hours(n),
        "d" => time::Duration::days(n),
        _ => anyhow::bail!(
            "`{t}` is not a time: use RFC 3339 (2026-12-01T09:00:00Z), a date (2026-12-01) or an age (30m, 24h, 7d)"
        ),
    };
    Ok(stamp(now - age))
}

/// Folds records other processes captured (tasks, keys, approvals, ...)
/// into the chain, so what is read next is chained and complete.
async fn fold(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    let writer = Audit::new(store.clone(), audit::DEFAULT_CHAIN, Arc::new(|_| {}));
    writer
        .fold()
        .await
        .context("cannot fold recorded changes into the audit chain")?;
    Ok(())
}

fn short(r: &AuditRow) -> String {
    match (&r.decision, &r.outcome) {
        (Some(d), _) => d.clone(),
        (None, Some(o)) => o.clone(),
        _ => "-".into(),
    }
}

fn open_output(path: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

pub(super) async fn run(
    data: &Path,
    manifests: &Path,
    cmd: AuditCommand,
) -> anyhow::Result<ExitCode> {
    if let AuditCommand::Verify {
        archive: Some(path),
        json,
        ..
    } = &cmd
    {
        let secrets = Secrets::load_or_create(data)?;
        let report = verify::verify_archive(&secrets, path)?;
        return print_verify(&report, *json, Some(path));
    }
    let store = open_store(data).await?;
    let now = time::OffsetDateTime::now_utc();
    match cmd {
        AuditCommand::Verify {
            checkpoints, json, ..
        } => {
            fold(&store).await?;
            let secrets = Secrets::load_or_create(data)?;
            let report = verify::verify(&store, &secrets, checkpoints.as_deref()).await?;
            print_verify(&report, json, None)
        }
        AuditCommand::Query {
            filter,
            limit,
            json,
        } => {
            fold(&store).await?;
            let mut f = filter.to_store(now)?;
            f.limit = Some(limit);
            f.newest_first = true;
            let rows = store.audit_records(&f).await?;
            if rows.is_empty() {
                if let Some(agent) = &filter.agent
                    && !known_agent(&store, manifests, agent).await
                {
                    eprintln!(
                        "no agent `{agent}`: it is not in the manifests in {} and no record names it",
                        manifests.display()
                    );
                    return Ok(ExitCode::FAILURE);
                }
                if json {
                    output::json(&rows)?;
                }
                let what = filter.describe();
                if what.is_empty() {
                    eprintln!("the audit trail is empty");
                } else {
                    eprintln!("no records match {what}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            if json {
                let v: Vec<serde_json::Value> = rows.iter().map(export::jsonl).collect();
                output::json(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                "SEQ", "AT", "KIND", "AGENT", "TOOL", "TASK", "RESULT", "REASON",
            ])
            .right(0);
            for r in &rows {
                table.row(vec![
                    r.seq.to_string(),
                    r.at.clone(),
                    r.kind.clone(),
                    r.agent_id.clone().unwrap_or_else(|| "-".into()),
                    r.tool.clone().unwrap_or_else(|| "-".into()),
                    r.task_id.clone().unwrap_or_else(|| "-".into()),
                    short(r),
                    r.reason_code.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            table.print()?;
            if rows.len() as u32 == limit {
                eprintln!("(showing the newest {limit}; --limit N for more)");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            format,
            filter,
            output,
        } => {
            fold(&store).await?;
            let f = filter.to_store(now)?;
            let rows = store.audit_records(&f).await?;
            let mut out = open_output(output.as_deref())?;
            for r in &rows {
                let v = match format {
                    Format::Jsonl => export::jsonl(r),
                    Format::Ocsf => export::ocsf(r),
                };
                serde_json::to_writer(&mut out, &v)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            if let Some(p) = &output {
                eprintln!("wrote {} record(s) to {}", rows.len(), p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Report {
            agent,
            task,
            since,
            output,
        } => {
            fold(&store).await?;
            let since = since.as_deref().map(|t| when(t, now)).transpose()?;
            let rows = store
                .audit_records(&AuditFilter {
                    agent_id: Some(agent.clone()),
                    task_id: task.clone(),
                    since: since.clone(),
                    ..AuditFilter::default()
                })
                .await?;
            if rows.is_empty() && !known_agent(&store, manifests, &agent).await {
                eprintln!(
                    "no agent `{agent}`: it is not in the manifests in {} and no record names it",
                    manifests.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            let secrets = Secrets::load_or_create(data)?;
            let checked = verify::verify(&store, &secrets, None).await?;
            let verified = if checked.ok {
                Ok(checked.chains.iter().map(|c| c.records).sum())
            } else {
                Err(checked
                    .problems
                    .first()
                    .map(|p| p.message.clone())
                    .unwrap_or_default())
            };
            let text = report::markdown(
                &report::Scope {
                    agent,
                    task,
                    since,
                    generated_at: stamp(now),
                    verified: Some(verified),
                },
                &rows,
            );
            let mut out = open_output(output.as_deref())?;
            out.write_all(text.as_bytes())?;
            out.flush()?;
            if let Some(p) = &output {
                eprintln!("wrote the report to {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prune {
            before,
            archive_dir,
            json,
        } => {
            fold(&store).await?;
            let before = when(&before, now)?;
            let dir = archive_dir.unwrap_or_else(|| data.join("audit-archive"));
            let secrets = Secrets::load_or_create(data)?;
            let done =
                audit::prune::prune(store.as_ref(), &secrets, &before, &dir, &stamp(now)).await?;
            if json {
                output::json(&done)?;
                return Ok(ExitCode::SUCCESS);
            }
            if done.is_empty() {
                eprintln!("no records before {before}: nothing to prune");
            }
            for p in &done {
                outln!(
                    "chain {}: archived and removed records {}..{} ({} records) to {}",
                    p.chain,
                    p.from,
                    p.upto,
                    p.records,
                    p.archive.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
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

/// Whether `agent` is in the manifests or named by any record.
async fn known_agent(store: &Arc<dyn Store>, manifests: &Path, agent: &str) -> bool {
    if crate::manifest::load_dir(manifests).is_ok_and(|c| c.agents.contains_key(agent)) {
        return true;
    }
    store
        .audit_records(&AuditFilter {
            agent_id: Some(agent.to_string()),
            limit: Some(1),
            ..AuditFilter::default()
        })
        .await
        .is_ok_and(|r| !r.is_empty())
}

fn print_verify(
    report: &verify::Report,
    json: bool,
    archive: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let code = if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if json {
        output::json(report)?;
        return Ok(code);
    }
    for c in &report.chains {
        let from = if c.from > 0 {
            format!("from the anchor after record {}", c.from)
        } else {
            "from the start".into()
        };
        let what =
            archive.map_or_else(|| format!("chain {}", c.chain), |p| p.display().to_string());
        outln!(
            "{what}: {} record(s) checked {from}, up to record {}; {} checkpoint(s)",
            c.records,
            c.last,
            c.checkpoints
        );
    }
    if report.chains.is_empty() {
        outln!("the audit trail is empty");
    }
    if report.pending > 0 {
        eprintln!(
            "note: {} record(s) are waiting to be chained (a gateway folds them within a second)",
            report.pending
        );
    }
    if report.ok {
        outln!("OK: the audit trail is intact");
    } else {
        for p in &report.problems {
            outln!("FAILED: chain {}: {}", p.chain, p.message);
        }
    }
    Ok(code)
}
