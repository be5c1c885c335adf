//! Confirm: nothing that takes this call's right away has been committed
//! since its state was read — the revocation bound (see
//! [`crate::revocation`]).
//!
//! Contract: [`confirm`] turns a `Recorded<Approved>` into a
//! `Recorded<Confirmed>` only if no suspension, retirement, revocation of
//! the call's key or end of its task has been committed after the call's
//! fence (or, when one has, the state read again from the store still
//! admits it), and its task has not run out by the gateway's clock. It runs
//! before the credential is issued; the same check ([`fence::check`]) runs
//! again in `dispatch` right before the connector is called. Without a relevant change it costs
//! no store round trip; when it cannot tell, it reads the store, and a
//! failed read refuses (fail closed).

use super::approve::Approved;
use super::denial::Denial;
use super::fence;
use super::record::{RecordId, Recorded};
use super::scope::Scoped;
use crate::Gateway;

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
    match fence::check(gw, s.call().who(), s.task(), task_id.as_deref()).await {
        Ok(()) => Ok(recorded.advance(|approved| Confirmed { approved })),
        Err(d) => Err((recorded.split().0, d)),
    }
}
