//! Admit: is this agent accountable and allowed to act right now?
//!
//! Contract: returns [`Admitted`] only if the agent's runtime status is
//! `active` and its `review_by` date has not come (the rule lives in
//! [`crate::agents`]). The status read together with the credential for
//! this very request is used as is; otherwise it is read now. A store error
//! refuses the call (fail closed). A change committed after the status was
//! read is caught later by the revocation confirmation (`confirm.rs`), right
//! before anything leaves the gateway.

use super::authenticate::Authenticated;
use super::denial::Denial;
use crate::Gateway;
use crate::agents;

/// An authenticated agent that may act now. Only [`admit`] builds one.
#[derive(Debug, Clone)]
pub struct Admitted {
    who: Authenticated,
}

impl Admitted {
    /// The principal.
    pub fn who(&self) -> &Authenticated {
        &self.who
    }
    /// The principal, for the next stage.
    pub(super) fn into_who(self) -> Authenticated {
        self.who
    }
}

/// Checks the agent's status and review date.
pub async fn admit(gw: &Gateway, who: &Authenticated) -> Result<Admitted, Denial> {
    match who.status_snapshot() {
        Some(status) => agents::judge(gw, who.agent(), status.clone())?,
        None => agents::check(gw, who.agent()).await?,
    }
    Ok(Admitted { who: who.clone() })
}
