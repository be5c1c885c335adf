//! Authenticate: turns a presented credential (a gateway-issued
//! key, or a JWT from a declared issuer) into an [`Authenticated`]
//! principal, or refuses.
//!
//! Contract: an `Authenticated` exists only if a live credential was verified
//! against the store just now and names an agent in the current catalog. The
//! identity comes from the credential alone, never from anything the agent
//! says about itself (`clientInfo`, headers other than `Authorization`).
//! Over HTTP this runs for every request, before rmcp sees it; over stdio it
//! runs for every request too, with the key from `TOLLGATE_AGENT_KEY`.

use std::sync::Arc;

use crate::Gateway;
use crate::catalog::AgentEntry;
use crate::identity::{self, TokenError};
use crate::revocation::Fence;
use crate::store::{Lifecycle, StoreError};

/// How the request reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP.
    Http,
    /// stdio.
    Stdio,
}

impl Transport {
    /// Name used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Stdio => "stdio",
        }
    }
}

/// A verified principal. Only this module can build one.
#[derive(Debug, Clone)]
pub struct Authenticated {
    agent: Arc<AgentEntry>,
    credential_id: String,
    transport: Transport,
    task_id: Option<String>,
    /// The agent's status as read with the credential, for this request.
    status: Option<Option<Lifecycle>>,
    /// The revocation-feed position taken before anything was read: later
    /// stages confirm nothing concerning this request was committed since.
    fence: Fence,
    /// When the presented credential itself expires (a JWT's `exp`, in
    /// seconds); `None` for keys, which live until revoked.
    expires_at: Option<i64>,
}

/// Verifies whatever bearer credential was presented: a gateway key
/// (`tgk_…`) or a JWT from a declared issuer.
pub async fn authenticate_bearer(
    gw: &Gateway,
    presented: &str,
    transport: Transport,
) -> Result<Authenticated, AuthError> {
    let presented = presented.trim();
    if presented.starts_with(KEY_PREFIX) {
        return authenticate_key(gw, presented, transport).await;
    }
    if presented.is_empty() {
        return Err(AuthError::Missing);
    }
    if presented.len() > 16 * 1024 || presented.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(AuthError::Invalid);
    }
    let fence = gw.revocations().fence();
    let catalog = gw.catalog();
    let iss = identity::unverified_issuer(presented).map_err(AuthError::Token)?;
    if iss == gw.secrets().issuer() {
        return authenticate_task_token(gw, presented, transport).await;
    }
    let issuer = catalog
        .issuers_by_iss
        .get(&iss)
        .ok_or(AuthError::Token(TokenError::UnknownIssuer))?;
    let verified = issuer.verify(presented).await.map_err(|e| match e {
        TokenError::KeysUnavailable => AuthError::Unavailable(None),
        other => AuthError::Token(other),
    })?;
    let agent_id = catalog
        .workloads
        .get(&(verified.issuer_id.clone(), verified.subject.clone()))
        .ok_or(AuthError::UnknownIdentity)?;
    let agent = catalog
        .agents
        .get(agent_id)
        .cloned()
        .ok_or(AuthError::UnknownIdentity)?;
    Ok(Authenticated {
        agent,
        credential_id: format!("jwt:{}/{}", verified.issuer_id, verified.subject),
        transport,
        task_id: None,
        status: None,
        fence,
        expires_at: Some(verified.expires_at),
    })
}

/// A task token: signed by this gateway, naming an agent and a task that
/// must still be active (a token outlives nothing: ending the task ends it),
/// and, for a task started in band, the credential that started it, which
/// must still be good: the key not revoked (revoking it also ends the task),
/// the workload identity still declared for the agent.
async fn authenticate_task_token(
    gw: &Gateway,
    token: &str,
    transport: Transport,
) -> Result<Authenticated, AuthError> {
    let fence = gw.revocations().fence();
    let claims = crate::tasks::verify_token(gw, token).map_err(AuthError::Token)?;
    // The task and its starting key's state in one read.
    let (task, starting_key_live) = gw
        .store()
        .task_with_starting_key(&claims.tid)
        .await
        .map_err(|e| AuthError::Unavailable(Some(e)))?
        .filter(|(t, _)| t.agent_id == claims.sub)
        .ok_or(AuthError::Invalid)?;
    if task.status != crate::store::TaskStatus::Active
        || crate::util::stamp(gw.now()) >= task.expires_at
    {
        return Err(AuthError::TaskEnded {
            task: task.id,
            status: task.status.as_str(),
        });
    }
    let agent = gw
        .catalog()
        .agents
        .get(&claims.sub)
        .cloned()
        .ok_or(AuthError::Invalid)?;
    // The token names the credential that started the task; it must be the
    // one recorded, and still good.
    if claims.cid != task.started_with
        || !crate::tasks::starting_credential_live(gw, &agent, &task, starting_key_live)
    {
        return Err(AuthError::Invalid);
    }
    Ok(Authenticated {
        agent,
        credential_id: format!("task:{}", task.id),
        transport,
        task_id: Some(task.id),
        status: None,
        fence,
        expires_at: None,
    })
}

