//! Webhooks for approval requests and decisions. Each event is POSTed to
//! every webhook whose roles include the request's route name (or that has
//! no roles), signed with HMAC-SHA256 over `TIMESTAMP.BODY` in
//! `X-Tollgate-Signature: v1=HEX` with the Unix time in
//! `X-Tollgate-Timestamp`, so a receiver can reject forgeries and replays.
//! Delivery runs in the background and is retried with backoff; a webhook
//! that fails never blocks, approves or denies anything.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::json;

use crate::Gateway;
use crate::catalog::WebhookEntry;
use crate::manifest::types::WebhookFormat;
use crate::store::ApprovalRequest;

/// Delivery attempts per event and webhook.
pub const ATTEMPTS: u32 = 5;

/// The webhook client: bounded timeouts, no redirects (a webhook URL is
/// where events go, not a starting point).
#[derive(Debug, Clone)]
pub struct Notifier {
    http: reqwest::Client,
    first_retry: Duration,
}

impl Default for Notifier {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self {
            http,
            first_retry: Duration::from_secs(1),
        }
    }
}

/// The signature header value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A request was created.
pub fn requested(gw: &Gateway, r: &ApprovalRequest) {
    send(gw, r, "approval.requested", None);
}

/// A request was decided (approved, denied, expired, withdrawn).
pub fn decided(gw: &Gateway, r: &ApprovalRequest, by: &str) {
    send(gw, r, "approval.decided", Some(by));
}

fn send(gw: &Gateway, r: &ApprovalRequest, event: &'static str, by: Option<&str>) {
    let catalog = gw.catalog();
    let hooks: Vec<_> = catalog
        .webhooks
        .iter()
        .filter(|w| {
            w.roles.is_empty() || w.roles.iter().any(|x| *x == r.approvers || *x == r.route)
        })
        .cloned()
        .collect();
    if hooks.is_empty() {
        return;
    }
    let link = gw.approvals().review_url(&r.id);
    let notifier = gw.approvals().notifier().clone();
    let at = gw.now();
    for hook in hooks {
        let secret = hook.secret.as_ref().and_then(|s| read_secret(s, &hook));
        if hook.format == WebhookFormat::Tollgate && secret.is_none() {
            tracing::warn!(webhook = %hook.id, "webhook secret unavailable; event not sent");
            continue;
        }
        let body = payload(&hook, r, event, by, link.as_deref(), at);
        let notifier = notifier.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move { notifier.deliver(&hook, secret, body, event).await });
    }
}

fn read_secret(s: &crate::manifest::types::SecretRef, hook: &WebhookEntry) -> Option<Vec<u8>> {
    match (&s.env, &s.file) {
        (Some(var), _) => std::env::var(var).ok().map(String::into_bytes),
        (None, Some(file)) => std::fs::read_to_string(hook.base_dir.join(file))
            .ok()
            .map(|v| v.trim().as_bytes().to_vec()),
        _ => None,
    }
    .filter(|v| !v.is_empty())
}

fn payload(
    hook: &WebhookEntry,
    r: &ApprovalRequest,
    event: &str,
    by: Option<&str>,
    link: Option<&str>,
    at: time::OffsetDateTime,
) -> Vec<u8> {
    let value = match hook.format {
        WebhookFormat::Tollgate => json!({
            "event": event,
            "sent_at": crate::util::stamp(at),
            "link": link,
            "decided_by": by,
            "request": {
                "id": r.id,
                "status": r.status.as_str(),
                "agent": r.agent_id,
                "task": r.task_id,
                "purpose": r.purpose,
                "tool": r.tool,
                "risk": r.risk,
                "arguments": r.arguments,
                "changed_arguments": r.changed_arguments,
                "approvers": r.approvers,
                "route": r.route,
                "required": r.required,
                "deadline": r.deadline,
                "reason": r.reason,
            },
        }),
        WebhookFormat::Slack => {
            let what = match (event, by) {
                ("approval.requested", _) => format!(
                    ":hourglass: *{}* wants to call `{}` ({} risk); approval by *{}* needed by {}",
                    r.agent_id, r.tool, r.risk, r.approvers, r.deadline
                ),
                (_, Some(by)) => format!(
                    ":white_check_mark: request for `{}` by *{}* is now *{}* ({by})",
                    r.tool,
                    r.agent_id,
                    r.status.as_str()
                ),
                _ => format!("request for `{}` is {}", r.tool, r.status.as_str()),
            };
            let link = link.map(|l| format!(" <{l}|review>")).unwrap_or_default();
            json!({ "text": format!("{what}.{link}") })
        }
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

impl Notifier {
    /// Sends one event, retrying with exponential backoff.
    async fn deliver(
        &self,
        hook: &WebhookEntry,
        secret: Option<Vec<u8>>,
        body: Vec<u8>,
        event: &str,
    ) {
        let delivery = uuid::Uuid::new_v4().to_string();
        let mut wait = self.first_retry;
        for attempt in 1..=ATTEMPTS {
            // The timestamp is the sending time: receivers reject old ones.
            let ts = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut req = self
                .http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-tollgate-event", event)
                .header("x-tollgate-delivery", &delivery)
                .header("x-tollgate-timestamp", ts.to_string())
                .body(body.clone());
            if let Some(s) = &secret {
                req = req.header("x-tollgate-signature", signature(s, ts, &body));
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    tracing::debug!(webhook = %hook.id, event, attempt, "webhook delivered");
                    return;
                }
                Ok(resp) => {
                    tracing::warn!(webhook = %hook.id, event, attempt, status = resp.status().as_u16(), "webhook refused the event");
                }
                Err(e) => {
                    tracing::warn!(webhook = %hook.id, event, attempt, error = %e, "webhook unreachable");
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        tracing::warn!(webhook = %hook.id, event, "webhook gave up after {ATTEMPTS} attempts");
    }
}

/// Checks a received event (for receivers written in Rust, and the tests):
/// the signature matches and the timestamp is within `tolerance` of `now`.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now - ts).abs() > tolerance {
        return false;
    }
    // Constant time: compare through the MAC's own verification.
    let Some(hex_sig) = signature_header.strip_prefix("v1=") else {
        return false;
    };
    let Ok(bytes) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes any key length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}
