//! The credential broker: issues the credential a backend needs for one
//! task (or one call outside a task), just before dispatch, and revokes it
//! when the task ends, when it is replaced, or when its agent is cut off.
//!
//! One module per credential kind, each behind the same small interface
//! ([`MintRequest`] in, [`Minted`] out):
//! - [`gateway_jwt`]: a JWT minted here for that connector only (`aud`), the
//!   agent as `sub`, the task id as `tid`, the task's tools on that
//!   connector as `scope`; verifiable against `/.well-known/jwks.json`, and
//!   inactive at `/oauth/introspect` once the task ends.
//! - [`client_credentials`]: a token fetched with the scopes the task's
//!   tools need, cached for that task only, revoked upstream (RFC 7009).
//! - [`token_exchange`] (RFC 8693): the gateway's own token for the task as
//!   subject and the agent as actor, exchanged for a down-scoped,
//!   audience-bound token.
//! - [`static_secret`]: a secret from the environment or a file (flagged at
//!   load).
//!
//! Beside them: [`cache`] (the only place credential values live, keyed by
//! the holder, the connector and the connector's configuration
//! fingerprint), [`revocation`] (RFC 7009, task end, flushes, the list of
//! upstream tokens still to revoke), [`introspect`] (RFC 7662 answers) and
//! [`token_endpoint`] (the form POST both OAuth kinds share).
//!
//! Every credential expires no later than its task and never later than
//! [`MAX_CREDENTIAL_TTL`] from issue. Secrets live only in this process's
//! memory (wrapped so `Debug` never shows them) and in the request to the
//! backend; the store keeps an HMAC digest, the scope and the expiry.

mod cache;
mod client_credentials;
mod gateway_jwt;
mod introspect;
mod revocation;
mod static_secret;
mod token_endpoint;
mod token_exchange;

use std::sync::Mutex;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_connectors::BackendCredential;

use crate::Gateway;
use crate::catalog::{AgentEntry, ConnectorEntry, ToolEntry};
use crate::manifest::types::{AuthKind, SecretRef};
use crate::secrets::SecretString;
use crate::store::{CredentialRecord, TaskRecord, TaskStatus};
use crate::util::{parse_stamp, stamp};

pub use introspect::introspect;
pub use revocation::{after_task_end, flush_agent, flush_task, revoke_pending_upstream};

pub use crate::catalog::MAX_CREDENTIAL_TTL;

/// How long an upstream token whose issuer states no lifetime is assumed
/// to live (a revocation that fails is retried that long).
const UNSTATED_LIFETIME: Duration = Duration::from_secs(24 * 3600);

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
    /// The agent was cut off (suspended, retired, flushed) while its
    /// credential was being issued; what was minted has been revoked.
    #[error(
        "agent `{agent}` was cut off while the credential for connector `{connector}` was issued"
    )]
    AgentCutOff {
        /// Connector.
        connector: String,
        /// Agent.
        agent: String,
    },
    /// The task ended (or expired) while its credential was being issued;
    /// what was minted has been revoked and is not used.
    #[error("task `{task}` ended while the credential for connector `{connector}` was issued")]
    TaskEnded {
        /// Connector.
        connector: String,
        /// Task.
        task: String,
    },
}

/// The broker's in-memory state: cached credentials (the only place their
/// values live), upstream tokens whose revocation is still owed, and an
/// HTTP client for token and revocation endpoints.
pub struct Broker {
    cache: cache::Cache,
    /// Advanced by every flush: an issue that sees it move while it was
    /// minting checks its agent again before handing the credential out.
    flushes: std::sync::atomic::AtomicU64,
    owed: Mutex<Vec<revocation::Owed>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: entries hold credentials.
        f.debug_struct("Broker")
            .field("cached", &self.cache.len())
            .field("revocations_owed", &revocation::owed_len(self))
            .finish_non_exhaustive()
    }
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
            cache: cache::Cache::default(),
            flushes: std::sync::atomic::AtomicU64::new(0),
            owed: Mutex::new(Vec::new()),
            http,
        }
    }
}

