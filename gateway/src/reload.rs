//! Manifest reload: the gateway watches its manifest directory by polling
//! content hashes (portable, and immune to editors' rename-and-replace
//! tricks that confuse event-based watchers). A valid change builds a new
//! catalog and swaps it in whole: connections and calls in flight are not
//! touched, and each request sees one catalog. An invalid change is logged
//! with file and line and rejected; the running catalog stays. Every load,
//! applied change and rejected change is recorded in the store with the
//! files' content hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Gateway;
use crate::catalog::{Catalog, SourceFile};
use crate::manifest::{self, ManifestErrors};
use crate::store::{ManifestChange, StoreError};

/// Path -> SHA-256 of every manifest file in a directory.
pub type Fingerprint = BTreeMap<PathBuf, String>;

/// What one check of the directory did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Nothing changed.
    Unchanged,
    /// A new catalog is in force.
    Applied,
    /// The change was invalid; the previous catalog stays.
    Rejected(Vec<String>),
}

/// Hashes the manifest and policy files (`*.yaml`, `*.yml`, `*.cedar`) in `dir`.
pub fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "cedar")
            )
        {
            let bytes = std::fs::read(&path)?;
            out.insert(path, hex::encode(Sha256::digest(&bytes)));
        }
    }
    Ok(out)
}

/// The fingerprint of the files a catalog was built from.
pub fn fingerprint_of(sources: &[SourceFile]) -> Fingerprint {
    sources
        .iter()
        .map(|s| (s.path.clone(), s.sha256.clone()))
        .collect()
}

fn describe(before: &Fingerprint, after: &Fingerprint) -> serde_json::Value {
    let mut files = Vec::new();
    for (path, hash) in after {
        let change = match before.get(path) {
            None => "added",
            Some(h) if h != hash => "modified",
            Some(_) => "unchanged",
        };
        files.push(json!({ "path": path, "sha256": hash, "change": change }));
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        files.push(json!({ "path": path, "sha256": null, "change": "removed" }));
    }
    serde_json::Value::Array(files)
}

/// Says which policy mode a catalog brings: at start, and on a reload that
/// changes it. Losing every policy file is a warning: from then on the
/// grants alone decide.
pub fn log_policy_mode(before: Option<&Catalog>, after: &Catalog) {
    let had = before.map(|c| c.policies.is_some());
    match (&after.policies, had) {
        (Some(p), Some(true)) => {
            tracing::info!(
                policies = p.len(),
                files = p.files().len(),
                "policy set reloaded"
            );
        }
        (Some(p), _) => tracing::info!(
            policies = p.len(),
            files = p.files().len(),
            "policies in force: a call no permit matches is denied"
        ),
        (None, Some(true)) => tracing::warn!(
            "every policy file is gone: the grants and tasks alone decide from now on"
        ),
        (None, Some(false)) => {}
        (None, None) => {
            tracing::info!("no policy files (*.cedar): the grants and tasks alone decide")
        }
    }
}

/// Ids added, removed and changed between two maps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// New ids.
    pub added: Vec<String>,
    /// Ids gone.
    pub removed: Vec<String>,
    /// Ids present in both whose declaration differs.
    pub changed: Vec<String>,
}

impl Delta {
    /// Compares `(id, declaration)` lists.
    pub fn of(before: &[(String, String)], after: &[(String, String)]) -> Self {
        let before: BTreeMap<&String, &String> = before.iter().map(|(k, v)| (k, v)).collect();
        let after: BTreeMap<&String, &String> = after.iter().map(|(k, v)| (k, v)).collect();
        let mut d = Delta::default();
        for (id, new) in &after {
            match before.get(id) {
                None => d.added.push((*id).clone()),
                Some(old) if old != new => d.changed.push((*id).clone()),
                Some(_) => {}
            }
        }
        d.removed = before
            .keys()
            .filter(|id| !after.contains_key(*id))
            .map(|id| (*id).clone())
            .collect();
        d
    }

    fn describe(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        format!(
            "+[{}] -[{}] ~[{}]",
            list(&self.added),
            list(&self.removed),
            list(&self.changed)
        )
    }
}

/// The reload summary: which agents, tools and connectors were added,
/// removed or changed, and the policy count before and after. Entries are
/// compared by their `Debug` form, which holds every declared field (and
/// never a secret's value: a rotated secret alone shows as no change).
pub fn log_changes(before: &Catalog, after: &Catalog) {
    let agents = |c: &Catalog| -> Vec<(String, String)> {
        c.agents
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v:?}")))
            .collect()
    };
    let tools = |c: &Catalog| -> Vec<(String, String)> {
        c.tools
            .iter()
            .map(|(k, v)| {
                let shape = serde_json::to_string(&v.tool).unwrap_or_default();
                (
                    k.clone(),
                    format!("{:?} {} {shape}", v.risk, v.connector_id),
                )
            })
            .collect()
    };
    let connectors = |c: &Catalog| -> Vec<(String, String)> {
        c.connectors
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v:?}")))
            .collect()
    };
    let ag = Delta::of(&agents(before), &agents(after));
    let tl = Delta::of(&tools(before), &tools(after));
    let cn = Delta::of(&connectors(before), &connectors(after));
    tracing::info!(
        agents = %ag.describe(),
        tools = %tl.describe(),
        connectors = %cn.describe(),
        policies_before = before.policies.as_ref().map_or(0, |p| p.len()),
        policies = after.policies.as_ref().map_or(0, |p| p.len()),
        "manifest reload: +added -removed ~changed"
    );
}

