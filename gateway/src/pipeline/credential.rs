//! Stage 6, credential: the backend credential for this call, issued last,
//! after every other check, so nothing is minted for a call that will not
//! run.
//!
//! Contract: returns [`Credentialed`] (possibly without a credential, for a
//! connector that declares no `auth`); any failure to issue refuses the call
//! (fail closed). The credential is scoped to the task (or, outside a task,
//! to the agent's grants on that connector), audience-bound to the one
//! backend, and expires no later than the task.

use tollgate_connectors::BackendCredential;

use super::denial::Denial;
use super::scope::Scoped;
use crate::Gateway;

/// Proof that the credential step ran. Only [`issue`] builds one.
#[derive(Debug)]
pub struct Credentialed {
    credential: Option<BackendCredential>,
}

impl Credentialed {
    /// The credential to present, if the backend needs one.
    pub fn credential(&self) -> Option<&BackendCredential> {
        self.credential.as_ref()
    }
}

/// Issues (or reuses) the credential for the call's backend.
pub async fn issue(gw: &Gateway, scoped: &Scoped) -> Result<Credentialed, Denial> {
    let call = scoped.call();
    match crate::broker::issue(gw, call.who().agent(), scoped.task(), call.tool()).await {
        Ok(credential) => Ok(Credentialed { credential }),
        Err(e) => {
            tracing::error!(error = %e, "no credential; refusing the call");
            Err(Denial::CredentialUnavailable {
                connector: call.tool().connector_id.clone(),
            })
        }
    }
}
