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
//!
//! Nothing outlives the grant that produced it. A task started in band
//! records the agent credential that started it (`started_with`: a key id,
//! or a workload identity and its JWT's `exp`), and its token names it
//! (`cid`). Revoking that key ends the task in the same store transaction
//! ([`revoke_key`] in process; `Store::revoke_key` from the CLI, whose
//! upstream revocations the serving gateway's sweeper completes). A task
//! started with a JWT expires no later than that JWT. The token is refused
//! once its starting credential is revoked or no longer declared.
//!
//! An operator's task binds: while a task started by an operator (CLI,
//! admin API) is active for an agent, the agent may start a task in band
//! only within it (see [`start_in_band`]); and an agent may start its own
//! tasks only for tools up to `tasks.self_start_max_risk` (default `high`).

pub mod constraint;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::catalog::{AgentEntry, Catalog};
use crate::manifest::types::Risk;
use crate::secrets::SecretsError;
use crate::store::{StoreError, TaskEnd, TaskFilter, TaskRecord, TaskStatus};
use crate::util::stamp;
use constraint::Constraint;

/// `origin` of tasks an agent started itself (`tollgate.start_task`).
pub const ORIGIN_IN_BAND: &str = "in_band";

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
#[derive(Clone, Serialize)]
pub struct StartedTask {
    /// The task.
    pub task: TaskRecord,
    /// Bearer token for the agent.
    pub token: String,
}

impl std::fmt::Debug for StartedTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token works as a bearer credential: never in a log line.
        f.debug_struct("StartedTask")
            .field("task", &self.task)
            .field("token", &"<redacted>")
            .finish()
    }
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
    /// The agent credential that started the task in band (a key id or
    /// `jwt:ISSUER/SUBJECT`); absent for tasks an operator started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
}

/// The agent credential an in-band start was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartingCredential {
    /// Its public id: a key id (`key_…`) or `jwt:ISSUER/SUBJECT`.
    pub id: String,
    /// When it expires (a JWT's `exp`, seconds since the epoch); `None` for
    /// keys, which live until revoked.
    pub expires_at: Option<i64>,
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

/// Checks and starts a task for an operator (CLI, admin API), returning it
/// with its token.
pub async fn start(gw: &Gateway, req: StartTask) -> Result<StartedTask, TaskError> {
    start_checked(gw, req, None).await
}

/// Checks and starts a task the agent asked for itself (`tollgate.start_task`)
/// with `credential`. Beyond [`start`]'s checks:
///
/// - every tool must be at most the agent's `tasks.self_start_max_risk`
///   (default `high`); riskier tasks need an operator;
/// - while an operator's task is active for the agent, the new task must
///   fit inside one of them: only tools that task lists, and every one of
///   its constraints carried (the same, or a stricter one on the same
///   argument, see [`Constraint::implies`]); it then ends no later than that
///   task. Otherwise it is refused: the agent cannot widen what an operator
///   scoped;
/// - it ends no later than the credential (a JWT's `exp`), and records the
///   credential, so revoking the key ends the task.
pub async fn start_in_band(
    gw: &Gateway,
    req: StartTask,
    credential: StartingCredential,
) -> Result<StartedTask, TaskError> {
    if credential.id.starts_with("task:") {
        // A task token is a handle on a task, not the agent's own credential.
        return Err(TaskError::Invalid(
            "a task cannot be started with a task token; use the agent's own credential".into(),
        ));
    }
    start_checked(gw, req, Some(credential)).await
}

