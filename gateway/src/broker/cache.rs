//! The credential cache: the only place credential values live.
//!
//! An entry belongs to a holder (a task, or an agent outside any task) and
//! a connector, and carries the fingerprint of the connector's
//! configuration it was issued under (backend, token URL, client id and
//! secret, audience, scopes...). A lookup under another fingerprint never
//! returns it: after a reload that re-points a connector or changes its
//! secret, the old credential is replaced (and revoked), not sent again.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use hmac::{KeyInit, Mac};
use time::OffsetDateTime;
use tollgate_connectors::BackendCredential;

use super::KindSecrets;
use super::token_endpoint::ClientAuth;
use crate::Gateway;
use crate::catalog::{AgentEntry, ConnectorEntry};
use crate::manifest::types::BackendAuth;
use crate::secrets::SecretString;
use crate::store::TaskRecord;

/// A token an external issuer handed out, with what it takes to revoke it.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) token: SecretString,
    pub(crate) revocation_url: Option<String>,
    pub(crate) client: Option<ClientAuth>,
    /// When the issuer says it dies (it may be later than the expiry the
    /// gateway gave it): a revocation is owed until then.
    pub(crate) dies: OffsetDateTime,
}

/// A cached credential is reused only while this share of its life is left.
const REUSE_FLOOR: f64 = 0.2;

/// Who a credential was issued for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Holder {
    /// One task.
    Task(String),
    /// An agent, for calls outside any task.
    Agent(String),
}

/// Holder and connector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) holder: Holder,
    pub(super) connector: String,
}

impl Key {
    pub(super) fn new(agent: &AgentEntry, task: Option<&TaskRecord>, connector: &str) -> Self {
        Self {
            holder: match task {
                Some(t) => Holder::Task(t.id.clone()),
                None => Holder::Agent(agent.id.clone()),
            },
            connector: connector.to_string(),
        }
    }
}

/// One cached credential.
pub(super) struct Entry {
    pub(super) fingerprint: String,
    pub(super) agent_id: String,
    pub(super) record_id: String,
    pub(super) credential: BackendCredential,
    pub(super) issued: OffsetDateTime,
    pub(super) expires: Option<OffsetDateTime>,
    pub(super) upstream: Option<Upstream>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `BackendCredential` and `Upstream` redact their own secrets.
        f.debug_struct("Entry")
            .field("record_id", &self.record_id)
            .field("agent_id", &self.agent_id)
            .field("credential", &self.credential)
            .field("issued", &self.issued)
            .field("expires", &self.expires)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Entry {
    fn fresh(&self, now: OffsetDateTime) -> bool {
        match self.expires {
            None => true,
            Some(exp) => {
                let life = (exp - self.issued).as_seconds_f64().max(1.0);
                (exp - now).as_seconds_f64() > life * REUSE_FLOOR
                    && exp - now > time::Duration::seconds(5)
            }
        }
    }
}

/// What a lookup found.
pub(super) enum Lookup {
    /// A credential to reuse.
    Fresh(BackendCredential),
    /// Nothing usable; this entry (expiring, or issued under another
    /// configuration) was taken out and must be revoked.
    Replaced(Box<Entry>),
    /// Nothing.
    Miss,
}

/// The outcome of installing a freshly minted credential.
pub(super) struct Installed {
    /// The credential to use for this call.
    pub(super) credential: BackendCredential,
    /// An entry that lost its place and must be revoked: the one replaced,
    /// or the new one when a concurrent issue installed a usable
    /// credential first.
    pub(super) displaced: Option<Entry>,
}

/// The cache itself.
#[derive(Default)]
pub(super) struct Cache {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn lookup(&self, key: &Key, fingerprint: &str, now: OffsetDateTime) -> Lookup {
        let mut entries = self.lock();
        match entries.get(key) {
            None => Lookup::Miss,
            Some(e) if e.fingerprint == fingerprint && e.fresh(now) => {
                Lookup::Fresh(e.credential.clone())
            }
            Some(_) => entries
                .remove(key)
                .map_or(Lookup::Miss, |e| Lookup::Replaced(Box::new(e))),
        }
    }

    /// Installs `entry` unless a usable credential under the same
    /// configuration got there first (two misses racing): then that one is
    /// used and `entry` is handed back for revocation.
    pub(super) fn install(&self, key: Key, entry: Entry, now: OffsetDateTime) -> Installed {
        let mut entries = self.lock();
        if let Some(first) = entries.get(&key)
            && first.fingerprint == entry.fingerprint
            && first.fresh(now)
        {
            return Installed {
                credential: first.credential.clone(),
                displaced: Some(entry),
            };
        }
        let credential = entry.credential.clone();
        let displaced = entries.insert(key, entry);
        Installed {
            credential,
            displaced,
        }
    }

    /// Takes out the entry under `key` if it is still the one recorded as
    /// `record_id`.
    pub(super) fn remove_record(&self, key: &Key, record_id: &str) -> Option<Entry> {
        let mut entries = self.lock();
        if entries.get(key).is_some_and(|e| e.record_id == record_id) {
            entries.remove(key)
        } else {
            None
        }
    }

    /// Takes out every entry `pick` selects.
    pub(super) fn remove_where(&self, pick: impl Fn(&Key, &Entry) -> bool) -> Vec<Entry> {
        let mut entries = self.lock();
        let keys: Vec<Key> = entries
            .iter()
            .filter(|(k, e)| pick(k, e))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| entries.remove(&k))
            .collect()
    }
}

/// A keyed digest of everything that decides which credential a connector
/// gets and where it goes. Keyed (the gateway's digest key) because it
/// covers secrets; never stored or logged.
pub(super) fn fingerprint(
    gw: &Gateway,
    connector: &ConnectorEntry,
    target: &str,
    auth: &BackendAuth,
    secrets: &KindSecrets,
    scope: &str,
) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(gw.secrets().digest_key())
        .unwrap_or_else(|_| {
            <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&[0u8; 32]).expect("fixed key")
        });
    let auth = serde_json::to_string(auth).unwrap_or_default();
    let parts = [
        connector.id.as_str(),
        &connector.base_dir.to_string_lossy(),
        target,
        &auth,
        secrets.client.as_ref().map_or("", |s| s.expose()),
        secrets.value.as_ref().map_or("", |s| s.expose()),
        scope,
    ];
    for part in parts {
        // Length-prefixed, so no two different tuples hash alike.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}
