//! Admin keys over real HTTP: scoped to some agents, listed, revoked (cut
//! off on the next request), and every admin action recorded with the key
//! that did it.

use serde_json::{Value, json};
use tollgate_tests::{Backend, TestGateway, test_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

fn stdout_json(out: &std::process::Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Issues an admin key through the CLI; returns (key, key id).
fn issue(gw: &TestGateway, extra: &[&str]) -> (String, String) {
    let before: Vec<Value> = stdout_json(&gw.cli(BIN, &["admin", "list-keys", "--json"]))
        .as_array()
        .unwrap()
        .clone();
    let out = gw.cli(BIN, &[&["admin", "issue-key"], extra].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let after = stdout_json(&gw.cli(BIN, &["admin", "list-keys", "--json"]));
    let new = after
        .as_array()
        .unwrap()
        .iter()
        .find(|k| !before.contains(k))
        .unwrap();
    (key, new["key_id"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_admin_key_acts_only_on_its_agents_and_every_action_is_recorded() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let (key, key_id) = issue(&gw, &["orchestrator", "--agents", "other", "--by", "alice"]);
    let keys = stdout_json(&gw.cli(BIN, &["admin", "list-keys", "--json"]));
    assert_eq!(keys[0]["agents"], json!(["other"]));
    assert_eq!(keys[0]["name"], "orchestrator");
    assert!(keys[0]["revoked_at"].is_null());
    // A scope naming an undeclared agent is refused.
    let out = gw.cli(BIN, &["admin", "issue-key", "x", "--agents", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent `nobody`"));

    let http = reqwest::Client::new();
    let base = format!("http://{}/admin/tasks", gw.addr);
    let start = |agent: &str| {
        http.post(&base).bearer_auth(&key).json(&json!({
            "agent": agent, "purpose": "scoped", "tools": ["inventory.get_item"], "ttl_seconds": 600,
        }))
    };

    // Another agent: 403 with the reason, nothing started.
    let r = start("tester").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "agent_out_of_scope");
    assert!(body["error"].as_str().unwrap().contains("other"), "{body}");
    assert!(
        gw.gw
            .store()
            .tasks(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Its own agent: started.
    let r = start("other").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let own: Value = r.json().await.unwrap();
    let own_id = own["task_id"].as_str().unwrap().to_string();

    // An operator's task for `tester` is invisible and untouchable to it.
    let foreign = gw
        .start_task("tester", &["inventory.get_item"], &[], 600)
        .await;
    let listed: Value = http
        .get(&base)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [own_id.as_str()]);
    for request in [
        http.get(format!("{base}?agent=tester")),
        http.get(format!("{base}/{}", foreign.task.id)),
        http.post(format!("{base}/{}/end", foreign.task.id)),
    ] {
        let r = request.bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["reason"], "agent_out_of_scope");
    }
    let still = gw.gw.store().task(&foreign.task.id).await.unwrap().unwrap();
    assert_eq!(still.status.as_str(), "active");

    // Ending its own task works.
    let r = http
        .post(format!("{base}/{own_id}/end"))
        .bearer_auth(&key)
        .json(&json!({ "reason": "done" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Who did what, and when: issued by alice on the command line, the
    // task started and ended by the key.
    let actions = stdout_json(&gw.cli(BIN, &["audit", "admin", "--json"]));
    let actions = actions.as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = actions
        .iter()
        .rev()
        .map(|a| {
            (
                a["action"].as_str().unwrap(),
                a["actor"].as_str().unwrap(),
                a["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("admin_key_issued", "cli:alice", key_id.as_str()),
            ("task_started", key_id.as_str(), own_id.as_str()),
            ("task_ended", key_id.as_str(), own_id.as_str()),
        ]
    );
    assert!(
        actions
            .iter()
            .all(|a| a["at"].as_str().unwrap().len() == 27)
    );
    assert_eq!(actions[0]["agent_id"], "other");
    assert_eq!(actions[0]["detail"], "done");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_admin_key_stops_working_on_its_next_request() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let (key, key_id) = issue(&gw, &["ci"]);
    // One client: the same kept-alive connection before and after.
    let http = reqwest::Client::new();
    let base = format!("http://{}/admin/tasks", gw.addr);
    let list = || http.get(&base).bearer_auth(&key).send();
    assert_eq!(list().await.unwrap().status(), 200);

    let out = gw.cli(BIN, &["admin", "revoke-key", &key_id, "--by", "bob"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = list().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "credential_invalid");
    let started = http
        .post(&base)
        .bearer_auth(&key)
        .json(&json!({
            "agent": "tester", "purpose": "x", "tools": ["inventory.get_item"], "ttl_seconds": 60,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 401);

    let keys = stdout_json(&gw.cli(BIN, &["admin", "list-keys", "--json"]));
    assert!(keys[0]["revoked_at"].is_string());
    assert!(keys[0]["agents"].is_null());
    let actions = stdout_json(&gw.cli(BIN, &["audit", "admin", "--json"]));
    assert_eq!(actions[0]["action"], "admin_key_revoked");
    assert_eq!(actions[0]["actor"], "cli:bob");
    assert_eq!(actions[0]["target"], key_id.as_str());

    // Revoking it again is an error that says so.
    let out = gw.cli(BIN, &["admin", "revoke-key", &key_id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live admin key"));
}
