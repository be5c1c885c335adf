//! Reading `.cedar` files: parse, give each policy an id and a line, read
//! Tollgate's annotations, validate against the schema. Every error names
//! its file and line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

use cedar_policy::{Effect, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use super::{Matched, PolicySource};

/// A problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Who must approve, as a policy declares it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ApprovalRule {
    pub route: String,
    pub count: u32,
    pub timeout_seconds: u64,
    /// `@approval_reason("hidden")`: a denial tells the agent neither who
    /// denied nor why.
    pub hide_reason: bool,
}

/// One policy's metadata.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub id: String,
    pub effect: Effect,
    pub file: PathBuf,
    pub line: usize,
    pub reason: Option<String>,
    /// `None`: not said (the tool's risk decides); `Some(None)`:
    /// `@approval("none")`; `Some(Some(rule))`: approval required.
    pub approval: Option<Option<ApprovalRule>>,
    /// `@task_constraints("approval")`.
    pub step_up_constraints: bool,
}

impl Rule {
    pub(super) fn matched(&self) -> Matched {
        Matched {
            id: self.id.clone(),
            effect: match self.effect {
                Effect::Permit => "permit",
                Effect::Forbid => "forbid",
            },
            file: self.file.display().to_string(),
            line: self.line,
            reason: self.reason.clone(),
        }
    }
}

/// Annotations Tollgate reads; any other is an error (a typo must not
/// silently drop an approval).
const KNOWN: &[&str] = &[
    "id",
    "reason",
    "approval",
    "approvals",
    "approval_timeout",
    "approval_reason",
    "task_constraints",
];

/// Parses every file into one set, then validates it against `schema`.
/// A validated set, its rules by id, and the dormant policies (about
/// withdrawn tools only), set aside.
pub(super) type Parsed = (PolicySet, HashMap<PolicyId, Rule>, Vec<Rule>);

