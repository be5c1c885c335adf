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

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;

use crate::Gateway;
use crate::store::{TaskFilter, TaskStatus};
use crate::tasks::{self, StartTask, TaskError};

/// Prefix of admin keys.
pub const ADMIN_KEY_PREFIX: &str = "tga_";

/// A new admin key: the secret (shown once), its id and hash.
#[derive(Debug)]
pub struct AdminKey {
    /// The key.
    pub key: String,
    /// Public id.
    pub key_id: String,
    /// SHA-256.
    pub hash: [u8; 32],
}

/// Generates an admin key.
pub fn new_admin_key() -> AdminKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!(
        "{ADMIN_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = crate::pipeline::authenticate::key_hash(&key);
    AdminKey {
        key_id: format!("admin_{}", hex::encode(&hash[..6])),
        key,
        hash,
    }
}

#[derive(Debug, Clone)]
struct Admin(String);

fn error(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": message.into(), "reason": reason })),
    )
        .into_response()
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
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|k| k.starts_with(ADMIN_KEY_PREFIX))
        .map(str::to_string);
    let challenge = [(header::WWW_AUTHENTICATE, "Bearer realm=\"tollgate-admin\"")];
    let Some(key) = key else {
        return (
            challenge,
            error(
                StatusCode::UNAUTHORIZED,
                "credential_missing",
                "send `Authorization: Bearer <admin key>`",
            ),
        )
            .into_response();
    };
    match gw
        .store()
        .find_admin_key(&crate::pipeline::authenticate::key_hash(&key))
        .await
    {
        Ok(Some(name)) => {
            request.extensions_mut().insert(Admin(name));
            next.run(request).await
        }
        Ok(None) => (
            challenge,
            error(
                StatusCode::UNAUTHORIZED,
                "credential_invalid",
                "the admin key is not valid",
            ),
        )
            .into_response(),
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
    let req = StartTask {
        agent_id: body.agent,
        purpose: body.purpose,
        tools: body.tools,
        constraints: body.constraints,
        ttl: Duration::from_secs(body.ttl_seconds),
        started_by: format!("admin:{}", admin.0),
        origin: "admin_api",
    };
    match tasks::start(&gw, req).await {
        Ok(s) => {
            let t = &s.task;
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

async fn list(State(gw): State<Arc<Gateway>>, Query(q): Query<ListQuery>) -> Response {
    let filter = TaskFilter {
        agent_id: q.agent,
        active_only: q.active,
        limit: Some(q.limit.unwrap_or(100).min(1000)),
    };
    match gw.store().tasks(&filter).await {
        Ok(t) => Json(json!({ "tasks": t })).into_response(),
        Err(e) => task_error(e.into()),
    }
}

async fn show(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    match gw.store().task(&id).await {
        Ok(Some(t)) => match gw.store().task_credentials(&id).await {
            Ok(c) => Json(json!({ "task": t, "credentials": c })).into_response(),
            Err(e) => task_error(e.into()),
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
    match tasks::end(
        &gw,
        &id,
        TaskStatus::Revoked,
        &format!("admin:{}", admin.0),
        &reason,
    )
    .await
    {
        Ok(t) => Json(json!({ "task": t })).into_response(),
        Err(e) => task_error(e),
    }
}
