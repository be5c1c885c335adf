//! The packaging files are checked here rather than trusted: the systemd
//! unit passes `systemd-analyze verify` with no warning and keeps its
//! sandboxing; the container file is linted (stages, non-root user, paths
//! and names that exist); the `dist` profile is what the README says.

use std::collections::BTreeSet;
use std::process::Command;

use tollgate_tests::workspace_root;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every environment variable `tollgate` and `tollgate serve` read.
fn known_variables() -> BTreeSet<String> {
    let mut help = String::new();
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split('=').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_systemd_unit_verifies_cleanly_and_stays_sandboxed() {
    let unit = read("packaging/tollgate.service");
    for line in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=tollgate",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.lines().any(|l| l.trim() == line), "missing {line}");
    }
    // systemd waits longer than the gateway's default grace period (30 s).
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec")
        .parse()
        .unwrap();
    assert!(stop > 30, "TimeoutStopSec={stop}");
    let known = known_variables();
    for var in unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|v| v.split('=').next().unwrap())
    {
        assert!(
            known.contains(var),
            "{var} is not a variable tollgate reads"
        );
    }

    // `verify` checks that ExecStart exists: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tollgate.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/tollgate serve"));
    std::fs::write(&copy, unit.replace("/usr/local/bin/tollgate", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is needed for this test (.ci/run installs systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown or misspelt directive is only a warning: refuse those too.
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_container_file_builds_from_the_repo_and_runs_as_non_root() {
    let file = read("packaging/Containerfile");
    let lines: Vec<&str> = file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("ADD ")),
        "COPY, not ADD"
    );
    let last = &lines[*stages.last().unwrap()..];
    let user = last
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the run stage names a USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "a numeric non-root user (runtimes can check it): {user}"
    );
    let entry = last
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(entry).expect("exec form, so signals reach it");
    assert_eq!(entry[0], "/usr/local/bin/tollgate");

    // What it copies from the build context exists; the profile and the
    // binary it builds are the workspace's.
    for l in lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = l.split_whitespace().collect();
        let src = parts[parts.len() - 2];
        if src != "." {
            assert!(workspace_root().join(src).exists(), "{l}: {src} missing");
        }
    }
    let build = lines
        .iter()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build");
    assert!(build.contains("--locked"), "{build}");
    let profile = build
        .split("--profile ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("--profile");
    let cargo = read("Cargo.toml");
    assert!(cargo.contains(&format!("[profile.{profile}]")), "{profile}");
    assert!(file.contains(&format!("target/{profile}/tollgate")));
    // The Rust image is at least the workspace's rust-version.
    let rust_version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let image = lines[stages[0]]
        .split("rust:")
        .nth(1)
        .and_then(|r| r.split('-').next())
        .expect("a rust image with a version");
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        parse(image) >= parse(&rust_version),
        "{image} < {rust_version}"
    );
    let known = known_variables();
    for var in file
        .split(|c: char| c.is_whitespace() || c == '\\')
        .filter(|w| w.starts_with("TOLLGATE_") && w.contains('='))
        .map(|w| w.split('=').next().unwrap())
        .filter(|v| *v != "TOLLGATE_GIT_COMMIT")
    {
        assert!(
            known.contains(var),
            "{var} is not a variable tollgate reads"
        );
    }
    // The data directory (signing keys, store) never enters the context.
    let ignore = read(".dockerignore");
    for entry in ["target/", ".tollgate/", ".git/"] {
        assert!(ignore.lines().any(|l| l == entry), ".dockerignore: {entry}");
    }
}

#[test]
fn the_dist_profile_optimises_the_whole_program_and_strips_it() {
    let cargo: toml::Table = read("Cargo.toml").parse().unwrap();
    let dist = &cargo["profile"]["dist"];
    assert_eq!(dist["inherits"].as_str(), Some("release"));
    assert_eq!(dist["lto"].as_str(), Some("fat"));
    assert_eq!(dist["codegen-units"].as_integer(), Some(1));
    assert_eq!(dist["strip"].as_str(), Some("symbols"));
}
