//! `tollgate connectors ...`: upstream MCP servers seen from the command
//! line. `status` starts each `mcp` connector's upstream as the gateway
//! would and reports its health and each exposed tool against its pin;
//! `pin` writes the current definitions' digests into the manifest (and
//! the definitions themselves beside it, under `pins/`, so that `diff`
//! can show what changed later); `diff` shows what an upstream changed
//! since it was pinned.
//!
//! Exit codes: 0 all is as pinned (`status`, `diff`) or the pins were
//! written (`pin`); 1 an upstream is unreachable, a tool is missing or its
//! definition changed, or the manifest could not be edited; 2 usage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use rmcp::model::Tool;
use serde_json::{Value, json};
use tollgate_connectors::mcp::{Discovery, Upstream, definition_hash, pinned_view};

use super::output::{self, Table, outln};
use crate::manifest::{self, ConnectorDocument};

#[derive(Debug, Subcommand)]
pub(super) enum ConnectorsCommand {
    /// Start each upstream MCP server (or only CONNECTOR) as the gateway
    /// would, and report its health and every exposed tool against its pin.
    Status {
        /// One connector; default: every `mcp` connector.
        connector: Option<String>,
        /// Print JSON (an array, one object per connector).
        #[arg(long)]
        json: bool,
    },
    /// Write the digest of each exposed tool's current definition into the
    /// manifest (`pin:`), and the definitions under `pins/` beside it.
    Pin {
        /// The `mcp` connector.
        connector: String,
        /// Only these exposed tools (by their name in the manifest).
        #[arg(long = "tool", value_name = "NAME")]
        tools: Vec<String>,
        /// Print JSON (an object: the file and the pins written).
        #[arg(long)]
        json: bool,
    },
    /// Show what the upstream changed since its tools were pinned.
    Diff {
        /// The `mcp` connector.
        connector: String,
        /// Print JSON (an object: each tool, its state and its changes).
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(manifests: &Path, cmd: ConnectorsCommand) -> anyhow::Result<ExitCode> {
    let docs = manifest::connector_documents(manifests)
        .with_context(|| format!("cannot read the manifest directory {}", manifests.display()))?;
    let mcp: Vec<&ConnectorDocument> = docs.iter().filter(|d| d.manifest.mcp.is_some()).collect();
    let find = |id: &str| -> anyhow::Result<&ConnectorDocument> {
        if let Some(d) = mcp.iter().find(|d| d.manifest.id == id) {
            return Ok(d);
        }
        if docs.iter().any(|d| d.manifest.id == id) {
            bail!("connector `{id}` is not an `mcp` connector (it has no upstream MCP server)");
        }
        let known: Vec<&str> = mcp.iter().map(|d| d.manifest.id.as_str()).collect();
        bail!(
            "no `mcp` connector `{id}` in {} (known: {})",
            manifests.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    };
    match cmd {
        ConnectorsCommand::Status { connector, json } => {
            let chosen: Vec<&ConnectorDocument> = match &connector {
                Some(id) => vec![find(id)?],
                None => mcp.clone(),
            };
            status(&chosen, json).await
        }
        ConnectorsCommand::Pin {
            connector,
            tools,
            json,
        } => pin(manifests, find(&connector)?, &tools, json).await,
        ConnectorsCommand::Diff { connector, json } => {
            diff(manifests, find(&connector)?, json).await
        }
    }
}

/// Starts the upstream and waits for its tool list.
async fn probe(doc: &ConnectorDocument) -> anyhow::Result<(Arc<Upstream>, Discovery)> {
    let Some(config) = &doc.manifest.mcp else {
        bail!("connector `{}` has no `mcp` block", doc.manifest.id);
    };
    let base = doc.file.parent().unwrap_or(Path::new("."));
    eprintln!(
        "Contacting upstream `{}` ({})...",
        doc.manifest.id,
        config.target()
    );
    let asks = tollgate_connectors::mcp::ClientAsks {
        sampling: doc.manifest.sampling.is_some(),
        elicitation: doc.manifest.elicitation.is_some(),
    };
    let up = Upstream::start(&doc.manifest.id, config.clone(), base, Arc::default(), asks)
        .map_err(|e| anyhow::anyhow!("connector `{}`: {e}", doc.manifest.id))?;
    let d = up
        .settled(config.connect_timeout() + Duration::from_secs(1))
        .await;
    Ok((up, d))
}

/// The upstream's tool definitions now, or why there are none.
async fn definitions(doc: &ConnectorDocument) -> anyhow::Result<Arc<Vec<Tool>>> {
    let id = &doc.manifest.id;
    let (up, discovery) = probe(doc).await?;
    up.stop();
    match discovery {
        Discovery::Ready(defs) => Ok(defs),
        Discovery::Failed(why) => bail!("upstream `{id}` is not available: {why}"),
        Discovery::Pending => bail!("upstream `{id}` did not answer in time"),
    }
}

/// Where an exposed tool stands against the upstream's definition.
fn tool_state(pin: Option<&str>, def: Option<&Tool>) -> (&'static str, Option<String>) {
    match (def, pin) {
        (None, _) => ("missing", None),
        (Some(d), None) => ("unpinned", Some(definition_hash(d))),
        (Some(d), Some(p)) => {
            let now = definition_hash(d);
            (if now == p { "pinned" } else { "changed" }, Some(now))
        }
    }
}

async fn status(docs: &[&ConnectorDocument], as_json: bool) -> anyhow::Result<ExitCode> {
    let mut all_ok = true;
    let mut reports = Vec::new();
    for doc in docs {
        let (up, discovery) = probe(doc).await?;
        let health = up.health();
        let (defs, error) = match &discovery {
            Discovery::Ready(defs) => (Some(defs.clone()), None),
            Discovery::Failed(why) => (None, Some(why.clone())),
            Discovery::Pending => (None, Some("no answer in time".to_string())),
        };
        all_ok &= defs.is_some();
        let mut tools = Vec::new();
        for t in &doc.manifest.expose {
            let def = defs
                .as_ref()
                .and_then(|d| d.iter().find(|d| d.name == t.upstream_name()));
            let (state, hash) = if defs.is_some() {
                tool_state(t.pin.as_deref(), def)
            } else {
                ("unknown", None)
            };
            all_ok &= matches!(state, "pinned" | "unpinned");
            tools.push(json!({
                "name": t.name,
                "upstream": t.upstream_name(),
                "state": state,
                "pin": t.pin,
                "current": hash,
            }));
        }
        let exposed: Vec<&str> = doc
            .manifest
            .expose
            .iter()
            .map(|t| t.upstream_name())
            .collect();
        let hidden: Vec<String> = defs
            .iter()
            .flat_map(|d| d.iter())
            .filter(|d| !exposed.contains(&d.name.as_ref()))
            .map(|d| d.name.to_string())
            .collect();
        let extras = up.extras();
        reports.push(json!({
            "upstream_prompts": extras.prompts.iter().map(|p| &p.name).collect::<Vec<_>>(),
            "upstream_resources": extras.resources.iter().map(|r| &r.uri).collect::<Vec<_>>(),
            "upstream_templates": extras.templates.iter().map(|r| &r.uri_template).collect::<Vec<_>>(),
            "connector": doc.manifest.id,
            "target": doc.manifest.mcp.as_ref().map(|m| m.target()),
            "state": if defs.is_some() { "up" } else { "unreachable" },
            "error": error,
            "protocol": health.protocol,
            "server": health.server,
            "tools": tools,
            "hidden": hidden,
        }));
        up.stop();
    }
    if as_json {
        output::json(&reports)?;
    } else {
        for r in &reports {
            outln!(
                "{}  {}  {}{}",
                r["connector"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["target"].as_str().unwrap_or(""),
                match (r["server"].as_str(), r["protocol"].as_str()) {
                    (Some(s), Some(p)) => format!("  ({s}, protocol {p})"),
                    _ => String::new(),
                }
            );
            if let Some(e) = r["error"].as_str() {
                outln!("  error: {e}");
            }
            let mut table = Table::new(&["TOOL", "UPSTREAM", "STATE"]);
            for t in r["tools"].as_array().into_iter().flatten() {
                table.row(vec![
                    t["name"].as_str().unwrap_or("").to_string(),
                    t["upstream"].as_str().unwrap_or("").to_string(),
                    t["state"].as_str().unwrap_or("").to_string(),
                ]);
            }
            table.print()?;
            let hidden = r["hidden"].as_array().map(Vec::len).unwrap_or(0);
            if hidden > 0 {
                outln!("  {hidden} more upstream tool(s) not exposed (hidden from agents)");
            }
            let id = r["connector"].as_str().unwrap_or("");
            if r["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["state"] == "changed")
            {
                outln!(
                    "  Changed definitions are withdrawn. Review: tollgate connectors diff {id}; then: tollgate connectors pin {id}"
                );
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where `pin` keeps the definitions it pinned, for `diff`.
fn pins_file(manifests: &Path, connector: &str) -> PathBuf {
    manifests.join("pins").join(format!("{connector}.json"))
}

async fn pin(
    manifests: &Path,
    doc: &ConnectorDocument,
    only: &[String],
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let id = &doc.manifest.id;
    for name in only {
        if !doc.manifest.expose.iter().any(|t| &t.name == name) {
            bail!("connector `{id}` does not expose a tool named `{name}`");
        }
    }
    let defs = definitions(doc).await?;
    let mut text = std::fs::read_to_string(&doc.file)
        .with_context(|| format!("cannot read {}", doc.file.display()))?;
    let mut stored: BTreeMap<String, Value> = std::fs::read_to_string(pins_file(manifests, id))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let mut written = Vec::new();
    let original_lines = text.lines().count();
    for t in &doc.manifest.expose {
        if !only.is_empty() && !only.contains(&t.name) {
            continue;
        }
        let Some(def) = defs.iter().find(|d| d.name == t.upstream_name()) else {
            bail!(
                "upstream `{id}` does not offer `{}` (exposed as `{}`): remove it from `expose` or fix its `upstream` name",
                t.upstream_name(),
                t.name
            );
        };
        let hash = definition_hash(def);
        // Pins added as new lines make the document longer.
        let lines = doc.lines + text.lines().count().saturating_sub(original_lines);
        text = set_pin(&text, doc.first_line, lines, &t.name, &hash).with_context(|| {
            format!(
                "cannot place the pin of `{}` in {}; add `pin: \"{hash}\"` to its entry by hand",
                t.name,
                doc.file.display()
            )
        })?;
        stored.insert(t.name.clone(), pinned_view(def));
        written.push(json!({ "tool": t.name, "pin": hash, "was": t.pin }));
    }
    // The edited document must still parse, and read back the new pins
    // (the file's other documents are untouched).
    let lines: Vec<&str> = text.lines().collect();
    let grown = lines.len().saturating_sub(original_lines);
    let end = (doc.first_line + doc.lines + grown).min(lines.len());
    let back: crate::manifest::types::ConnectorManifest =
        serde_yaml_ng::from_str(&lines[doc.first_line.min(end)..end].join("\n"))
            .context("the edited manifest no longer parses; nothing was written")?;
    for w in &written {
        let name = w["tool"].as_str().unwrap_or("");
        let ok = back
            .expose
            .iter()
            .any(|t| t.name == name && t.pin.as_deref() == w["pin"].as_str());
        if !ok {
            bail!(
                "the edited manifest does not read back the pin of `{name}`; nothing was written"
            );
        }
    }
    write_atomically(&doc.file, text.as_bytes())?;
    let pins = pins_file(manifests, id);
    if let Some(dir) = pins.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomically(&pins, serde_json::to_string_pretty(&stored)?.as_bytes())?;
    if as_json {
        output::json(&json!({
            "connector": id,
            "file": doc.file,
            "definitions": pins,
            "pins": written,
        }))?;
    } else {
        for w in &written {
            let changed = w["was"]
                .as_str()
                .is_some_and(|was| Some(was) != w["pin"].as_str());
            outln!(
                "{}.{}  {}{}",
                id,
                w["tool"].as_str().unwrap_or(""),
                w["pin"].as_str().unwrap_or(""),
                if changed { "  (was different)" } else { "" }
            );
        }
        outln!(
            "Pinned {} tool(s) in {}; definitions kept in {}. A running gateway applies the change within a second.",
            written.len(),
            doc.file.display(),
            pins.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tollgate-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// `text` with the `pin:` of exposed tool `name` (in the document of
/// `lines` lines from `first`) set to `hash`: replaced where there is one,
/// added to the entry otherwise, in flow (`- { name: x, ... }`) or block
/// style. Comments and everything else stay as written.
fn set_pin(
    text: &str,
    first: usize,
    lines: usize,
    name: &str,
    hash: &str,
) -> anyhow::Result<String> {
    let mut all: Vec<String> = text.lines().map(str::to_string).collect();
    let end = (first + lines).min(all.len());
    let expose = (first..end)
        .find(|&i| all[i].trim_start().starts_with("expose:"))
        .context("no `expose:` in the connector")?;
    // `name: x`, `name: "x"`, `name: x   # a comment`.
    let names = |v: &str| {
        let v = v.split(" #").next().unwrap_or("");
        v.trim().trim_matches(|c| c == '"' || c == '\'') == name
    };
    let quoted = format!("\"{hash}\"");
    for i in expose + 1..end {
        let line = all[i].clone();
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(entry) = trimmed.strip_prefix("- ") else {
            continue;
        };
        let entry = entry.trim_start();
        if let Some(flow) = entry.strip_prefix('{') {
            // Flow style: find `name: X` among the comma-separated pairs.
            let body = flow
                .trim_end()
                .strip_suffix('}')
                .context("a flow entry on several lines")?;
            let pairs: Vec<&str> = body.split(',').collect();
            let is_it = pairs.iter().any(|p| {
                p.split_once(':')
                    .is_some_and(|(k, v)| k.trim() == "name" && names(v))
            });
            if !is_it {
                continue;
            }
            let mut out: Vec<String> = pairs
                .iter()
                .filter(|p| p.split_once(':').is_none_or(|(k, _)| k.trim() != "pin"))
                .map(|p| p.trim().to_string())
                .collect();
            out.push(format!("pin: {quoted}"));
            all[i] = format!("{}- {{ {} }}", " ".repeat(indent), out.join(", "));
            return Ok(all.join("\n") + if text.ends_with('\n') { "\n" } else { "" });
        }
        // Block style: `- name: X` and the keys indented below it.
        let Some((k, v)) = entry.split_once(':') else {
            continue;
        };
        let first_key_is_name = k.trim() == "name" && names(v);
        let child_indent = indent + 2;
        let mut j = i + 1;
        let mut is_it = first_key_is_name;
        let mut pin_at = None;
        while j < end {
            let l = &all[j];
            let t = l.trim_start();
            let ind = l.len() - t.len();
            if !t.is_empty() && ind < child_indent {
                break;
            }
            if ind == child_indent
                && let Some((k, v)) = t.split_once(':')
            {
                if k.trim() == "name" && names(v) {
                    is_it = true;
                }
                if k.trim() == "pin" {
                    pin_at = Some(j);
                }
            }
            j += 1;
        }
        if !is_it {
            continue;
        }
        let pin_line = format!("{}pin: {quoted}", " ".repeat(child_indent));
        match pin_at {
            Some(p) => all[p] = pin_line,
            None => all.insert(i + 1, pin_line),
        }
        return Ok(all.join("\n") + if text.ends_with('\n') { "\n" } else { "" });
    }
    bail!("no entry for `{name}` under `expose:`")
}

async fn diff(
    manifests: &Path,
    doc: &ConnectorDocument,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let id = &doc.manifest.id;
    let defs = definitions(doc).await?;
    let stored: BTreeMap<String, Value> = std::fs::read_to_string(pins_file(manifests, id))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let mut report = Vec::new();
    let mut clean = true;
    for t in &doc.manifest.expose {
        let def = defs.iter().find(|d| d.name == t.upstream_name());
        let (state, now) = tool_state(t.pin.as_deref(), def);
        let mut changes = Vec::new();
        if state == "changed" {
            clean = false;
            match (stored.get(&t.name), def) {
                (Some(before), Some(def)) => walk("", before, &pinned_view(def), &mut changes),
                (None, Some(def)) => changes.push(json!({
                    "path": "",
                    "before": null,
                    "after": pinned_view(def),
                    "note": "the pinned definition was not kept (pinned by hand?): only its digest is known",
                })),
                _ => {}
            }
        }
        if state == "missing" {
            clean = false;
        }
        report.push(json!({
            "tool": t.name,
            "upstream": t.upstream_name(),
            "state": state,
            "pin": t.pin,
            "current": now,
            "changes": changes,
        }));
    }
    if as_json {
        output::json(&json!({ "connector": id, "tools": report }))?;
    } else {
        for r in &report {
            outln!(
                "{id}.{}  {}",
                r["tool"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or("")
            );
            for c in r["changes"].as_array().into_iter().flatten() {
                let path = c["path"]
                    .as_str()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("(whole definition)");
                outln!("  {path}");
                if !c["before"].is_null() {
                    outln!("    - {}", c["before"]);
                }
                outln!("    + {}", c["after"]);
                if let Some(n) = c["note"].as_str() {
                    outln!("    ({n})");
                }
            }
        }
        if !clean {
            outln!("If the changes are acceptable: tollgate connectors pin {id}");
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every place (JSON pointer) where `a` and `b` differ.
fn walk(at: &str, a: &Value, b: &Value, out: &mut Vec<Value>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let next = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                walk(
                    &next,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(json!({ "path": at, "before": a, "after": b })),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DOC: &str = "kind: Connector\nid: up\n# keep me\nexpose:\n  - { name: echo, risk: low }\n  - name: other\n    risk: low\n    pin: \"sha256:old\"\n  - name: third   # a comment\n    risk: medium\n";

    #[test]
    fn pins_are_added_or_replaced_in_flow_and_block_entries() {
        let lines = DOC.lines().count();
        let a = set_pin(DOC, 0, lines, "echo", "sha256:aa").unwrap();
        assert!(
            a.contains("  - { name: echo, risk: low, pin: \"sha256:aa\" }"),
            "{a}"
        );
        let b = set_pin(&a, 0, lines, "other", "sha256:bb").unwrap();
        assert!(
            b.contains("    pin: \"sha256:bb\"") && !b.contains("sha256:old"),
            "{b}"
        );
        let c = set_pin(&b, 0, lines + 1, "third", "sha256:cc").unwrap();
        assert!(
            c.contains("  - name: third   # a comment\n    pin: \"sha256:cc\"\n    risk: medium"),
            "{c}"
        );
        assert!(c.contains("# keep me"));
        assert!(set_pin(DOC, 0, lines, "nope", "sha256:x").is_err());
        // Pinning again replaces, never duplicates.
        let again = set_pin(&a, 0, lines, "echo", "sha256:dd").unwrap();
        assert_eq!(again.matches("pin:").count(), 2, "{again}");
    }

    #[test]
    fn the_walk_names_every_changed_place() {
        let mut out = Vec::new();
        walk(
            "",
            &json!({ "description": "a", "inputSchema": { "properties": { "x": 1, "y": 2 } } }),
            &json!({ "description": "b", "inputSchema": { "properties": { "x": 1, "z": 3 } } }),
            &mut out,
        );
        let paths: Vec<&str> = out.iter().map(|c| c["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/description",
                "/inputSchema/properties/y",
                "/inputSchema/properties/z"
            ]
        );
    }
}
