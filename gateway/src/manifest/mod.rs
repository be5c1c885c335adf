//! Manifests: YAML files (and Cedar policy files, `*.cedar`, see
//! [`crate::policy`]) in a directory, turned into a validated
//! [`Catalog`](crate::catalog::Catalog) or a list of errors that each name a
//! file, a line and a column.
//!
//! Loading happens in two passes per document: a loose pass reads only
//! `kind`, then a strict pass deserializes the whole document into that
//! kind's type (`types.rs`), so every serde error keeps its position. Cross
//! references (grants naming tools, duplicate ids, schemas that do not
//! compile, HTTP mappings that use undeclared arguments) are checked after
//! all files are read; those errors are located by searching the document
//! for the offending value.

mod load;
pub mod types;

use std::fmt;
use std::path::PathBuf;

pub use load::{Source, load_dir, load_sources, policy_facts};

/// One problem in one manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file, as given (relative paths stay relative).
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a manifest directory.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
