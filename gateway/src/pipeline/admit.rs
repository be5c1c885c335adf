//! Stage 2, admit: is this agent accountable and allowed to act right now?
//!
//! Contract: returns [`Admitted`] only if the agent's runtime status (kept
//! in the store, changed by `tollgate agents suspend|resume|retire`) is
//! `active` and its `review_by` date has not come. The status is read from
//! the store on every call, so a change made by an operator in another
//! process takes effect on the agent's next call; [`recheck`] reads it once
//! more just before dispatch when the call has been in flight for more than
//! a few milliseconds, so a call held up (slow store, later an approval
//! wait) that has not reached the backend is refused too. A store error
//! refuses the call (fail closed).

use super::authenticate::Authenticated;
use super::denial::Denial;
use crate::Gateway;
use crate::catalog::AgentEntry;
use crate::store::AgentStatus;

/// An authenticated agent that may act now. Only [`admit`] builds one.
#[derive(Debug, Clone)]
pub struct Admitted {
    who: Authenticated,
    at: std::time::Instant,
}

impl Admitted {
    /// The principal.
    pub fn who(&self) -> &Authenticated {
        &self.who
    }
}

/// Checks the agent's status and review date. A status read together with
/// the credential for this very request is used as is (one store round
/// trip fewer); otherwise it is read now.
pub async fn admit(gw: &Gateway, who: &Authenticated) -> Result<Admitted, Denial> {
    match who.status_snapshot() {
        Some(status) => judge(gw, who.agent(), status.clone())?,
        None => check_agent(gw, who.agent()).await?,
    }
    Ok(Admitted {
        who: who.clone(),
        at: std::time::Instant::now(),
    })
}

/// A status read this recently is as good as a new one: the race with an
/// operator's change is there either way, so reading again would only add a
/// store round trip to every call.
pub(crate) const FRESH: std::time::Duration = std::time::Duration::from_millis(5);

/// The same checks again, for a call about to be dispatched, when time has
/// passed since admission (a slow store write, and later an approval wait).
pub async fn recheck(gw: &Gateway, admitted: &Admitted) -> Result<(), Denial> {
    if admitted.at.elapsed() < FRESH {
        return Ok(());
    }
    check_agent(gw, admitted.who.agent()).await
}

/// The admission checks for one agent, reading its status now (also used
/// when starting a task).
pub async fn check_agent(gw: &Gateway, agent: &AgentEntry) -> Result<(), Denial> {
    let lifecycle = read(gw, agent).await?;
    judge(gw, agent, lifecycle)
}

async fn read(gw: &Gateway, agent: &AgentEntry) -> Result<Option<crate::store::Lifecycle>, Denial> {
    gw.store().agent_lifecycle(&agent.id).await.map_err(|e| {
        tracing::error!(error = %e, agent = %agent.id, "cannot read the agent's status; refusing");
        Denial::LifecycleUnavailable
    })
}

/// The decision on a status already read.
fn judge(
    gw: &Gateway,
    agent: &AgentEntry,
    lifecycle: Option<crate::store::Lifecycle>,
) -> Result<(), Denial> {
    let contact = agent.owners.system.contact.clone();
    match lifecycle.map(|l| (l.status, l)) {
        Some((AgentStatus::Retired, l)) => {
            return Err(Denial::AgentRetired {
                agent: agent.id.clone(),
                since: l.changed_at,
                contact,
            });
        }
        Some((AgentStatus::Suspended, l)) => {
            return Err(Denial::AgentSuspended {
                agent: agent.id.clone(),
                since: l.changed_at,
                contact,
            });
        }
        _ => {}
    }
    let today = gw.now().date();
    if today >= agent.review_by {
        return Err(Denial::ReviewOverdue {
            agent: agent.id.clone(),
            review_by: agent.review_by.to_string(),
            contact,
        });
    }
    Ok(())
}
