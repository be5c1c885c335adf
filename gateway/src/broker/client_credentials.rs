//! `oauth2_client_credentials`: a token from the connector's OAuth token
//! endpoint (RFC 6749 §4.4) with the scopes the covered tools need; revoked
//! upstream (RFC 7009) when it stops being used.

use std::time::Duration;

use super::cache::Upstream;
use super::token_endpoint::{self, ClientAuth};
use super::{BrokerError, MAX_CREDENTIAL_TTL, MintRequest, Minted, UNSTATED_LIFETIME, deadline};
use crate::manifest::types::ClientCredentialsAuth;

pub(super) async fn mint(
    req: &MintRequest<'_>,
    cfg: &ClientCredentialsAuth,
) -> Result<Minted, BrokerError> {
    let secret = req
        .secrets
        .client
        .clone()
        .ok_or_else(|| req.internal("the client secret was not read"))?;
    let scopes = req.oauth_scopes();
    let mut form = vec![("grant_type".to_string(), "client_credentials".to_string())];
    if !scopes.is_empty() {
        form.push(("scope".into(), scopes.clone()));
    }
    let client = ClientAuth {
        id: cfg.client_id.clone(),
        secret,
        method: cfg.client_auth,
    };
    let answer = token_endpoint::request(
        req.gw,
        &req.connector.id,
        &cfg.token_url,
        form,
        Some(&client),
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
        kind: "oauth2_client_credentials",
        credential: req.bearer(&cfg.header, &answer.access_token)?,
        secret: answer.access_token.clone(),
        scope: Some(answer.scope.clone().unwrap_or(scopes)),
        audience: None,
        expires: Some(deadline(req.now, ttl, req.task)),
        upstream: Some(Upstream {
            token: answer.access_token,
            revocation_url: cfg.revocation_url.clone(),
            client: Some(client),
            dies,
        }),
    })
}
