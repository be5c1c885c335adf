//! `tollgate check` as a newcomer meets it: the real binary on manifests
//! written to a temporary directory. One typo is one error, errors say in
//! words what a field takes, names come with "did you mean", warnings do
//! not fail the check, and `--format json` is there for CI.

use std::process::{Command, Output};

use serde_json::Value;

const CONNECTOR: &str = "kind: Connector
id: shop
description: Shop
owners:
  system: { name: a, contact: a@example.com }
  security: { name: b, contact: b@example.com }
http:
  base_url: http://127.0.0.1:9/api
  timeout_ms: 3000
auth:
  gateway_jwt: {}
tools:
  - name: get_order
    description: Read an order
    risk: low
    input_schema:
      type: object
      properties:
        order_id: { type: string }
    http:
      request: { method: GET, path: \"/orders/{order_id}\" }
";

const AGENT: &str = "kind: Agent
id: bot
description: Bot
owners:
  business: { name: a, contact: a@example.com }
  system: { name: a, contact: a@example.com }
  security: { name: b, contact: b@example.com }
deployment: { approved_by: ciso, approved_at: 2026-01-01 }
review_by: 2099-01-01
tools: [shop.get_order]
";

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate-under-test"))
        .args(args)
        .output()
        .unwrap()
}

/// Writes `files` to a new directory and runs `check --format json` on it:
/// the exit status and the report.
fn check_json(files: &[(&str, &str)]) -> (Option<i32>, Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = tollgate(&["check", dir.path().to_str().unwrap(), "--format", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report, dir)
}

fn diagnostics<'a>(report: &'a Value, severity: &str) -> Vec<&'a Value> {
    report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == severity)
        .collect()
}

/// The one error of a broken set, or a panic listing what there was.
fn only_error(files: &[(&str, &str)]) -> Value {
    let (code, report, _dir) = check_json(files);
    assert_eq!(code, Some(1), "{report:#}");
    let errors = diagnostics(&report, "error");
    assert_eq!(errors.len(), 1, "exactly one error expected: {report:#}");
    errors[0].clone()
}

#[test]
fn the_fixture_is_valid_and_warning_free() {
    let (code, report, _dir) = check_json(&[("shop.yaml", CONNECTOR), ("bot.yaml", AGENT)]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["valid"], true);
    assert_eq!(report["diagnostics"], serde_json::json!([]), "{report:#}");
}

#[test]
fn one_typo_in_a_connector_is_one_error_not_one_per_grant() {
    let two_grants = AGENT.replace(
        "tools: [shop.get_order]",
        "tools: [shop.get_order, \"shop.*\"]",
    );
    let limits =
        format!("{two_grants}limits:\n  tools:\n    shop.get_order: {{ rate: 5/minute }}\n");
    // An unknown field, a YAML syntax error, a bad base URL: the connector
    // does not load, and the agent's grants are not reported on their own.
    for broken in [
        CONNECTOR.replace("    risk: low\n", "    risk: low\n    cost: 3\n"),
        CONNECTOR.replace("description: Shop", "description: [Shop"),
        CONNECTOR.replace("http://127.0.0.1:9/api", "not a url"),
    ] {
        let e = only_error(&[("shop.yaml", &broken), ("bot.yaml", &limits)]);
        assert_eq!(
            e["file"].as_str().map(|f| f.ends_with("shop.yaml")),
            Some(true),
            "{e:#}"
        );
        let hint = e["hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains("agent `bot`"),
            "the error says who waits on it: {e:#}"
        );
    }
    // A tool whose schema does not compile: grants of that tool wait on it.
    let bad_tool = CONNECTOR.replace("      type: object\n", "      type: string\n");
    let e = only_error(&[("shop.yaml", &bad_tool), ("bot.yaml", AGENT)]);
    assert!(
        e["message"].as_str().unwrap().contains("input_schema"),
        "{e:#}"
    );
}