pub(super) fn parse(
    sources: &[PolicySource],
    schema: &Schema,
    withdrawn: &std::collections::BTreeSet<String>,
) -> Result<Parsed, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut dormant = Vec::new();
    let mut set = PolicySet::new();
    let mut rules: HashMap<PolicyId, Rule> = HashMap::new();
    let texts: HashMap<PathBuf, &str> = sources
        .iter()
        .map(|s| (s.path.clone(), s.text.as_str()))
        .collect();
    for src in sources {
        let parsed = match PolicySet::from_str(&src.text) {
            Ok(p) => p,
            Err(e) => {
                diagnostic_errors(&src.path, &src.text, &e, &mut errors);
                continue;
            }
        };
        let starts = policy_starts(&src.text);
        let mut policies: Vec<_> = parsed
            .policies()
            .filter_map(|p| {
                let n: usize = p.id().to_string().strip_prefix("policy")?.parse().ok()?;
                Some((n, p.clone()))
            })
            .collect();
        policies.sort_by_key(|(n, _)| *n);
        for (n, policy) in policies {
            let offset = starts.get(n).copied().unwrap_or(0);
            let (line, column) = line_col(&src.text, offset);
            let at = |message: String| PolicyError {
                file: src.path.clone(),
                line,
                column,
                message,
            };
            let stem = src
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let id = policy
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{stem}:{line}"));
            let rule = match read_rule(&policy, id.clone(), src.path.clone(), line) {
                Ok(r) => r,
                Err(message) => {
                    errors.push(at(message));
                    continue;
                }
            };
            // A policy only about tools withdrawn now (an upstream that is
            // down, or changed a pinned definition) cannot decide any call
            // (a withdrawn tool is refused before policy), and cannot be
            // validated (the tool's arguments are unknown): it sleeps until
            // they return, rather than keeping the withdrawal from taking
            // effect.
            if only_withdrawn(&policy, withdrawn) {
                dormant.push(rule);
                continue;
            }
            let pid = PolicyId::new(&id);
            if let Some(first) = rules.get(&pid) {
                errors.push(at(format!(
                    "policy id `{id}` is already used at {}:{}",
                    first.file.display(),
                    first.line
                )));
                continue;
            }
            if let Err(e) = set.add(policy.new_id(pid.clone())) {
                errors.push(at(e.to_string()));
                continue;
            }
            rules.insert(pid, rule);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    for e in result.validation_errors() {
        let rule = rules.get(e.policy_id());
        let file = rule.map(|r| r.file.clone()).unwrap_or_default();
        let text = texts.get(&file).copied().unwrap_or("");
        let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
        let (line, column) = match offset {
            Some(o) => line_col(text, o),
            None => (rule.map_or(0, |r| r.line), 0),
        };
        let mut message = e.to_string();
        if let Some(help) = e.help() {
            message.push_str(&format!(" ({help})"));
        }
        errors.push(PolicyError {
            file,
            line,
            column,
            message,
        });
    }
    if errors.is_empty() {
        Ok((set, rules, dormant))
    } else {
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Err(errors)
    }
}

/// Whether every action a policy's scope names is a withdrawn tool.
fn only_withdrawn(
    policy: &cedar_policy::Policy,
    withdrawn: &std::collections::BTreeSet<String>,
) -> bool {
    let named = |u: &cedar_policy::EntityUid| withdrawn.contains(u.id().unescaped());
    match policy.action_constraint() {
        cedar_policy::ActionConstraint::Any => false,
        cedar_policy::ActionConstraint::Eq(u) => named(&u),
        cedar_policy::ActionConstraint::In(us) => !us.is_empty() && us.iter().all(named),
    }
}

fn read_rule(
    policy: &cedar_policy::Policy,
    id: String,
    file: PathBuf,
    line: usize,
) -> Result<Rule, String> {
    for (key, _) in policy.annotations() {
        if !KNOWN.contains(&key) {
            return Err(format!(
                "unknown annotation `@{key}`; Tollgate reads {}",
                KNOWN
                    .iter()
                    .map(|k| format!("@{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let effect = policy.effect();
    let approval_keys = [
        "approval",
        "approvals",
        "approval_timeout",
        "approval_reason",
        "task_constraints",
    ];
    if effect == Effect::Forbid
        && let Some(k) = approval_keys
            .iter()
            .find(|k| policy.annotation(k).is_some())
    {
        return Err(format!(
            "`@{k}` only makes sense on a `permit`; a `forbid` always denies"
        ));
    }
    let count = match policy.annotation("approvals") {
        None => 1,
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=10) => n,
            _ => return Err(format!("@approvals(\"{v}\") must be a number from 1 to 10")),
        },
    };
    let timeout_seconds = match policy.annotation("approval_timeout") {
        None => 900,
        Some(v) => parse_duration(v).ok_or_else(|| {
            format!("@approval_timeout(\"{v}\") must look like `90s`, `15m`, `2h` or `1d`")
        })?,
    };
    let hide_reason = match policy.annotation("approval_reason") {
        None | Some("shown") => false,
        Some("hidden") => true,
        Some(v) => {
            return Err(format!(
                "@approval_reason(\"{v}\"): use \"shown\" (the default: the agent hears who denied it and why) or \"hidden\""
            ));
        }
    };
    let approval = match policy.annotation("approval") {
        None => {
            if policy.annotation("approvals").is_some()
                || policy.annotation("approval_timeout").is_some()
                || policy.annotation("approval_reason").is_some()
            {
                return Err(
                    "@approvals, @approval_timeout and @approval_reason need @approval(\"ROUTE\")"
                        .into(),
                );
            }
            None
        }
        Some("none") => Some(None),
        Some(route) => {
            check_route(route)?;
            Some(Some(ApprovalRule {
                route: route.to_string(),
                count,
                timeout_seconds,
                hide_reason,
            }))
        }
    };
    let step_up_constraints = match policy.annotation("task_constraints") {
        None => false,
        Some("approval") => true,
        Some(v) => {
            return Err(format!(
                "@task_constraints(\"{v}\"): the only value is \"approval\" (calls outside the task's constraints step up to approval)"
            ));
        }
    };
    if step_up_constraints && approval == Some(None) {
        return Err(
            "@task_constraints(\"approval\") with @approval(\"none\") contradicts itself".into(),
        );
    }
    Ok(Rule {
        id,
        effect,
        file,
        line,
        reason: policy.annotation("reason").map(str::to_string),
        approval,
        step_up_constraints,
    })
}

fn check_route(route: &str) -> Result<(), String> {
    const FIXED: &[&str] = &[
        "owner:business",
        "owner:system",
        "owner:security",
        "connector:system",
        "connector:security",
    ];
    if FIXED.contains(&route) {
        return Ok(());
    }
    match route.strip_prefix("role:") {
        Some(name)
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "@approval(\"{route}\"): use \"none\", one of {}, or \"role:NAME\"",
            FIXED.join(", ")
        )),
    }
}

/// `90s`, `15m`, `2h`, `1d` in seconds (at most 7 days).
fn parse_duration(text: &str) -> Option<u64> {
    let (n, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    let secs = n.checked_mul(match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    })?;
    (1..=7 * 86_400).contains(&secs).then_some(secs)
}

/// The byte offset where each policy of `text` starts (annotations
/// included), in order: after leading space and comments, and after each
/// top-level `;`.
fn policy_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    let mut want_start = true;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if want_start {
            starts.push(i);
            want_start = false;
        }
        match b {
            b'"' => in_string = true,
            b';' => want_start = true,
            _ => {}
        }
        i += 1;
    }
    starts
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = &text[..offset.min(text.len())];
    let line = upto.matches('\n').count() + 1;
    let column = upto.rfind('\n').map_or(upto.len(), |n| upto.len() - n - 1) + 1;
    (line, column)
}

/// Every error a diagnostic holds (a parse can report several), located.
fn diagnostic_errors(
    file: &std::path::Path,
    text: &str,
    d: &dyn Diagnostic,
    out: &mut Vec<PolicyError>,
) {
    let related: Vec<&dyn Diagnostic> = d.related().map(|r| r.collect()).unwrap_or_default();
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let (line, column) = offset.map_or((0, 0), |o| line_col(text, o));
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message.push_str(&format!(" ({help})"));
    }
    if offset.is_some() || related.is_empty() {
        out.push(PolicyError {
            file: file.to_path_buf(),
            line,
            column,
            message,
        });
    }
    for r in related {
        diagnostic_errors(file, text, r, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_starts_skip_comments_and_strings() {
        let text = "// head; not a policy\n@id(\"a;b\")\npermit(principal, action, resource);\n\n  forbid(principal, action, resource) when { \"x;\" == \"y\" };\n";
        let starts = policy_starts(text);
        assert_eq!(starts.len(), 2);
        assert_eq!(line_col(text, starts[0]), (2, 1));
        assert_eq!(line_col(text, starts[1]), (5, 3));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("0m"), None);
        assert_eq!(parse_duration("8d"), None);
        assert_eq!(parse_duration("m"), None);
    }
}
