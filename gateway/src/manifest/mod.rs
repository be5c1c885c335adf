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
//!
//! Each problem is a [`ManifestError`] with a stable [`Code`] and, where it
//! helps, a hint. `diagnose.rs` rewrites serde's messages into words (the
//! field, what it takes, what it got, the nearest known name); a document
//! that fails suppresses the errors that would only follow from it (grants
//! of a connector that did not load). Warnings (review dates, connectors
//! without auth, tools nobody can reach) never fail a load.

mod diagnose;
pub(crate) use diagnose::closest;
mod load;
pub mod types;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use load::{
    ConnectorDocument, LoadOptions, Source, connector_documents, load_dir, load_dir_with,
    load_sources, load_sources_with, policy_facts,
};

/// What kind of problem a diagnostic reports. The names (`as_str`) are
/// stable: CI pipelines match on them in `tollgate check --format json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The manifest directory cannot be read.
    UnreadableDir,
    /// A manifest file cannot be read.
    Unreadable,
    /// A directory with no manifest files in it.
    NoManifests,
    /// Not valid YAML, or not a mapping.
    YamlSyntax,
    /// No `kind` in a document.
    MissingKind,
    /// A `kind` Tollgate does not know.
    UnknownKind,
    /// A field the document type does not have.
    UnknownField,
    /// Required fields left out.
    MissingField,
    /// A value of the wrong type (text where a number belongs, ...).
    TypeMismatch,
    /// A value outside a fixed set (`risk: extreme`).
    UnknownValue,
    /// A value of the right type that is still wrong (an id, a URL, a
    /// rate, a schema, ...).
    InvalidValue,
    /// A name that should point at something declared and does not (a
    /// grant, an issuer, a tool in limits).
    UnknownReference,
    /// The same id declared twice.
    Duplicate,
    /// A Cedar policy problem.
    Policy,
    /// Warning: an agent's `review_by` date has passed.
    ReviewOverdue,
    /// Warning: an agent's `review_by` date is less than 14 days away.
    ReviewDue,
    /// Warning: a connector without `auth`.
    NoAuth,
    /// Warning: a connector authenticated with a `static` secret.
    StaticCredential,
    /// Warning: a secret's environment variable or file is not there.
    SecretUnavailable,
    /// Warning: an agent granted no tool.
    NothingGranted,
    /// Warning: a tool no agent is granted.
    UnreachableTool,
}

impl Code {
    /// The stable name, e.g. `unknown_field`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::UnreadableDir => "unreadable_dir",
            Code::Unreadable => "unreadable",
            Code::NoManifests => "no_manifests",
            Code::YamlSyntax => "yaml_syntax",
            Code::MissingKind => "missing_kind",
            Code::UnknownKind => "unknown_kind",
            Code::UnknownField => "unknown_field",
            Code::MissingField => "missing_field",
            Code::TypeMismatch => "type_mismatch",
            Code::UnknownValue => "unknown_value",
            Code::InvalidValue => "invalid_value",
            Code::UnknownReference => "unknown_reference",
            Code::Duplicate => "duplicate",
            Code::Policy => "policy",
            Code::ReviewOverdue => "review_overdue",
            Code::ReviewDue => "review_due",
            Code::NoAuth => "no_auth",
            Code::StaticCredential => "static_credential",
            Code::SecretUnavailable => "secret_unavailable",
            Code::NothingGranted => "nothing_granted",
            Code::UnreachableTool => "unreachable_tool",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in one manifest file: an error (in
/// [`ManifestErrors`]) or a warning (in `Catalog::warnings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file, as given (relative paths stay relative).
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// What kind of problem it is.
    pub code: Code,
    /// What is wrong, in words, naming the field or value.
    pub message: String,
    /// What to do about it (`did you mean ...?`), when there is something
    /// to say.
    pub hint: Option<String>,
}

impl ManifestError {
    /// The same problem, under `code`.
    pub fn with_code(mut self, code: Code) -> Self {
        self.code = code;
        self
    }

    /// The same problem, with a hint (`None` leaves it without).
    pub fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    /// `file:line:column` (as much of it as is known).
    pub fn location(&self) -> String {
        let mut at = self.file.display().to_string();
        if self.line > 0 {
            at.push_str(&format!(":{}", self.line));
            if self.column > 0 {
                at.push_str(&format!(":{}", self.column));
            }
        }
        at
    }
}

/// One line, so a log or the reload record keeps it whole; `tollgate
/// check` prints the hint on a line of its own instead.
impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Every problem found in a manifest directory.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl ManifestErrors {
    /// Whether the directory itself could not be checked (unreadable, or
    /// no manifest files in it), rather than its manifests being wrong.
    pub fn is_unusable_dir(&self) -> bool {
        self.0
            .iter()
            .any(|e| matches!(e.code, Code::UnreadableDir | Code::NoManifests))
    }
}

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
