//! The README as a newcomer follows it. Every fenced `sh` block marked
//! `<!-- readme-test -->` in README.md and docs/connectors.md runs, in
//! order, in one bash (so variables carry over, as in one terminal), with
//! `tollgate` on the PATH being the real binary, against the real binary
//! serving a copy of the manifests on port 0. When a marked block is
//! followed by a `text` block, that is its output: each line must match
//! what the block printed, line for line (`…` stands for any text; a line
//! that is only `…` for any number of lines). Facts the README states (how
//! many tools `support-bot` lists and which, the flags of the command-line
//! summary) are checked against the binary too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_tests::{ServedBinary, run_cli};

/// This checkout's root, where README.md is.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");
const MARK: &str = "<!-- readme-test -->";
/// Where the README's gateway listens; replaced by the test's address.
const README_GATEWAY: &str = "http://127.0.0.1:8930";
/// Where docs/connectors.md's gateway listens.
const CONNECTOR_GUIDE_GATEWAY: &str = "http://127.0.0.1:8940";

/// A marked shell block and the output shown after it, if any.
#[derive(Debug)]
struct Block {
    /// 1-based line of the block's opening fence.
    line: usize,
    script: String,
    expected: Option<Vec<String>>,
}

/// The marked blocks of a Markdown text. A marker not followed by a `sh`
/// block is an error, so a marker cannot silently test nothing.
fn marked_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != MARK {
            i += 1;
            continue;
        }
        i += 1;
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        assert!(
            i < lines.len() && lines[i].trim() == "```sh",
            "line {}: {MARK} must come right before a ```sh block",
            i + 1
        );
        let line = i + 1;
        let (script, next) = fenced_body(&lines, i + 1);
        i = next;
        let mut j = i;
        while j < lines.len() && lines[j].trim().is_empty() {
            j += 1;
        }
        let expected = (j < lines.len() && lines[j].trim() == "```text").then(|| {
            let (body, next) = fenced_body(&lines, j + 1);
            i = next;
            body.lines().map(str::to_string).collect()
        });
        blocks.push(Block {
            line,
            script,
            expected,
        });
    }
    blocks
}

/// The lines from `start` up to the closing fence, and the index after it.
fn fenced_body(lines: &[&str], start: usize) -> (String, usize) {
    let mut body = String::new();
    let mut i = start;
    while i < lines.len() && lines[i].trim() != "```" {
        body.push_str(lines[i]);
        body.push('\n');
        i += 1;
    }
    assert!(i < lines.len(), "line {start}: unclosed code block");
    (body, i + 1)
}

/// Does `actual` match `expected`, where `…` in `expected` is any text?
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Matches output lines against expected lines; a lone `…` skips any
/// number of lines. `Err` says where it went wrong.
fn output_matches(expected: &[String], actual: &[&str]) -> Result<(), String> {
    fn go(e: &[String], a: &[&str]) -> bool {
        match e.split_first() {
            None => a.is_empty(),
            Some((first, rest)) if first.trim() == "…" => {
                (0..=a.len()).any(|k| go(rest, &a[k..]))
            }
            Some((first, rest)) => {
                !a.is_empty()
                    && line_matches(first.trim_end(), a[0].trim_end())
                    && go(rest, &a[1..])
            }
        }
    }
    let e: Vec<String> = expected
        .iter()
        .filter(|l| !l.trim().is_empty())
        .cloned()
        .collect();
    let a: Vec<&str> = actual
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if go(&e, &a) {
        Ok(())
    } else {
        Err(format!(
            "expected (as shown):\n{}\n\nactual:\n{}",
            e.join("\n"),
            a.join("\n")
        ))
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies the YAML and Cedar files of `from` to `to`, replacing `from_addr`
/// (a demo backend's address) with `to_addr`.
fn copy_manifests(from: &Path, to: &Path, from_addr: &str, to_addr: &str) {
    std::fs::create_dir_all(to).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml" | "cedar" | "json" | "cedarschema")
        ) {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace(from_addr, to_addr);
            std::fs::write(to.join(path.file_name().unwrap()), text).unwrap();
            copied += 1;
        }
    }
    assert!(copied > 0, "no manifests in {}", from.display());
}

