//! Credential: the backend credential for this call, issued after every
//! other check, so nothing is minted for a call that will not run.
//!
//! Contract: takes a `Recorded<Confirmed>` (so it cannot run before the
//! record and the revocation confirmation) and returns a
//! `Recorded<Credentialed>` (possibly without a credential, for a connector
//! that declares no `auth`); any failure to issue refuses the call (fail
//! closed). The credential is scoped to the task (or, outside a task, to the
//! agent's grants on that connector), audience-bound to the one backend,
//! and expires no later than the task.

use std::sync::Arc;

use tollgate_connectors::BackendCredential;

use super::confirm::Confirmed;
use super::denial::Denial;
use super::record::{RecordId, Recorded};
use crate::Gateway;
use crate::catalog::ToolEntry;

/// Proof that the credential step ran. Only [`issue`] builds one.
#[derive(Debug)]
pub struct Credentialed {
    confirmed: Confirmed,
    tool: Arc<ToolEntry>,
    credential: Option<BackendCredential>,
}

impl Credentialed {
    /// The confirmed call.
    pub fn confirmed(&self) -> &Confirmed {
        &self.confirmed
    }
    /// The connector tool it calls.
    pub fn tool(&self) -> &Arc<ToolEntry> {
        &self.tool
    }
    /// The credential to present, if the backend needs one.
    pub fn credential(&self) -> Option<&BackendCredential> {
        self.credential.as_ref()
    }
}

/// Issues (or reuses) the credential for the call's backend. `tool` is the
/// connector tool the call targets.
pub async fn issue(
    gw: &Gateway,
    confirmed: Recorded<Confirmed>,
    tool: Arc<ToolEntry>,
) -> Result<Recorded<Credentialed>, (RecordId, Denial)> {
    let scoped = confirmed.stage().scoped();
    let agent = scoped.call().who().agent().clone();
    // An upstream's request of the agent's client goes to the client, not
    // to a backend: nothing to mint.
    let issued = if tool.kind().is_ask() {
        Ok(None)
    } else {
        crate::broker::issue(gw, &agent, scoped.task(), &tool).await
    };
    match issued {
        Ok(credential) => Ok(confirmed.advance(|confirmed| Credentialed {
            confirmed,
            tool,
            credential,
        })),
        Err(e) => {
            tracing::error!(error = %e, "no credential; refusing the call");
            let connector = tool.connector_id.clone();
            Err((
                confirmed.split().0,
                Denial::CredentialUnavailable { connector },
            ))
        }
    }
}
