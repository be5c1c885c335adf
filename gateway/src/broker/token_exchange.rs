//! `token_exchange` (RFC 8693): the gateway's own short token for the task
//! as subject and one for the agent as actor, exchanged at the connector's
//! token endpoint for a down-scoped, audience-bound token.

use std::time::Duration;

use super::cache::Upstream;
use super::token_endpoint::{self, ClientAuth};
use super::{BrokerError, MAX_CREDENTIAL_TTL, MintRequest, Minted, UNSTATED_LIFETIME, deadline};
use crate::manifest::types::TokenExchangeAuth;

const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

pub(super) async fn mint(
    req: &MintRequest<'_>,
    cfg: &TokenExchangeAuth,
) -> Result<Minted, BrokerError> {
    let (agent, task, now) = (req.agent, req.task, req.now);
    let scopes = req.oauth_scopes();
    let secrets = req.gw.secrets();
    let short = deadline(now, Duration::from_secs(60), task);
    let subject = serde_json::json!({
        "iss": secrets.issuer(), "aud": cfg.token_url, "iat": now.unix_timestamp(), "exp": short.unix_timestamp(),
        "sub": task.map(|t| format!("task:{}", t.id)).unwrap_or_else(|| format!("agent:{}", agent.id)),
        "tid": task.map(|t| t.id.clone()), "purpose": task.map(|t| t.purpose.clone()),
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let actor = serde_json::json!({
        "iss": secrets.issuer(), "aud": cfg.token_url, "iat": now.unix_timestamp(), "exp": short.unix_timestamp(),
        "sub": agent.id, "jti": uuid::Uuid::new_v4().to_string(),
    });
    let subject = secrets
        .sign(&subject)
        .map_err(|e| req.internal(e.to_string()))?;
    let actor = secrets
        .sign(&actor)
        .map_err(|e| req.internal(e.to_string()))?;
    let mut form = vec![
        (
            "grant_type".to_string(),
            "urn:ietf:params:oauth:grant-type:token-exchange".to_string(),
        ),
        ("subject_token".into(), subject),
        ("subject_token_type".into(), JWT_TYPE.into()),
        ("actor_token".into(), actor),
        ("actor_token_type".into(), JWT_TYPE.into()),
        (
            "requested_token_type".into(),
            "urn:ietf:params:oauth:token-type:access_token".into(),
        ),
        ("audience".into(), cfg.audience.clone()),
    ];
    if let Some(r) = &cfg.resource {
        form.push(("resource".into(), r.clone()));
    }
    if !scopes.is_empty() {
        form.push(("scope".into(), scopes.clone()));
    }
    let client = match (&cfg.client_id, &req.secrets.client) {
        (Some(id), Some(secret)) => Some(ClientAuth {
            id: id.clone(),
            secret: secret.clone(),
            method: cfg.client_auth,
        }),
        _ => None,
    };
    let answer = token_endpoint::request(
        req.gw,
        &req.connector.id,
        &cfg.token_url,
        form,
        client.as_ref(),
    )
    .await?;
    let ttl = answer
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(MAX_CREDENTIAL_TTL);
    // Without a stated lifetime, the issuer is assumed to keep it for a day.
    let dies = req.now
        + answer
            .expires_in
            .map_or(UNSTATED_LIFETIME, Duration::from_secs);
    Ok(Minted {
        kind: "token_exchange",
        credential: req.bearer(&cfg.header, &answer.access_token)?,
        secret: answer.access_token.clone(),
        scope: Some(answer.scope.clone().unwrap_or(scopes)),
        audience: Some(cfg.audience.clone()),
        expires: Some(deadline(now, ttl, task)),
        upstream: Some(Upstream {
            token: answer.access_token,
            revocation_url: cfg.revocation_url.clone(),
            client,
            dies,
        }),
    })
}