/// A working directory laid out like the repository (`manifests/`,
/// `docs/connector-example/`), demo backends moved to free ports, and a
/// `bin/tollgate` that is the binary under test.
struct Workdir {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Workdir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = workspace_root();
        copy_manifests(
            &root.join("manifests"),
            &dir.path().join("manifests"),
            "127.0.0.1:8931",
            &format!("127.0.0.1:{}", free_port()),
        );
        copy_manifests(
            &root.join("docs/connector-example"),
            &dir.path().join("docs/connector-example"),
            "127.0.0.1:8941",
            &format!("127.0.0.1:{}", free_port()),
        );
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(BIN, bin.join("tollgate")).unwrap();
        Self { dir, bin }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Serves `manifests` (relative to the workdir) with data in `data`.
    fn serve(&self, data: &str, manifests: &str) -> ServedBinary {
        ServedBinary::start(
            BIN,
            &self.path().join(data),
            &self.path().join(manifests),
            &[],
        )
    }

    /// Runs the marked blocks of `doc` (relative to the repository) in one
    /// bash with `replace` applied, and checks each block's shown output.
    fn run_doc(&self, doc: &str, replace: &[(&str, String)]) {
        let text = std::fs::read_to_string(workspace_root().join(doc)).unwrap();
        let blocks = marked_blocks(&text);
        let mut script = String::from("set -eo pipefail\nexec 2>&1\n");
        for (n, block) in blocks.iter().enumerate() {
            let mut body = block.script.clone();
            for (from, to) in replace {
                body = body.replace(from, to);
            }
            script.push_str(&format!("echo '@@readme-block {n}@@'\n{body}\n"));
        }
        script.push_str("echo '@@readme-done@@'\n");
        let path = std::env::var("PATH").unwrap_or_default();
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(&script)
            .current_dir(self.path())
            .env("PATH", format!("{}:{path}", self.bin.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (var, _) in std::env::vars() {
            if var.starts_with("TOLLGATE_") || var == "RUST_LOG" {
                cmd.env_remove(var);
            }
        }
        let out = run_with_timeout(cmd, Duration::from_secs(180));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut sections: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        let mut current = None;
        for l in stdout.lines() {
            if let Some(n) = l
                .strip_prefix("@@readme-block ")
                .and_then(|r| r.strip_suffix("@@"))
            {
                current = Some(n.parse::<usize>().unwrap());
                sections.insert(current.unwrap(), Vec::new());
            } else if l == "@@readme-done@@" {
                current = None;
            } else if let Some(n) = current {
                sections.get_mut(&n).unwrap().push(l);
            }
        }
        if !stdout.contains("@@readme-done@@") {
            let last = sections.keys().last().copied().unwrap_or(0);
            panic!(
                "{doc}: the block at line {} failed (status {:?}); its output:\n{}\n{}",
                blocks[last].line,
                out.status.code(),
                sections
                    .get(&last)
                    .map(|s| s.join("\n"))
                    .unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for (n, block) in blocks.iter().enumerate() {
            if let Some(expected) = &block.expected {
                let expected: Vec<String> = expected
                    .iter()
                    .map(|l| {
                        replace
                            .iter()
                            .fold(l.clone(), |l, (from, to)| l.replace(from, to))
                    })
                    .collect();
                let actual = &sections[&n];
                if let Err(why) = output_matches(&expected, actual) {
                    panic!(
                        "{doc}: the output shown after the block at line {} is not what it prints\n{why}",
                        block.line
                    );
                }
            }
        }
    }
}

fn run_with_timeout(mut cmd: Command, limit: Duration) -> std::process::Output {
    let mut child = cmd.spawn().unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the README's blocks did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

#[test]
fn the_output_matcher_can_say_no() {
    let e = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(output_matches(&e(&["a…c"]), &["abc"]).is_ok());
    assert!(output_matches(&e(&["a…c"]), &["abd"]).is_err());
    assert!(output_matches(&e(&["x", "…"]), &["x", "y", "z"]).is_ok());
    assert!(output_matches(&e(&["x"]), &["x", "y"]).is_err());
    assert!(output_matches(&e(&["x", "y"]), &["x"]).is_err());
    assert!(output_matches(&e(&["…", "z"]), &["x", "y", "z"]).is_ok());
    let blocks = marked_blocks(&format!(
        "{MARK}\n```sh\necho hi\n```\n\n```text\nhi\n```\n\n```sh\nnot marked\n```\n"
    ));
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].script, "echo hi\n");
    assert_eq!(blocks[0].expected, Some(vec!["hi".to_string()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_blocks_run_and_print_what_it_shows() {
    let text = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let blocks = marked_blocks(&text);
    // So the test cannot pass by losing its markers.
    assert!(blocks.len() >= 6, "only {} marked blocks", blocks.len());
    assert!(blocks.iter().filter(|b| b.expected.is_some()).count() >= 5);

    let work = Workdir::new();
    let gateway = work.serve(".tollgate", "manifests");
    work.run_doc(
        "README.md",
        &[(README_GATEWAY, format!("http://{}", gateway.addr))],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connector_guide_blocks_run_and_print_what_it_shows() {
    let text = std::fs::read_to_string(workspace_root().join("docs/connectors.md")).unwrap();
    let blocks = marked_blocks(&text);
    assert!(blocks.len() >= 3, "only {} marked blocks", blocks.len());
    assert!(blocks.iter().any(|b| b.script.contains("tollgate")
        && b.script.contains("check")
        && b.expected.is_some()));

    let work = Workdir::new();
    let gateway = work.serve(".tollgate-triage", "docs/connector-example");
    work.run_doc(
        "docs/connectors.md",
        &[(CONNECTOR_GUIDE_GATEWAY, format!("http://{}", gateway.addr))],
    );
}

/// English number words the README uses for counts.
fn number_word(w: &str) -> Option<usize> {
    let words = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    words
        .iter()
        .position(|x| x.eq_ignore_ascii_case(w))
        .or_else(|| w.parse().ok())
}

/// The README's "`AGENT` lists N tools: `a`, `b` ..." sentence: N and the
/// names, up to the end of the paragraph.
fn stated_tools(text: &str, agent: &str) -> (usize, Vec<String>) {
    let needle = format!("`{agent}` lists ");
    let at = text
        .find(&needle)
        .unwrap_or_else(|| panic!("README.md no longer says what {agent} lists ({needle}…)"));
    let rest = &text[at + needle.len()..];
    let count_word = rest.split_whitespace().next().unwrap();
    let count = number_word(count_word).unwrap_or_else(|| panic!("not a count: {count_word}"));
    let paragraph = rest.split("\n\n").next().unwrap();
    let names = paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|n| n.contains('.'))
        .map(str::to_string)
        .collect();
    (count, names)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tools_the_readme_says_support_bot_lists_are_the_ones_it_lists() {
    let text = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let (count, mut stated) = stated_tools(&text, "support-bot");
    stated.sort();

    let work = Workdir::new();
    let gateway = work.serve(".tollgate", "manifests");
    let out = run_cli(
        BIN,
        &work.path().join(".tollgate"),
        &work.path().join("manifests"),
        &["agents", "issue-key", "support-bot"],
    );
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let client = gateway.client(&key).await;
    let mut listed: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    listed.sort();
    client.cancel().await.unwrap();
    assert_eq!(
        count,
        listed.len(),
        "README says {count}, it lists {listed:?}"
    );
    assert_eq!(stated, listed, "the README names other tools than it lists");
}

/// The "Command line" summary: each line's subcommand and the flags it
/// names, which must all be in that subcommand's `--help`.
#[test]
fn every_flag_in_the_command_line_summary_exists() {
    let text = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = text
        .split("\n## Command line\n")
        .nth(1)
        .expect("README.md has a `## Command line` section");
    let block = section
        .split("```")
        .nth(1)
        .expect("a code block in `## Command line`");
    let mut help: BTreeMap<Vec<String>, String> = BTreeMap::new();
    let mut checked = 0;
    let mut path: Vec<String> = Vec::new();
    for raw in block.lines().skip(1) {
        // What follows two spaces is a comment.
        let raw = raw.trim_start();
        let raw = raw.split("  ").next().unwrap();
        for line in raw.split(" | ") {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if !line.starts_with('[') && !line.starts_with('-') {
                path = words
                    .iter()
                    .skip_while(|w| **w == "tollgate")
                    .take_while(|w| {
                        w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                            && w.chars()
                                .all(|c| c.is_ascii_lowercase() || c == '-' || c == '|')
                    })
                    .map(|w| w.split('|').next().unwrap().to_string())
                    .collect();
            }
            let text = help.entry(path.clone()).or_insert_with(|| {
                let out = Command::new(BIN)
                    .args(&path)
                    .arg("--help")
                    .output()
                    .unwrap();
                assert!(out.status.success(), "tollgate {path:?} --help failed");
                String::from_utf8(out.stdout).unwrap()
            });
            for flag in words.iter().filter_map(|w| {
                let w = w.trim_matches(|c: char| matches!(c, '[' | ']' | '.' | ','));
                let flag: String = w
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect();
                (flag.starts_with("--") && flag.len() > 2).then_some(flag)
            }) {
                assert!(
                    text.contains(&format!("{flag} ")) || text.contains(&format!("{flag}\n")),
                    "README's command-line summary names `{flag}` for `tollgate {}`, which its --help does not have",
                    path.join(" ")
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "only {checked} flags found in the summary");
}
