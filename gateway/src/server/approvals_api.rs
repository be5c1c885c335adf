//! The approvals HTTP API, shared by `tollgate approvals ...` and anything
//! else that reviews requests. Authenticated with an approver credential
//! (`Authorization: Bearer tgp_…`, from `tollgate approvers issue-key ID`);
//! each approver sees the requests routed to them.
//!
//! - `GET /api/approvals?status=pending|decided|all&agent=A&tool=T&limit=N`
//!   -> `{"requests": [...]}`, newest first
//! - `GET /api/approvals/{id}` -> the request, its votes and events, and
//!   whether the caller may decide it (`can_decide`, `cannot_decide`)
//! - `POST /api/approvals/{id}/approve` `{"reason", "for_task"?, "args"?}`
//!   -> the request as it stands (approved once the quorum is reached)
//! - `POST /api/approvals/{id}/deny` `{"reason"}` -> the denied request
//! - `GET /api/approvals/whoami` -> the approver the credential belongs to
//!
//! Errors are `{"error", "reason"}` with a stable reason code: 401
//! `credential_missing`/`credential_invalid`, 403 `approver_not_eligible`,
//! 404 `approval_not_found`, 409 `approval_not_pending` /
//! `approval_already_decided_by_you`, 422 `approval_change_invalid`, 400
//! `invalid_request`, 503 `approvals_unavailable`.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Gateway;
use crate::approvals::{self, ApprovalError, ApproverIdentity, ListFilter, Vote};
use crate::http_reply::{self, Challenge};

/// The approvals routes, behind approver authentication.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/approvals", get(list))
        .route("/api/approvals/whoami", get(whoami))
        .route("/api/approvals/{id}", get(show))
        .route("/api/approvals/{id}/approve", post(approve))
        .route("/api/approvals/{id}/deny", post(deny))
        .layer(middleware::from_fn_with_state(gw.clone(), authenticate))
        .with_state(gw)
}

/// The status an approval error maps to.
pub fn status_of(e: &ApprovalError) -> StatusCode {
    match e {
        ApprovalError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
        ApprovalError::NotEligible(_) => StatusCode::FORBIDDEN,
        ApprovalError::NotPending { .. } | ApprovalError::AlreadyVoted(_) => StatusCode::CONFLICT,
        ApprovalError::InvalidChange(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ApprovalError::Invalid(_) => StatusCode::BAD_REQUEST,
        ApprovalError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn error(e: &ApprovalError) -> Response {
    if let ApprovalError::Store(inner) = e {
        tracing::error!(error = %inner, "approval API: store failure");
    }
    let r = http_reply::json_error(status_of(e), e.code(), &e.public_message());
    if matches!(e, ApprovalError::Unauthenticated(_)) {
        return http_reply::with_challenge(
            r,
            Challenge {
                realm: "tollgate-approvals",
                resource_metadata: None,
                error: Some("invalid_token"),
            },
        );
    }
    r
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
        .map(str::to_string);
    let Some(key) = key else {
        return http_reply::unauthorized(
            Challenge {
                realm: "tollgate-approvals",
                resource_metadata: None,
                error: None,
            },
            "credential_missing",
            "send `Authorization: Bearer <approver key>` (tollgate approvers issue-key ID)",
        );
    };
    match approvals::authenticate(&gw, &key).await {
        Ok(who) => {
            request.extensions_mut().insert(who);
            next.run(request).await
        }
        Err(e) => error(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    agent: Option<String>,
    tool: Option<String>,
    limit: Option<u32>,
}

async fn list(
    State(gw): State<Arc<Gateway>>,
    Extension(who): Extension<ApproverIdentity>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(&ApprovalError::Invalid(
            "query parameters: status, agent, tool, limit".into(),
        ));
    };
    let filter = ListFilter {
        status: q.status,
        agent: q.agent,
        tool: q.tool,
        limit: q.limit,
    };
    match approvals::list(&gw, &who, &filter).await {
        Ok(requests) => Json(json!({ "requests": requests })).into_response(),
        Err(e) => error(&e),
    }
}

async fn whoami(Extension(who): Extension<ApproverIdentity>) -> Response {
    Json(json!({ "approver": *who.approver, "key_id": who.key_id })).into_response()
}

async fn show(
    State(gw): State<Arc<Gateway>>,
    Extension(who): Extension<ApproverIdentity>,
    Path(id): Path<String>,
) -> Response {
    match approvals::show(&gw, &who, &id).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => error(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    reason: String,
    #[serde(default)]
    for_task: bool,
    #[serde(default)]
    args: Option<Map<String, Value>>,
}

fn body(bytes: &[u8]) -> Result<DecideBody, Box<Response>> {
    serde_json::from_slice(bytes).map_err(|e| {
        Box::new(error(&ApprovalError::Invalid(format!(
            "invalid JSON body ({e}); expected {{\"reason\": \"...\", \"for_task\"?: bool, \"args\"?: {{...}}}}"
        ))))
    })
}

async fn approve(
    State(gw): State<Arc<Gateway>>,
    Extension(who): Extension<ApproverIdentity>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    vote(&gw, &who, &id, &bytes, true).await
}

async fn deny(
    State(gw): State<Arc<Gateway>>,
    Extension(who): Extension<ApproverIdentity>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    vote(&gw, &who, &id, &bytes, false).await
}

async fn vote(
    gw: &Gateway,
    who: &ApproverIdentity,
    id: &str,
    bytes: &[u8],
    approve: bool,
) -> Response {
    let b = match body(bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let vote = Vote {
        approve,
        reason: b.reason,
        for_task: b.for_task,
        args: b.args,
    };
    decided(approvals::decide(gw, who, id, vote).await)
}

fn decided(result: Result<crate::store::ApprovalRequest, ApprovalError>) -> Response {
    match result {
        Ok(r) => (StatusCode::OK, Json(r)).into_response(),
        Err(e) => error(&e),
    }
}
