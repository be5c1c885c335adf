//! The admin HTTP API: what `tollgate tasks ...` does, for orchestrators
//! and operators that cannot run the CLI next to the store. Authenticated
//! with admin keys (`tollgate admin issue-key NAME`, prefix `tga_`), never
//! with agent credentials: an agent cannot start tasks for itself out of
//! band (it has the in-band `tollgate.start_task`, which is recorded as its
//! own act).
//!
//! - `POST /admin/tasks` `{agent, purpose, tools, ttl_seconds, constraints?}`
//!   -> 201 `{task_id, task_token, expires_at, ...}`
//! - `GET /admin/tasks?agent=A&active=true` -> the tasks, newest first
//! - `GET /admin/tasks/{id}` -> the task and its credentials
//! - `POST /admin/tasks/{id}/end` `{reason?}` -> the ended task
//!
//! A key may be scoped to some agents (`tollgate admin issue-key NAME
//! --agents a,b`): any request about another agent's task gets 403
//! `agent_out_of_scope`, and listings show only its agents' tasks. Every
//! task started or ended here is recorded as an admin action with the key
//! id and the time (`tollgate audit admin`); a task whose start cannot be
//! recorded is ended again at once (fail closed). A revoked key is refused
//! on its next request: keys are looked up on every request.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::Gateway;
use crate::http_reply::{self, Challenge};
use crate::store::{AdminAction, AdminKeyRecord, TaskFilter, TaskRecord, TaskStatus};
use crate::tasks::{self, StartTask, TaskError};

/// Admin action: an admin key was issued.
pub const ACTION_KEY_ISSUED: &str = "admin_key_issued";
/// Admin action: an admin key was revoked.
pub const ACTION_KEY_REVOKED: &str = "admin_key_revoked";
/// Admin action: a task was started through the admin API.
pub const ACTION_TASK_STARTED: &str = "task_started";
/// Admin action: a task was ended through the admin API.
pub const ACTION_TASK_ENDED: &str = "task_ended";

/// Prefix of admin keys.
pub const ADMIN_KEY_PREFIX: &str = "tga_";

/// A new admin key: the secret (shown once), its id and hash.
pub type AdminKey = crate::keys::IssuedKey;

/// Generates an admin key (`tga_…`, id `admin_…`).
pub fn new_admin_key() -> AdminKey {
    crate::keys::generate(ADMIN_KEY_PREFIX, "admin_")
}

/// The admin key that authenticated the request.
#[derive(Debug, Clone)]
struct Admin(AdminKeyRecord);

impl Admin {
    /// `started_by` / `ended_by` on tasks: the key's holder.
    fn who(&self) -> String {
        format!("admin:{}", self.0.name)
    }

    /// Refuses `agent` if the key is scoped to other agents.
    fn check_scope(&self, agent: &str) -> Result<(), Box<Response>> {
        if self.0.may_act_on(agent) {
            return Ok(());
        }
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "agent_out_of_scope",
            format!(
                "admin key {} may act only on agents: {}; not on `{agent}`",
                self.0.key_id,
                self.0.agents.as_deref().unwrap_or_default().join(", ")
            ),
        )))
    }

    /// The record of `action` on `task`, at the gateway's `now`.
    fn action(
        &self,
        now: time::OffsetDateTime,
        action: &str,
        task: &TaskRecord,
        detail: &str,
    ) -> AdminAction {
        AdminAction {
            at: crate::util::stamp(now),
            actor: self.0.key_id.clone(),
            action: action.into(),
            target: task.id.clone(),
            agent_id: Some(task.agent_id.clone()),
            detail: Some(detail.into()),
        }
    }
}

fn error(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    http_reply::json_error(status, reason, &message.into())
}

/// The admin routes, behind admin-key authentication.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/admin/tasks", post(start).get(list))
        .route("/admin/tasks/{id}", get(show))
        .route("/admin/tasks/{id}/end", post(end))
        .layer(middleware::from_fn_with_state(gw.clone(), authenticate))
        .with_state(gw)
}

async fn authenticate(
    State(gw): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::keys::bearer)
        .filter(|k| k.starts_with(ADMIN_KEY_PREFIX))
        .map(str::to_string);
    let challenge = |error| Challenge {
        realm: "tollgate-admin",
        resource_metadata: None,
        error,
    };
    let Some(key) = key else {
        return http_reply::unauthorized(
            challenge(None),
            "credential_missing",
            "send `Authorization: Bearer <admin key>`",
        );
    };
    match gw
        .store()
        .find_admin(&crate::pipeline::authenticate::key_hash(&key))
        .await
    {
        Ok(Some(record)) => {
            request.extensions_mut().insert(Admin(record));
            next.run(request).await
        }
        Ok(None) => http_reply::unauthorized(
            challenge(Some("invalid_token")),
            "credential_invalid",
            "the admin key is not valid",
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot check an admin key; refusing");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_unavailable",
                "credentials cannot be checked right now",
            )
        }
    }
}

