//! The credential broker: issues the credential a backend needs for one
//! task (or one call outside a task), just before dispatch, and revokes it
//! when the task ends.
//!
//! - `gateway_jwt`: a JWT minted here for that connector only (`aud`), the
//!   agent as `sub`, the task id as `tid`, the task's tools on that
//!   connector as `scope`; verifiable against `/.well-known/jwks.json`, and
//!   inactive at `/oauth/introspect` once the task ends.
//! - `oauth2_client_credentials`: a token fetched with the scopes the task's
//!   tools need, cached for that task only, revoked upstream (RFC 7009).
//! - `token_exchange` (RFC 8693): the gateway's own token for the task as
//!   subject and the agent as actor, exchanged for a down-scoped,
//!   audience-bound token.
//! - `static`: a secret from the environment or a file (flagged at load).
//!
//! Every credential expires no later than its task and never later than
//! [`MAX_CREDENTIAL_TTL`] from issue. Secrets live only in this process's
//! memory and in the request to the backend; the store keeps an HMAC digest,
//! the scope and the expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_connectors::BackendCredential;

use crate::Gateway;
use crate::catalog::{AgentEntry, ConnectorEntry, ToolEntry};
use crate::manifest::types::{AuthKind, BackendAuth, ClientAuthMethod, SecretRef};
use crate::store::{CredentialRecord, TaskRecord};
use crate::util::{parse_stamp, stamp};

/// No credential lives longer than this from issue.
pub const MAX_CREDENTIAL_TTL: Duration = Duration::from_secs(900);

/// A cached credential is reused only while this share of its life is left.
const REUSE_FLOOR: f64 = 0.2;

/// Why no credential could be issued: the call is refused (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The secret the manifest points at is not available.
    #[error("the secret for connector `{connector}` is not available: {why}")]
    SecretUnavailable {
        /// Connector.
        connector: String,
        /// What is missing (never the value).
        why: String,
    },
    /// The token endpoint refused or could not be reached.
    #[error("the token endpoint for connector `{connector}` failed: {why}")]
    TokenEndpoint {
        /// Connector.
        connector: String,
        /// What happened (status, OAuth error code).
        why: String,
    },
    /// Signing or recording failed.
    #[error("the credential for connector `{connector}` could not be issued: {why}")]
    Internal {
        /// Connector.
        connector: String,
        /// What happened.
        why: String,
    },
}

#[derive(Debug, Clone)]
struct Upstream {
    token: String,
    revocation_url: String,
    client: Option<(String, String, ClientAuthMethod)>,
}

#[derive(Debug, Clone)]
struct Cached {
    credential: BackendCredential,
    record_id: String,
    issued: OffsetDateTime,
    expires: Option<OffsetDateTime>,
    upstream: Option<Upstream>,
}

/// The broker's in-memory state: cached credentials (the only place their
/// values live) and an HTTP client for token endpoints.
#[derive(Debug)]
pub struct Broker {
    cache: Mutex<HashMap<(String, String), Cached>>,
    http: reqwest::Client,
}

impl Default for Broker {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            cache: Mutex::new(HashMap::new()),
            http,
        }
    }
}

impl Broker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Claims of a backend JWT minted by the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendClaims {
    /// This gateway.
    pub iss: String,
    /// The connector's audience.
    pub aud: String,
    /// The agent.
    pub sub: String,
    /// The task, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// Space-separated tool names.
    pub scope: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// Id (the credential record's id).
    pub jti: String,
}

/// HMAC digest of a secret, for the store.
pub fn digest(gw: &Gateway, secret: &str) -> String {
    let secrets = gw.secrets();
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secrets.digest_key())
        .unwrap_or_else(|_| {
            <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&[0u8; 32]).expect("fixed key")
        });
    mac.update(secret.as_bytes());
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

