//! `tollgate audit report`: an incident report in Markdown, built from the
//! trail alone: who owns the agent and approved its deployment, what it
//! accessed and when, under which tasks, what was denied and why, which
//! approvals were given by whom, which credentials were issued and revoked.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::store::AuditRow;

/// What the report covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Agent.
    pub agent: String,
    /// Only this task.
    pub task: Option<String>,
    /// Only from this time.
    pub since: Option<String>,
    /// When the report was made.
    pub generated_at: String,
    /// The result of verifying the trail, shown at the top.
    pub verified: Option<Result<u64, String>>,
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Escapes a value for a Markdown table cell.
fn cell(text: &str) -> String {
    let t = text.replace('|', "\\|").replace(['\n', '\r'], " ");
    if t.is_empty() { "-".into() } else { t }
}

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(out, "|{}", head.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

/// Builds the report from `rows` (the agent's records, oldest first).
pub fn markdown(scope: &Scope, rows: &[AuditRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Incident report: agent `{}`\n", scope.agent);
    let _ = writeln!(out, "- Generated: {}", scope.generated_at);
    if let Some(t) = &scope.task {
        let _ = writeln!(out, "- Task: `{t}`");
    }
    let _ = writeln!(
        out,
        "- Period: {} to {}",
        scope
            .since
            .clone()
            .or_else(|| rows.first().map(|r| r.at.clone()))
            .unwrap_or_else(|| "-".into()),
        rows.last().map_or("-".into(), |r| r.at.clone())
    );
    let _ = writeln!(out, "- Records: {}", rows.len());
    match &scope.verified {
        Some(Ok(n)) => {
            let _ = writeln!(
                out,
                "- Trail integrity: verified ({n} records, hash chain and signed checkpoints intact)"
            );
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "- Trail integrity: **FAILED**: {e}");
        }
        None => {}
    }
    out.push('\n');

    let calls: Vec<(&AuditRow, Value)> = rows
        .iter()
        .filter(|r| r.kind == super::kind::CALL)
        .map(|r| (r, serde_json::from_str(&r.body).unwrap_or(Value::Null)))
        .collect();
    let outcomes: BTreeMap<&str, Value> = rows
        .iter()
        .filter(|r| r.kind == super::kind::OUTCOME)
        .filter_map(|r| {
            Some((
                r.ref_id.as_deref()?,
                serde_json::from_str(&r.body).unwrap_or(Value::Null),
            ))
        })
        .collect();
    let body = |r: &AuditRow| serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null);

    // Accountability.
    out.push_str("## Accountability\n\n");
    if let Some((r, b)) = calls.last() {
        let o = &b["owners"]["agent"];
        let _ = writeln!(out, "As recorded with its latest call ({}):\n", r.at);
        for (role, key) in [
            ("Business owner", "business"),
            ("System owner", "system"),
            ("Security owner", "security"),
        ] {
            let _ = writeln!(
                out,
                "- {role}: {} <{}>",
                s(&o[key], "name"),
                s(&o[key], "contact")
            );
        }
        let _ = writeln!(
            out,
            "- Deployment approved by: {} on {}",
            s(o, "approved_by"),
            s(o, "approved_at")
        );
    } else {
        out.push_str("No calls in this period, so no owners were recorded with one.\n");
    }
    let status: Vec<Vec<String>> = rows
        .iter()
        .filter(|r| r.kind == "agent.status" || r.kind.starts_with("agent.key_"))
        .map(|r| {
            let b = body(r);
            let what = match r.kind.as_str() {
                "agent.status" => format!("status {} -> {}", s(&b, "from"), s(&b, "to")),
                "agent.key_issued" => format!("key {} issued", s(&b, "key_id")),
                _ => format!("key {} revoked", s(&b, "key_id")),
            };
            vec![r.at.clone(), what, s(&b, "by"), s(&b, "reason")]
        })
        .collect();
    if !status.is_empty() {
        out.push_str("\nLifecycle and keys:\n\n");
        table(&mut out, &["At", "Change", "By", "Reason"], &status);
    } else {
        out.push('\n');
    }

    // Tasks.
    out.push_str("## Tasks\n\n");
    let mut tasks: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.kind.starts_with("task.")) {
        let b = body(r);
        let id = r.task_id.clone().unwrap_or_default();
        let e = tasks.entry(id.clone()).or_insert_with(|| {
            vec![
                id,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]
        });
        if r.kind == "task.started" {
            e[1] = r.at.clone();
            e[2] = s(&b, "purpose");
            let with = s(&b, "started_with");
            e[3] = if with.is_empty() {
                s(&b, "started_by")
            } else {
                format!("{} (credential {with})", s(&b, "started_by"))
            };
            e[4] = b["tools"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
        } else {
            e[5] = format!(
                "{} at {} by {} ({})",
                s(&b, "status"),
                r.at,
                s(&b, "ended_by"),
                s(&b, "reason")
            );
        }
    }
    if tasks.is_empty() {
        out.push_str("No tasks started or ended in this period.\n\n");
    } else {
        let rows: Vec<Vec<String>> = tasks.into_values().collect();
        table(
            &mut out,
            &["Task", "Started", "Intent", "Started by", "Tools", "Ended"],
            &rows,
        );
    }

    // Access.
    out.push_str("## What it accessed\n\n");
    let allowed: Vec<Vec<String>> = calls
        .iter()
        .filter(|(r, _)| r.decision.as_deref() == Some("allow"))
        .map(|(r, b)| {
            let o = outcomes.get(r.id.as_str());
            let outcome = o
                .map(|o| s(o, "outcome"))
                .or_else(|| b.get("outcome").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| "no outcome recorded".into());
            vec![
                r.at.clone(),
                r.tool.clone().unwrap_or_default(),
                s(b, "connector_id"),
                r.task_id.clone().unwrap_or_default(),
                outcome,
                o.map(|o| s(o, "backend_status")).unwrap_or_default(),
                s(&b["policy"], "summary"),
                s(b, "reason"),
            ]
        })
        .collect();
    if allowed.is_empty() {
        out.push_str("No calls were allowed in this period.\n\n");
    } else {
        table(
            &mut out,
            &[
                "At",
                "Tool",
                "Connector",
                "Task",
                "Outcome",
                "Backend status",
                "Policy",
                "Why allowed",
            ],
            &allowed,
        );
    }

    out.push_str("## Denied calls\n\n");
    let denied: Vec<Vec<String>> = calls
        .iter()
        .filter(|(r, _)| r.decision.as_deref() == Some("deny"))
        .map(|(r, b)| {
            vec![
                r.at.clone(),
                r.tool.clone().unwrap_or_default(),
                r.reason_code.clone().unwrap_or_default(),
                s(b, "reason"),
            ]
        })
        .collect();
    if denied.is_empty() {
        out.push_str("No calls were denied in this period.\n\n");
    } else {
        table(&mut out, &["At", "Tool", "Reason code", "Reason"], &denied);
    }

    // Approvals.
    out.push_str("## Approvals\n\n");
    let approvals: Vec<Vec<String>> = rows
        .iter()
        .filter(|r| r.kind.starts_with("approval."))
        .map(|r| {
            let b = body(r);
            let who = [s(&b, "approver"), s(&b, "actor")]
                .into_iter()
                .find(|w| !w.is_empty())
                .unwrap_or_default();
            let what = match r.kind.as_str() {
                "approval.requested" => format!(
                    "requested for {} (route {}, approvers {})",
                    s(&b, "tool"),
                    s(&b, "route"),
                    s(&b, "approvers")
                ),
                "approval.vote" => format!("{} voted {}", who, s(&b, "verdict")),
                k => k.trim_start_matches("approval.").to_string(),
            };
            vec![r.at.clone(), s(&b, "request"), what, who, s(&b, "reason")]
        })
        .collect();
    if approvals.is_empty() {
        out.push_str("No approvals were requested in this period.\n\n");
    } else {
        table(
            &mut out,
            &["At", "Request", "Event", "By", "Reason"],
            &approvals,
        );
    }

    // Credentials.
    out.push_str("## Credentials\n\n");
    let mut creds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.kind.starts_with("credential.")) {
        let b = body(r);
        let id = s(&b, "credential_id");
        let e = creds.entry(id.clone()).or_insert_with(|| {
            vec![
                id,
                s(&b, "connector"),
                String::new(),
                r.task_id.clone().unwrap_or_default(),
                String::new(),
                String::new(),
            ]
        });
        if r.kind == "credential.issued" {
            e[2] = s(&b, "kind");
            e[4] = r.at.clone();
        } else {
            e[5] = format!("{} ({})", r.at, s(&b, "reason"));
        }
    }
    if creds.is_empty() {
        out.push_str("No credentials were issued or revoked in this period.\n\n");
    } else {
        let rows: Vec<Vec<String>> = creds.into_values().collect();
        table(
            &mut out,
            &[
                "Credential",
                "Connector",
                "Kind",
                "Task",
                "Issued",
                "Revoked",
            ],
            &rows,
        );
    }

    let failures: Vec<Vec<String>> = rows
        .iter()
        .filter(|r| r.kind == super::kind::AUTH_FAILURE)
        .map(|r| {
            let b = body(r);
            vec![
                r.at.clone(),
                s(&b, "reason"),
                b["presented"].to_string(),
                s(&b, "remote"),
            ]
        })
        .collect();
    out.push_str("## Authentication failures\n\n");
    if failures.is_empty() {
        out.push_str("None recorded for this agent's credentials in this period.\n");
    } else {
        table(&mut out, &["At", "Reason", "Presented", "From"], &failures);
    }
    out
}
