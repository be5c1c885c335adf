//! Confirm: nothing that takes this call's right away has been committed
//! since its state was read — the revocation bound (see
//! [`crate::revocation`]).
//!
//! Contract: [`confirm`] turns a `Recorded<Approved>` into a
//! `Recorded<Confirmed>` only if no suspension, retirement, revocation of
//! the call's key or end of its task has been committed after the call's
//! fence (or, when one has, the state read again from the store still
//! admits it), and its task has not run out by the gateway's clock. It runs
//! before the credential is issued; [`check`] runs again in `dispatch`
//! right before the connector is called. Without a relevant change it costs
//! no store round trip; when it cannot tell, it reads the store, and a
//! failed read refuses (fail closed).

use super::approve::Approved;
use super::authenticate::Authenticated;
use super::denial::Denial;
use super::record::{RecordId, Recorded};
use super::scope::{self, Scoped};
use crate::Gateway;
use crate::revocation::{Subject, Verdict};
use crate::store::TaskRecord;
use crate::util::stamp;

/// A recorded call confirmed just now. Only [`confirm`] builds one.
#[derive(Debug)]
pub struct Confirmed {
    approved: Approved,
}

impl Confirmed {
    /// The call.
    pub fn scoped(&self) -> &Scoped {
        self.approved.scoped()
    }
}

/// Confirms a recorded call before its credential is issued.
pub async fn confirm(
    gw: &Gateway,
    recorded: Recorded<Approved>,
) -> Result<Recorded<Confirmed>, (RecordId, Denial)> {
    let s = recorded.stage().scoped();
    let task_id = s
        .task()
        .map(|t| t.id.clone())
        .or_else(|| s.named_task().map(str::to_string));
    match check(gw, s.call().who(), s.task(), task_id.as_deref()).await {
        Ok(()) => Ok(recorded.advance(|approved| Confirmed { approved })),
        Err(d) => Err((recorded.split().0, d)),
    }
}

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
