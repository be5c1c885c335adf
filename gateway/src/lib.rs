//! Tollgate: a governed MCP tool gateway for AI agents.
//!
//! Agents connect over MCP (Streamable HTTP or stdio) and see the tools that
//! manifests declare; every `tools/call` passes the governance pipeline
//! before a connector reaches a backend. Module map:
//!
//! - [`manifest`]: YAML manifests -> validated types, errors with file:line.
//! - [`catalog`]: the validated runtime form (tools, agents, connectors).
//! - [`pipeline`]: the stages of a call, in order, one module each.
//! - [`mcp`]: the rmcp handler; `tools/list` per agent, `tools/call` -> pipeline.
//! - [`server`]: the HTTP edge (auth layer, Origin, sessions, body limits).
//! - [`identity`]: JWT workload identities from declared issuers (JWKS).
//! - [`reload`]: watches the manifest directory, swaps the catalog whole.
//! - [`store`]: persistent state behind a trait; SQLite by default.
//! - [`demo`]: the built-in demo backend the shipped manifests use.
//! - [`cli`]: the `tollgate` command line; `main.rs` only calls it.

pub mod catalog;
pub mod cli;
pub mod demo;
pub mod identity;
pub mod manifest;
pub mod mcp;
pub mod pipeline;
pub mod reload;
pub mod server;
pub mod store;
mod util;

use std::sync::{Arc, RwLock};

use rand::RngCore;

use catalog::Catalog;
use store::{Store, StoreError};

/// The running gateway's shared state: the catalog in force and the store.
/// Cheap to share (`Arc<Gateway>`); every request reads the catalog once.
#[derive(Debug)]
pub struct Gateway {
    catalog: RwLock<Arc<Catalog>>,
    store: Arc<dyn Store>,
    digest_key: Vec<u8>,
}

impl Gateway {
    /// Builds the gateway over a loaded catalog and an open store, fetching
    /// (or creating, on first run) the store's argument-digest key.
    pub async fn new(catalog: Catalog, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        let digest_key = store.secret("args_digest_hmac_key", &fresh).await?;
        Ok(Self {
            catalog: RwLock::new(Arc::new(catalog)),
            store,
            digest_key,
        })
    }

    /// The catalog in force. Hold the `Arc` for the whole request so one
    /// request sees one consistent catalog even across a reload.
    pub fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the catalog atomically; requests in flight keep the old one.
    pub fn replace_catalog(&self, catalog: Catalog) {
        let next = Arc::new(catalog);
        match self.catalog.write() {
            Ok(mut c) => *c = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub(crate) fn digest_key(&self) -> &[u8] {
        &self.digest_key
    }
}
