//! The revocation bound's check, in one place for every stage that must
//! know the call may still go on: `confirm` (before the credential),
//! `dispatch` (right before the connector) and `approve` (on every tick of
//! a wait for approval). A module of its own so that those stages depend
//! on it, not on each other.
//!
//! Contract: [`check`] passes when nothing that takes the call's right
//! away (a suspension, retirement, revocation of its key, end of its task)
//! has been committed after the call's fence, or when the state read again
//! from the store still admits it, and its task has not run out by the
//! gateway's clock. Without a relevant change it costs no store round
//! trip; a failed read refuses (fail closed).

use super::authenticate::Authenticated;
use super::denial::Denial;
use super::scope;
use crate::Gateway;
use crate::revocation::{Subject, Verdict};
use crate::store::TaskRecord;
use crate::util::stamp;

/// The confirmation itself: for `who`, its `task` as loaded (if any) and the
/// task id in play.
pub async fn check(
    gw: &Gateway,
    who: &Authenticated,
    task: Option<&TaskRecord>,
    task_id: Option<&str>,
) -> Result<(), Denial> {
    if let Some(t) = task
        && stamp(gw.now()) >= t.expires_at
    {
        return Err(Denial::TaskNotActive {
            task: t.id.clone(),
            status: "expired",
        });
    }
    let agent = who.agent();
    let subject = Subject {
        agent_id: &agent.id,
        key_id: who.key_id(),
        task_id,
    };
    if gw.revocations().confirm(subject, who.fence()) == Verdict::Unchanged {
        return Ok(());
    }
    crate::agents::check(gw, agent).await?;
    if let Some(key) = who.key_id() {
        let live = gw.store().key_live(key).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the key's status; refusing");
            Denial::NotAdmitted(crate::agents::NotAdmitted::Unavailable)
        })?;
        if !live {
            return Err(Denial::CredentialRevoked {
                credential: key.to_string(),
            });
        }
    }
    if let Some(t) = task {
        scope::load(gw, &t.id, &t.agent_id).await?;
    }
    Ok(())
}
