//! `tollgate check` (validate a manifest directory and report every error
//! and warning, for people or as JSON for CI) and `tollgate schema`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::output::{self, outln};
use super::sorted;
use crate::catalog::Catalog;
use crate::manifest::{self, ManifestError, ManifestErrors};

/// How `check` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Format {
    /// `file:line:col: error[code]: message` lines on stderr, for people.
    Text,
    /// One JSON object on stdout, for CI pipelines.
    Json,
}

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// Directory to check (default: --manifests).
    dir: Option<PathBuf>,
    /// `text` for people, `json` for CI (one object with every diagnostic).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Same as `--format json`.
    #[arg(long)]
    json: bool,
}

/// Exit status when the directory itself cannot be checked (unreadable,
/// or no manifest files in it): as for a usage error, the command could
/// not do what it was asked.
const EXIT_UNUSABLE_DIR: u8 = 2;

pub(super) fn check(default_dir: &Path, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.as_deref().unwrap_or(default_dir);
    let as_json = args.json || args.format == Format::Json;
    let (catalog, errors) = match manifest::load_dir(dir) {
        Ok(c) => (Some(c), ManifestErrors(Vec::new())),
        Err(errors) => (None, errors),
    };
    let warnings: &[ManifestError] = catalog.as_ref().map_or(&[], |c| c.warnings.as_slice());
    let diagnostics: Vec<Value> = errors
        .0
        .iter()
        .map(|e| diagnostic(e, "error"))
        .chain(warnings.iter().map(|w| diagnostic(w, "warning")))
        .collect();
    if as_json {
        let mut report = json!({
            "valid": catalog.is_some(),
            "errors": errors.0.len(),
            "warnings": warnings.len(),
            "diagnostics": diagnostics,
        });
        if let Some(c) = &catalog {
            report["files"] = json!(c.sources.len());
            report["tools"] = json!(c.tools.keys().collect::<Vec<_>>());
            report["upstream_tools"] = json!(c.withdrawn.keys().collect::<Vec<_>>());
            report["agents"] = json!(sorted(c.agents.keys()));
            report["policies"] = json!(c.policies.as_ref().map(|p| json!({
                "files": p.files(),
                "count": p.len(),
                "default": "deny",
            })));
        }
        output::json(&report)?;
    } else {
        for e in &errors.0 {
            eprint!("{}", human(e, "error"));
        }
        for w in warnings {
            eprint!("{}", human(w, "warning"));
        }
        match &catalog {
            Some(c) => summary(c, dir)?,
            None => eprintln!(
                "{} error(s){} in {}",
                errors.0.len(),
                if errors.is_unusable_dir() {
                    ""
                } else {
                    " (warnings are listed once the errors are fixed)"
                },
                dir.display()
            ),
        }
    }
    Ok(match catalog {
        Some(_) => ExitCode::SUCCESS,
        None if errors.is_unusable_dir() => ExitCode::from(EXIT_UNUSABLE_DIR),
        None => ExitCode::FAILURE,
    })
}

/// `file:line:col: error[code]: message`, then `  hint: ...`.
fn human(e: &ManifestError, severity: &str) -> String {
    let mut text = format!("{}: {severity}[{}]: {}\n", e.location(), e.code, e.message);
    if let Some(hint) = &e.hint {
        text.push_str(&format!("  hint: {hint}\n"));
    }
    text
}

fn diagnostic(e: &ManifestError, severity: &str) -> Value {
    json!({
        "file": e.file,
        "line": e.line,
        "column": e.column,
        "severity": severity,
        "code": e.code,
        "message": e.message,
        "hint": e.hint,
    })
}

/// What a valid directory holds, on stdout.
fn summary(c: &Catalog, dir: &Path) -> anyhow::Result<()> {
    let warned = if c.warnings.is_empty() {
        String::new()
    } else {
        format!(", {} warning(s)", c.warnings.len())
    };
    outln!(
        "ok: {} file(s), {} tool(s), {} agent(s) in {}{warned}",
        c.sources.len(),
        c.tools.len(),
        c.agents.len(),
        dir.display()
    );
    match &c.policies {
        Some(p) => outln!(
            "policies: {} from {} file(s), validated; a call no permit matches is denied",
            p.len(),
            p.files().len()
        ),
        None => outln!(
            "policies: none; grants and tasks alone decide (add *.cedar files here to decide per call)"
        ),
    }
    if !c.withdrawn.is_empty() {
        let connectors: std::collections::BTreeSet<&str> =
            c.withdrawn.values().map(|w| w.connector.as_str()).collect();
        outln!(
            "upstream MCP tools, prompts and resources: {} declared, not checked against their upstream here (`tollgate connectors status` starts {} and checks them)",
            c.withdrawn.len(),
            connectors.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

pub(super) fn schema() -> anyhow::Result<ExitCode> {
    output::json(&manifest::types::json_schema())?;
    Ok(ExitCode::SUCCESS)
}
