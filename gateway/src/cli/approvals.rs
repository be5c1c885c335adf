//! `tollgate approvers ...` (people and their credentials, in the local
//! store) and `tollgate approvals ...` (the queue, through the running
//! gateway's HTTP API, as the approver whose credential is in
//! `TOLLGATE_APPROVER_KEY`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::open_store;
use super::output::{self, Table, outln};
use crate::approvals::APPROVER_KEY_PREFIX;
use crate::store::ApproverKeyRecord;
use crate::util::now_rfc3339;

#[derive(Debug, Subcommand)]
pub(super) enum ApproversCommand {
    /// Issue a credential for approver ID (declared by an `Approver`
    /// manifest); prints the credential alone on stdout, once.
    IssueKey {
        /// Approver id.
        id: String,
        /// Free-text label (where it is used).
        #[arg(long)]
        label: Option<String>,
        /// Print JSON (an object).
        #[arg(long)]
        json: bool,
    },
    /// The declared approvers, their roles and credentials.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an approver credential at once (its next request gets 401).
    RevokeKey {
        /// Key id, as shown by `approvers list` (`apk_…`).
        key_id: String,
        /// Print JSON (an object).
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn approvers(
    data: &Path,
    manifests: &Path,
    cmd: ApproversCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        ApproversCommand::IssueKey { id, label, json } => {
            let catalog = super::load(manifests)?;
            if !catalog.approvers.contains_key(&id) {
                let known: Vec<&str> = catalog.approvers.keys().map(String::as_str).collect();
                bail!(
                    "no approver `{id}` in {} (declared: {}); declare one with `kind: Approver`",
                    manifests.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            }
            let store = open_store(data).await?;
            let k = crate::keys::generate(APPROVER_KEY_PREFIX, "apk_");
            let record = ApproverKeyRecord {
                key_id: k.key_id.clone(),
                approver_id: id.clone(),
                label: label.clone(),
                created_at: now_rfc3339(),
                revoked_at: None,
            };
            store.insert_approver_key(&record, &k.hash).await?;
            eprintln!(
                "Issued approver credential {} for `{id}`. Tollgate keeps only its hash: give it to them now (TOLLGATE_APPROVER_KEY, or sign in at /ui).",
                k.key_id
            );
            output::issued(
                serde_json::json!({ "approver": id, "key_id": k.key_id, "label": label }),
                &k.key,
                json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        ApproversCommand::List { json } => {
            let catalog = super::load(manifests)?;
            let keys = open_store(data).await?.approver_keys().await?;
            if json {
                let list: Vec<Value> = catalog
                    .approvers
                    .values()
                    .map(|a| {
                        json!({
                            "id": a.id, "name": a.name, "contact": a.contact, "roles": a.roles,
                            "keys": keys.iter().filter(|k| k.approver_id == a.id).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                output::json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            if catalog.approvers.is_empty() {
                outln!(
                    "No approvers declared in {} (add a `kind: Approver` document).",
                    manifests.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["APPROVER", "NAME", "ROLES", "LIVE KEYS"]);
            for a in catalog.approvers.values() {
                let live: Vec<&str> = keys
                    .iter()
                    .filter(|k| k.approver_id == a.id && k.revoked_at.is_none())
                    .map(|k| k.key_id.as_str())
                    .collect();
                table.row(vec![
                    a.id.clone(),
                    a.name.clone(),
                    a.roles.join(", "),
                    if live.is_empty() {
                        "-".into()
                    } else {
                        live.join(", ")
                    },
                ]);
            }
            table.print()?;
            Ok(ExitCode::SUCCESS)
        }
        ApproversCommand::RevokeKey { key_id, json } => {
            let store = open_store(data).await?;
            if store.revoke_approver_key(&key_id, &now_rfc3339()).await? {
                output::revoked(&key_id, json)?;
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no live approver credential `{key_id}` (see `tollgate approvers list`)")
            }
        }
    }
}

/// Where the gateway is, and who is asking.
#[derive(Debug, clap::Args)]
pub(super) struct Remote {
    /// The running gateway's base URL.
    #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8930")]
    url: String,
}

#[derive(Debug, Subcommand)]
pub(super) enum ApprovalsCommand {
    /// Requests routed to you (pending by default), newest first.
    List {
        #[command(flatten)]
        remote: Remote,
        /// `pending`, `decided` or `all`.
        #[arg(long, default_value = "pending")]
        status: String,
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
        /// Only this tool's.
        #[arg(long)]
        tool: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One request: the call, its arguments, the policy, votes and events.
    Show {
        #[command(flatten)]
        remote: Remote,
        /// Request id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a request (once, or for the rest of its task), optionally
    /// with changed arguments.
    Approve {
        #[command(flatten)]
        remote: Remote,
        /// Request id.
        id: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Approve every identical call for the rest of the task.
        #[arg(long)]
        for_task: bool,
        /// Changed arguments, as a JSON object of the fields to change,
        /// e.g. '{"amount": 200}'. The changed call is checked again.
        #[arg(long)]
        args: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deny a request; the reason is shown to the agent.
    Deny {
        #[command(flatten)]
        remote: Remote,
        /// Request id.
        id: String,
        /// Why (recorded, and shown to the agent).
        #[arg(long)]
        reason: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(remote: &Remote) -> anyhow::Result<Self> {
        let key = std::env::var("TOLLGATE_APPROVER_KEY").map_err(|_| {
            anyhow::anyhow!(
                "set TOLLGATE_APPROVER_KEY to your approver credential (`tollgate approvers issue-key ID`)"
            )
        })?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            base: remote.url.trim_end_matches('/').to_string(),
            key,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {} (is `tollgate serve` running? set --url or TOLLGATE_URL)", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"].as_str().unwrap_or("request failed");
            let reason = body["reason"].as_str().unwrap_or("");
            bail!("{msg} ({reason}, HTTP {})", status.as_u16());
        }
        Ok(body)
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub(super) async fn approvals(cmd: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApprovalsCommand::List {
            remote,
            status,
            agent,
            tool,
            json,
        } => {
            let client = Client::new(&remote)?;
            let mut q = vec![("status", status.clone())];
            if let Some(a) = agent {
                q.push(("agent", a));
            }
            if let Some(t) = tool {
                q.push(("tool", t));
            }
            let body = client.get("/api/approvals", &q).await?;
            let requests = body["requests"].as_array().cloned().unwrap_or_default();
            if json {
                output::json(&requests)?;
                return Ok(ExitCode::SUCCESS);
            }
            if requests.is_empty() {
                outln!("No {status} approval requests for you.");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                "REQUEST",
                "STATUS",
                "AGENT",
                "TOOL",
                "RISK",
                "ARGUMENTS",
                "DEADLINE",
            ]);
            for r in &requests {
                let mut args = text(&r["arguments"]);
                if args.chars().count() > 60 {
                    args = format!("{}…", args.chars().take(60).collect::<String>());
                }
                table.row(vec![
                    text(&r["id"]),
                    text(&r["status"]),
                    text(&r["agent_id"]),
                    text(&r["tool"]),
                    text(&r["risk"]),
                    args,
                    text(&r["deadline"]),
                ]);
            }
            table.print()?;
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Show { remote, id, json } => {
            let client = Client::new(&remote)?;
            let r = client.get(&format!("/api/approvals/{id}"), &[]).await?;
            if json {
                output::json(&r)?;
                return Ok(ExitCode::SUCCESS);
            }
            outln!("Request   {}", text(&r["id"]));
            outln!("Status    {}", text(&r["status"]));
            outln!("Agent     {}", text(&r["agent_id"]));
            outln!(
                "Task      {} ({})",
                text(&r["task_id"]),
                text(&r["purpose"])
            );
            outln!("Tool      {} (risk {})", text(&r["tool"]), text(&r["risk"]));
            outln!(
                "Arguments {}",
                serde_json::to_string_pretty(&r["arguments"]).unwrap_or_default()
            );
            if !r["changed_arguments"].is_null() {
                outln!(
                    "Changed   {}",
                    serde_json::to_string_pretty(&r["changed_arguments"]).unwrap_or_default()
                );
            }
            outln!(
                "Needs     {} of {} ({})",
                text(&r["required"]),
                text(&r["approvers"]),
                text(&r["route"])
            );
            outln!("Approvals {} so far", text(&r["approvals"]));
            outln!("Deadline  {}", text(&r["deadline"]));
            outln!("Policy    {}", text(&r["policy"]["summary"]));
            for v in r["votes"].as_array().into_iter().flatten() {
                outln!(
                    "Vote      {} {}: {}",
                    text(&v["approver_id"]),
                    text(&v["verdict"]),
                    text(&v["reason"])
                );
            }
            match r["cannot_decide"].as_str() {
                None => outln!(
                    "You may decide it: tollgate approvals approve|deny {} --reason ...",
                    text(&r["id"])
                ),
                Some(why) => outln!("You cannot decide it: {why}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Approve {
            remote,
            id,
            reason,
            for_task,
            args,
            json,
        } => {
            let client = Client::new(&remote)?;
            let mut body = json!({ "reason": reason, "for_task": for_task });
            if let Some(a) = args {
                let v: Value = serde_json::from_str(&a)
                    .context("--args must be a JSON object, e.g. '{\"amount\": 200}'")?;
                if !v.is_object() {
                    bail!("--args must be a JSON object, e.g. '{{\"amount\": 200}}'");
                }
                body["args"] = v;
            }
            let r = client
                .post(&format!("/api/approvals/{id}/approve"), &body)
                .await?;
            if json {
                output::json(&r)?;
            } else {
                match r["status"].as_str() {
                    Some("approved") => outln!(
                        "Approved request {} ({}); the call may run now.",
                        text(&r["id"]),
                        text(&r["scope"])
                    ),
                    _ => outln!(
                        "Your approval of request {} is recorded; it still needs {} approvals in all.",
                        text(&r["id"]),
                        text(&r["required"])
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Deny {
            remote,
            id,
            reason,
            json,
        } => {
            let client = Client::new(&remote)?;
            let r = client
                .post(
                    &format!("/api/approvals/{id}/deny"),
                    &json!({ "reason": reason }),
                )
                .await?;
            if json {
                output::json(&r)?;
            } else {
                outln!("Denied request {}; the call will not run.", text(&r["id"]));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
