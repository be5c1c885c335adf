//! The optional configuration file, `tollgate.toml`: the same settings as
//! the flags that have an environment variable, by the flag's name
//! (`listen = "127.0.0.1:8930"`, `demo-listen` or `demo_listen`).
//!
//! Precedence: flag > environment variable > file > default. The file is
//! read before the command line is parsed: each setting the command in
//! use takes, and that neither a flag nor its variable gave, is added to
//! the arguments as `--name=value`, so clap validates it like a typed flag
//! and `--help` stays the one reference. A setting for another command
//! (`listen` while running `agents list`) is left alone; a name no command
//! knows is an error with the file's line and a suggestion.
//!
//! Which file: `--config PATH` or `TOLLGATE_CONFIG` (must exist), else
//! `./tollgate.toml` when there is one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// The file read when none is named.
pub const DEFAULT_FILE: &str = "tollgate.toml";

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A named file is missing or unreadable.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("{path}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's words, with line and column.
        message: String,
    },
    /// A setting no command has, or a value of the wrong shape.
    #[error("{path}:{line}: {message}")]
    Setting {
        /// The file.
        path: PathBuf,
        /// 1-based line of the setting (0 when not found).
        line: usize,
        /// What is wrong, and what to do.
        message: String,
    },
}

/// `args` (as the process got them, program name first) with the file's
/// settings added where neither a flag nor an environment variable set
/// them. Without a file, `args` unchanged.
pub fn apply(command: Command, args: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let (path, named) = locate(&args);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !named && e.kind() == std::io::ErrorKind::NotFound => return Ok(args),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.clone(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
    let known = settings(&command);
    let setting_error = |key: &str, message: String| ConfigError::Setting {
        path: path.clone(),
        line: line_of(&text, key),
        message,
    };
    for key in table.keys() {
        if !known.iter().any(|k| *k == canonical(key)) {
            let hint = crate::manifest::closest(&canonical(key), known.iter().map(String::as_str))
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            return Err(setting_error(
                key,
                format!(
                    "unknown setting `{key}`{hint} (settings are the flags that have an environment variable: see `tollgate help` and `tollgate serve --help`)"
                ),
            ));
        }
    }
    // Which command runs, and what its arguments already say. A command
    // line clap refuses is left for the real parse to report.
    let Ok(matches) = command.clone().try_get_matches_from(&args) else {
        return Ok(args);
    };
    // The command in use, outermost first, each with its matches.
    let mut chain: Vec<(&Command, &ArgMatches)> = vec![(&command, &matches)];
    while let Some((cmd, m)) = chain.last().copied() {
        let Some((name, sub)) = m.subcommand() else {
            break;
        };
        let Some(next) = cmd.find_subcommand(name) else {
            break;
        };
        chain.push((next, sub));
    }
    let mut extra = Vec::new();
    for (key, value) in &table {
        let long = canonical(key);
        let levels: Vec<_> = chain
            .iter()
            .filter_map(|(cmd, m)| {
                cmd.get_arguments()
                    .find(|a| a.get_long() == Some(long.as_str()) && a.get_env().is_some())
                    .map(|a| (a, *m))
            })
            .collect();
        let Some((arg, _)) = levels.first() else {
            continue; // another command's setting
        };
        // A global flag is seen at every level; given anywhere, it wins.
        let given = levels.iter().any(|(a, m)| {
            matches!(
                m.value_source(a.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        });
        if given {
            continue;
        }
        let values: Vec<String> = match value {
            toml::Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    setting_error(key, format!("`{key}`: a list of plain values only"))
                })?,
            v => vec![scalar(v).ok_or_else(|| {
                setting_error(key, format!("`{key}`: a string, number or true/false"))
            })?],
        };
        for v in values {
            if arg.get_action().takes_values() {
                extra.push(OsString::from(format!("--{long}={v}")));
            } else if v == "true" {
                extra.push(OsString::from(format!("--{long}")));
            } else if v != "false" {
                return Err(setting_error(
                    key,
                    format!("`{key}` is true or false, not `{v}`"),
                ));
            }
        }
    }
    if extra.is_empty() {
        return Ok(args);
    }
    // After everything, but before a `--` that ends the options.
    let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let mut out = args;
    out.splice(at..at, extra);
    Ok(out)
}

/// The file to read, and whether it was named (then it must exist).
fn locate(args: &[OsString]) -> (PathBuf, bool) {
    let mut named = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            named = it.next().map(PathBuf::from);
        } else if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            named = Some(PathBuf::from(p));
        }
    }
    let named = named.or_else(|| std::env::var_os("TOLLGATE_CONFIG").map(PathBuf::from));
    match named {
        Some(p) if !p.as_os_str().is_empty() => (p, true),
        _ => (Path::new(DEFAULT_FILE).to_path_buf(), false),
    }
}

/// Every setting any command takes: the long names of the flags that have
/// an environment variable.
fn settings(command: &Command) -> Vec<String> {
    let mut out: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_env().is_some() && a.get_id() != "config")
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    for sub in command.get_subcommands() {
        out.extend(settings(sub));
    }
    out.sort();
    out.dedup();
    out
}

/// `demo_listen` and `demo-listen` name the same flag.
fn canonical(key: &str) -> String {
    key.replace('_', "-")
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The line where `key` is set, for the error message.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_found_by_its_key() {
        let text = "# c\nlisten = \"x\"\n  demo_listen=\"y\"\n";
        assert_eq!(line_of(text, "listen"), 2);
        assert_eq!(line_of(text, "demo_listen"), 3);
        assert_eq!(line_of(text, "data"), 0);
    }
}
