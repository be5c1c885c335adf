//! `tollgate keys ...`: the gateway's signing keys (task tokens, backend
//! JWTs), published at `/.well-known/jwks.json`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::output::{self, Table, outln};
use crate::secrets::Secrets;

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// List the signing keys published at /.well-known/jwks.json.
    List {
        /// Print JSON (an object: issuer and keys).
        #[arg(long)]
        json: bool,
    },
    /// Add a new signing key; older ones stay published until pruned.
    Rotate {
        /// Keep at most this many keys (at least 2).
        #[arg(long, default_value_t = 3)]
        keep: usize,
        /// Print JSON (an object: issuer and keys).
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(data: &Path, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let (secrets, as_json) = match cmd {
        KeysCommand::List { json } => (Secrets::load_or_create(data)?, json),
        KeysCommand::Rotate { keep, json } => {
            Secrets::load_or_create(data)?;
            let s = Secrets::rotate(data, keep)?;
            eprintln!("New signing key in use. A running gateway picks it up within a second.");
            (s, json)
        }
    };
    let ids = secrets.key_ids();
    // The last key signs; the others stay published so that what they
    // signed keeps verifying.
    let role = |i: usize| {
        if i + 1 == ids.len() {
            "signing"
        } else {
            "published"
        }
    };
    if as_json {
        let keys: Vec<_> = ids
            .iter()
            .enumerate()
            .map(
                |(i, (kid, created))| json!({ "kid": kid, "role": role(i), "created_at": created }),
            )
            .collect();
        output::json(&json!({ "issuer": secrets.issuer(), "keys": keys }))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("issuer  {}", secrets.issuer());
    let mut table = Table::new(&["KID", "ROLE", "CREATED"]);
    for (i, (kid, created)) in ids.iter().enumerate() {
        table.row(vec![kid.clone(), role(i).into(), created.clone()]);
    }
    table.print()?;
    Ok(ExitCode::SUCCESS)
}
