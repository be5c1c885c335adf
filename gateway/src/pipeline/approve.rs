//! Approve: a call policy marked "approval required" waits for people.
//!
//! Contract: returns [`Approved`] for a call policy allowed outright. A
//! call that needs approval is refused with [`Denial::ApprovalRequired`],
//! naming who would have to approve it, how many and for how long (the
//! approval queue is not built yet, so nothing waits), and the budget it
//! reserved is given back. Either way nothing has been written or sent
//! yet: this runs before the `allow` record.

use super::denial::Denial;
use super::limits::Limited;
use super::scope::Scoped;
use crate::Gateway;
use crate::policy::{Decision, Verdict};

/// A call cleared to run. Only [`approve`] builds one.
#[derive(Debug)]
pub struct Approved {
    scoped: Scoped,
    decision: Decision,
}

impl Approved {
    /// The call.
    pub fn scoped(&self) -> &Scoped {
        &self.scoped
    }
    /// The policy decision that let it through.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
}

/// Lets a call through, or refuses it because it needs approval.
pub async fn approve(gw: &Gateway, limited: Limited) -> Result<Approved, Denial> {
    if limited.decided().decision().verdict == Verdict::ApprovalRequired {
        limited.release(gw).await;
        let decided = limited.into_decided();
        let tool = decided.scoped().call().target().name().to_string();
        let (_, decision) = decided.into_parts();
        return Err(Denial::ApprovalRequired {
            tool,
            decision: Box::new(decision),
        });
    }
    let (scoped, decision) = limited.into_decided().into_parts();
    Ok(Approved { scoped, decision })
}