impl Authenticated {
    /// The agent, as of the catalog in force when it authenticated.
    pub fn agent(&self) -> &Arc<AgentEntry> {
        &self.agent
    }
    /// Public id of the credential used: a key id (`key_…`) or a workload
    /// identity (`jwt:ISSUER/SUBJECT`).
    pub fn credential_id(&self) -> &str {
        &self.credential_id
    }
    /// How it reached the gateway.
    pub fn transport(&self) -> Transport {
        self.transport
    }
    /// The agent's runtime status, if it was read together with the
    /// credential for this very request (`Some(None)`: never changed).
    pub fn status_snapshot(&self) -> Option<&Option<Lifecycle>> {
        self.status.as_ref()
    }
    /// When the presented credential expires (a JWT's `exp`, seconds);
    /// `None` for keys.
    pub fn credential_expires_at(&self) -> Option<i64> {
        self.expires_at
    }
    /// The task its credential is bound to (task tokens only).
    pub fn task_id(&self) -> Option<&str> {
        self.task_id.as_deref()
    }
    /// The gateway key it authenticated with, if any (`key_…`).
    pub fn key_id(&self) -> Option<&str> {
        self.credential_id
            .starts_with("key_")
            .then_some(self.credential_id.as_str())
    }
    /// The revocation-feed position taken before its state was read.
    pub fn fence(&self) -> Fence {
        self.fence
    }
    /// The principal a session is bound to: one key, or one workload
    /// identity (whose tokens rotate; the identity stays).
    pub fn principal(&self) -> &str {
        &self.credential_id
    }
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("no credential: send `Authorization: Bearer <key>`")]
    Missing,
    /// The credential is unknown, revoked, malformed, or names an agent that
    /// is no longer declared. One variant on purpose: the caller learns
    /// nothing about which.
    #[error("the credential is not valid")]
    Invalid,
    /// A JWT was refused.
    #[error("{0}")]
    Token(TokenError),
    /// A task token whose task has ended.
    #[error("task `{task}` is {status}; its token no longer works")]
    TaskEnded {
        /// Task id.
        task: String,
        /// Its status.
        status: &'static str,
    },
    /// A valid JWT whose identity no agent declares.
    #[error("the token's identity is not declared by any agent")]
    UnknownIdentity,
    /// The credential could not be checked (store or issuer unreachable):
    /// refused, never guessed.
    #[error("the credential could not be checked right now")]
    Unavailable(#[source] Option<StoreError>),
}

/// Records a failed authentication in the audit trail (rate-limited
/// there): the reason, what was presented, identified without the secret
/// (a key by its key id, derived from its hash; a JWT by its unverified
/// issuer and subject), and where it came from.
pub fn record_failure(gw: &Gateway, presented: &str, e: &AuthError, remote: Option<String>) {
    let presented = presented.trim();
    let what = if presented.is_empty() {
        serde_json::json!({ "kind": "none" })
    } else if presented.starts_with(KEY_PREFIX) {
        let hash = crate::keys::key_hash(presented);
        serde_json::json!({ "kind": "key", "key_id": format!("key_{}", hex::encode(&hash[..6])) })
    } else {
        let (iss, sub) = identity::unverified_subject(presented);
        serde_json::json!({ "kind": "jwt", "iss": iss, "sub": sub })
    };
    gw.audit()
        .auth_failure(&crate::util::stamp(gw.now()), e.code(), what, remote);
}

impl AuthError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "credential_missing",
            AuthError::Invalid => "credential_invalid",
            AuthError::Token(e) => e.code(),
            AuthError::UnknownIdentity => "identity_unknown",
            AuthError::TaskEnded { .. } => "task_ended",
            AuthError::Unavailable(_) => "identity_unavailable",
        }
    }
}

pub use crate::keys::{IssuedKey, KEY_PREFIX, key_hash, new_key};

/// Verifies a gateway-issued key.
pub async fn authenticate_key(
    gw: &Gateway,
    presented: &str,
    transport: Transport,
) -> Result<Authenticated, AuthError> {
    let presented = presented.trim();
    if presented.is_empty() {
        return Err(AuthError::Missing);
    }
    if !presented.starts_with(KEY_PREFIX) || presented.len() > 128 {
        return Err(AuthError::Invalid);
    }
    let fence = gw.revocations().fence();
    let found = gw
        .store()
        .find_key(&key_hash(presented))
        .await
        .map_err(|e| AuthError::Unavailable(Some(e)))?
        .ok_or(AuthError::Invalid)?;
    let agent = gw
        .catalog()
        .agents
        .get(&found.key.agent_id)
        .cloned()
        .ok_or(AuthError::Invalid)?;
    if !agent.gateway_keys {
        return Err(AuthError::Invalid);
    }
    Ok(Authenticated {
        agent,
        credential_id: found.key.key_id,
        transport,
        task_id: None,
        status: Some(found.lifecycle),
        fence,
        expires_at: None,
    })
}
