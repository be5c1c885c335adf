//! `tollgate admin ...`: keys for the admin HTTP API. Issuing and revoking
//! them are admin actions, recorded with who did it (`cli:USER`); see
//! `tollgate audit admin`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use super::output::{self, Table};
use super::{known_agent, open_store, operator};
use crate::admin::{ACTION_KEY_ISSUED, ACTION_KEY_REVOKED, new_admin_key};
use crate::store::{AdminAction, AdminKeyRecord};
use crate::util::now_rfc3339;

#[derive(Debug, Subcommand)]
pub(super) enum AdminCommand {
    /// Issue an admin API key for NAME (a person or an orchestrator);
    /// prints the key alone on stdout, once.
    IssueKey {
        /// Who will use it; recorded as `started_by` on the tasks it starts.
        name: String,
        /// Only these agents (comma-separated); the key is refused (403)
        /// for any other. Default: every agent.
        #[arg(long, value_delimiter = ',')]
        agents: Option<Vec<String>>,
        /// Who is issuing it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Print JSON (an object).
        #[arg(long)]
        json: bool,
    },
    /// List admin keys (live and revoked) with their scope.
    ListKeys {
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin key at once: its next request gets 401.
    RevokeKey {
        /// Key id, as shown by `admin list-keys` (`admin_…`).
        key_id: String,
        /// Who is revoking it (default: $USER).
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
    cmd: AdminCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::IssueKey {
            name,
            agents,
            by,
            json,
        } => {
            let name = name.trim();
            if name.is_empty() {
                bail!("NAME must say who will use the key");
            }
            let agents = match agents {
                None => None,
                Some(list) => {
                    let list: Vec<String> = list
                        .iter()
                        .map(|a| a.trim().to_string())
                        .filter(|a| !a.is_empty())
                        .collect();
                    if list.is_empty() {
                        bail!("--agents needs at least one agent id (omit it for every agent)");
                    }
                    // A typo would make a key that can act on nobody.
                    let catalog = super::load(manifests)?;
                    for a in &list {
                        known_agent(&catalog, manifests, a)?;
                    }
                    Some(list)
                }
            };
            let store = open_store(data).await?;
            let k = new_admin_key();
            let at = now_rfc3339();
            let record = AdminKeyRecord {
                key_id: k.key_id.clone(),
                name: name.to_string(),
                agents: agents.clone(),
                created_at: at.clone(),
                revoked_at: None,
            };
            let action = AdminAction {
                at,
                actor: format!("cli:{}", operator(by)),
                action: ACTION_KEY_ISSUED.into(),
                target: k.key_id.clone(),
                agent_id: None,
                detail: Some(match &agents {
                    Some(a) => format!("for {name}; agents: {}", a.join(", ")),
                    None => format!("for {name}; every agent"),
                }),
            };
            store.issue_admin_key(&record, &k.hash, &action).await?;
            eprintln!(
                "Issued admin key {} for `{name}`{}. Tollgate keeps only its hash: store the key now.",
                k.key_id,
                agents
                    .as_ref()
                    .map(|a| format!(" (agents: {})", a.join(", ")))
                    .unwrap_or_default()
            );
            output::issued(
                serde_json::json!({ "name": name, "key_id": k.key_id, "agents": agents }),
                &k.key,
                json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::ListKeys { json } => {
            let keys = open_store(data).await?.admin_keys().await?;
            if json {
                output::json(&keys)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["KEY", "NAME", "STATE", "ISSUED", "AGENTS"]);
            for k in &keys {
                table.row(vec![
                    k.key_id.clone(),
                    k.name.clone(),
                    k.revoked_at
                        .as_deref()
                        .map(|r| format!("revoked {r}"))
                        .unwrap_or_else(|| "live".into()),
                    k.created_at.clone(),
                    k.agents
                        .as_ref()
                        .map(|a| a.join(", "))
                        .unwrap_or_else(|| "(every agent)".into()),
                ]);
            }
            table.print()?;
            if keys.is_empty() {
                eprintln!("no admin keys (issue one with `tollgate admin issue-key NAME`)");
            }
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::RevokeKey { key_id, by, json } => {
            let store = open_store(data).await?;
            let action = AdminAction {
                at: now_rfc3339(),
                actor: format!("cli:{}", operator(by)),
                action: ACTION_KEY_REVOKED.into(),
                target: key_id.clone(),
                agent_id: None,
                detail: None,
            };
            if store.revoke_admin_key(&key_id, &action).await? {
                output::revoked(&key_id, json)?;
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no live admin key `{key_id}` (see `tollgate admin list-keys`)")
            }
        }
    }
}