fn read_secret(
    s: &SecretRef,
    base: &std::path::Path,
    connector: &str,
) -> Result<String, BrokerError> {
    let unavailable = |why: String| BrokerError::SecretUnavailable {
        connector: connector.to_string(),
        why,
    };
    match (&s.env, &s.file) {
        (Some(var), _) => std::env::var(var)
            .map_err(|_| unavailable(format!("environment variable `{var}` is not set"))),
        (None, Some(file)) => std::fs::read_to_string(base.join(file))
            .map(|v| v.trim().to_string())
            .map_err(|e| unavailable(format!("cannot read `{file}`: {}", e.kind()))),
        (None, None) => Err(unavailable("no source declared".into())),
    }
}

/// The latest moment a credential for this task may expire.
fn deadline(now: OffsetDateTime, ttl: Duration, task: Option<&TaskRecord>) -> OffsetDateTime {
    let mut end = now + ttl.min(MAX_CREDENTIAL_TTL);
    if let Some(t) = task.and_then(|t| parse_stamp(&t.expires_at)) {
        end = end.min(t);
    }
    end
}

/// The tools this credential covers: the task's tools on that connector, or
/// (outside a task) the agent's granted tools there.
fn scope_tools(agent: &AgentEntry, task: Option<&TaskRecord>, connector: &str) -> Vec<String> {
    let prefix = format!("{connector}.");
    match task {
        Some(t) => t
            .tools
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect(),
        None => agent
            .granted
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect(),
    }
}

/// Issues (or reuses) the credential for `tool`'s backend.
pub async fn issue(
    gw: &Gateway,
    agent: &AgentEntry,
    task: Option<&TaskRecord>,
    tool: &ToolEntry,
) -> Result<Option<BackendCredential>, BrokerError> {
    let catalog = gw.catalog();
    let Some(connector) = catalog.connectors.get(&tool.connector_id) else {
        return Ok(None);
    };
    let Some(auth) = &connector.auth else {
        return Ok(None);
    };
    let key = (
        task.map(|t| t.id.clone())
            .unwrap_or_else(|| format!("agent:{}", agent.id)),
        connector.id.clone(),
    );
    let now = gw.now();
    if let Some(c) = gw.broker.lock().get(&key) {
        let fresh = match c.expires {
            None => true,
            Some(exp) => {
                let life = (exp - c.issued).as_seconds_f64().max(1.0);
                (exp - now).as_seconds_f64() > life * REUSE_FLOOR
                    && exp - now > time::Duration::seconds(5)
            }
        };
        if fresh {
            return Ok(Some(c.credential.clone()));
        }
    }
    let issued = mint(gw, agent, task, connector, auth, now).await?;
    let internal = |why: String| BrokerError::Internal {
        connector: connector.id.clone(),
        why,
    };
    let record = CredentialRecord {
        id: issued.record_id.clone(),
        task_id: task.map(|t| t.id.clone()),
        agent_id: agent.id.clone(),
        connector_id: connector.id.clone(),
        kind: issued.kind.to_string(),
        digest: digest(gw, &issued.secret),
        scope: issued.scope.clone(),
        audience: issued.audience.clone(),
        issued_at: stamp(now),
        expires_at: issued.expires.map(stamp),
        revoked_at: None,
        revoke_reason: None,
        upstream_pending: false,
    };
    gw.store()
        .record_credential(&record)
        .await
        .map_err(|e| internal(e.to_string()))?;
    let cached = Cached {
        credential: issued.credential.clone(),
        record_id: issued.record_id,
        issued: now,
        expires: issued.expires,
        upstream: issued.upstream,
    };
    gw.broker.lock().insert(key, cached);
    tracing::info!(connector = %connector.id, agent = %agent.id, task = ?task.map(|t| &t.id), kind = issued.kind, "credential issued");
    Ok(Some(issued.credential))
}

struct Issued {
    kind: &'static str,
    credential: BackendCredential,
    secret: String,
    record_id: String,
    scope: Option<String>,
    audience: Option<String>,
    expires: Option<OffsetDateTime>,
    upstream: Option<Upstream>,
}

