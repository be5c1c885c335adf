//! How every command writes its result to stdout: aligned tables for
//! people, JSON for programs, and quiet handling of a closed pipe.
//!
//! One JSON convention for every `--json`: a command that lists things
//! prints one JSON array (empty when there is nothing), a command about one
//! thing prints one JSON object; both pretty-printed, nothing else on
//! stdout. Messages for people go to stderr.

use std::fmt;
use std::io::{self, Write};

use serde::Serialize;

/// Writes one line to stdout. Errors (a closed pipe) are returned, never a
/// panic: see [`is_broken_pipe`].
pub fn line(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes `bytes` to stdout as they are (a generated script or man page).
pub fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// `println!` that returns the write error with `?` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))?
    };
}
pub(crate) use outln;

/// Prints `value` (an object, or an array for list commands) as JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    line(format_args!("{text}"))?;
    Ok(())
}

/// A newly issued credential: alone on stdout (for `> file`), or with
/// `--json` inside `facts` as `"key"`.
pub fn issued(mut facts: serde_json::Value, key: &str, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        facts["key"] = serde_json::Value::String(key.to_string());
        json(&facts)
    } else {
        line(format_args!("{key}"))?;
        Ok(())
    }
}

/// A revoked credential.
pub fn revoked(key_id: &str, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        json(&serde_json::json!({ "key_id": key_id, "revoked": true }))
    } else {
        line(format_args!(
            "{key_id}: revoked; requests presenting it get 401 from now on"
        ))?;
        Ok(())
    }
}

/// Whether `e` is (caused by) writing to a closed pipe, as in
/// `tollgate tasks list --json | head -c1`: the reader has all it wanted,
/// so the command ends quietly with status 0.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(io::ErrorKind::BrokenPipe)
    })
}

/// A table: a header row and aligned columns; the last column is not
/// padded (it holds free text).
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers, all left-aligned.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns column `i` (numbers).
    pub fn right(mut self, i: usize) -> Self {
        if let Some(r) = self.right.get_mut(i) {
            *r = true;
        }
        self
    }

    /// Adds a row (one cell per header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Writes the table to stdout.
    pub fn print(&self) -> io::Result<()> {
        let text = self.render();
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// The table as text, one line per row, header first.
    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut cells = Vec::with_capacity(row.len());
            for (i, cell) in row.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                cells.push(if i == last && !self.right[i] {
                    cell.clone()
                } else if self.right.get(i).copied().unwrap_or(false) {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                });
            }
            text.push_str(cells.join("  ").trim_end());
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell_and_numbers_to_the_right() {
        let mut t = Table::new(&["AGENT", "KEYS", "DESCRIPTION"]).right(1);
        t.row(vec![
            "support-bot".into(),
            "2".into(),
            "Answers tickets".into(),
        ]);
        t.row(vec!["x".into(), "10".into(), "".into()]);
        assert_eq!(
            t.render(),
            "AGENT        KEYS  DESCRIPTION\n\
             support-bot     2  Answers tickets\n\
             x              10\n"
        );
    }

    #[test]
    fn a_broken_pipe_is_recognised_through_context() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing the task list");
        assert!(is_broken_pipe(&e));
        let other = anyhow::Error::from(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!is_broken_pipe(&other));
    }
}
