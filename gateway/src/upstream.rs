//! The upstream MCP servers that `mcp` connectors front, kept running
//! across manifest reloads.
//!
//! The manifest loader asks [`Upstreams::ensure`] for each `mcp` connector:
//! an upstream whose `mcp:` block (and directory) did not change is the
//! same running one, with its child process and sessions; a changed one is
//! started afresh and the old one stops when the last catalog using it is
//! dropped. Every change in what an upstream offers bumps
//! [`Upstreams::generation`], which the reload loop watches: the catalog is
//! rebuilt from the manifests and the new definitions (pins checked again),
//! exactly as for an edited file.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_connectors::mcp::{ClientAsks, Discovery, McpConnectorConfig, Upstream};

/// The running upstreams, by connector id.
#[derive(Debug, Default)]
pub struct Upstreams {
    running: Mutex<HashMap<String, (PathBuf, Arc<Upstream>)>>,
    generation: Arc<AtomicU64>,
}

impl Upstreams {
    /// An empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The upstream for connector `id` with `config`: the running one when
    /// nothing about it changed (including what it may ask of agents'
    /// clients, which is declared at its handshake), else a new one
    /// (started in the background).
    pub fn ensure(
        &self,
        id: &str,
        config: &McpConnectorConfig,
        asks: ClientAsks,
        base_dir: &Path,
    ) -> Result<Arc<Upstream>, String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((dir, up)) = running.get(id)
            && up.config() == config
            && up.asks() == asks
            && dir == base_dir
        {
            return Ok(up.clone());
        }
        let up = Upstream::start(id, config.clone(), base_dir, self.generation.clone(), asks)?;
        if let Some((_, old)) = running.insert(id.to_string(), (base_dir.to_path_buf(), up.clone()))
        {
            old.stop();
        }
        Ok(up)
    }

    /// Stops the upstreams of connectors no longer declared.
    pub fn retain(&self, ids: &BTreeSet<String>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|id, (_, up)| {
            let keep = ids.contains(id);
            if !keep {
                up.stop();
            }
            keep
        });
    }

    /// Changes each time any upstream's offer changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Every running upstream, by connector id.
    pub fn all(&self) -> Vec<(String, Arc<Upstream>)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = running
            .iter()
            .map(|(id, (_, up))| (id.clone(), up.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Waits until every upstream has answered its first discovery (or
    /// failed), at most `within`.
    pub async fn settle(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for (_, up) in self.all() {
            let left = deadline.saturating_duration_since(Instant::now());
            if matches!(up.settled(left).await, Discovery::Pending) {
                tracing::warn!(
                    "an upstream MCP server has not answered within {within:?}; its tools stay withdrawn until it does"
                );
            }
        }
    }

    /// Stops them all and waits (at most `within`) until each has ended
    /// its child process and sessions, so a stopping gateway leaves no
    /// upstream running behind it.
    pub async fn shutdown(&self, within: Duration) {
        let all = self.all();
        for (_, up) in &all {
            up.stop();
        }
        let deadline = Instant::now() + within;
        for (id, up) in all {
            while up.health().state != "stopped" {
                if Instant::now() >= deadline {
                    tracing::warn!(connector = %id, "an upstream MCP server did not stop in time");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
