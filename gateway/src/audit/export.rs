//! Export formats: `jsonl` (each record as stored, the body parsed, the
//! hashes in hex) and `ocsf` (OCSF 1.3.0 API Activity events, class 6003,
//! for a SIEM). OCSF has no released class for AI-agent activity; API
//! Activity fits a tool call (an actor invoking an operation of a service)
//! and carries the other records as `Other` activities.

use serde_json::{Value, json};

use crate::store::AuditRow;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// A record as one JSON object (the `jsonl` format).
pub fn jsonl(r: &AuditRow) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["body"] = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
    v
}

fn epoch_ms(at: &str) -> Option<i64> {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// A record as an OCSF API Activity event.
pub fn ocsf(r: &AuditRow) -> Value {
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let failed = r.decision.as_deref() == Some("deny")
        || matches!(
            r.outcome.as_deref(),
            Some("failed" | "tool_error" | "refused" | "interrupted")
        )
        || r.kind == super::kind::AUTH_FAILURE;
    // API Activity activities: 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other.
    let (activity_id, activity) = match r.kind.as_str() {
        "call" => (99, "Tool Call"),
        "call.outcome" => (99, "Tool Call Outcome"),
        k if k.ends_with(".issued") || k.ends_with(".started") || k == "approval.requested" => {
            (1, "Create")
        }
        k if k.ends_with(".revoked") || k.ends_with(".ended") => (4, "Delete"),
        k if k.starts_with("agent.status") || k.starts_with("manifest.") => (3, "Update"),
        _ => (99, "Other"),
    };
    let mut actor = json!({ "user": { "type": "AI Agent", "type_id": 99 } });
    if let Some(a) = &r.agent_id {
        actor["user"]["uid"] = json!(a);
        actor["user"]["name"] = json!(a);
    } else if let Some(by) = body
        .get("actor")
        .or_else(|| body.get("by"))
        .or_else(|| body.get("ended_by"))
        .or_else(|| body.get("approver"))
        .and_then(Value::as_str)
    {
        actor["user"] = json!({ "uid": by, "name": by, "type": "User", "type_id": 1 });
    }
    if let Some(t) = &r.task_id {
        actor["session"] = json!({ "uid": t });
    }
    if let Some(c) = body.get("credential_id").and_then(Value::as_str) {
        actor["authorizations"] = json!([{ "policy": { "uid": c } }]);
    }
    let mut event = json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 6003 * 100 + activity_id,
        "time": epoch_ms(&r.at),
        "severity_id": if failed { 3 } else { 1 },
        "severity": if failed { "Medium" } else { "Informational" },
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "actor": actor,
        "api": {
            "operation": r.tool.clone().unwrap_or_else(|| r.kind.clone()),
            "request": { "uid": r.ref_id.clone().unwrap_or_else(|| r.id.clone()) },
        },
        "metadata": {
            "version": OCSF_VERSION,
            "uid": r.id,
            "log_name": format!("tollgate/{}", r.chain),
            "sequence": r.seq,
            "product": {
                "name": "Tollgate",
                "vendor_name": "Tollgate",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "unmapped": {
            "kind": r.kind,
            "decision": r.decision,
            "outcome": r.outcome,
            "hash": hex::encode(&r.hash),
            "prev": hex::encode(&r.prev),
            "body": body,
        },
    });
    if let Some(code) = &r.reason_code {
        event["status_code"] = json!(code);
    }
    if let Some(c) = body.get("connector_id").or_else(|| body.get("connector")) {
        event["api"]["service"] = json!({ "name": c });
    }
    if let Some(reason) = body.get("reason").and_then(Value::as_str) {
        event["status_detail"] = json!(reason);
    }
    if let Some(remote) = body.get("remote").and_then(Value::as_str) {
        event["src_endpoint"] =
            json!({ "ip": remote.rsplit_once(':').map_or(remote, |(ip, _)| ip) });
    }
    if let Some(status) = body.get("backend_status").and_then(Value::as_i64) {
        event["http_response"] = json!({ "code": status });
    }
    if let Some(us) = body.get("latency_us").and_then(Value::as_i64) {
        event["duration"] = json!(us / 1000);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denied_call_is_a_failed_api_activity() {
        let r = AuditRow {
            chain: "main".into(),
            seq: 7,
            id: "r1".into(),
            at: "2026-01-02T03:04:05Z".into(),
            kind: "call".into(),
            agent_id: Some("billing-bot".into()),
            task_id: Some("t1".into()),
            tool: Some("crm.delete".into()),
            decision: Some("deny".into()),
            reason_code: Some("tool_not_granted".into()),
            outcome: None,
            ref_id: None,
            body: r#"{"connector_id":"crm","reason":"not granted"}"#.into(),
            prev: vec![0; 32],
            hash: vec![1; 32],
        };
        let e = ocsf(&r);
        assert_eq!(e["class_uid"], 6003);
        assert_eq!(e["type_uid"], 600399);
        assert_eq!(e["status_id"], 2);
        assert_eq!(e["status_code"], "tool_not_granted");
        assert_eq!(e["actor"]["user"]["uid"], "billing-bot");
        assert_eq!(e["actor"]["session"]["uid"], "t1");
        assert_eq!(e["api"]["operation"], "crm.delete");
        assert_eq!(e["api"]["service"]["name"], "crm");
        assert_eq!(e["time"], 1_767_323_045_000i64);
        assert_eq!(e["metadata"]["sequence"], 7);
    }
}