async fn start_checked(
    gw: &Gateway,
    req: StartTask,
    starter: Option<StartingCredential>,
) -> Result<StartedTask, TaskError> {
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
    let mut expires = now + req.ttl;
    let mut started_with_expires_at = None;
    if let Some(starter) = &starter {
        check_self_start_risk(&catalog, agent, &tools)?;
        if let Some(bound) = binding_operator_task(gw, agent, &tools, &constraints).await? {
            expires = expires.min(bound);
        }
        if let Some(exp) = starter.expires_at {
            let exp = time::OffsetDateTime::from_unix_timestamp(exp).map_err(|_| {
                TaskError::Invalid("the credential's expiry is out of range".into())
            })?;
            if exp <= now {
                return Err(TaskError::Invalid(
                    "the credential this task would be started with has expired".into(),
                ));
            }
            // A task never outlives the token that started it.
            expires = expires.min(exp);
            started_with_expires_at = Some(stamp(exp));
        }
    }
    let task = TaskRecord {
        id: format!("task_{}", uuid::Uuid::new_v4().simple()),
        agent_id: agent.id.clone(),
        purpose: purpose.to_string(),
        tools,
        constraints: constraints.into_iter().map(|c| c.text).collect(),
        started_by: req.started_by,
        origin: req.origin.to_string(),
        created_at: stamp(now),
        expires_at: stamp(expires),
        status: TaskStatus::Active,
        ended_at: None,
        ended_by: None,
        end_reason: None,
        started_with: starter.map(|s| s.id),
        started_with_expires_at,
    };
    gw.store().create_task(&task).await.map_err(|e| match e {
        // The starting key was revoked while the start was under way.
        StoreError::Conflict(m) => TaskError::Invalid(m),
        other => TaskError::Store(other),
    })?;
    let token = issue_token(gw, &task)?;
    tracing::info!(task = %task.id, agent = %task.agent_id, tools = ?task.tools, "task started");
    Ok(StartedTask { task, token })
}

/// Refuses an in-band start naming a tool riskier than the agent may
/// start a task for by itself.
fn check_self_start_risk(
    catalog: &Catalog,
    agent: &AgentEntry,
    tools: &[String],
) -> Result<(), TaskError> {
    let max = agent.tasks.self_start_max_risk;
    for name in tools {
        // A tool missing from the catalog cannot be judged: refuse.
        let risk = catalog.tools.get(name).map(|t| t.risk);
        if risk.is_none_or(|r| r > max) {
            return Err(TaskError::Invalid(format!(
                "`{name}` is {} risk; agent `{}` may start its own tasks only for tools up to {} \
                 (tasks.self_start_max_risk): ask an operator to start this task",
                risk.map_or("unknown", Risk::as_str),
                agent.id,
                max.as_str()
            )));
        }
    }
    Ok(())
}

/// While operator-started tasks are active for the agent, an in-band task
/// must fit inside one of them. Returns the end of the task it fits in
/// (the new task ends no later), `None` when no operator task is active.
async fn binding_operator_task(
    gw: &Gateway,
    agent: &AgentEntry,
    tools: &[String],
    constraints: &[Constraint],
) -> Result<Option<time::OffsetDateTime>, TaskError> {
    let now = stamp(gw.now());
    let active = gw
        .store()
        .tasks(&TaskFilter {
            agent_id: Some(agent.id.clone()),
            active_only: true,
            limit: None,
        })
        .await?;
    let operator: Vec<TaskRecord> = active
        .into_iter()
        .filter(|t| t.origin != ORIGIN_IN_BAND && t.expires_at > now)
        .collect();
    if operator.is_empty() {
        return Ok(None);
    }
    for op in &operator {
        if fits_within(op, tools, constraints) {
            let end = crate::util::parse_stamp(&op.expires_at).ok_or_else(|| {
                TaskError::Invalid("an operator task's expiry is unreadable".into())
            })?;
            return Ok(Some(end));
        }
    }
    let names: Vec<String> = operator
        .iter()
        .map(|t| {
            let limits = if t.constraints.is_empty() {
                String::new()
            } else {
                format!(" with {}", t.constraints.join(", "))
            };
            format!("`{}` ({}{limits})", t.id, t.tools.join(", "))
        })
        .collect();
    Err(TaskError::Invalid(format!(
        "an operator's task is active for agent `{}`: {}; a task started in band must stay within it \
         (only its tools, and all of its constraints or stricter ones)",
        agent.id,
        names.join("; ")
    )))
}

