//! Stage 3 (and the last word of every call), record: writes each decision
//! to the store, and the outcome of each allowed call after dispatch.
//!
//! Contract: [`allow`] returns [`Recorded`] only once the `allow` record is
//! durable; dispatch requires a `Recorded`, so a call whose decision could
//! not be written cannot reach a backend (fail closed). Records hold an
//! HMAC of the arguments, never the arguments: the digest lets an
//! investigator who holds the arguments prove they match, and shows nothing
//! to anyone else.

use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};

use super::authenticate::Authenticated;
use super::denial::Denial;
use super::scope::Scoped;
use crate::Gateway;
use crate::catalog::ToolEntry;
use crate::store::{DecisionRecord, OutcomeUpdate, StoreError};
use crate::util::now_rfc3339;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Proof that an `allow` decision is in the store. Only [`allow`] builds it.
#[derive(Debug)]
pub struct Recorded {
    id: String,
}

impl Recorded {
    /// The record id, to link the outcome.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// How a dispatched call ended, as recorded.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// `ok`, `tool_error` or `failed`.
    pub outcome: &'static str,
    /// Stable code for failures.
    pub code: Option<&'static str>,
    /// Backend status, if one answered.
    pub backend_status: Option<u16>,
}

/// Keyed digest of the arguments in canonical form (keys sorted at every
/// level), so equal arguments give equal digests whatever their key order.
pub fn args_digest(key: &[u8], arguments: &Map<String, Value>) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this branch cannot be taken.
        <HmacSha256 as KeyInit>::new_from_slice(&[0u8; 32]).expect("fixed-size key")
    });
    write_canonical(&mut mac, &Value::Object(arguments.clone()));
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

fn write_canonical(mac: &mut HmacSha256, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            mac.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    mac.update(b",");
                }
                mac.update(Value::String(k.clone()).to_string().as_bytes());
                mac.update(b":");
                write_canonical(mac, &m[k]);
            }
            mac.update(b"}");
        }
        Value::Array(a) => {
            mac.update(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    mac.update(b",");
                }
                write_canonical(mac, x);
            }
            mac.update(b"]");
        }
        scalar => mac.update(scalar.to_string().as_bytes()),
    }
}

/// The accountable people as of this decision: the agent's owners and who
/// approved its deployment, and the connector's owners. Copied into every
/// record because manifests change; the record must not.
fn owners(who: &Authenticated, tool: Option<&ToolEntry>) -> Value {
    let a = who.agent();
    let o = &a.owners;
    let mut v = json!({
        "agent": {
            "business": { "name": o.business.name, "contact": o.business.contact },
            "system": { "name": o.system.name, "contact": o.system.contact },
            "security": { "name": o.security.name, "contact": o.security.contact },
            "approved_by": a.deployment.approved_by,
            "approved_at": a.deployment.approved_at,
        },
    });
    if let Some(t) = tool {
        v["connector"] = json!({
            "system": { "name": t.owners.system.name, "contact": t.owners.system.contact },
            "security": { "name": t.owners.security.name, "contact": t.owners.security.contact },
        });
    }
    v
}

fn base(
    who: &Authenticated,
    tool_name: &str,
    tool: Option<&ToolEntry>,
    digest: Option<String>,
) -> DecisionRecord {
    DecisionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        at: now_rfc3339(),
        agent_id: who.agent().id.clone(),
        credential_id: who.credential_id().to_string(),
        transport: who.transport().as_str().to_string(),
        tool: tool_name.to_string(),
        connector_id: tool.map(|t| t.connector_id.clone()),
        risk: tool.map(|t| t.risk.as_str().to_string()),
        args_digest: digest,
        decision: String::new(),
        reason_code: String::new(),
        reason: String::new(),
        outcome: None,
        outcome_code: None,
        backend_status: None,
        latency_us: None,
        owners: Some(owners(who, tool)),
        task_id: None,
    }
}