#[test]
fn a_type_error_names_the_field_and_what_it_takes_in_words() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shop.yaml"),
        CONNECTOR.replace("timeout_ms: 3000", "timeout_ms: 3s"),
    )
    .unwrap();
    std::fs::write(dir.path().join("bot.yaml"), AGENT).unwrap();
    let out = tollgate(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "shop.yaml:9:15: error[type_mismatch]: `http.timeout_ms` must be a whole number of milliseconds, got `\"3s\"`"
        ),
        "{err}"
    );
    assert!(!err.contains("u64"), "no Rust type names: {err}");

    let e = only_error(&[
        ("shop.yaml", CONNECTOR),
        (
            "bot.yaml",
            &AGENT.replace("tools: [shop.get_order]", "tools: shop.get_order"),
        ),
    ]);
    assert_eq!(e["code"], "type_mismatch");
    assert_eq!(
        e["message"],
        "`tools` must be a list, got `\"shop.get_order\"`"
    );
}

/// What is misspelt, the files, the code and the hint expected.
type Case = (
    &'static str,
    Vec<(&'static str, String)>,
    &'static str,
    &'static str,
);

#[test]
fn misspelt_names_come_with_did_you_mean() {
    let cases: [Case; 5] = [
        (
            "tool name in a grant",
            vec![
                ("shop.yaml", CONNECTOR.into()),
                (
                    "bot.yaml",
                    AGENT.replace("[shop.get_order]", "[shop.get_ordr]"),
                ),
            ],
            "unknown_reference",
            "did you mean `shop.get_order`?",
        ),
        (
            "field name",
            vec![
                ("shop.yaml", CONNECTOR.into()),
                (
                    "bot.yaml",
                    AGENT.replace("description: Bot", "descripton: Bot"),
                ),
            ],
            "unknown_field",
            "did you mean `description`?",
        ),
        (
            "nested field name",
            vec![
                (
                    "shop.yaml",
                    CONNECTOR.replace("    risk: low\n", "    rsk: low\n"),
                ),
                ("bot.yaml", AGENT.into()),
            ],
            "unknown_field",
            "did you mean `risk`?",
        ),
        (
            "enum value",
            vec![
                ("shop.yaml", CONNECTOR.replace("risk: low", "risk: hgh")),
                ("bot.yaml", AGENT.into()),
            ],
            "unknown_value",
            "did you mean `high`?",
        ),
        (
            "document kind",
            vec![
                (
                    "shop.yaml",
                    CONNECTOR.replace("kind: Connector", "kind: Conector"),
                ),
                ("bot.yaml", AGENT.into()),
            ],
            "unknown_kind",
            "did you mean `Connector`?",
        ),
    ];
    for (what, files, code, hint) in cases {
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let e = only_error(&files);
        assert_eq!(e["code"], code, "{what}: {e:#}");
        assert!(
            e["hint"].as_str().unwrap_or_default().contains(hint),
            "{what}: {e:#}"
        );
    }
    let e = only_error(&[
        ("shop.yaml", &CONNECTOR.replace("risk: low", "risk: hgh")),
        ("bot.yaml", AGENT),
    ]);
    assert_eq!(
        e["message"],
        "`tools[0].risk` must be one of `low`, `medium`, `high` or `critical`, got `hgh`"
    );
}

#[test]
fn every_missing_field_is_named_in_one_error() {
    let e = only_error(&[
        ("shop.yaml", CONNECTOR),
        (
            "bot.yaml",
            "kind: Agent\nid: bot\ntools: [shop.get_order]\n",
        ),
    ]);
    assert_eq!(e["code"], "missing_field");
    assert_eq!(
        e["message"],
        "missing fields `description`, `owners`, `deployment` and `review_by`"
    );
    let e = only_error(&[
        ("shop.yaml", CONNECTOR),
        (
            "bot.yaml",
            &AGENT.replace(
                "  security: { name: b, contact: b@example.com }\n",
                "  security: {}\n",
            ),
        ),
    ]);
    assert_eq!(
        e["message"],
        "missing fields `name` and `contact` in `owners.security`"
    );
    assert_eq!(e["line"], 7);
}

#[test]
fn warnings_are_printed_and_do_not_fail_the_check() {
    let today = time::OffsetDateTime::now_utc().date();
    let day = |d: i64| (today + time::Duration::days(d)).to_string();
    let overdue = AGENT.replace("2099-01-01", &day(-1));
    let due = AGENT
        .replace("id: bot", "id: bot2")
        .replace("2099-01-01", &day(5));
    let idle = AGENT
        .replace("id: bot", "id: idle")
        .replace("[shop.get_order]", "[]");
    let open = CONNECTOR
        .replace("id: shop", "id: open")
        .replace("auth:\n  gateway_jwt: {}\n", "");
    let legacy = CONNECTOR.replace("id: shop", "id: legacy").replace(
        "gateway_jwt: {}",
        "static: { header: x-api-key, value: { env: TOLLGATE_TEST_NEVER_SET } }",
    );
    let (code, report, dir) = check_json(&[
        ("shop.yaml", CONNECTOR),
        ("open.yaml", &open),
        ("legacy.yaml", &legacy),
        ("a.yaml", &format!("{overdue}---\n{due}---\n{idle}")),
    ]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["valid"], true);
    assert!(diagnostics(&report, "error").is_empty());
    let codes: Vec<(&str, &str)> = diagnostics(&report, "warning")
        .iter()
        .map(|d| (d["code"].as_str().unwrap(), d["file"].as_str().unwrap()))
        .collect();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    for (want, in_file) in [
        ("review_overdue", "a.yaml"),
        ("review_due", "a.yaml"),
        ("nothing_granted", "a.yaml"),
        ("no_auth", "open.yaml"),
        ("static_credential", "legacy.yaml"),
        // Neither `open.get_order` nor `legacy.get_order` is granted.
        ("unreachable_tool", "open.yaml"),
        ("unreachable_tool", "legacy.yaml"),
    ] {
        assert!(
            codes.contains(&(want, file(in_file).as_str())),
            "{want} in {in_file}: {report:#}"
        );
    }
    assert_eq!(report["warnings"], codes.len());

    // In words, on stderr, after which the check still passes.
    let out = tollgate(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning[review_overdue]: agent `bot`"),
        "{err}"
    );
    assert!(
        err.contains("warning[no_auth]: connector `open` has no `auth`"),
        "{err}"
    );
    assert!(err.contains("  hint: "), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
}

#[test]
fn the_json_report_has_every_field_ci_needs() {
    let (code, report, _dir) = check_json(&[
        (
            "shop.yaml",
            &CONNECTOR.replace("timeout_ms: 3000", "timeout_ms: 3s"),
        ),
        (
            "bot.yaml",
            &AGENT.replace("description: Bot", "descripton: Bot"),
        ),
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"], 2);
    for d in report["diagnostics"].as_array().unwrap() {
        for field in ["file", "line", "column", "severity", "code", "message"] {
            assert!(!d[field].is_null(), "{field} missing in {d:#}");
        }
        assert!(d.get("hint").is_some(), "{d:#}");
        assert!(d["line"].as_u64().unwrap() > 0, "{d:#}");
        assert!(d["column"].as_u64().unwrap() > 0, "{d:#}");
    }
    // `--json` is the same.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.yaml"), CONNECTOR).unwrap();
    std::fs::write(dir.path().join("bot.yaml"), AGENT).unwrap();
    let out = tollgate(&["check", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["diagnostics"], serde_json::json!([]));
}

#[test]
fn a_directory_that_cannot_be_checked_exits_2() {
    let missing = tempfile::tempdir().unwrap().path().join("nope");
    let out = tollgate(&["check", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[unreadable_dir]"));
    let empty = tempfile::tempdir().unwrap();
    let out = tollgate(&["check", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let out = tollgate(&["check", "--format", "yaml"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let help = String::from_utf8_lossy(&tollgate(&["check", "--help"]).stdout).to_string();
    assert!(help.contains("Exit status: 0 valid"), "{help}");
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let data = tempfile::tempdir().unwrap();
    let manifests = tollgate_tests::workspace_root().join("manifests");
    for args in [
        &[
            "tasks",
            "start",
            "--agent",
            "support-bot",
            "--purpose",
            "pipe",
            "--tools",
            "helpdesk.get_ticket",
            "--json",
        ][..],
        &["check", "--format", "json"],
        &["check"],
        &["schema"],
    ] {
        // As `tollgate tasks start ... --json | head -c1`.
        let out = tollgate_tests::run_with_closed_stdout(
            env!("CARGO_BIN_EXE_tollgate-under-test"),
            data.path(),
            &manifests,
            args,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn shipped_and_example_manifests_have_no_errors() {
    let root = tollgate_tests::workspace_root();
    let mut dirs = vec![root.join("manifests")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let dir = entry.unwrap().path().join("manifests");
        if dir.is_dir() {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        let out = tollgate(&["check", dir.to_str().unwrap(), "--format", "json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{}: {report:#}", dir.display());
        assert!(diagnostics(&report, "error").is_empty(), "{report:#}");
    }
}
