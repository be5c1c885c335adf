//! Target `manifest`: `tollgate::manifest::load_sources`, the function
//! behind `load_dir` that splits files into documents, parses each in two
//! passes and checks cross references.
//!
//! Input: up to two manifest files separated by a NUL byte (cross-file
//! references are checked too), as UTF-8 (lossy).
//!
//! Properties: never panics; every error names one of the given files, a
//! line inside that file (1-based, at most one past its last line, which is
//! where a parser reports an unexpected end; CR, LF and CRLF each end a
//! line, as in YAML) and a non-empty message.

use std::path::PathBuf;

use tollgate::manifest::{Source, load_sources};

/// Runs one input.
pub fn run(data: &[u8]) {
    let sources: Vec<Source> = crate::fields(data, 2)
        .into_iter()
        .enumerate()
        .map(|(i, text)| Source {
            // In a directory of its own so a `file:` reference resolves
            // under it, never next to whatever the fuzzer runs in.
            path: PathBuf::from(format!("/nonexistent/tollgate-fuzz/m{i}.yaml")),
            text: String::from_utf8_lossy(text).into_owned(),
        })
        .collect();
    match load_sources(&sources) {
        Ok(_) => {}
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result with no error");
            for e in &errors.0 {
                let source = sources
                    .iter()
                    .find(|s| s.path == e.file)
                    .unwrap_or_else(|| panic!("error names an unknown file: {e}"));
                // YAML counts a lone CR as a line break too (and so do
                // editors), so count lines the way the parser does.
                let lines = source
                    .text
                    .replace("\r\n", "\n")
                    .replace('\r', "\n")
                    .lines()
                    .count();
                assert!(
                    e.line >= 1 && e.line <= lines + 1,
                    "error line {} outside 1..={} : {e}",
                    e.line,
                    lines + 1
                );
                assert!(!e.message.trim().is_empty(), "error without a message: {e}");
            }
        }
    }
}
