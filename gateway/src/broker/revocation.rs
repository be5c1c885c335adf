//! Revocation: what happens to a credential once it must not be used any
//! more (its task ended, it was replaced, its agent was cut off, its record
//! could not be stored).
//!
//! The store's record is marked revoked (introspection then answers
//! inactive), and a token an external issuer handed out is revoked there
//! (RFC 7009). A revocation that fails is owed: the token is kept here,
//! never used again, and retried by [`revoke_pending_upstream`] until it
//! succeeds or the token expires, so every upstream token stays tracked
//! until it is revoked or dead.

use std::sync::atomic::Ordering;

use super::Broker;
use super::cache::{Entry, Holder, Upstream};
use super::token_endpoint::form_post;
use crate::Gateway;
use crate::util::stamp;

/// An upstream token whose revocation failed and is retried.
#[derive(Debug)]
pub(super) struct Owed {
    record_id: String,
    agent_id: String,
    upstream: Upstream,
}

fn owed(broker: &Broker) -> std::sync::MutexGuard<'_, Vec<Owed>> {
    broker.owed.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn owed_len(broker: &Broker) -> usize {
    owed(broker).len()
}

/// Asks the issuer to revoke `up` (RFC 7009). True when it is done: the
/// issuer said so, or it declares no revocation endpoint (nothing can be
/// done but let it expire).
async fn revoke_upstream(gw: &Gateway, up: &Upstream) -> bool {
    let Some(url) = &up.revocation_url else {
        return true;
    };
    let mut form = vec![
        ("token".to_string(), up.token.expose().to_string()),
        ("token_type_hint".into(), "access_token".into()),
    ];
    let request = match form_post(gw.broker.http.post(url), &mut form, up.client.as_ref()) {
        Ok(r) => r,
        Err(_) => return false,
    };
    match request.send().await {
        Ok(r) if r.status().is_success() => {
            tracing::info!("upstream token revoked");
            true
        }
        Ok(r) => {
            tracing::warn!(
                status = r.status().as_u16(),
                "the revocation endpoint refused; will retry"
            );
            false
        }
        Err(_) => {
            tracing::warn!("the revocation endpoint is unreachable; will retry");
            false
        }
    }
}

/// Revokes `up` upstream; on failure keeps it owed.
async fn settle(gw: &Gateway, record_id: String, agent_id: String, up: Upstream) {
    if revoke_upstream(gw, &up).await {
        if let Err(e) = gw.store().upstream_revoked(&record_id).await {
            tracing::warn!(error = %e, "cannot mark an upstream revocation as done");
        }
    } else {
        owed(&gw.broker).push(Owed {
            record_id,
            agent_id,
            upstream: up,
        });
    }
}

/// Revokes a credential taken out of the cache: its record, then upstream.
pub(super) async fn retire(gw: &Gateway, entry: Entry, reason: &str) {
    let at = stamp(gw.now());
    if let Err(e) = gw
        .store()
        .revoke_credential(&entry.record_id, &at, reason, entry.upstream.is_some())
        .await
    {
        tracing::warn!(error = %e, credential = %entry.record_id, "cannot mark a credential revoked");
    }
    tracing::info!(credential = %entry.record_id, %reason, "credential revoked");
    if let Some(up) = entry.upstream {
        settle(gw, entry.record_id, entry.agent_id, up).await;
    }
}

/// Revokes upstream a credential whose record could not be stored.
pub(super) async fn revoke_unrecorded(gw: &Gateway, entry: Entry) {
    if let Some(up) = entry.upstream {
        settle(gw, entry.record_id, entry.agent_id, up).await;
    }
}

/// Retries owed revocations (those `pick` selects), dropping tokens that
/// have expired meanwhile.
async fn retry_owed(gw: &Gateway, pick: impl Fn(&Owed) -> bool) {
    let now = gw.now();
    let due: Vec<Owed> = {
        let mut list = owed(&gw.broker);
        let (due, keep): (Vec<Owed>, Vec<Owed>) = list.drain(..).partition(|o| pick(o));
        *list = keep;
        due
    };
    for o in due {
        if o.upstream.dies <= now {
            // Dead anyway: nothing left to revoke.
            let _ = gw.store().upstream_revoked(&o.record_id).await;
            continue;
        }
        settle(gw, o.record_id, o.agent_id, o.upstream).await;
    }
}

/// Drops a task's cached credentials and revokes upstream what can be. The
/// store already revoked their records when it ended the task.
pub async fn after_task_end(gw: &Gateway, task_id: &str) {
    let dropped = gw
        .broker
        .cache
        .remove_where(|k, _| k.holder == Holder::Task(task_id.to_string()));
    for e in dropped {
        if let Some(up) = e.upstream {
            settle(gw, e.record_id, e.agent_id, up).await;
        }
    }
    retry_owed(gw, |_| true).await;
}

/// Drops and revokes every cached credential of a task (records and
/// upstream), e.g. when a lifecycle change reaches it. Idempotent.
pub async fn flush_task(gw: &Gateway, task_id: &str, reason: &str) -> usize {
    gw.broker.flushes.fetch_add(1, Ordering::SeqCst);
    let dropped = gw
        .broker
        .cache
        .remove_where(|k, _| k.holder == Holder::Task(task_id.to_string()));
    let n = dropped.len();
    for e in dropped {
        retire(gw, e, reason).await;
    }
    n
}

/// Drops and revokes every cached credential of an agent, in tasks and
/// outside them (suspension, retirement, key revocation). Returns how many
/// were dropped. Idempotent.
pub async fn flush_agent(gw: &Gateway, agent_id: &str, reason: &str) -> usize {
    // First, so an issue in flight for this agent checks it again.
    gw.broker.flushes.fetch_add(1, Ordering::SeqCst);
    let dropped = gw.broker.cache.remove_where(|_, e| e.agent_id == agent_id);
    let n = dropped.len();
    for e in dropped {
        retire(gw, e, reason).await;
    }
    retry_owed(gw, |o| o.agent_id == agent_id).await;
    n
}

/// Finishes upstream revocations: owed ones from this process, and those
/// recorded by another process (a task ended from the CLI) for tokens this
/// process holds.
///
/// Also revokes upstream every cached token past the expiry the gateway
/// gave it (the task's end or 15 minutes from issue, whichever came
/// first): an issuer may have granted it a longer life, which the gateway
/// does not let it use.
pub async fn revoke_pending_upstream(gw: &Gateway) {
    let now = gw.now();
    let due = gw
        .broker
        .cache
        .remove_where(|_, e| e.upstream.is_some() && e.expires.is_some_and(|x| x <= now));
    for e in due {
        retire(gw, e, "past the expiry the gateway gave it").await;
    }
    retry_owed(gw, |_| true).await;
    let pending = match gw.store().pending_upstream_revocations().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read pending revocations");
            return;
        }
    };
    for record in pending {
        if owed(&gw.broker).iter().any(|o| o.record_id == record.id) {
            // Still failing here; retried next time.
            continue;
        }
        let held = gw
            .broker
            .cache
            .remove_where(|_, e| e.record_id == record.id);
        let upstream = held.into_iter().find_map(|e| {
            let (record_id, agent_id) = (e.record_id, e.agent_id);
            e.upstream.map(|up| (record_id, agent_id, up))
        });
        match upstream {
            Some((record_id, agent_id, up)) => settle(gw, record_id, agent_id, up).await,
            None => {
                tracing::info!(credential = %record.id, "revoked; no upstream token held here (it expires at its own time)");
                let _ = gw.store().upstream_revoked(&record.id).await;
            }
        }
    }
}
