//! Tasks: a declared purpose, the tools it needs (a subset of the agent's
//! grants), optional argument constraints, and a time limit. A task is
//! started out of band (`tollgate tasks start`, the admin API) or in band
//! (the `tollgate.start_task` tool); it ends explicitly, when its TTL runs
//! out, or when its agent is suspended or retired. Ending a task revokes
//! its token and every credential issued for it at once.
//!
//! A task token is a short-lived JWT signed by the gateway, bound to the
//! agent, the task and the gateway itself as audience; the agent (or its
//! orchestrator) presents it as its bearer credential. It is only a handle:
//! every call re-reads the task, so an ended task's token stops working
//! immediately, whatever its `exp`.

pub mod constraint;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::catalog::AgentEntry;
use crate::secrets::SecretsError;
use crate::store::{StoreError, TaskEnd, TaskRecord, TaskStatus};
use crate::util::stamp;
use constraint::Constraint;

/// No task lives longer than this, whatever an agent's manifest says.
pub const MAX_TASK_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a task could not be started, read or ended.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The request is not acceptable (names what is wrong).
    #[error("{0}")]
    Invalid(String),
    /// No such task (or not this agent's).
    #[error("no task `{0}`")]
    NotFound(String),
    /// The task has already ended.
    #[error("task `{id}` is {status}")]
    NotActive {
        /// Task id.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error(transparent)]
    Signing(#[from] SecretsError),
}

impl TaskError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            TaskError::Invalid(_) => "task_invalid",
            TaskError::NotFound(_) => "task_unknown",
            TaskError::NotActive { .. } => "task_ended",
            TaskError::Store(_) | TaskError::Signing(_) => "task_unavailable",
        }
    }

    /// What to tell a caller: the problem for request errors, a generic
    /// line for internal ones (logged here with their cause).
    pub fn public_message(&self) -> String {
        match self {
            TaskError::Store(_) | TaskError::Signing(_) => {
                tracing::error!(error = %self, "task operation failed");
                "the task store is unavailable right now".into()
            }
            other => other.to_string(),
        }
    }
}

/// A request to start a task.
#[derive(Debug, Clone)]
pub struct StartTask {
    /// Agent id.
    pub agent_id: String,
    /// Purpose.
    pub purpose: String,
    /// Tools (exact names or globs within the agent's grants).
    pub tools: Vec<String>,
    /// Constraints (`amount <= 500`).
    pub constraints: Vec<String>,
    /// Requested lifetime.
    pub ttl: Duration,
    /// Who starts it.
    pub started_by: String,
    /// `cli`, `admin_api` or `in_band`.
    pub origin: &'static str,
}

/// A started task and its token (shown once).
#[derive(Debug, Clone, Serialize)]
pub struct StartedTask {
    /// The task.
    pub task: TaskRecord,
    /// Bearer token for the agent.
    pub token: String,
}

/// Claims of a task token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskClaims {
    /// This gateway.
    pub iss: String,
    /// This gateway.
    pub aud: String,
    /// Agent id.
    pub sub: String,
    /// Task id.
    pub tid: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expiry (seconds): the task's end.
    pub exp: i64,
    /// Token id.
    pub jti: String,
    /// Always `task`: tells task tokens from backend tokens.
    pub typ: String,
}

/// Parses a TTL such as `15m`, `900s`, `2h` or `900`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a duration (e.g. 15m, 900s, 2h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{t}` is not a duration (e.g. 15m, 900s, 2h)")),
    };
    Ok(Duration::from_secs(secs))
}

