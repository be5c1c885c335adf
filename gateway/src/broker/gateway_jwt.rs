//! `gateway_jwt`: a JWT the gateway signs for one connector (`aud`), the
//! agent as `sub`, the task as `tid`, the covered tools as `scope`.

use std::time::Duration;

use super::{BackendClaims, MintRequest, Minted, deadline, scope_tools};
use crate::manifest::types::GatewayJwtAuth;
use crate::secrets::SecretString;

pub(super) fn mint(
    req: &MintRequest<'_>,
    cfg: &GatewayJwtAuth,
) -> Result<Minted, super::BrokerError> {
    let expires = deadline(req.now, Duration::from_secs(cfg.ttl_seconds), req.task);
    let scope = scope_tools(req.agent, req.task, &req.connector.id).join(" ");
    let audience = req.connector.audience();
    let claims = BackendClaims {
        iss: req.gw.secrets().issuer(),
        aud: audience.clone(),
        sub: req.agent.id.clone(),
        tid: req.task.map(|t| t.id.clone()),
        scope: scope.clone(),
        iat: req.now.unix_timestamp(),
        exp: expires.unix_timestamp(),
        jti: req.record_id.clone(),
    };
    let token = SecretString::new(
        req.gw
            .secrets()
            .sign(&claims)
            .map_err(|e| req.internal(e.to_string()))?,
    );
    Ok(Minted {
        kind: "gateway_jwt",
        credential: req.bearer(&cfg.header, &token)?,
        secret: token,
        scope: Some(scope),
        audience: Some(audience),
        expires: Some(expires),
        upstream: None,
    })
}
