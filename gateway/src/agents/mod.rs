//! Agent lifecycle: whether an agent may act right now. The manifest
//! declares an agent and its review date; the store holds its runtime status
//! (changed by `tollgate agents suspend|resume|retire`). This module judges
//! the two together; the admit stage, the revocation confirmation, the task
//! starter and `tools/list` all ask it, so the rule is written once. It
//! knows nothing of the pipeline: the pipeline turns a [`NotAdmitted`] into
//! its own denial.

use crate::Gateway;
use crate::catalog::AgentEntry;
use crate::store::{AgentStatus, Lifecycle};

/// Why an agent may not act now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// Suspended by an operator.
    #[error("agent `{agent}` is suspended (since {since})")]
    Suspended {
        /// Agent id.
        agent: String,
        /// When.
        since: String,
        /// Whom to contact (system owner).
        contact: String,
    },
    /// Retired (permanent).
    #[error("agent `{agent}` is retired (since {since})")]
    Retired {
        /// Agent id.
        agent: String,
        /// When.
        since: String,
        /// Whom to contact (system owner).
        contact: String,
    },
    /// Its review date has come.
    #[error("agent `{agent}` was due for review on {review_by} and is treated as suspended")]
    ReviewOverdue {
        /// Agent id.
        agent: String,
        /// The review date.
        review_by: String,
        /// Whom to contact (system owner).
        contact: String,
    },
    /// The status could not be read: refused, never guessed.
    #[error("the agent's status could not be checked")]
    Unavailable,
}

/// Reads the agent's status now and judges it (a store error refuses).
pub async fn check(gw: &Gateway, agent: &AgentEntry) -> Result<(), NotAdmitted> {
    let lifecycle = gw.store().agent_lifecycle(&agent.id).await.map_err(|e| {
        tracing::error!(error = %e, agent = %agent.id, "cannot read the agent's status; refusing");
        NotAdmitted::Unavailable
    })?;
    judge(gw, agent, lifecycle)
}

/// The decision on a status already read: active and not past its review
/// date. `None` means the status was never changed (active).
pub fn judge(
    gw: &Gateway,
    agent: &AgentEntry,
    lifecycle: Option<Lifecycle>,
) -> Result<(), NotAdmitted> {
    let contact = agent.owners.system.contact.clone();
    match lifecycle.map(|l| (l.status, l)) {
        Some((AgentStatus::Retired, l)) => {
            return Err(NotAdmitted::Retired {
                agent: agent.id.clone(),
                since: l.changed_at,
                contact,
            });
        }
        Some((AgentStatus::Suspended, l)) => {
            return Err(NotAdmitted::Suspended {
                agent: agent.id.clone(),
                since: l.changed_at,
                contact,
            });
        }
        _ => {}
    }
    if gw.now().date() >= agent.review_by {
        return Err(NotAdmitted::ReviewOverdue {
            agent: agent.id.clone(),
            review_by: agent.review_by.to_string(),
            contact,
        });
    }
    Ok(())
}