async fn mint(
    gw: &Gateway,
    agent: &AgentEntry,
    task: Option<&TaskRecord>,
    connector: &ConnectorEntry,
    auth: &BackendAuth,
    now: OffsetDateTime,
) -> Result<Issued, BrokerError> {
    let kind = auth.kind().map_err(|why| BrokerError::Internal {
        connector: connector.id.clone(),
        why,
    })?;
    let internal = |why: String| BrokerError::Internal {
        connector: connector.id.clone(),
        why,
    };
    let record_id = uuid::Uuid::new_v4().to_string();
    let bearer = |header: &str, token: &str| {
        BackendCredential::new(header, &format!("Bearer {token}")).map_err(internal)
    };
    match kind {
        AuthKind::GatewayJwt(j) => {
            let expires = deadline(now, Duration::from_secs(j.ttl_seconds), task);
            let scope = scope_tools(agent, task, &connector.id).join(" ");
            let audience = connector.audience();
            let claims = BackendClaims {
                iss: gw.secrets().issuer(),
                aud: audience.clone(),
                sub: agent.id.clone(),
                tid: task.map(|t| t.id.clone()),
                scope: scope.clone(),
                iat: now.unix_timestamp(),
                exp: expires.unix_timestamp(),
                jti: record_id.clone(),
            };
            let token = gw
                .secrets()
                .sign(&claims)
                .map_err(|e| internal(e.to_string()))?;
            Ok(Issued {
                kind: "gateway_jwt",
                credential: bearer(&j.header, &token)?,
                secret: token,
                record_id,
                scope: Some(scope),
                audience: Some(audience),
                expires: Some(expires),
                upstream: None,
            })
        }
        AuthKind::Oauth2ClientCredentials(c) => {
            let secret = read_secret(&c.client_secret, &connector.base_dir, &connector.id)?;
            let scopes = oauth_scopes(gw, agent, task, &connector.id);
            let mut form = vec![("grant_type".to_string(), "client_credentials".to_string())];
            if !scopes.is_empty() {
                form.push(("scope".into(), scopes.clone()));
            }
            let client = (c.client_id.clone(), secret, c.client_auth);
            let answer =
                token_request(gw, &connector.id, &c.token_url, form, Some(&client)).await?;
            let expires = expiry_of(&answer, now, task);
            Ok(Issued {
                kind: "oauth2_client_credentials",
                credential: bearer(&c.header, &answer.access_token)?,
                secret: answer.access_token.clone(),
                record_id,
                scope: Some(answer.scope.clone().unwrap_or(scopes)),
                audience: None,
                expires: Some(expires),
                upstream: c.revocation_url.clone().map(|url| Upstream {
                    token: answer.access_token,
                    revocation_url: url,
                    client: Some(client),
                }),
            })
        }
        AuthKind::TokenExchange(t) => {
            let scopes = oauth_scopes(gw, agent, task, &connector.id);
            let secrets = gw.secrets();
            let short = deadline(now, Duration::from_secs(60), task);
            let subject = serde_json::json!({
                "iss": secrets.issuer(), "aud": t.token_url, "iat": now.unix_timestamp(), "exp": short.unix_timestamp(),
                "sub": task.map(|t| format!("task:{}", t.id)).unwrap_or_else(|| format!("agent:{}", agent.id)),
                "tid": task.map(|t| t.id.clone()), "purpose": task.map(|t| t.purpose.clone()),
                "jti": uuid::Uuid::new_v4().to_string(),
            });
            let actor = serde_json::json!({
                "iss": secrets.issuer(), "aud": t.token_url, "iat": now.unix_timestamp(), "exp": short.unix_timestamp(),
                "sub": agent.id, "jti": uuid::Uuid::new_v4().to_string(),
            });
            let subject = secrets
                .sign(&subject)
                .map_err(|e| internal(e.to_string()))?;
            let actor = secrets.sign(&actor).map_err(|e| internal(e.to_string()))?;
            let jwt_type = "urn:ietf:params:oauth:token-type:jwt".to_string();
            let mut form = vec![
                (
                    "grant_type".to_string(),
                    "urn:ietf:params:oauth:grant-type:token-exchange".to_string(),
                ),
                ("subject_token".into(), subject),
                ("subject_token_type".into(), jwt_type.clone()),
                ("actor_token".into(), actor),
                ("actor_token_type".into(), jwt_type),
                (
                    "requested_token_type".into(),
                    "urn:ietf:params:oauth:token-type:access_token".into(),
                ),
                ("audience".into(), t.audience.clone()),
            ];
            if let Some(r) = &t.resource {
                form.push(("resource".into(), r.clone()));
            }
            if !scopes.is_empty() {
                form.push(("scope".into(), scopes.clone()));
            }
            let client = match (&t.client_id, &t.client_secret) {
                (Some(id), Some(s)) => Some((
                    id.clone(),
                    read_secret(s, &connector.base_dir, &connector.id)?,
                    t.client_auth,
                )),
                _ => None,
            };
            let answer =
                token_request(gw, &connector.id, &t.token_url, form, client.as_ref()).await?;
            let expires = expiry_of(&answer, now, task);
            Ok(Issued {
                kind: "token_exchange",
                credential: bearer(&t.header, &answer.access_token)?,
                secret: answer.access_token.clone(),
                record_id,
                scope: Some(answer.scope.clone().unwrap_or(scopes)),
                audience: Some(t.audience.clone()),
                expires: Some(expires),
                upstream: t.revocation_url.clone().map(|url| Upstream {
                    token: answer.access_token,
                    revocation_url: url,
                    client,
                }),
            })
        }
        AuthKind::Static(st) => {
            let secret = read_secret(&st.value, &connector.base_dir, &connector.id)?;
            let value = format!("{}{secret}", st.prefix.clone().unwrap_or_default());
            Ok(Issued {
                kind: "static",
                credential: BackendCredential::new(&st.header, &value).map_err(internal)?,
                secret,
                record_id,
                scope: None,
                audience: None,
                expires: None,
                upstream: None,
            })
        }
    }
}