/// Records an `allow` decision; the call may proceed only with the result.
pub async fn allow(gw: &Gateway, scoped: &Scoped) -> Result<Recorded, Denial> {
    let call = scoped.call();
    let digest = args_digest(gw.secrets().digest_key(), call.arguments());
    let mut r = base(
        call.who(),
        &call.tool().full_name,
        Some(call.tool()),
        Some(digest),
    );
    r.decision = "allow".into();
    r.reason_code = "allowed".into();
    r.reason = format!(
        "`{}` is granted to `{}` and the arguments match its schema",
        call.tool().full_name,
        r.agent_id
    );
    if let Some(t) = scoped.task() {
        r.reason
            .push_str(&format!("; within task `{}` (\"{}\")", t.id, t.purpose));
        r.task_id = Some(t.id.clone());
    }
    match gw.store().record_decision(&r).await {
        Ok(()) => Ok(Recorded { id: r.id }),
        Err(e) => {
            tracing::error!(error = %e, tool = %r.tool, agent = %r.agent_id, "cannot record decision; refusing the call");
            Err(Denial::AuditUnavailable)
        }
    }
}

/// Records an `allow` decision for one of the gateway's own tools
/// (`tollgate.start_task`, `tollgate.end_task`).
pub async fn allow_builtin(
    gw: &Gateway,
    who: &Authenticated,
    name: &str,
    arguments: &Map<String, Value>,
    task_id: Option<&str>,
) -> Result<Recorded, Denial> {
    let digest = args_digest(gw.secrets().digest_key(), arguments);
    let mut r = base(who, name, None, Some(digest));
    r.connector_id = Some("tollgate".into());
    r.decision = "allow".into();
    r.reason_code = "allowed".into();
    r.reason = format!("gateway tool `{name}` for an admitted agent");
    r.task_id = task_id.map(str::to_string);
    match gw.store().record_decision(&r).await {
        Ok(()) => Ok(Recorded { id: r.id }),
        Err(e) => {
            tracing::error!(error = %e, tool = %name, "cannot record decision; refusing the call");
            Err(Denial::AuditUnavailable)
        }
    }
}

/// Records a denial. The caller refuses the call whatever this returns.
pub async fn deny(
    gw: &Gateway,
    who: &Authenticated,
    tool_name: &str,
    arguments: Option<&Map<String, Value>>,
    denial: &Denial,
    task_id: Option<&str>,
    latency_us: i64,
) -> Result<(), StoreError> {
    let tool = gw.catalog().tools.get(tool_name).cloned();
    let digest = arguments.map(|a| args_digest(gw.secrets().digest_key(), a));
    let mut r = base(who, tool_name, tool.as_deref(), digest);
    r.decision = "deny".into();
    r.reason_code = denial.code().into();
    r.reason = denial.record_reason();
    r.latency_us = Some(latency_us);
    r.task_id = task_id.map(str::to_string);
    gw.store().record_decision(&r).await
}

/// Adds the outcome to the `allow` record of a dispatched call.
pub async fn outcome(gw: &Gateway, recorded: Recorded, o: Outcome, latency_us: i64) {
    let update = OutcomeUpdate {
        outcome: o.outcome,
        outcome_code: o.code,
        backend_status: o.backend_status,
        latency_us,
    };
    if let Err(e) = gw.store().record_outcome(&recorded.id, &update).await {
        // The backend has already acted; the result still goes to the agent.
        // The record shows an `allow` without outcome, which an audit flags.
        tracing::error!(error = %e, record = %recorded.id, "cannot record the outcome of a dispatched call");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_key_order_and_depends_on_key_and_values() {
        let a: Map<String, Value> =
            serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,"s"]}}"#).expect("json");
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"a":{"x":[1,"s"],"y":2},"b":1}"#).expect("json");
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"a":{"x":[1,"s"],"y":3},"b":1}"#).expect("json");
        assert_eq!(args_digest(b"k1", &a), args_digest(b"k1", &b));
        assert_ne!(args_digest(b"k1", &a), args_digest(b"k1", &c));
        assert_ne!(args_digest(b"k1", &a), args_digest(b"k2", &a));
        assert!(!args_digest(b"k1", &a).contains('s'.to_string().repeat(2).as_str()));
    }
}
