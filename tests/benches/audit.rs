//! The audit trail's own costs, on a real SQLite file (see BENCHMARKS.md):
//!
//! 1. durable appends per second under concurrency (group commit: every
//!    append waits for the synced commit that holds it);
//! 2. bytes per governed call (pre-record + outcome, indexes included);
//! 3. `verify` over a million records.
//!
//! `cargo bench -p tollgate-tests --bench audit` (add `-- --records N` to
//! change the verify size; `--writers N` for the concurrency).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate::audit::{Audit, Entry, verify};
use tollgate::secrets::Secrets;
use tollgate::store::{CallOutcome, DecisionRecord, OpenCall, OutcomeUpdate, SqliteStore, Store};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A decision as the pipeline writes one for an allowed call (same
/// fields, realistic sizes).
fn decision(i: usize) -> DecisionRecord {
    DecisionRecord {
        id: format!("0193a6b2-0000-7000-8000-{i:012x}"),
        at: "2026-12-03T09:00:00.123456Z".into(),
        agent_id: "support-bot".into(),
        credential_id: "key_3f9a1c2b7d4e".into(),
        transport: "http".into(),
        tool: "orders.get_order".into(),
        connector_id: Some("orders".into()),
        risk: Some("low".into()),
        args_digest: Some(format!("hmac-sha256:{:064x}", i)),
        decision: "allow".into(),
        reason_code: "allowed".into(),
        reason: "`orders.get_order` is granted to `support-bot` and the arguments match its schema; within task `tsk_01` (\"Answer ticket 4711\"); permitted by support-reads".into(),
        outcome: None,
        outcome_code: None,
        backend_status: None,
        latency_us: None,
        owners: Some(json!({
            "agent": {
                "business": { "name": "head-of-support", "contact": "support-lead@example.com" },
                "system": { "name": "platform-team", "contact": "platform@example.com" },
                "security": { "name": "secops", "contact": "secops@example.com" },
                "approved_by": "ciso", "approved_at": "2026-01-15",
            },
            "connector": {
                "system": { "name": "orders-team", "contact": "orders@example.com" },
                "security": { "name": "secops", "contact": "secops@example.com" },
            },
        })),
        task_id: Some("tsk_0193a6b2c4d5".into()),
        policy: Some(json!({ "verdict": "allow", "code": "allowed", "policies": ["support-reads"], "summary": "permitted by support-reads" })),
        arguments: Some(json!({ "order_id": format!("A-{i}") })),
    }
}

fn outcome_of(d: &DecisionRecord) -> Entry {
    Entry::outcome(
        &OpenCall {
            id: d.id.clone(),
            agent_id: d.agent_id.clone(),
            task_id: d.task_id.clone(),
            tool: d.tool.clone(),
        },
        &d.at,
        &OutcomeUpdate {
            outcome: CallOutcome::Ok,
            outcome_code: None,
            backend_status: Some(200),
            latency_us: 1234,
        },
    )
}

async fn open(dir: &std::path::Path) -> (Arc<dyn Store>, Arc<Audit>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).await.unwrap());
    let audit = Arc::new(Audit::new(store.clone(), "main", Arc::new(|_| {})));
    (store, audit)
}

/// Bytes of the database's pages in use, after folding the WAL into the
/// file (free pages and the WAL's preallocation do not count).
async fn bytes_in_use(dir: &std::path::Path) -> u64 {
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("tollgate.db").display()))
            .await
            .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    let pages: i64 = sqlx::query_scalar(
        "SELECT (SELECT page_count FROM pragma_page_count) - (SELECT freelist_count FROM pragma_freelist_count)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let page: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    (pages * page) as u64
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let writers = arg("--writers", 256);
    let per_writer = arg("--per-writer", 200);
    let records = arg("--records", 1_000_000);

    // 1. Durable appends under concurrency.
    let dir = tempfile::tempdir().unwrap();
    let (_store, audit) = open(dir.path()).await;
    audit.set_timeout(Duration::from_secs(30));
    audit
        .append_durable(Entry::call(&decision(0)))
        .await
        .unwrap();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let d = decision(w * per_writer + i);
                audit.append_durable(Entry::call(&d)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = t.elapsed();
    let n = writers * per_writer;
    println!(
        "durable appends: {n} records by {writers} concurrent writers in {:.2} s = {:.0} records/s (each waited for its synced commit)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    // 2. Bytes per governed call: pre-record + outcome.
    let dir = tempfile::tempdir().unwrap();
    let (_store, audit) = open(dir.path()).await;
    let calls = 20_000;
    let empty = bytes_in_use(dir.path()).await;
    for i in 0..calls {
        let d = decision(i);
        audit.append_wait(Entry::call(&d)).await;
        audit.append_wait(outcome_of(&d)).await;
    }
    audit.flush().await;
    let used = bytes_in_use(dir.path()).await - empty;
    println!(
        "bytes per governed call (pre-record + outcome, indexes included): {} ({} calls, {:.1} MB)",
        used / calls as u64,
        calls,
        used as f64 / 1e6
    );

    // 3. verify over `records` records.
    let dir = tempfile::tempdir().unwrap();
    let (store, audit) = open(dir.path()).await;
    let t = Instant::now();
    let mut i = 0;
    while i < records {
        let d = decision(i);
        audit.append_wait(Entry::call(&d)).await;
        audit.append_wait(outcome_of(&d)).await;
        i += 2;
    }
    audit.flush().await;
    println!(
        "wrote {records} records (queued, group-committed) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let secrets = Secrets::load_or_create(dir.path()).unwrap();
    let t = Instant::now();
    let report = verify::verify(&store, &secrets, None).await.unwrap();
    let took = t.elapsed();
    assert!(report.ok, "{:?}", report.problems);
    let checked: u64 = report.chains.iter().map(|c| c.records).sum();
    assert_eq!(checked as usize, records);
    println!(
        "verify: {checked} records in {:.2} s ({:.0} records/s)",
        took.as_secs_f64(),
        checked as f64 / took.as_secs_f64()
    );
}