fn oauth_scopes(
    gw: &Gateway,
    agent: &AgentEntry,
    task: Option<&TaskRecord>,
    connector: &str,
) -> String {
    let catalog = gw.catalog();
    let mut scopes: Vec<String> = scope_tools(agent, task, connector)
        .iter()
        .filter_map(|n| catalog.tools.get(n))
        .flat_map(|t| t.scopes.iter().cloned())
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes.join(" ")
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

fn expiry_of(
    answer: &TokenAnswer,
    now: OffsetDateTime,
    task: Option<&TaskRecord>,
) -> OffsetDateTime {
    let ttl = answer
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(MAX_CREDENTIAL_TTL);
    deadline(now, ttl, task)
}

async fn token_request(
    gw: &Gateway,
    connector: &str,
    url: &str,
    mut form: Vec<(String, String)>,
    client: Option<&(String, String, ClientAuthMethod)>,
) -> Result<TokenAnswer, BrokerError> {
    let fail = |why: String| BrokerError::TokenEndpoint {
        connector: connector.to_string(),
        why,
    };
    let request = gw
        .broker
        .http
        .post(url)
        .header(http::header::ACCEPT, "application/json");
    let response = form_post(request, &mut form, client)
        .map_err(|e| fail(e.to_string()))?
        .send()
        .await
        .map_err(|e| {
            fail(if e.is_timeout() {
                "timed out".into()
            } else {
                "unreachable".into()
            })
        })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|_| fail("the answer was cut off".into()))?;
    if !status.is_success() {
        // Only the OAuth error code: descriptions may echo request data.
        let code = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| "no error code".into());
        return Err(fail(format!("HTTP {} ({code})", status.as_u16())));
    }
    serde_json::from_slice(&bytes).map_err(|_| fail("the answer is not a token response".into()))
}

/// Drops a task's cached credentials and revokes upstream what can be.
pub async fn after_task_end(gw: &Gateway, task_id: &str) {
    let dropped: Vec<Cached> = {
        let mut cache = gw.broker.lock();
        let keys: Vec<_> = cache
            .keys()
            .filter(|(t, _)| t == task_id)
            .cloned()
            .collect();
        keys.into_iter().filter_map(|k| cache.remove(&k)).collect()
    };
    for c in dropped {
        if let Some(up) = &c.upstream {
            revoke_upstream(gw, up).await;
        }
        if let Err(e) = gw.store().upstream_revoked(&c.record_id).await {
            tracing::warn!(error = %e, "cannot mark an upstream revocation as done");
        }
    }
}

