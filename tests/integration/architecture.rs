//! The map stays true to the territory: the pipeline's stage list
//! (`tollgate::pipeline::STAGES`), the stage modules on disk, the order the
//! pipeline function calls them in, and ARCHITECTURE.md's stage table all
//! agree. Adding a stage module without putting it in the pipeline and the
//! document fails here.

use std::path::Path;

use tollgate::pipeline::STAGES;
use tollgate_tests::workspace_root;

/// Files in `gateway/src/pipeline/` that are not stages.
const NOT_STAGES: &[&str] = &["mod", "denial", "builtin", "fence"];

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_stage_module_is_in_the_stage_list_and_back() {
    let dir = workspace_root().join("gateway/src/pipeline");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension().is_some_and(|x| x == "rs"))
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .filter(|s| !NOT_STAGES.contains(&s.as_str()))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = STAGES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "stage modules in gateway/src/pipeline/ and pipeline::STAGES differ"
    );
}

#[test]
fn the_pipeline_function_calls_the_stages_in_the_listed_order() {
    let src = read("gateway/src/pipeline/mod.rs");
    let body = &src[src.find("async fn run(").expect("pipeline::run")..];
    let body = &body[..body.find("\n}\n").expect("end of run")];
    let mut last = 0;
    // authenticate runs at the edge, before `run`: it is the argument.
    for stage in STAGES.iter().skip(1) {
        let at = body[last..].find(&format!("{stage}::")).unwrap_or_else(|| {
            panic!("pipeline::run does not call the `{stage}` stage after the one before it (see pipeline::STAGES)")
        });
        last += at;
    }
}

#[test]
fn architecture_md_lists_the_same_stages_in_the_same_order() {
    let doc = read("ARCHITECTURE.md");
    let section = &doc[doc
        .find("## Pipeline stages")
        .expect("ARCHITECTURE.md has a `## Pipeline stages` section")..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    // The table's first column: `| stage | module | ...`.
    let documented: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1)
        .filter_map(|l| l.split('|').nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(
        documented, STAGES,
        "ARCHITECTURE.md's stage table and pipeline::STAGES differ"
    );
    for stage in STAGES {
        assert!(
            Path::new(&workspace_root().join(format!("gateway/src/pipeline/{stage}.rs"))).exists(),
            "no module for stage `{stage}`"
        );
    }
}

#[test]
fn stages_do_not_import_the_transport() {
    for stage in STAGES.iter().chain(NOT_STAGES.iter()) {
        let src = read(&format!("gateway/src/pipeline/{stage}.rs"));
        for forbidden in ["rmcp", "axum", "hyper", "http::"] {
            let hit = src
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| {
                    l.contains(&format!("use {forbidden}"))
                        || l.contains(&format!(" {forbidden}::"))
                });
            assert!(
                !hit,
                "stage `{stage}` imports the transport (`{forbidden}`)"
            );
        }
    }
}
