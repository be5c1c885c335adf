//! `tollgate agents ...`: list and show agents, issue and revoke their
//! keys, suspend, resume and retire them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{self, Table, outln};
use super::{known_agent, open_store, operator, sorted};
use crate::catalog::Catalog;
use crate::pipeline::authenticate;
use crate::store::{AgentStatus, Store};
use crate::util::now_rfc3339;

#[derive(Debug, Subcommand)]
pub(super) enum AgentsCommand {
    /// List declared agents, their owners, grants and keys.
    List {
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// Show one agent: owners, approval, review date, status, grants, keys,
    /// status history.
    Show {
        /// Agent id.
        agent: String,
        /// Print JSON (an object).
        #[arg(long)]
        json: bool,
    },
    /// Issue a new key for AGENT; prints the key alone on stdout, once.
    /// Refused for a retired agent.
    IssueKey {
        /// Agent id.
        agent: String,
        /// A label to tell keys apart later (e.g. where it is deployed).
        #[arg(long)]
        label: Option<String>,
        /// Print JSON (an object).
        #[arg(long)]
        json: bool,
    },
    /// Revoke one key (say, a leaked one) at once; the agent's other
    /// credentials keep working.
    RevokeKey {
        /// Key id, as shown by `agents show` (`key_…`).
        key_id: String,
        /// Print JSON (an object).
        #[arg(long)]
        json: bool,
    },
    /// Suspend AGENT: its calls are refused until it is resumed.
    Suspend(StatusChange),
    /// Resume a suspended AGENT.
    Resume(StatusChange),
    /// Retire AGENT for good: keys revoked, calls refused, no way back.
    Retire(StatusChange),
}

#[derive(Debug, Args)]
pub(super) struct StatusChange {
    /// Agent id.
    agent: String,
    /// Why (recorded with the change).
    #[arg(long)]
    reason: String,
    /// Who is making the change (default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Print the change as JSON (an object).
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(
    data: &Path,
    manifests: &Path,
    cmd: AgentsCommand,
) -> anyhow::Result<ExitCode> {
    let catalog = super::load(manifests)?;
    let store = open_store(data).await?;
    match cmd {
        AgentsCommand::List { json } => list(store.as_ref(), &catalog, json).await,
        AgentsCommand::Show { agent, json } => {
            show(store.as_ref(), &catalog, manifests, &agent, json).await
        }
        AgentsCommand::IssueKey { agent, label, json } => {
            issue_key(store.as_ref(), &catalog, manifests, &agent, label, json).await
        }
        AgentsCommand::RevokeKey { key_id, json } => {
            if store.revoke_key(&key_id, &now_rfc3339()).await? {
                output::revoked(&key_id, json)?;
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
    }
}

/// A retired agent's refusal, or `None` if it may get a key.
async fn retired(store: &dyn Store, agent: &str) -> anyhow::Result<Option<String>> {
    Ok(store
        .agent_lifecycle(agent)
        .await?
        .filter(|l| l.status == AgentStatus::Retired)
        .map(|l| {
            format!(
                "agent `{agent}` is retired (by {} at {}: {}); retirement is permanent, so it gets no new keys. Declare a new agent instead.",
                l.changed_by, l.changed_at, l.reason
            )
        }))
}

async fn issue_key(
    store: &dyn Store,
    catalog: &Catalog,
    manifests: &Path,
    agent: &str,
    label: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let entry = known_agent(catalog, manifests, agent)?;
    if !entry.gateway_keys {
        bail!("agent `{agent}` does not accept gateway keys (credentials.gateway_keys is false)");
    }
    if let Some(why) = retired(store, agent).await? {
        bail!(why);
    }
    let issued = authenticate::new_key();
    store
        .insert_key(
            &issued.key_id,
            agent,
            &issued.hash,
            label.as_deref(),
            &now_rfc3339(),
        )
        .await?;
    // A retirement that committed between the check and the insert has
    // already revoked the agent's keys, but not this one: look again and
    // take the key back, so a retired agent never holds a live key.
    if let Some(why) = retired(store, agent).await? {
        store.revoke_key(&issued.key_id, &now_rfc3339()).await?;
        bail!(why);
    }
    eprintln!(
        "Issued {} for agent `{agent}`. Tollgate keeps only its hash: store the key now.",
        issued.key_id
    );
    output::issued(
        serde_json::json!({ "agent": agent, "key_id": issued.key_id, "label": label }),
        &issued.key,
        json,
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn list(store: &dyn Store, catalog: &Catalog, as_json: bool) -> anyhow::Result<ExitCode> {
    let keys = store.list_keys().await?;
    let mut ids = sorted(catalog.agents.keys());
    ids.dedup();
    let today = time::OffsetDateTime::now_utc().date();
    let mut statuses = std::collections::HashMap::new();
    for id in &ids {
        let a = &catalog.agents[*id];
        let status = store
            .agent_lifecycle(id)
            .await?
            .map(|l| l.status)
            .unwrap_or(AgentStatus::Active);
        statuses.insert(id.as_str(), (status, today >= a.review_by));
    }
    if as_json {
        let list: Vec<_> = ids
            .iter()
            .map(|id| {
                let a = &catalog.agents[*id];
                let k: Vec<_> = keys.iter().filter(|k| &k.agent_id == *id).collect();
                let (status, overdue) = statuses[id.as_str()];
                json!({
                    "status": status.as_str(), "review_overdue": overdue,
                    "review_by": a.review_by.to_string(),
                    "id": a.id, "description": a.description,
                    "owners": {
                        "business": a.owners.business, "system": a.owners.system, "security": a.owners.security,
                    },
                    "grants": a.grants, "tools": a.granted, "keys": k,
                })
            })
            .collect();
        output::json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "AGENT",
        "STATUS",
        "BUSINESS OWNER",
        "TOOLS",
        "KEYS",
        "DESCRIPTION",
    ])
    .right(3)
    .right(4);
    for id in ids {
        let a = &catalog.agents[id];
        let live = keys
            .iter()
            .filter(|k| &k.agent_id == id && k.revoked_at.is_none())
            .count();
        table.row(vec![
            a.id.clone(),
            status_label(statuses[id.as_str()]),
            a.owners.business.name.clone(),
            a.granted.len().to_string(),
            live.to_string(),
            a.description.clone(),
        ]);
    }
    table.print()?;
    Ok(ExitCode::SUCCESS)
}

/// The STATUS column: the stored status, or "review overdue" for an
/// active agent past its review date (admit refuses it as if suspended).
fn status_label((status, overdue): (AgentStatus, bool)) -> String {
    match status {
        AgentStatus::Active if overdue => "review overdue".into(),
        s => s.as_str().into(),
    }
}

async fn show(
    store: &dyn Store,
    catalog: &Catalog,
    manifests: &Path,
    agent: &str,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let a = known_agent(catalog, manifests, agent)?;
    let lifecycle = store.agent_lifecycle(agent).await?;
    let events = store.lifecycle_events(agent).await?;
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
        .filter(|(_, owner)| owner.as_str() == agent)
        .map(|((issuer, subject), _)| json!({ "issuer": issuer, "subject": subject }))
        .collect();
    if as_json {
        output::json(&json!({
            "id": a.id, "description": a.description,
            "owners": { "business": a.owners.business, "system": a.owners.system, "security": a.owners.security },
            "deployment": a.deployment, "review_by": a.review_by.to_string(), "review_overdue": overdue,
            "status": status, "status_changed": lifecycle, "status_history": events,
            "grants": a.grants, "tools": a.granted, "keys": keys, "workload_identities": workload,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("agent        {}", a.id);
    outln!("description  {}", a.description);
    outln!(
        "status       {}{}",
        status.as_str(),
        if overdue {
            " (review overdue: treated as suspended)"
        } else {
            ""
        }
    );
    if let Some(l) = &lifecycle {
        outln!(
            "             set by {} at {}: {}",
            l.changed_by,
            l.changed_at,
            l.reason
        );
    }
    let o = &a.owners;
    outln!(
        "owners       business {} <{}>",
        o.business.name,
        o.business.contact
    );
    outln!(
        "             system   {} <{}>",
        o.system.name,
        o.system.contact
    );
    outln!(
        "             security {} <{}>",
        o.security.name,
        o.security.contact
    );
    outln!(
        "approved     by {} on {}",
        a.deployment.approved_by,
        a.deployment.approved_at
    );
    outln!("review by    {}", a.review_by);
    outln!("grants       {}", a.grants.join(", "));
    outln!(
        "tools        {}",
        a.granted.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    for w in &workload {
        outln!(
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
        outln!(
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
        outln!(
            "history      {} {} -> {} by {}: {}",
            e.changed_at,
            e.from,
            e.to,
            e.changed_by,
            e.reason
        );
    }
    Ok(ExitCode::SUCCESS)
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
        .set_agent_status(&c.agent, to, c.reason.trim(), &by, &now_rfc3339())
        .await?;
    if c.json {
        output::json(&event)?;
    } else {
        outln!(
            "{}: {} -> {} (by {}, {})",
            event.agent_id,
            event.from,
            event.to,
            event.changed_by,
            event.changed_at
        );
        if to == AgentStatus::Retired {
            outln!(
                "Its keys are revoked and every call from it is refused from now on; retirement cannot be undone."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