fn task_error(e: TaskError) -> Response {
    let status = match e {
        TaskError::Invalid(_) => StatusCode::BAD_REQUEST,
        TaskError::NotFound(_) => StatusCode::NOT_FOUND,
        TaskError::NotActive { .. } => StatusCode::CONFLICT,
        TaskError::Store(_) | TaskError::Signing(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.code(), e.public_message())
}

/// Parses a JSON body strictly; an empty body is the type's default when
/// `empty_ok`. The error is the 400 to send.
fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    empty_ok: bool,
) -> Result<T, Box<Response>> {
    if empty_ok && body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid JSON body: {e}"),
        ))
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    agent: String,
    purpose: String,
    tools: Vec<String>,
    ttl_seconds: u64,
    #[serde(default)]
    constraints: Vec<String>,
}

async fn start(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    body: axum::body::Bytes,
) -> Response {
    let body: StartBody = match json_body(&body, false) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if let Err(r) = admin.check_scope(&body.agent) {
        return *r;
    }
    let req = StartTask {
        agent_id: body.agent,
        purpose: body.purpose,
        tools: body.tools,
        constraints: body.constraints,
        ttl: Duration::from_secs(body.ttl_seconds),
        started_by: admin.who(),
        origin: "admin_api",
    };
    match tasks::start(&gw, req).await {
        Ok(s) => {
            let t = &s.task;
            let recorded = gw
                .store()
                .record_admin_action(&admin.action(gw.now(), ACTION_TASK_STARTED, t, &t.purpose))
                .await;
            if let Err(e) = recorded {
                // Fail closed: a task nobody can trace back to its key
                // does not run.
                tracing::error!(error = %e, task = %t.id, "cannot record an admin action; ending the task");
                let _ = tasks::end(
                    &gw,
                    &t.id,
                    TaskStatus::Revoked,
                    "tollgate",
                    "its start could not be recorded",
                )
                .await;
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit_unavailable",
                    "the action cannot be recorded right now; nothing was started",
                );
            }
            let out = json!({
                "task_id": t.id, "agent": t.agent_id, "purpose": t.purpose, "tools": t.tools,
                "constraints": t.constraints, "expires_at": t.expires_at, "started_by": t.started_by,
                "task_token": s.token,
            });
            (StatusCode::CREATED, Json(out)).into_response()
        }
        Err(e) => task_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    agent: Option<String>,
    #[serde(default)]
    active: bool,
    limit: Option<u32>,
}

async fn list(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    Query(q): Query<ListQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(100).min(1000);
    // A scoped key without an agent filter sees its agents' tasks only.
    let agents: Vec<Option<String>> = match (&q.agent, &admin.0.agents) {
        (Some(a), _) => {
            if let Err(r) = admin.check_scope(a) {
                return *r;
            }
            vec![Some(a.clone())]
        }
        (None, Some(scope)) => scope.iter().cloned().map(Some).collect(),
        (None, None) => vec![None],
    };
    let mut all = Vec::new();
    for agent_id in agents {
        let filter = TaskFilter {
            agent_id,
            active_only: q.active,
            limit: Some(limit),
        };
        match gw.store().tasks(&filter).await {
            Ok(t) => all.extend(t),
            Err(e) => return task_error(e.into()),
        }
    }
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    all.truncate(limit as usize);
    Json(json!({ "tasks": all })).into_response()
}

async fn show(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Response {
    match gw.store().task(&id).await {
        Ok(Some(t)) => match admin.check_scope(&t.agent_id) {
            Err(r) => *r,
            Ok(()) => match gw.store().task_credentials(&id).await {
                Ok(c) => Json(json!({ "task": t, "credentials": c })).into_response(),
                Err(e) => task_error(e.into()),
            },
        },
        Ok(None) => task_error(TaskError::NotFound(id)),
        Err(e) => task_error(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndBody {
    reason: Option<String>,
}

async fn end(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: EndBody = match json_body(&body, true) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let reason = body
        .reason
        .unwrap_or_else(|| "ended through the admin API".into());
    match gw.store().task(&id).await {
        Ok(Some(t)) => {
            if let Err(r) = admin.check_scope(&t.agent_id) {
                return *r;
            }
        }
        Ok(None) => return task_error(TaskError::NotFound(id)),
        Err(e) => return task_error(e.into()),
    }
    match tasks::end(&gw, &id, TaskStatus::Revoked, &admin.who(), &reason).await {
        Ok(t) => {
            // The task has ended either way (the safe direction); a lost
            // record is logged loudly rather than undoing the end.
            if let Err(e) = gw
                .store()
                .record_admin_action(&admin.action(gw.now(), ACTION_TASK_ENDED, &t, &reason))
                .await
            {
                tracing::error!(error = %e, task = %t.id, admin_key = %admin.0.key_id, "cannot record an admin action (task ended)");
            }
            Json(json!({ "task": t })).into_response()
        }
        Err(e) => task_error(e),
    }
}
