//! `tollgate policy ...`: dry-run decisions (`explain`), run a table of
//! expected decisions (`test`), print the generated Cedar schema (`schema`).
//! Both `explain` and `test` go through `pipeline::policy::explain`, the
//! same checks and decision a live call gets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::output::{self, outln};
use super::{known_agent, load, open_store};
use crate::catalog::Catalog;
use crate::pipeline::policy::{Explained, dry_run_task, explain};
use crate::store::TaskStatus;

#[derive(Debug, Subcommand)]
pub(super) enum PolicyCommand {
    /// What a call would come to, and why, without calling anything.
    Explain {
        /// The agent calling.
        #[arg(long)]
        agent: String,
        /// The tool (`connector.tool`).
        #[arg(long)]
        tool: String,
        /// The arguments, as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// A task of this agent, read from the store (--data).
        #[arg(long, conflicts_with = "in_task")]
        task: Option<String>,
        /// As if within a task that lists the tool (add --constraint).
        #[arg(long)]
        in_task: bool,
        /// A constraint of that task, e.g. `amount <= 500` (repeatable).
        #[arg(long = "constraint", requires = "in_task")]
        constraints: Vec<String>,
        /// Print JSON (an object).
        #[arg(long)]
        json: bool,
    },
    /// Run a table of expected decisions (YAML); exit 1 if any differs.
    Test {
        /// The table file.
        file: PathBuf,
        /// Print JSON (an object: passed, failed, cases).
        #[arg(long)]
        json: bool,
    },
    /// Print the Cedar schema generated from the manifests.
    Schema,
}