/// Records the catalog loaded at startup.
pub async fn record_startup(gw: &Gateway) -> Result<(), StoreError> {
    let now = fingerprint_of(&gw.catalog().sources);
    // Compared with the last set of files in force: a start on the same
    // manifests (every stdio session starts a process) records nothing;
    // a start on changed ones records what changed since.
    let recent = gw.store().manifest_changes(50).await?;
    let last = recent.iter().find(|c| c.outcome != "rejected");
    let before: Fingerprint = last
        .and_then(|c| c.files.as_array())
        .map(|files| {
            files
                .iter()
                .filter_map(|f| {
                    Some((
                        PathBuf::from(f["path"].as_str()?),
                        f["sha256"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if last.is_some() && before == now {
        tracing::debug!("manifests unchanged since they were last recorded");
        return Ok(());
    }
    let change = ManifestChange {
        at: crate::util::stamp(gw.now()),
        outcome: "loaded".into(),
        files: describe(&before, &now),
        errors: None,
    };
    gw.store().record_manifest_change(&change).await
}

/// Checks `dir` once against `last` and applies or rejects a change.
pub async fn check_once(gw: &Gateway, dir: &Path, last: &mut Fingerprint) -> Reload {
    check(gw, dir, last, false).await
}

/// [`check_once`], also rebuilding when the files did not change but
/// what an upstream MCP server offers did (`upstream_changed`): its
/// definitions are checked against the pins again, and the tools it
/// withdraws or brings back are recorded.
pub async fn check(
    gw: &Gateway,
    dir: &Path,
    last: &mut Fingerprint,
    upstream_changed: bool,
) -> Reload {
    let now = match fingerprint(dir) {
        Ok(f) => f,
        Err(e) => {
            // A directory that cannot be read (mid-rename, say) is not a
            // change: keep serving and look again next time.
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the manifest directory");
            return Reload::Unchanged;
        }
    };
    if now == *last && !upstream_changed {
        return Reload::Unchanged;
    }
    let mut files = describe(last, &now);
    let (outcome, errors, result) = match manifest::load_dir_with(dir, gw.load_options()) {
        Ok(catalog) => {
            if let Some(list) = files.as_array_mut() {
                list.extend(withdrawn_changes(&gw.catalog(), &catalog, upstream_changed));
            }
            let applied = fingerprint_of(&catalog.sources);
            let before = gw.catalog();
            log_policy_mode(Some(&before), &catalog);
            log_changes(&before, &catalog);
            if let Some(upstreams) = gw.upstreams() {
                upstreams.retain(&catalog.connectors.keys().cloned().collect());
            }
            gw.replace_catalog(catalog);
            *last = applied;
            tracing::info!(dir = %dir.display(), "manifest change applied");
            ("applied", None, Reload::Applied)
        }
        Err(ManifestErrors(errors)) => {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            for line in &lines {
                tracing::error!("manifest change rejected: {line}");
            }
            tracing::warn!(
                errors = lines.len(),
                "manifest reload rejected: the previous configuration stays in force; fix the errors (`tollgate check`) and save again"
            );
            // Remember the broken state so it is reported once, not every tick.
            *last = now;
            ("rejected", Some(lines.clone()), Reload::Rejected(lines))
        }
    };
    let change = ManifestChange {
        at: crate::util::stamp(gw.now()),
        outcome: outcome.into(),
        files,
        errors,
    };
    if let Err(e) = gw.store().record_manifest_change(&change).await {
        tracing::error!(error = %e, "cannot record a manifest change");
    }
    result
}

/// The record's entries for tools withdrawn or restored by this change
/// (and a marker when an upstream's offer caused it). Their `sha256` is
/// null, so they never count as files.
fn withdrawn_changes(
    before: &Catalog,
    after: &Catalog,
    upstream_changed: bool,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    if upstream_changed {
        out.push(json!({ "path": "(upstream MCP servers)", "sha256": null, "change": "upstream_changed" }));
    }
    for (name, w) in &after.withdrawn {
        if before.withdrawn.get(name) != Some(w) {
            tracing::warn!(tool = %name, code = w.code, "tool withdrawn: {}", w.why);
            out.push(json!({
                "path": format!("(tool) {name}"),
                "sha256": null,
                "change": "withdrawn",
                "code": w.code,
                "reason": w.why,
            }));
        }
    }
    for name in before.withdrawn.keys() {
        if after.tools.contains_key(name) {
            tracing::info!(tool = %name, "tool served again");
            out.push(
                json!({ "path": format!("(tool) {name}"), "sha256": null, "change": "restored" }),
            );
        }
    }
    out
}

/// Watches `dir` every `every` until the task is dropped or aborted, and
/// the upstream MCP servers' offers as often.
pub fn spawn(gw: Arc<Gateway>, dir: PathBuf, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = fingerprint_of(&gw.catalog().sources);
        let generation = |gw: &Gateway| gw.upstreams().map(|u| u.generation());
        let mut seen = generation(&gw);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Read before the load: a change during it is seen next time.
            let now = generation(&gw);
            check(&gw, &dir, &mut last, now != seen).await;
            seen = now;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn delta_names_added_removed_and_changed_ids() {
        let before = list(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let after = list(&[("a", "1"), ("c", "2"), ("d", "1")]);
        let d = Delta::of(&before, &after);
        assert_eq!(d.added, ["d"]);
        assert_eq!(d.removed, ["b"]);
        assert_eq!(d.changed, ["c"]);
        assert_eq!(d.describe(), "+[d] -[b] ~[c]");
        assert_eq!(Delta::of(&before, &before).describe(), "+[-] -[-] ~[-]");
    }
}
