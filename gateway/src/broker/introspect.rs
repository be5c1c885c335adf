//! RFC 7662 answers for tokens this gateway minted for backends: active
//! only while the record is unrevoked and unexpired, its task (if any) is
//! active and unexpired, and its agent is still declared and, in the store
//! now, active. A credential issued outside a task therefore dies with its
//! agent's suspension or retirement even before the cache is flushed.

use std::sync::Arc;

use super::BackendClaims;
use crate::Gateway;
use crate::store::{AgentStatus, TaskStatus};
use crate::util::{parse_stamp, stamp};

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
    if record.revoked_at.is_some() || expired {
        return inactive;
    }
    if !gw.catalog().agents.contains_key(&record.agent_id) {
        return inactive;
    }
    // Fail closed: a store error reads as "not active".
    let agent_live = matches!(
        gw.store().agent_lifecycle(&record.agent_id).await,
        Ok(None)
            | Ok(Some(crate::store::Lifecycle {
                status: AgentStatus::Active,
                ..
            }))
    );
    let task_live = match &record.task_id {
        Some(id) => {
            matches!(gw.store().task(id).await, Ok(Some(t)) if t.status == TaskStatus::Active && stamp(now) < t.expires_at)
        }
        None => true,
    };
    if !agent_live || !task_live {
        return inactive;
    }
    serde_json::json!({
        "active": true, "token_type": "Bearer", "iss": c.iss, "aud": c.aud, "sub": c.sub, "scope": c.scope,
        "iat": c.iat, "exp": c.exp, "jti": c.jti, "tid": c.tid,
    })
}