/// Checks and starts a task, returning it with its token.
pub async fn start(gw: &Gateway, req: StartTask) -> Result<StartedTask, TaskError> {
    let catalog = gw.catalog();
    let agent = catalog
        .agents
        .get(&req.agent_id)
        .ok_or_else(|| TaskError::Invalid(format!("no agent `{}`", req.agent_id)))?;
    crate::agents::check(gw, agent)
        .await
        .map_err(|d| TaskError::Invalid(d.to_string()))?;
    let purpose = req.purpose.trim();
    if purpose.is_empty() || purpose.len() > 2000 {
        return Err(TaskError::Invalid(
            "the purpose must say what the task is for (1 to 2000 characters)".into(),
        ));
    }
    let tools = resolve_tools(agent, &req.tools)?;
    let constraints = req
        .constraints
        .iter()
        .map(|c| Constraint::parse(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TaskError::Invalid)?;
    for c in &constraints {
        let declared = tools.iter().filter_map(|t| catalog.tools.get(t)).any(|t| {
            t.tool
                .input_schema
                .get("properties")
                .and_then(|p| p.as_object())
                .is_some_and(|p| p.contains_key(&c.arg))
        });
        if !declared {
            return Err(TaskError::Invalid(format!(
                "constraint `{}`: no tool of the task has an argument `{}`",
                c.text, c.arg
            )));
        }
    }
    let max = Duration::from_secs(agent.tasks.max_ttl_seconds).min(MAX_TASK_TTL);
    if req.ttl.is_zero() || req.ttl > max {
        return Err(TaskError::Invalid(format!(
            "the TTL must be between 1 s and {} s for agent `{}`",
            max.as_secs(),
            agent.id
        )));
    }
    let now = gw.now();
    let task = TaskRecord {
        id: format!("task_{}", uuid::Uuid::new_v4().simple()),
        agent_id: agent.id.clone(),
        purpose: purpose.to_string(),
        tools,
        constraints: constraints.into_iter().map(|c| c.text).collect(),
        started_by: req.started_by,
        origin: req.origin.to_string(),
        created_at: stamp(now),
        expires_at: stamp(now + req.ttl),
        status: TaskStatus::Active,
        ended_at: None,
        ended_by: None,
        end_reason: None,
    };
    gw.store().create_task(&task).await?;
    let token = issue_token(gw, &task)?;
    tracing::info!(task = %task.id, agent = %task.agent_id, tools = ?task.tools, "task started");
    Ok(StartedTask { task, token })
}

fn resolve_tools(agent: &AgentEntry, wanted: &[String]) -> Result<Vec<String>, TaskError> {
    if wanted.is_empty() {
        return Err(TaskError::Invalid("a task needs at least one tool".into()));
    }
    let mut out = std::collections::BTreeSet::new();
    for pattern in wanted {
        let glob = globset::Glob::new(pattern)
            .map_err(|e| {
                TaskError::Invalid(format!(
                    "`{pattern}` is not a tool name or glob: {}",
                    e.kind()
                ))
            })?
            .compile_matcher();
        let matched: Vec<&String> = agent
            .granted
            .iter()
            .filter(|t| glob.is_match(t.as_str()))
            .collect();
        if matched.is_empty() {
            return Err(TaskError::Invalid(format!(
                "`{pattern}` is not among agent `{}`'s granted tools; a task can only narrow the grants",
                agent.id
            )));
        }
        out.extend(matched.into_iter().cloned());
    }
    Ok(out.into_iter().collect())
}

fn epoch(t: time::OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// Signs a task token that expires with the task.
pub fn issue_token(gw: &Gateway, task: &TaskRecord) -> Result<String, TaskError> {
    let secrets = gw.secrets();
    let exp = crate::util::parse_stamp(&task.expires_at)
        .map(epoch)
        .unwrap_or(0);
    let claims = TaskClaims {
        iss: secrets.issuer(),
        aud: secrets.issuer(),
        sub: task.agent_id.clone(),
        tid: task.id.clone(),
        iat: epoch(gw.now()),
        exp,
        jti: uuid::Uuid::new_v4().to_string(),
        typ: "task".into(),
    };
    Ok(secrets.sign(&claims)?)
}

/// Verifies a token this gateway signed for itself (a task token); expiry
/// is checked against the gateway's clock.
pub fn verify_token(gw: &Gateway, token: &str) -> Result<TaskClaims, crate::identity::TokenError> {
    use crate::identity::TokenError;
    let secrets = gw.secrets();
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != jsonwebtoken::Algorithm::ES256 {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|k| secrets.decoding_key(k))
        .ok_or(TokenError::UnknownKey)?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_issuer(&[secrets.issuer()]);
    v.set_audience(&[secrets.issuer()]);
    v.validate_exp = false;
    v.set_required_spec_claims(&["iss", "aud", "sub", "exp"]);
    let data = jsonwebtoken::decode::<TaskClaims>(token, key, &v).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
        jsonwebtoken::errors::ErrorKind::InvalidAudience => TokenError::WrongAudience,
        _ => TokenError::Malformed,
    })?;
    if data.claims.typ != "task" {
        return Err(TokenError::Malformed);
    }
    if epoch(gw.now()) >= data.claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(data.claims)
}

