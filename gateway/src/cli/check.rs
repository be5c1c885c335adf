//! `tollgate check` (validate a manifest directory) and `tollgate schema`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::output::{self, outln};
use super::sorted;
use crate::manifest::{self, ManifestErrors};

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// Directory to check (default: --manifests).
    dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn check(default_dir: &Path, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.as_deref().unwrap_or(default_dir);
    match manifest::load_dir(dir) {
        Ok(c) => {
            if args.json {
                output::json(&json!({
                    "warnings": c.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "valid": true,
                    "files": c.sources.len(),
                    "tools": c.tools.keys().collect::<Vec<_>>(),
                    "agents": sorted(c.agents.keys()),
                    "policies": c.policies.as_ref().map(|p| json!({
                        "files": p.files(),
                        "count": p.len(),
                        "default": "deny",
                    })),
                }))?;
            } else {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                outln!(
                    "ok: {} file(s), {} tool(s), {} agent(s) in {}",
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
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ManifestErrors(errors)) => {
            if args.json {
                let list: Vec<_> = errors
                    .iter()
                    .map(|e| json!({ "file": e.file, "line": e.line, "column": e.column, "message": e.message }))
                    .collect();
                output::json(&json!({ "valid": false, "errors": list }))?;
            } else {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{} error(s) in {}", errors.len(), dir.display());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(super) fn schema() -> anyhow::Result<ExitCode> {
    output::json(&manifest::types::json_schema())?;
    Ok(ExitCode::SUCCESS)
}
