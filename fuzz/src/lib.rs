//! Fuzz harnesses for Tollgate. Each module owns one target: it turns the
//! fuzzer's bytes into a call on a public entry point of the gateway and
//! checks a property, panicking when it does not hold. The binaries in
//! `src/bin/` hand these functions to `afl::fuzz!`; outside AFL the same
//! binaries read one input from stdin, which is how a finding is replayed.
//!
//! The harnesses build their state (a SQLite store in a scratch directory,
//! signing keys, a backend on port 0) once per process, so AFL's
//! persistent mode runs thousands of inputs against one gateway.

pub mod constraint;
pub mod jsonrpc;
pub mod jwt;
pub mod manifest;
pub mod task_token;

use std::path::PathBuf;
use std::sync::Arc;

use tollgate::Gateway;
use tollgate::manifest::{Source, load_sources};
use tollgate::store::{SqliteStore, Store};

/// The agent every stateful target acts as.
pub const AGENT: &str = "fuzzer";

/// Tools granted to [`AGENT`]; `inventory.purge` exists but is not granted.
pub const GRANTED: [&str; 2] = ["inventory.get_item", "inventory.create_item"];

/// A manifest set with one HTTP connector in front of `backend_url` and one
/// agent, in the shape the shipped manifests have.
pub fn manifests(backend_url: &str) -> String {
    format!(
        r#"kind: Connector
id: inventory
description: Fuzzed inventory API
owners:
  system: {{ name: inventory-team, contact: inv@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http:
  base_url: {backend_url}/api
  timeout_ms: 2000
tools:
  - name: get_item
    description: Read an item
    risk: low
    annotations: {{ read_only: true }}
    input_schema:
      type: object
      properties:
        item_id: {{ type: string, minLength: 1 }}
        verbose: {{ type: boolean }}
      required: [item_id]
      additionalProperties: false
    http:
      request: {{ method: GET, path: "/items/{{item_id}}", query: {{ v: verbose }} }}
  - name: create_item
    description: Create an item
    risk: medium
    input_schema:
      type: object
      properties:
        name: {{ type: string }}
        qty: {{ type: integer, minimum: 0 }}
      required: [name, qty]
    http:
      request: {{ method: POST, path: /items }}
  - name: purge
    description: Granted to nobody
    risk: critical
    input_schema: {{ type: object }}
    http:
      request: {{ method: DELETE, path: /items }}
---
kind: Agent
id: {AGENT}
description: The fuzzer's agent
owners:
  business: {{ name: biz, contact: biz@example.com }}
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [inventory.get_item, inventory.create_item]
"#
    )
}

/// A scratch directory of this process, `$TMPDIR/tollgate-fuzz/<target>-<pid>`.
///
/// AFL ends each persistent child without running destructors, so a
/// `TempDir` would leak one directory per child; instead each child
/// removes the directories of children that are no longer alive.
pub fn scratch_dir(target: &str) -> PathBuf {
    let root = std::env::temp_dir().join("tollgate-fuzz");
    let prefix = format!("{target}-");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix) else {
                continue;
            };
            if !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(format!("{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch directory");
    dir
}

/// The real gateway over a SQLite file and signing keys in `data`, with
/// [`manifests`] in front of `backend_url`, and a live key for [`AGENT`].
pub async fn gateway(data: &std::path::Path, backend_url: &str) -> (Arc<Gateway>, String) {
    let catalog = load_sources(&[Source {
        path: "fuzz.yaml".into(),
        text: manifests(backend_url),
    }])
    .unwrap_or_else(|e| panic!("the fuzz manifests do not load: {e}"));
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(data)
            .await
            .expect("cannot open the SQLite store"),
    );
    let secrets =
        tollgate::secrets::Secrets::load_or_create(data).expect("cannot create signing keys");
    let gw = Arc::new(Gateway::new(catalog, store, secrets));
    let key = tollgate::pipeline::authenticate::new_key();
    gw.store()
        .insert_key(
            &key.key_id,
            AGENT,
            &key.hash,
            None,
            "2026-01-01T00:00:00.000000Z",
        )
        .await
        .expect("cannot insert the agent key");
    (gw, key.key)
}

/// Splits `data` at NUL bytes into at most `n` parts (the last part keeps
/// any further NULs), so one input can carry several fields.
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |b| *b == 0).collect()
}

/// A single-threaded Tokio runtime for one harness process.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a Tokio runtime")
}
