//! The audit trail: every decision kind recorded, fail closed when the
//! pre-record cannot be written (an unwritable or a stalled store),
//! tampering detected at the right record by the real `tollgate audit
//! verify`, prune with an archive that verifies, canary secrets nowhere,
//! the incident report, and `audit query`'s filters and messages.

use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tollgate::audit::seal;
use tollgate_tests::{Backend, TestGateway, args, raw_post, test_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");
const CANARY: &str = "CANARY-arg-5b2f9e71d04c";

fn call(name: &str, a: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

/// The test manifests (`trace` of `create_item` is marked sensitive).
fn manifests(url: &str) -> String {
    test_manifests(url)
}

async fn db(gw: &TestGateway) -> sqlx::SqlitePool {
    let file = gw.data.path().join("tollgate.db");
    sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap()
}

/// Everything in the trail, oldest first, after folding what the store
/// captured and flushing what is queued.
async fn trail(gw: &TestGateway) -> Vec<tollgate::store::AuditRow> {
    gw.gw.audit().fold().await.unwrap();
    gw.gw.audit().flush().await;
    gw.gw
        .store()
        .audit_records(&Default::default())
        .await
        .unwrap()
}

fn verify(gw: &TestGateway, extra: &[&str]) -> (bool, String) {
    let mut a = vec!["audit", "verify"];
    a.extend_from_slice(extra);
    let out = gw.cli(BIN, &a);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => (true, text),
        Some(1) => (false, text),
        other => panic!("audit verify exited {other:?}: {text}"),
    }
}

/// Exchanges the seqs of records `a` and `b`, as a reordering would.
async fn swap(pool: &sqlx::SqlitePool, a: i64, b: i64) {
    for (from, to) in [(a, -1), (b, a), (-1, b)] {
        sqlx::query("UPDATE audit_log SET seq = ? WHERE seq = ?")
            .bind(to)
            .bind(from)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// A scripted session: a key, a task, an allowed call with a sensitive
/// argument, a denied call, a backend failure, a bad credential, the task
/// ended, the key revoked, the agent suspended.
async fn scenario(gw: &TestGateway) -> (String, String) {
    let key = gw.issue_key("tester").await;
    let task = gw
        .start_task(
            "tester",
            &["inventory.get_item", "inventory.create_item"],
            &[],
            600,
        )
        .await;
    let client = gw.client(&task.token).await;
    let ok = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "bolt", "qty": 3, "trace": CANARY }),
        ))
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false));
    // Outside the task: refused (how the agent hears it is tested
    // elsewhere; here, that it is recorded).
    let _ = client.call_tool(call("inventory.boom", json!({}))).await;
    client.cancel().await.unwrap();
    let direct = gw.client(&key).await;
    let failed = direct
        .call_tool(call("inventory.boom", json!({})))
        .await
        .unwrap();
    assert_eq!(failed.is_error, Some(true));
    direct.cancel().await.unwrap();
    let bad = raw_post(&gw.url, Some("tgk_not-a-real-key-0000000000000"), "{}").await;
    assert_eq!(bad.status(), 401);
    tollgate::tasks::end(
        &gw.gw,
        &task.task.id,
        tollgate::store::TaskStatus::Completed,
        "ops-lead",
        "done",
    )
    .await
    .unwrap();
    let out = gw.cli(
        BIN,
        &[
            "agents",
            "suspend",
            "other",
            "--reason",
            "incident 42",
            "--by",
            "sec-lead",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    (key, task.task.id.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_kind_is_recorded_linked_and_verifies() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&manifests(&backend.url)).await;
    let (key, task) = scenario(&gw).await;
    let rows = trail(&gw).await;
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    for k in [
        "manifest.loaded",
        "agent.key_issued",
        "task.started",
        "call",
        "call.outcome",
        "auth.failure",
        "task.ended",
        "agent.status",
    ] {
        assert!(kinds.contains(&k), "no `{k}` record in {kinds:?}");
    }
    // The allowed call's pre-record and outcome are linked, in the task.
    let allowed = rows
        .iter()
        .find(|r| r.kind == "call" && r.decision.as_deref() == Some("allow"))
        .unwrap();
    assert_eq!(allowed.task_id.as_deref(), Some(task.as_str()));
    let outcome = rows
        .iter()
        .find(|r| r.ref_id.as_deref() == Some(allowed.id.as_str()))
        .expect("the outcome names its call");
    assert_eq!(outcome.outcome.as_deref(), Some("ok"));
    let body: Value = serde_json::from_str(&allowed.body).unwrap();
    assert_eq!(body["arguments"]["trace"], "<redacted>");
    assert_eq!(body["arguments"]["name"], "bolt");
    assert!(body["args_digest"].as_str().unwrap().len() >= 32);
    assert_eq!(body["owners"]["agent"]["approved_by"], "ciso");
    // The denial carries its reason code; the backend failure its status.
    assert!(rows.iter().any(|r| r.decision.as_deref() == Some("deny")
        && r.reason_code.as_deref() == Some("outside_task")));
    assert!(
        rows.iter()
            .any(|r| r.outcome.as_deref() == Some("tool_error"))
    );
    // The failed authentication: reason, the key id it claimed, from where.
    let auth = rows.iter().find(|r| r.kind == "auth.failure").unwrap();
    let b: Value = serde_json::from_str(&auth.body).unwrap();
    assert_eq!(b["reason"], "credential_invalid");
    assert!(
        b["presented"]["key_id"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );
    assert!(b["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    let status = rows.iter().find(|r| r.kind == "agent.status").unwrap();
    assert!(status.body.contains("sec-lead") && status.body.contains("incident 42"));

    // Nothing secret in the trail or its exports.
    let all = serde_json::to_string(&rows).unwrap();
    for export in ["jsonl", "ocsf"] {
        let out = gw.cli(BIN, &["audit", "export", "--format", export]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.lines().count() >= rows.len());
        for line in text.lines() {
            let _: Value = serde_json::from_str(line).unwrap();
        }
        for secret in [CANARY, key.as_str(), "tgk_not-a-real-key"] {
            assert!(!text.contains(secret), "{export} export holds {secret}");
        }
        if export == "ocsf" {
            assert!(text.contains("\"class_uid\":6003"));
        }
    }
    for secret in [CANARY, key.as_str(), "tgk_not-a-real-key"] {
        assert!(!all.contains(secret), "the trail holds {secret}");
    }

    let (ok, text) = verify(&gw, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("OK: the audit trail is intact"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_is_found_at_the_record_that_was_touched() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&manifests(&backend.url)).await;
    scenario(&gw).await;
    let rows = trail(&gw).await;
    let n = rows.len() as i64;
    assert!(n >= 10, "{n} records");
    // A signed checkpoint of the whole trail, also exported to a file.
    let file = gw.data.path().join("checkpoints.jsonl");
    let policy = seal::Policy {
        every_records: 1,
        every: Duration::from_secs(3600),
        export: Some(file.clone()),
    };
    let made = seal::checkpoint_if_due(&gw.gw, &policy, &mut None)
        .await
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(made.seq, n);
    assert!(verify(&gw, &["--checkpoints", file.to_str().unwrap()]).0);
    let pool = db(&gw).await;

    // An edited body.
    sqlx::query("UPDATE audit_log SET body = replace(body, 'bolt', 'nut') WHERE seq = 5")
        .execute(&pool)
        .await
        .unwrap();
    // (record 5 may not mention a bolt: edit the reason code too)
    sqlx::query("UPDATE audit_log SET reason_code = 'edited' WHERE seq = 5")
        .execute(&pool)
        .await
        .unwrap();
    let (ok, text) = verify(&gw, &[]);
    assert!(!ok);
    assert!(text.contains("record 5 was altered"), "{text}");
    let orig = rows.iter().find(|r| r.seq == 5).unwrap();
    sqlx::query("UPDATE audit_log SET body = ?, reason_code = ? WHERE seq = 5")
        .bind(&orig.body)
        .bind(&orig.reason_code)
        .execute(&pool)
        .await
        .unwrap();
    let (ok, text) = verify(&gw, &[]);
    assert!(ok, "restored: {text}");

    // A removed record.
    sqlx::query("DELETE FROM audit_log WHERE seq = 7")
        .execute(&pool)
        .await
        .unwrap();
    let (ok, text) = verify(&gw, &[]);
    assert!(!ok);
    assert!(text.contains("records 7..7 were removed"), "{text}");
    let r = rows.iter().find(|r| r.seq == 7).unwrap();
    sqlx::query(
        "INSERT INTO audit_log (chain, seq, id, at, kind, agent_id, task_id, tool, decision, reason_code, outcome, ref, body, prev, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.chain).bind(r.seq).bind(&r.id).bind(&r.at).bind(&r.kind).bind(&r.agent_id)
    .bind(&r.task_id).bind(&r.tool).bind(&r.decision).bind(&r.reason_code).bind(&r.outcome)
    .bind(&r.ref_id).bind(&r.body).bind(&r.prev).bind(&r.hash)
    .execute(&pool)
    .await
    .unwrap();
    let (ok, text) = verify(&gw, &[]);
    assert!(ok, "restored: {text}");

    // Two records swapped (their seqs exchanged), then swapped back.
    swap(&pool, 3, 4).await;
    let (ok, text) = verify(&gw, &[]);
    assert!(!ok);
    assert!(text.contains("record 3 was altered or moved"), "{text}");
    swap(&pool, 3, 4).await;
    let (ok, text) = verify(&gw, &[]);
    assert!(ok, "restored: {text}");

    // A forged checkpoint: a validly signed one moved to another record.
    sqlx::query("UPDATE audit_checkpoints SET seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let (ok, text) = verify(&gw, &[]);
    assert!(!ok);
    assert!(
        text.contains("the checkpoint at record 2 is its signed content does not match"),
        "{text}"
    );
    sqlx::query(
        "UPDATE audit_checkpoints SET seq = ?, signature = 'eyJhbGciOiJFUzI1NiJ9.e30.AAAA'",
    )
    .bind(n)
    .execute(&pool)
    .await
    .unwrap();
    let (ok, text) = verify(&gw, &[]);
    assert!(!ok);
    assert!(
        text.contains(&format!("the checkpoint at record {n} is")),
        "{text}"
    );

    // The tail cut together with the stored checkpoints: the exported
    // copy still knows how far the trail went.
    sqlx::query("DELETE FROM audit_checkpoints")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE seq > ?")
        .bind(n - 3)
        .execute(&pool)
        .await
        .unwrap();
    assert!(
        verify(&gw, &[]).0,
        "without the export, a cut tail looks whole"
    );
    let (ok, text) = verify(&gw, &["--checkpoints", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        text.contains(&format!("the trail ends at record {}", n - 3)),
        "{text}"
    );
    assert!(text.contains(&format!("covers record {n}")), "{text}");
    // --json for scripts: the first problem, its code and record.
    let out = gw.cli(
        BIN,
        &[
            "audit",
            "verify",
            "--json",
            "--checkpoints",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["code"], "truncated");
    assert_eq!(v["problems"][0]["seq"], n - 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_trail_refuses_the_call_and_nothing_reaches_the_backend() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&manifests(&backend.url)).await;
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    let pool = db(&gw).await;
    sqlx::query(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = backend.hits().len();
    let r = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
        .await;
    let e = format!("{r:?}");
    assert!(r.is_err(), "{e}");
    assert!(e.contains("audit"), "the agent hears why: {e}");
    assert_eq!(backend.hits().len(), before, "nothing reached the backend");
    sqlx::query("DROP TRIGGER refuse_audit")
        .execute(&pool)
        .await
        .unwrap();
    let ok = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false));
    assert_eq!(backend.hits().len(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_store_is_cut_off_by_the_timeout() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&manifests(&backend.url)).await;
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    // Warm: the session and the first records are in.
    client
        .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
        .await
        .unwrap();
    gw.gw.audit().set_timeout(Duration::from_millis(300));
    let before = backend.hits().len();
    // Another connection holds the write lock: every write waits (the
    // store's busy timeout is 5 s).
    let pool = db(&gw).await;
    let mut held = pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *held)
        .await
        .unwrap();
    let t = Instant::now();
    let r = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "2" })))
        .await;
    let took = t.elapsed();
    assert!(r.is_err(), "{r:?}");
    assert!(format!("{r:?}").contains("audit"), "{r:?}");
    assert!(
        took < Duration::from_secs(4),
        "refused by the audit timeout, not after the store's 5 s: {took:?}"
    );
    assert_eq!(backend.hits().len(), before, "nothing reached the backend");
    sqlx::query("ROLLBACK").execute(&mut *held).await.unwrap();
    drop(held);
    gw.gw.audit().set_timeout(Duration::from_secs(2));
    let ok = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "3" })))
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false));
    // The late pre-record of the refused call is closed as refused.
    let rows = trail(&gw).await;
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.reason_code.as_deref() == Some("audit_unavailable"))
        .collect();
    assert!(!refused.is_empty(), "the refusal is in the trail");
    let (ok, text) = verify(&gw, &[]);
    assert!(ok, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_the_trail_verifiable_and_the_archive_verifies() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&manifests(&backend.url)).await;
    scenario(&gw).await;
    let old = trail(&gw).await.len();
    // Two days later, more activity.
    gw.clock.advance(Duration::from_secs(2 * 86_400));
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    client
        .call_tool(call("inventory.get_item", json!({ "item_id": "9" })))
        .await
        .unwrap();
    let rows = trail(&gw).await;
    let cut = rows[old].at.clone();
    let dir = gw.data.path().join("archive");
    let out = gw.cli(
        BIN,
        &[
            "audit",
            "prune",
            "--before",
            &cut,
            "--archive-dir",
            dir.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done[0]["records"], old as u64);
    assert_eq!(done[0]["upto"], old as i64);
    let archive = done[0]["archive"].as_str().unwrap().to_string();

    let kept = gw
        .gw
        .store()
        .audit_records(&Default::default())
        .await
        .unwrap();
    assert_eq!(kept.len(), rows.len() - old);
    let (ok, text) = verify(&gw, &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("from the anchor after record {old}")),
        "{text}"
    );
    let (ok, text) = verify(&gw, &["--archive", &archive]);
    assert!(ok, "{text}");

    // An edited archive fails at the edited record.
    let body = std::fs::read_to_string(&archive).unwrap();
    let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
    lines[3] = lines[3].replacen("\"at\":\"", "\"at\":\"1", 1);
    std::fs::write(&archive, lines.join("\n") + "\n").unwrap();
    let (ok, text) = verify(&gw, &["--archive", &archive]);
    assert!(!ok);
    assert!(text.contains("record 3 was altered"), "{text}");
    // Nothing to prune twice.
    let out = gw.cli(
        BIN,
        &[
            "audit",
            "prune",
            "--before",
            &cut,
            "--archive-dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to prune"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_and_query_answer_from_the_trail() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&manifests(&backend.url)).await;
    let (_key, task) = scenario(&gw).await;
    trail(&gw).await;

    let out = gw.cli(BIN, &["audit", "report", "--agent", "tester"]);
    assert!(out.status.success(), "{out:?}");
    let md = String::from_utf8(out.stdout).unwrap();
    for fact in [
        "# Incident report: agent `tester`",
        "Trail integrity: verified",
        "biz <biz@example.com>",
        "sec <sec@example.com>",
        "Deployment approved by: ciso",
        task.as_str(),
        "integration test",
        "tester-operator",
        "inventory.create_item",
        "outside_task",
        "tool_error",
        "completed at",
        "ops-lead",
    ] {
        assert!(md.contains(fact), "the report lacks `{fact}`:\n{md}");
    }
    assert!(!md.contains(CANARY));

    let out = gw.cli(
        BIN,
        &[
            "audit",
            "query",
            "--agent",
            "tester",
            "--decision",
            "deny",
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v.is_empty());
    assert!(
        v.iter()
            .all(|r| r["decision"] == "deny" && r["agent_id"] == "tester")
    );
    let out = gw.cli(BIN, &["audit", "query", "--kind", "task.", "--task", &task]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("task.started") && table.contains("task.ended"),
        "{table}"
    );

    let out = gw.cli(BIN, &["audit", "query", "--agent", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent `nobody`"));
    let out = gw.cli(
        BIN,
        &[
            "audit",
            "query",
            "--agent",
            "other",
            "--tool",
            "inventory.purge",
        ],
    );
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no records match agent=other tool=inventory.purge")
    );
    let out = gw.cli(BIN, &["audit", "report", "--agent", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_on_the_same_manifests_records_no_new_load() {
    let backend = Backend::start().await;
    let mut gw = TestGateway::start(&manifests(&backend.url)).await;
    gw.restart().await;
    gw.restart().await;
    let loads = |rows: &[tollgate::store::AuditRow]| -> Vec<String> {
        rows.iter()
            .filter(|r| r.kind.starts_with("manifest."))
            .map(|r| r.body.clone())
            .collect()
    };
    assert_eq!(loads(&trail(&gw).await).len(), 1);
    // Changed while stopped: the next start records what changed.
    let file = gw.manifests.path().join("test.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}# edited\n")).unwrap();
    gw.restart().await;
    let bodies = loads(&trail(&gw).await);
    assert_eq!(bodies.len(), 2);
    assert!(bodies[1].contains("\"modified\""), "{}", bodies[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bad_credentials_cannot_fill_the_trail() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&manifests(&backend.url)).await;
    let flood = 300;
    let started = Instant::now();
    let sent: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter((0..flood).map(|i| {
            let url = gw.url.clone();
            async move {
                raw_post(
                    &url,
                    Some(&format!("tgk_flood-{i:04}-0000000000000000")),
                    "{}",
                )
                .await
                .status()
            }
        })),
        8,
    ))
    .await;
    let took = started.elapsed();
    assert!(sent.iter().all(|s| *s == 401));
    let recorded = trail(&gw)
        .await
        .into_iter()
        .filter(|r| r.kind == "auth.failure")
        .count();
    // A burst of 50, then 5 per second, however long the flood took.
    let allowed = 50 + (took.as_secs_f64() * 5.0).ceil() as usize + 1;
    assert!(
        recorded >= 1 && recorded <= allowed && recorded < flood,
        "{recorded} of {flood} recorded in {took:?}"
    );
    // The next one recorded after the flood counts what was left out.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = raw_post(&gw.url, Some("tgk_after-the-flood-000000000000"), "{}").await;
    assert_eq!(r.status(), 401);
    let rows = trail(&gw).await;
    let failures: Vec<Value> = rows
        .iter()
        .filter(|r| r.kind == "auth.failure")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let suppressed: u64 = failures
        .iter()
        .map(|b| b["suppressed_before"].as_u64().unwrap())
        .sum();
    assert!(
        failures.last().unwrap()["suppressed_before"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        suppressed as usize + failures.len(),
        flood + 1,
        "every failure is either recorded or counted in the next record"
    );
}

/// A denied call's record (no outcome follows, nothing stays open).
fn denial(n: usize) -> tollgate::store::DecisionRecord {
    tollgate::store::DecisionRecord {
        id: format!("race-call-{n:05}"),
        at: "2026-12-03T10:00:00Z".into(),
        agent_id: format!("racer-{}", n % 2),
        credential_id: "key_race".into(),
        transport: "http".into(),
        tool: "inventory.get_item".into(),
        connector_id: None,
        risk: None,
        args_digest: None,
        decision: "deny".into(),
        reason_code: "no_grant".into(),
        reason: format!("call {n}"),
        outcome: None,
        outcome_code: None,
        backend_status: None,
        latency_us: None,
        owners: None,
        task_id: None,
        policy: None,
        arguments: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_chain_lose_nothing_and_fold_each_pending_record_once() {
    use std::sync::Arc;
    use tollgate::audit::{Audit, Entry};
    use tollgate::store::{SqliteStore, Store};

    // Two processes' worth of store and writer on one file and one chain
    // (serve and a CLI folding records, or a replica misconfigured onto
    // another's chain): each keeps its own connections and its own queue.
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        Arc::new(Audit::new(store, "main", Arc::new(|_| {})))
    };
    let (a, b) = (open().await, open().await);
    // Records captured by triggers, waiting to be folded by whichever
    // writer gets to them first.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("tollgate.db").display()
    ))
    .await
    .unwrap();
    let pending = 400;
    for i in 0..pending {
        sqlx::query("INSERT INTO audit_pending (at, kind, body) VALUES (?, 'test.pending', ?)")
            .bind("2026-12-03T10:00:00Z")
            .bind(json!({ "n": i }).to_string())
            .execute(&pool)
            .await
            .unwrap();
    }
    let per_task = 60;
    let tasks = 6;
    let mut running = Vec::new();
    for (w, audit) in [(0, a.clone()), (1, b.clone())] {
        for t in 0..tasks {
            let audit = audit.clone();
            running.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let n = (w * tasks + t) * per_task + i;
                    audit
                        .append_durable(Entry::call(&denial(n)))
                        .await
                        .unwrap_or_else(|e| panic!("append {n} failed: {e}"));
                    if i % 20 == 0 {
                        audit.fold().await.unwrap();
                    }
                }
            }));
        }
    }
    for r in running {
        r.await.unwrap();
    }
    a.fold().await.unwrap();
    b.fold().await.unwrap();
    a.flush().await;
    b.flush().await;

    let rows = a.store().audit_records(&Default::default()).await.unwrap();
    let calls = rows.iter().filter(|r| r.kind == "call").count();
    assert_eq!(
        calls,
        2 * tasks * per_task,
        "every durable append is in the trail"
    );
    let mut folded: Vec<i64> = rows
        .iter()
        .filter(|r| r.kind == "test.pending")
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    folded.sort_unstable();
    assert_eq!(
        folded,
        (0..pending).collect::<Vec<i64>>(),
        "each pending record folded exactly once"
    );
    let mut seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=rows.len() as i64).collect::<Vec<_>>(),
        "one chain, no gaps, no forks"
    );
    let secrets = tollgate::secrets::Secrets::load_or_create(dir.path()).unwrap();
    let report = tollgate::audit::verify::verify(a.store(), &secrets, None)
        .await
        .unwrap();
    assert!(report.ok, "{:?}", report.problems);
}