pub(super) async fn run(
    data: &Path,
    manifests: &Path,
    cmd: PolicyCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Explain {
            agent,
            tool,
            args,
            task,
            in_task,
            constraints,
            json,
        } => {
            let catalog = load(manifests)?;
            let entry = known_agent(&catalog, manifests, &agent)?;
            let arguments: Map<String, Value> = match serde_json::from_str(&args) {
                Ok(Value::Object(m)) => m,
                Ok(_) => bail!("--args must be a JSON object, e.g. '{{\"amount\": 40}}'"),
                Err(e) => {
                    bail!("--args is not valid JSON ({e}); write it like '{{\"amount\": 40}}'")
                }
            };
            let task = match task {
                None if in_task => Some(dry_run_task(&agent, &tool, constraints)),
                None => None,
                Some(id) => {
                    let store = open_store(data).await?;
                    let t = store
                        .task(&id)
                        .await
                        .context("cannot read the task")?
                        .filter(|t| t.agent_id == agent)
                        .with_context(|| {
                            format!("no task `{id}` for agent `{agent}` in {}", data.display())
                        })?;
                    let expired = !time::OffsetDateTime::parse(
                        &t.expires_at,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .is_ok_and(|at| at > time::OffsetDateTime::now_utc());
                    if t.status != TaskStatus::Active || expired {
                        let status = if t.status == TaskStatus::Active {
                            "expired"
                        } else {
                            t.status.as_str()
                        };
                        bail!(
                            "task `{id}` is {status}; a live call in it would be refused (task_ended)"
                        );
                    }
                    Some(t)
                }
            };
            let now = time::OffsetDateTime::now_utc();
            let e = explain(&catalog, entry, &tool, arguments, task.as_ref(), now);
            if json {
                output::json(&e)?;
            } else {
                print_explained(&e)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Test { file, json } => {
            let report = run_table(&file, manifests)?;
            if json {
                output::json(&report)?;
            } else {
                for c in &report.cases {
                    if c.passed {
                        outln!("ok    {}", c.name);
                    } else {
                        outln!("FAIL  {}", c.name);
                        outln!("      expected {}", c.expected);
                        outln!(
                            "      got      {} ({}): {}",
                            c.got.verdict,
                            c.got.code,
                            c.got.summary
                        );
                    }
                }
                outln!(
                    "{} passed, {} failed ({})",
                    report.passed,
                    report.failed,
                    file.display()
                );
            }
            Ok(if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PolicyCommand::Schema => {
            let catalog = load(manifests)?;
            outln!("{}", schema_of(&catalog)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The Cedar schema of a catalog, as `tollgate policy schema` prints it.
pub fn schema_of(catalog: &Catalog) -> anyhow::Result<String> {
    let (_, _, tools) = crate::manifest::policy_facts(catalog);
    crate::policy::schema_text(&tools).map_err(anyhow::Error::msg)
}

fn print_explained(e: &Explained) -> std::io::Result<()> {
    outln!("decision: {} ({})", e.verdict, e.code);
    outln!("stage:    {}", e.stage);
    outln!("why:      {}", e.summary);
    if let Some(d) = &e.decision {
        for p in &d.policies {
            let reason = p
                .reason
                .as_deref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default();
            outln!(
                "policy:   {} {} ({}:{}){reason}",
                p.effect,
                p.id,
                p.file,
                p.line
            );
        }
        if let Some(a) = &d.approval {
            outln!(
                "approval: {} ({}), {} approver(s), waits up to {}s [{}]",
                a.approvers,
                a.route,
                a.count,
                a.timeout_seconds,
                a.source
            );
        }
        for c in &d.violated_constraints {
            outln!("breaks:   task constraint `{c}`");
        }
    }
    Ok(())
}

/// A table of expected decisions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyTable {
    /// Manifest directory, relative to the table (default: --manifests).
    #[serde(default)]
    manifests: Option<PathBuf>,
    /// The time the decisions are made at (RFC 3339; default: now).
    #[serde(default)]
    now: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    agent: String,
    tool: String,
    #[serde(default)]
    args: Map<String, Value>,
    #[serde(default)]
    task: Option<TaskCase>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskCase {
    #[serde(default = "default_purpose")]
    purpose: String,
    /// Default: the case's tool.
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    constraints: Vec<String>,
    /// Default: `agent:<agent>`.
    #[serde(default)]
    started_by: Option<String>,
}

fn default_purpose() -> String {
    "policy test".into()
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `allow`, `deny` or `approval_required`.
    decision: String,
    /// The reason code, if it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// Who must approve (the owner's or role's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    approvers: Option<String>,
    /// Ids of the policies that must have matched (in any order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policies: Option<Vec<String>>,
}

/// The result of one table.
#[derive(Debug, Serialize)]
pub struct TableReport {
    /// Cases that matched.
    pub passed: usize,
    /// Cases that did not.
    pub failed: usize,
    /// Each case.
    pub cases: Vec<CaseReport>,
}

/// One case's result.
#[derive(Debug, Serialize)]
pub struct CaseReport {
    /// Its name.
    pub name: String,
    /// Whether it matched.
    pub passed: bool,
    /// What was expected, as written.
    pub expected: String,
    /// What the decision was.
    pub got: Explained,
}

/// Runs a policy table against the manifests it names (else
/// `default_manifests`).
pub fn run_table(file: &Path, default_manifests: &Path) -> anyhow::Result<TableReport> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let table: PolicyTable = serde_yaml_ng::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        anyhow::anyhow!("{}{at}: {e}", file.display())
    })?;
    let dir = match &table.manifests {
        Some(d) => file.parent().unwrap_or(Path::new(".")).join(d),
        None => default_manifests.to_path_buf(),
    };
    let catalog = load(&dir)?;
    let now = match &table.now {
        None => time::OffsetDateTime::now_utc(),
        Some(t) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .with_context(|| {
            format!("{}: `now: {t}` is not an RFC 3339 time", file.display())
        })?,
    };
    let mut cases = Vec::new();
    for case in table.cases {
        let agent = known_agent(&catalog, &dir, &case.agent)
            .with_context(|| format!("case `{}`", case.name))?;
        let task = case.task.as_ref().map(|t| {
            let mut r = dry_run_task(&case.agent, &case.tool, t.constraints.clone());
            r.purpose = t.purpose.clone();
            if let Some(tools) = &t.tools {
                r.tools = tools.clone();
            }
            if let Some(by) = &t.started_by {
                r.started_by = by.clone();
            }
            r
        });
        let got = explain(
            &catalog,
            agent,
            &case.tool,
            case.args.clone(),
            task.as_ref(),
            now,
        );
        let e = &case.expect;
        let matched_ids: Vec<&str> = got
            .decision
            .as_ref()
            .map(|d| d.policies.iter().map(|p| p.id.as_str()).collect())
            .unwrap_or_default();
        let passed = got.verdict == e.decision
            && e.code.as_deref().is_none_or(|c| c == got.code)
            && e.approvers.as_deref().is_none_or(|a| {
                got.decision
                    .as_ref()
                    .and_then(|d| d.approval.as_ref())
                    .is_some_and(|x| x.approvers == a)
            })
            && e.policies.as_ref().is_none_or(|want| {
                let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
                let mut have = matched_ids.clone();
                want.sort_unstable();
                have.sort_unstable();
                want == have
            });
        cases.push(CaseReport {
            name: case.name,
            passed,
            expected: json!(e).to_string(),
            got,
        });
    }
    let failed = cases.iter().filter(|c| !c.passed).count();
    Ok(TableReport {
        passed: cases.len() - failed,
        failed,
        cases,
    })
}
