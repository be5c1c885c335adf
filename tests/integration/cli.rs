//! The CLI as an operator uses it: exit codes, stdout vs stderr, messages.

use std::process::Command;

use tollgate_tests::workspace_root;

fn tollgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate-under-test"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_reports_a_typo_with_file_and_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(workspace_root().join("manifests/helpdesk.yaml")).unwrap();
    let broken = shipped.replacen("    risk: low\n", "    rsk: low\n", 1);
    let line = broken.lines().position(|l| l.contains("rsk: low")).unwrap() + 1;
    std::fs::write(dir.path().join("helpdesk.yaml"), broken).unwrap();
    let out = tollgate(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("helpdesk.yaml:{line}:")), "{err}");
    assert!(
        err.contains("error[unknown_field]: unknown field `rsk`"),
        "{err}"
    );
    assert!(err.contains("did you mean `risk`?"), "{err}");

    let out = tollgate(&["check", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["line"], line);
    assert_eq!(v["diagnostics"][0]["code"], "unknown_field");
}

#[test]
fn check_accepts_the_shipped_manifests() {
    let out = tollgate(&[
        "check",
        workspace_root().join("manifests").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
}

#[test]
fn issue_key_prints_only_the_key_and_stores_only_its_hash() {
    let data = tempfile::tempdir().unwrap();
    let manifests = workspace_root().join("manifests");
    let common = [
        "--data",
        data.path().to_str().unwrap(),
        "--manifests",
        manifests.to_str().unwrap(),
    ];
    let out = tollgate(&[&common[..], &["agents", "issue-key", "support-bot"]].concat());
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.trim();
    assert_eq!(stdout.lines().count(), 1);
    assert!(key.starts_with("tgk_") && key.len() > 40, "{key}");
    let db = std::fs::read(data.path().join("tollgate.db")).unwrap();
    let wal = std::fs::read(data.path().join("tollgate.db-wal")).unwrap_or_default();
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()));
    assert!(!wal.windows(key.len()).any(|w| w == key.as_bytes()));

    let out = tollgate(&[&common[..], &["agents", "issue-key", "nobody"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent `nobody`"));

    let out = tollgate(&[&common[..], &["agents", "list", "--json"]].concat());
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let support = v
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "support-bot")
        .unwrap();
    assert_eq!(support["keys"].as_array().unwrap().len(), 1);
    assert_eq!(support["owners"]["business"]["name"], "head-of-support");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(key));
}

#[test]
fn serve_refuses_to_start_on_broken_manifests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "kind: Agent\nid: x\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = tollgate(&[
        "--data",
        data.path().to_str().unwrap(),
        "--manifests",
        dir.path().to_str().unwrap(),
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.yaml:1:1: missing fields `description`, `owners`"),
        "{err}"
    );
}

fn in_data(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    let manifests = workspace_root().join("manifests");
    tollgate(
        &[
            &[
                "--data",
                data.to_str().unwrap(),
                "--manifests",
                manifests.to_str().unwrap(),
            ][..],
            args,
        ]
        .concat(),
    )
}

#[test]
fn issue_key_refuses_a_retired_agent() {
    let data = tempfile::tempdir().unwrap();
    let out = in_data(data.path(), &["agents", "issue-key", "support-bot"]);
    assert_eq!(out.status.code(), Some(0));
    let out = in_data(
        data.path(),
        &["agents", "retire", "support-bot", "--reason", "replaced"],
    );
    assert_eq!(out.status.code(), Some(0));

    let out = in_data(data.path(), &["agents", "issue-key", "support-bot"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no key may be printed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent `support-bot` is retired") && err.contains("replaced"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(
        &in_data(data.path(), &["agents", "show", "support-bot", "--json"]).stdout,
    )
    .unwrap();
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "no key was added");
    assert!(keys.iter().all(|k| k["revoked_at"].is_string()));
}

#[test]
fn every_list_prints_one_json_array_and_every_show_one_object() {
    let data = tempfile::tempdir().unwrap();
    in_data(data.path(), &["agents", "issue-key", "support-bot"]);
    for list in [
        &["agents", "list", "--json"][..],
        &["tasks", "list", "--json"],
        &["audit", "list", "--json"],
        &["audit", "manifests", "--json"],
        &["audit", "admin", "--json"],
        &["admin", "list-keys", "--json"],
    ] {
        let out = in_data(data.path(), list);
        assert_eq!(out.status.code(), Some(0), "{list:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{list:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert!(v.is_array(), "{list:?} printed {v}");
    }
    for show in [
        &["agents", "show", "support-bot", "--json"][..],
        &["keys", "list", "--json"],
        &["check", "--json"],
    ] {
        let out = in_data(data.path(), show);
        assert_eq!(out.status.code(), Some(0), "{show:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v.is_object(), "{show:?} printed {v}");
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let data = tempfile::tempdir().unwrap();
    in_data(data.path(), &["agents", "issue-key", "support-bot"]);
    let manifests = workspace_root().join("manifests");
    for args in [&["tasks", "list", "--json"][..], &["agents", "list"]] {
        // As `tollgate tasks list --json | head -c1`.
        let out = tollgate_tests::run_with_closed_stdout(
            env!("CARGO_BIN_EXE_tollgate-under-test"),
            data.path(),
            &manifests,
            args,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn serve_flags_read_environment_variables_named_in_help() {
    let out = tollgate(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "TOLLGATE_LISTEN",
        "TOLLGATE_STDIO",
        "TOLLGATE_ALLOWED_HOSTS",
        "TOLLGATE_ALLOWED_ORIGINS",
        "TOLLGATE_MAX_BODY_BYTES",
        "TOLLGATE_PUBLIC_URL",
        "TOLLGATE_RELOAD_INTERVAL_MS",
        "TOLLGATE_DATA",
        "TOLLGATE_MANIFESTS",
    ] {
        assert!(help.contains(var), "{var} missing from:\n{help}");
    }
    // The variable is really read: a bad value is a usage error naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-under-test"))
        .args(["serve"])
        .env("TOLLGATE_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not-an-address") && err.contains("--listen"),
        "{err}"
    );
}
