//! `static`: a long-lived secret from the environment or a file, sent as
//! one header (with an optional prefix). Flagged by `tollgate check`: it is
//! neither short-lived nor task-scoped.

use tollgate_connectors::BackendCredential;

use super::{BrokerError, MintRequest, Minted};
use crate::manifest::types::StaticAuth;

pub(super) fn mint(req: &MintRequest<'_>, cfg: &StaticAuth) -> Result<Minted, BrokerError> {
    let secret = req
        .secrets
        .value
        .clone()
        .ok_or_else(|| req.internal("the static secret was not read"))?;
    let value = format!(
        "{}{}",
        cfg.prefix.clone().unwrap_or_default(),
        secret.expose()
    );
    Ok(Minted {
        kind: "static",
        credential: BackendCredential::new(&cfg.header, &value).map_err(|e| req.internal(e))?,
        secret,
        scope: None,
        audience: None,
        expires: None,
        upstream: None,
    })
}