/// Whether a task with `tools` and `constraints` stays inside `op`: every
/// tool listed by `op`, every constraint of `op` implied by one of these.
fn fits_within(op: &TaskRecord, tools: &[String], constraints: &[Constraint]) -> bool {
    let tools_inside = tools.iter().all(|t| op.tools.contains(t));
    let constraints_kept = op.constraints.iter().all(|text| {
        // A stored constraint that no longer parses cannot be kept: refuse.
        Constraint::parse(text)
            .is_ok_and(|required| constraints.iter().any(|c| c.implies(&required)))
    });
    tools_inside && constraints_kept
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
        cid: task.started_with.clone(),
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

/// Whether the credential that started `task` in band is still good:
/// a key not revoked (`starting_key_live`, read with the task) while the
/// agent still accepts gateway keys; a workload identity the catalog still
/// maps to this agent, before its JWT's expiry. Tasks an operator started
/// have no starting credential.
pub fn starting_credential_live(
    gw: &Gateway,
    agent: &AgentEntry,
    task: &TaskRecord,
    starting_key_live: Option<bool>,
) -> bool {
    let Some(with) = task.started_with.as_deref() else {
        return true;
    };
    if with.starts_with("key_") {
        return starting_key_live == Some(true) && agent.gateway_keys;
    }
    if let Some(identity) = with.strip_prefix("jwt:") {
        let declared = identity.split_once('/').is_some_and(|(issuer, subject)| {
            gw.catalog()
                .workloads
                .get(&(issuer.to_string(), subject.to_string()))
                .is_some_and(|a| *a == agent.id)
        });
        let unexpired = task
            .started_with_expires_at
            .as_deref()
            .is_some_and(|exp| stamp(gw.now()).as_str() < exp);
        return declared && unexpired;
    }
    // A kind of credential this gateway does not know: closed.
    false
}

/// Revokes an agent key and ends, in the same transaction, every task it
/// started; then runs the same after-end work as [`end`] for each (cached
/// credentials dropped, upstream tokens revoked). `None` if no live key has
/// that id. For callers inside the serving process (the admin API); the
/// CLI, in another process, uses `Store::revoke_key`, and the serving
/// gateway's sweeper completes the upstream revocations.
pub async fn revoke_key(gw: &Gateway, key_id: &str) -> Result<Option<Vec<TaskRecord>>, TaskError> {
    let ended = gw
        .store()
        .revoke_key_ending_tasks(key_id, &stamp(gw.now()))
        .await?;
    // Calls in flight in this process see the revocation at the next
    // poll instead of waiting out the interval.
    gw.revocations().poke();
    for t in ended.iter().flatten() {
        after_key_revoked(gw, t).await;
    }
    Ok(ended)
}

/// The after-end work for a task ended by its starting key's revocation.
pub async fn after_key_revoked(gw: &Gateway, task: &TaskRecord) {
    tracing::info!(task = %task.id, agent = %task.agent_id, "the key that started the task was revoked; task ended, its credentials are revoked");
    crate::broker::after_task_end(gw, &task.id).await;
}

/// Loads a task and checks that it belongs to `agent_id` and is active by
/// the gateway's clock; a task past its expiry is ended now.
pub async fn active_or_end_expired(
    gw: &Gateway,
    id: &str,
    agent_id: &str,
) -> Result<TaskRecord, TaskError> {
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
    let ended = gw.store().end_task(id, &end).await?;
    gw.revocations().poke();
    let ended = match ended {
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
            if !expired.is_empty() {
                gw.revocations().poke();
            }
            for t in expired {
                tracing::info!(task = %t.id, agent = %t.agent_id, "task expired; its credentials are revoked");
                crate::broker::after_task_end(gw, &t.id).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot expire tasks"),
    }
    // After the tasks: requests of tasks that just ended are withdrawn.
    if let Err(e) = crate::approvals::sweep(gw).await {
        tracing::error!(error = %e, "cannot expire approval requests");
    }
    crate::broker::revoke_pending_upstream(gw).await;
}
