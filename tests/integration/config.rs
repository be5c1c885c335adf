//! `tollgate.toml`, shell completions, the man page and `--version`, run
//! through the real binary. The file's place in the precedence (flag >
//! environment > file > default) is observed through `check`, whose answer
//! depends on which manifest directory won.

use std::path::Path;
use std::process::{Command, Output};

use tollgate_tests::workspace_root;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

/// Runs the binary in `cwd` with no TOLLGATE_* variable but `env`.
fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TOLLGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory with a valid manifest set (`good/`), a broken one
/// (`bad/`), and no `manifests/` (the default).
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::create_dir(&good).unwrap();
    for entry in std::fs::read_dir(workspace_root().join("manifests")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, good.join(path.file_name().unwrap())).unwrap();
        }
    }
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("a.yaml"), "kind: Agent\nid: x\n").unwrap();
    dir
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let ws = workspace();
    let at = ws.path();
    // Default: ./manifests, which is not there.
    assert_eq!(run(at, &["check"], &[]).status.code(), Some(2));

    // The file names the good set.
    std::fs::write(
        at.join("tollgate.toml"),
        "# a comment\nmanifests = \"good\"\nlisten = \"127.0.0.1:9999\"\n",
    )
    .unwrap();
    let out = run(at, &["check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The environment beats the file.
    let out = run(at, &["check"], &[("TOLLGATE_MANIFESTS", "bad")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // The flag beats the environment.
    let out = run(
        at,
        &["--manifests", "good", "check"],
        &[("TOLLGATE_MANIFESTS", "bad")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // ... also after the subcommand (a global flag).
    std::fs::write(at.join("tollgate.toml"), "manifests = \"bad\"\n").unwrap();
    let out = run(at, &["check", "--manifests", "good"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Another file, named on the command line or in TOLLGATE_CONFIG.
    std::fs::write(at.join("other.toml"), "manifests = \"good\"\n").unwrap();
    let out = run(at, &["--config", "other.toml", "check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(at, &["check"], &[("TOLLGATE_CONFIG", "other.toml")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_file_value_is_checked_like_the_flag() {
    let ws = workspace();
    std::fs::write(
        ws.path().join("tollgate.toml"),
        "manifests = \"good\"\nshutdown_grace_secs = \"soon\"\n",
    )
    .unwrap();
    // `serve` takes the setting: clap refuses the value, naming the flag.
    let out = run(ws.path(), &["serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("soon") && err.contains("--shutdown-grace-secs"),
        "{err}"
    );
    // `check` does not take it, so it is left alone.
    let out = run(ws.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn mistakes_in_the_file_name_the_line_and_what_to_do() {
    let ws = workspace();
    let file = ws.path().join("tollgate.toml");
    std::fs::write(&file, "manifests = \"good\"\ndemo_lisen = \"x\"\n").unwrap();
    let out = run(ws.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("tollgate.toml:2: unknown setting `demo_lisen`; did you mean `demo-listen`?"),
        "{err}"
    );

    std::fs::write(&file, "manifests = \"good\"\nlisten = \n").unwrap();
    let out = run(ws.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("not valid TOML") && err.contains("line 2"),
        "{err}"
    );

    // A named file must exist (the default one may be absent).
    let out = run(ws.path(), &["--config", "missing.toml", "check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the configuration file missing.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definition() {
    let here = workspace_root();
    let bash = run(&here, &["completions", "bash"], &[]);
    assert!(bash.status.success());
    let script = String::from_utf8(bash.stdout).unwrap();
    for word in ["tollgate", "serve", "issue-key", "--demo-listen"] {
        assert!(script.contains(word), "{word}");
    }
    // The script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.bash");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(syntax.status.success(), "{}", stderr(&syntax));

    let zsh = run(&here, &["completions", "zsh"], &[]);
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef tollgate"));
    let bad = run(&here, &["completions", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2));

    let man = run(&here, &["man"], &[]);
    assert!(man.status.success());
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(page.contains(".TH tollgate 1"), "{page}");
    for word in [
        "tollgate\\-serve(1)",
        ".SH ENVIRONMENT",
        "TOLLGATE_DEMO_LISTEN",
        "tollgate.toml",
    ] {
        assert!(page.contains(word), "{word} in:\n{page}");
    }
    // Every page, for a man1 directory.
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &here,
        &["man", "--dir", dir.path().to_str().unwrap(), "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let files: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        files.iter().any(|f| f.ends_with("/tollgate-serve.1")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("/tollgate-agents-issue-key.1")),
        "{files:?}"
    );
    let main = std::fs::read_to_string(dir.path().join("tollgate.1")).unwrap();
    assert!(main.contains(".SH ENVIRONMENT"));
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = run(&workspace_root(), &["--version"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let want = head.unwrap_or_else(|| "unknown".into());
    assert_eq!(
        text.trim(),
        format!("tollgate {} (commit {want})", env!("CARGO_PKG_VERSION"))
    );
}
