//! Agent lifecycle: whether an agent may act right now. The manifest
//! declares an agent and its review date; the store holds its runtime status
//! (changed by `tollgate agents suspend|resume|retire`). This module judges
//! the two together; the admit stage, the revocation confirmation, the task
//! starter and `tools/list` all ask it, so the rule is written once.

use crate::Gateway;
use crate::catalog::AgentEntry;
use crate::pipeline::Denial;
use crate::store::{AgentStatus, Lifecycle};

/// Reads the agent's status now and judges it (a store error refuses).
pub async fn check(gw: &Gateway, agent: &AgentEntry) -> Result<(), Denial> {
    let lifecycle = gw.store().agent_lifecycle(&agent.id).await.map_err(|e| {
        tracing::error!(error = %e, agent = %agent.id, "cannot read the agent's status; refusing");
        Denial::LifecycleUnavailable
    })?;
    judge(gw, agent, lifecycle)
}

/// The decision on a status already read: active and not past its review
/// date. `None` means the status was never changed (active).
pub fn judge(gw: &Gateway, agent: &AgentEntry, lifecycle: Option<Lifecycle>) -> Result<(), Denial> {
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
    if gw.now().date() >= agent.review_by {
        return Err(Denial::ReviewOverdue {
            agent: agent.id.clone(),
            review_by: agent.review_by.to_string(),
            contact,
        });
    }
    Ok(())
}