/// Finishes upstream revocations recorded by another process (a task ended
/// from the CLI): revokes the tokens this process holds.
pub async fn revoke_pending_upstream(gw: &Gateway) {
    let pending = match gw.store().pending_upstream_revocations().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read pending revocations");
            return;
        }
    };
    for record in pending {
        let held: Option<Cached> = {
            let mut cache = gw.broker.lock();
            let key = cache
                .iter()
                .find(|(_, c)| c.record_id == record.id)
                .map(|(k, _)| k.clone());
            key.and_then(|k| cache.remove(&k))
        };
        match held.and_then(|c| c.upstream) {
            Some(up) => revoke_upstream(gw, &up).await,
            None => {
                tracing::info!(credential = %record.id, "revoked; no upstream token held here (it expires at its own time)")
            }
        }
        let _ = gw.store().upstream_revoked(&record.id).await;
    }
}

async fn revoke_upstream(gw: &Gateway, up: &Upstream) {
    let mut form = vec![
        ("token".to_string(), up.token.clone()),
        ("token_type_hint".into(), "access_token".into()),
    ];
    let request = match form_post(
        gw.broker.http.post(&up.revocation_url),
        &mut form,
        up.client.as_ref(),
    ) {
        Ok(r) => r,
        Err(_) => return,
    };
    match request.send().await {
        Ok(r) if r.status().is_success() => tracing::info!("upstream token revoked"),
        Ok(r) => tracing::warn!(
            status = r.status().as_u16(),
            "the revocation endpoint refused"
        ),
        Err(_) => tracing::warn!("the revocation endpoint is unreachable"),
    }
}

/// A form POST to a token or revocation endpoint, with the client's
/// authentication (HTTP Basic, or form fields) applied.
fn form_post(
    mut request: reqwest::RequestBuilder,
    form: &mut Vec<(String, String)>,
    client: Option<&(String, String, ClientAuthMethod)>,
) -> Result<reqwest::RequestBuilder, serde_urlencoded::ser::Error> {
    match client {
        Some((id, secret, ClientAuthMethod::Basic)) => {
            request = request.basic_auth(id, Some(secret))
        }
        Some((id, secret, ClientAuthMethod::Post)) => {
            form.push(("client_id".into(), id.clone()));
            form.push(("client_secret".into(), secret.clone()));
        }
        None => {}
    }
    let body = serde_urlencoded::to_string(&*form)?;
    Ok(request
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body))
}

/// RFC 7662 answer for a token this gateway minted for a backend.
pub async fn introspect(gw: &Arc<Gateway>, token: &str) -> serde_json::Value {
    let inactive = serde_json::json!({ "active": false });
    let secrets = gw.secrets();
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return inactive;
    };
    let Some(key) = header.kid.as_deref().and_then(|k| secrets.decoding_key(k)) else {
        return inactive;
    };
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_issuer(&[secrets.issuer()]);
    v.validate_aud = false;
    v.validate_exp = false;
    let Ok(data) = jsonwebtoken::decode::<BackendClaims>(token, key, &v) else {
        return inactive;
    };
    let c = data.claims;
    let Ok(Some(record)) = gw.store().credential(&c.jti).await else {
        return inactive;
    };
    let now = gw.now();
    let expired = record
        .expires_at
        .as_deref()
        .and_then(parse_stamp)
        .is_none_or(|e| now >= e);
    let task_live = match &record.task_id {
        Some(id) => {
            matches!(gw.store().task(id).await, Ok(Some(t)) if t.status == crate::store::TaskStatus::Active && stamp(now) < t.expires_at)
        }
        None => true,
    };
    if record.revoked_at.is_some() || expired || !task_live {
        return inactive;
    }
    serde_json::json!({
        "active": true, "token_type": "Bearer", "iss": c.iss, "aud": c.aud, "sub": c.sub, "scope": c.scope,
        "iat": c.iat, "exp": c.exp, "jti": c.jti, "tid": c.tid,
    })
}