impl Broker {
    /// How many credentials are cached (for diagnostics and tests).
    pub fn cached_len(&self) -> usize {
        self.cache.len()
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

/// Reads a secret from where the manifest points (environment or file).
fn read_secret(
    s: &SecretRef,
    base: &std::path::Path,
    connector: &str,
) -> Result<SecretString, BrokerError> {
    let unavailable = |why: String| BrokerError::SecretUnavailable {
        connector: connector.to_string(),
        why,
    };
    match (&s.env, &s.file) {
        (Some(var), _) => std::env::var(var)
            .map(SecretString::new)
            .map_err(|_| unavailable(format!("environment variable `{var}` is not set"))),
        (None, Some(file)) => std::fs::read_to_string(base.join(file))
            .map(|v| SecretString::new(v.trim()))
            .map_err(|e| unavailable(format!("cannot read `{file}`: {}", e.kind()))),
        (None, None) => Err(unavailable("no source declared".into())),
    }
}

/// The secrets a connector's credential kind needs, read once per call:
/// they go into the configuration fingerprint and into the mint.
#[derive(Debug, Default)]
struct KindSecrets {
    /// OAuth client secret (client credentials, token exchange).
    client: Option<SecretString>,
    /// Static value.
    value: Option<SecretString>,
}

impl KindSecrets {
    fn read(kind: AuthKind<'_>, connector: &ConnectorEntry) -> Result<Self, BrokerError> {
        let read = |s: &SecretRef| read_secret(s, &connector.base_dir, &connector.id);
        Ok(match kind {
            AuthKind::GatewayJwt(_) => Self::default(),
            AuthKind::Oauth2ClientCredentials(c) => Self {
                client: Some(read(&c.client_secret)?),
                value: None,
            },
            AuthKind::TokenExchange(t) => Self {
                client: match (&t.client_id, &t.client_secret) {
                    (Some(_), Some(s)) => Some(read(s)?),
                    _ => None,
                },
                value: None,
            },
            AuthKind::Static(s) => Self {
                client: None,
                value: Some(read(&s.value)?),
            },
        })
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
    let tools: Box<dyn Iterator<Item = &String>> = match task {
        Some(t) => Box::new(t.tools.iter()),
        None => Box::new(agent.granted.iter()),
    };
    tools.filter(|n| n.starts_with(&prefix)).cloned().collect()
}

/// The OAuth scopes the covered tools need, sorted, space-separated.
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

/// Everything a credential kind needs to mint one credential: the shared
/// interface of the kind modules.
struct MintRequest<'a> {
    gw: &'a Gateway,
    agent: &'a AgentEntry,
    task: Option<&'a TaskRecord>,
    connector: &'a ConnectorEntry,
    secrets: &'a KindSecrets,
    now: OffsetDateTime,
    /// The credential record's id (the JWT `jti` where there is one).
    record_id: String,
}

impl MintRequest<'_> {
    fn internal(&self, why: impl Into<String>) -> BrokerError {
        BrokerError::Internal {
            connector: self.connector.id.clone(),
            why: why.into(),
        }
    }

    /// `Bearer <token>` in `header`.
    fn bearer(&self, header: &str, token: &SecretString) -> Result<BackendCredential, BrokerError> {
        BackendCredential::new(header, &format!("Bearer {}", token.expose()))
            .map_err(|e| self.internal(e))
    }

    /// The OAuth scopes this credential asks for.
    fn oauth_scopes(&self) -> String {
        oauth_scopes(self.gw, self.agent, self.task, &self.connector.id)
    }
}

/// What a kind module hands back.
struct Minted {
    kind: &'static str,
    credential: BackendCredential,
    /// The value the digest is computed over.
    secret: SecretString,
    scope: Option<String>,
    audience: Option<String>,
    expires: Option<OffsetDateTime>,
    /// Set when an external issuer handed the token out and can revoke it.
    upstream: Option<cache::Upstream>,
}

async fn mint(req: &MintRequest<'_>, kind: AuthKind<'_>) -> Result<Minted, BrokerError> {
    match kind {
        AuthKind::GatewayJwt(j) => gateway_jwt::mint(req, j),
        AuthKind::Oauth2ClientCredentials(c) => client_credentials::mint(req, c).await,
        AuthKind::TokenExchange(t) => token_exchange::mint(req, t).await,
        AuthKind::Static(s) => static_secret::mint(req, s),
    }
}

/// Issues (or reuses) the credential for `tool`'s backend.
///
/// A cached credential is reused only under the same configuration
/// fingerprint (token URL, client, secret, audience, scopes, backend):
/// after a reload that changes any of them, the old one is revoked and
/// never sent again. A credential minted while its task ended is revoked
/// and the call refused. Two misses racing keep the first credential
/// installed; the other is revoked upstream.
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
    let internal = |why: String| BrokerError::Internal {
        connector: connector.id.clone(),
        why,
    };
    let kind = auth.kind().map_err(internal)?;
    let secrets = KindSecrets::read(kind, connector)?;
    let key = cache::Key::new(agent, task, &connector.id);
    let fingerprint = cache::fingerprint(
        gw,
        connector,
        &tool.connector.target(),
        auth,
        &secrets,
        &scope_tools(agent, task, &connector.id).join(" "),
    );
    let now = gw.now();
    match gw.broker.cache.lookup(&key, &fingerprint, now) {
        cache::Lookup::Fresh(credential) => return Ok(Some(credential)),
        cache::Lookup::Replaced(old) => {
            revocation::retire(gw, *old, "replaced (expiring or reconfigured)").await
        }
        cache::Lookup::Miss => {}
    }
    let flushes = gw.broker.flushes.load(std::sync::atomic::Ordering::SeqCst);
    let req = MintRequest {
        gw,
        agent,
        task,
        connector,
        secrets: &secrets,
        now,
        record_id: uuid::Uuid::new_v4().to_string(),
    };
    let minted = mint(&req, kind).await?;
    let record = CredentialRecord {
        id: req.record_id.clone(),
        task_id: task.map(|t| t.id.clone()),
        agent_id: agent.id.clone(),
        connector_id: connector.id.clone(),
        kind: minted.kind.to_string(),
        digest: digest(gw, minted.secret.expose()),
        scope: minted.scope.clone(),
        audience: minted.audience.clone(),
        issued_at: stamp(now),
        expires_at: minted.expires.map(stamp),
        revoked_at: None,
        revoke_reason: None,
        upstream_pending: false,
    };
    let entry = cache::Entry {
        fingerprint,
        agent_id: agent.id.clone(),
        record_id: req.record_id.clone(),
        credential: minted.credential,
        issued: now,
        expires: minted.expires,
        upstream: minted.upstream,
    };
    if let Err(e) = gw.store().record_credential(&record).await {
        // Unrecorded means untracked: it must not stay usable upstream.
        revocation::revoke_unrecorded(gw, entry).await;
        return Err(internal(format!("cannot record it: {e}")));
    }
    let installed = gw.broker.cache.install(key.clone(), entry, now);
    if let Some(loser) = installed.displaced {
        revocation::retire(gw, loser, "replaced by a concurrent issue").await;
    }
    // The task may have ended while this credential was being minted: the
    // end's own sweep of the cache may have run before the install above,
    // so look again now. Ending it afterwards finds the entry in the cache.
    if let Some(t) = task {
        let live = match gw.store().task(&t.id).await {
            Ok(Some(current)) => {
                current.status == TaskStatus::Active && stamp(gw.now()) < current.expires_at
            }
            _ => false,
        };
        if !live {
            if let Some(ours) = gw.broker.cache.remove_record(&key, &req.record_id) {
                revocation::retire(gw, ours, "its task ended while it was issued").await;
            }
            return Err(BrokerError::TaskEnded {
                connector: connector.id.clone(),
                task: t.id.clone(),
            });
        }
    }
    // A flush (suspension, retirement, key revocation) that ran while this
    // credential was minted may have missed it: check the agent now.
    if gw.broker.flushes.load(std::sync::atomic::Ordering::SeqCst) != flushes {
        let active = matches!(
            gw.store().agent_lifecycle(&agent.id).await,
            Ok(None)
                | Ok(Some(crate::store::Lifecycle {
                    status: crate::store::AgentStatus::Active,
                    ..
                }))
        );
        if !active {
            if let Some(ours) = gw.broker.cache.remove_record(&key, &req.record_id) {
                revocation::retire(gw, ours, "its agent was cut off while it was issued").await;
            }
            return Err(BrokerError::AgentCutOff {
                connector: connector.id.clone(),
                agent: agent.id.clone(),
            });
        }
    }
    tracing::info!(connector = %connector.id, agent = %agent.id, task = ?task.map(|t| &t.id), kind = record.kind, "credential issued");
    Ok(Some(installed.credential))
}