/// Loads a task and checks that it belongs to `agent_id` and is active by
/// the gateway's clock; a task past its expiry is ended now.
pub async fn active(gw: &Gateway, id: &str, agent_id: &str) -> Result<TaskRecord, TaskError> {
    let task = gw
        .store()
        .task(id)
        .await?
        .filter(|t| t.agent_id == agent_id)
        .ok_or_else(|| TaskError::NotFound(id.to_string()))?;
    if task.status != TaskStatus::Active {
        return Err(TaskError::NotActive {
            id: task.id,
            status: task.status.as_str(),
        });
    }
    if stamp(gw.now()) >= task.expires_at {
        end(
            gw,
            id,
            TaskStatus::Expired,
            "tollgate",
            "the task's time limit passed",
        )
        .await?;
        return Err(TaskError::NotActive {
            id: task.id,
            status: TaskStatus::Expired.as_str(),
        });
    }
    Ok(task)
}

/// Ends a task: its status, its token and every credential issued for it,
/// at once; then tells external issuers (RFC 7009) where that applies.
pub async fn end(
    gw: &Gateway,
    id: &str,
    status: TaskStatus,
    by: &str,
    reason: &str,
) -> Result<TaskRecord, TaskError> {
    let end = TaskEnd {
        status,
        by: by.to_string(),
        reason: reason.to_string(),
        at: stamp(gw.now()),
    };
    let ended = match gw.store().end_task(id, &end).await? {
        Some(t) => t,
        None => {
            let t = gw
                .store()
                .task(id)
                .await?
                .ok_or_else(|| TaskError::NotFound(id.to_string()))?;
            return Err(TaskError::NotActive {
                id: t.id,
                status: t.status.as_str(),
            });
        }
    };
    tracing::info!(task = %id, status = status.as_str(), %by, "task ended; its credentials are revoked");
    crate::broker::after_task_end(gw, id).await;
    Ok(ended)
}

/// Ends tasks past their expiry, finishes pending upstream revocations and
/// picks up rotated signing keys, every `every`, until aborted.
pub fn spawn_sweeper(gw: Arc<Gateway>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut keys_seen = std::fs::read(gw.secrets().path()).ok();
        loop {
            tick.tick().await;
            sweep(&gw).await;
            // A key rotation by `tollgate keys rotate` takes effect here.
            let now = std::fs::read(gw.secrets().path()).ok();
            if now.is_some() && now != keys_seen {
                match gw.secrets().reload() {
                    Ok(s) => {
                        gw.replace_secrets(s);
                        tracing::info!("signing keys reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reload the signing keys; keeping the current ones")
                    }
                }
                keys_seen = now;
            }
        }
    })
}

/// One sweep: expire due tasks, revoke upstream what is pending.
pub async fn sweep(gw: &Gateway) {
    if let Err(e) = gw.store().maintenance().await {
        tracing::warn!(error = %e, "store maintenance failed");
    }
    match gw.store().expire_tasks(&stamp(gw.now())).await {
        Ok(expired) => {
            for t in expired {
                tracing::info!(task = %t.id, agent = %t.agent_id, "task expired; its credentials are revoked");
                crate::broker::after_task_end(gw, &t.id).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot expire tasks"),
    }
    crate::broker::revoke_pending_upstream(gw).await;
}
