//! Authorize: is this tool granted to this agent, and do the arguments
//! match the tool's input schema?
//!
//! Contract: returns [`Authorized`] only for a tool that exists in the
//! current catalog, is granted to the agent, and whose arguments validate.
//! It touches nothing outside memory, so it is cheap and runs before
//! anything is written or sent. A tool the agent may not see is refused
//! exactly like an unknown tool (no existence leak); the record keeps the
//! real reason. The gateway's own tools (`tollgate.start_task`, ...) are
//! looked up here too, so they pass the same stages as connector tools.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::admit::Admitted;
use super::authenticate::Authenticated;
use super::denial::{Denial, capped};
use crate::args::digest as args_digest;
use crate::catalog::{AgentEntry, Catalog, ToolEntry, ToolKind};

/// Most schema problems reported back for one call.
const MAX_PROBLEMS: usize = 5;

/// Longest problem description echoed back: schema messages quote the
/// offending value, which the agent chose and may be huge.
const MAX_PROBLEM_CHARS: usize = 300;

/// What a call is for.
#[derive(Debug, Clone)]
pub enum Target {
    /// A connector's tool.
    Connector(Arc<ToolEntry>),
    /// One of the gateway's own tools (by its name).
    Gateway(&'static str),
}

impl Target {
    /// The agent-visible tool name.
    pub fn name(&self) -> &str {
        match self {
            Target::Connector(t) => &t.full_name,
            Target::Gateway(n) => n,
        }
    }
}

/// A call that passed authorization. Only [`authorize`] can build one.
#[derive(Debug)]
pub struct Authorized {
    who: Authenticated,
    target: Target,
    arguments: Map<String, Value>,
    digest: String,
}

impl Authorized {
    /// Who is calling.
    pub fn who(&self) -> &Authenticated {
        &self.who
    }
    /// What it calls.
    pub fn target(&self) -> &Target {
        &self.target
    }
    /// The connector tool it calls, if it calls one.
    pub fn tool(&self) -> Option<&Arc<ToolEntry>> {
        match &self.target {
            Target::Connector(t) => Some(t),
            Target::Gateway(_) => None,
        }
    }
    /// The validated arguments.
    pub fn arguments(&self) -> &Map<String, Value> {
        &self.arguments
    }
    /// Keyed digest of the arguments, for the record.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// A refusal from [`check_tool`], with the arguments (normalised as far as
/// they got) for the record's digest; boxed, as refusals are the cold path.
pub type Refused = Box<(Denial, Map<String, Value>)>;

/// What [`check_tool`] found: the tool and the arguments as normalised.
#[derive(Debug)]
pub enum Checked {
    /// A connector's tool, granted, with valid arguments.
    Connector(Arc<ToolEntry>, Map<String, Value>),
    /// One of the gateway's own tools, with valid arguments.
    Gateway(&'static str, Map<String, Value>),
}

/// The rule itself, for a call or an explanation: looks the tool up,
/// checks the grant, normalises and validates the arguments. A denial
/// comes back with the arguments (normalised as far as they got), for the
/// record's digest.
pub fn check_tool(
    catalog: &Catalog,
    agent: &AgentEntry,
    name: &str,
    mut arguments: Map<String, Value>,
) -> Result<Checked, Refused> {
    if let Some(builtin) = super::builtin::lookup(name) {
        // The gateway's own tools are granted to every admitted agent;
        // their arguments are normalised to and checked against exactly
        // the schema they advertise, like a connector tool's.
        let max_ttl = agent.tasks.max_ttl_seconds;
        return match super::builtin::check_arguments(builtin, max_ttl, &mut arguments) {
            Ok(()) => Ok(Checked::Gateway(builtin, arguments)),
            Err(d) => Err(Box::new((d, arguments))),
        };
    }
    let Some(tool) = catalog.tools.get(name) else {
        // A withdrawn tool says why, but only to an agent granted it:
        // anyone else cannot learn that it exists.
        if let Some(w) = catalog.withdrawn.get(name)
            && agent.granted.contains(name)
        {
            return Err(Box::new((
                Denial::ToolWithdrawn {
                    name: capped(name),
                    code: w.code,
                    why: w.why.clone(),
                },
                arguments,
            )));
        }
        return Err(Box::new((
            Denial::UnknownTool { name: capped(name) },
            arguments,
        )));
    };
    if !agent.granted.contains(name) {
        return Err(Box::new((
            Denial::NotGranted { name: capped(name) },
            arguments,
        )));
    }
    // To the types the schema declares (`4521.0` for an integer becomes
    // `4521`) before validation, so the backend receives what was declared.
    crate::args::normalize_input(&tool.tool.input_schema, &mut arguments);
    let instance = Value::Object(arguments);
    // The common case first: `is_valid` stops at nothing and allocates
    // nothing; the problems are collected only for a call that fails.
    if tool.validator.is_valid(&instance) {
        let Value::Object(arguments) = instance else {
            unreachable!("built as an object above")
        };
        return Ok(Checked::Connector(tool.clone(), arguments));
    }
    let problems: Vec<(String, String)> = tool
        .validator
        .iter_errors(&instance)
        .take(MAX_PROBLEMS)
        .map(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() {
                "(arguments)".to_string()
            } else {
                capped(&path)
            };
            (at, cap_problem(e.to_string()))
        })
        .collect();
    let Value::Object(arguments) = instance else {
        unreachable!("built as an object above")
    };
    if !problems.is_empty() {
        let d = Denial::InvalidArguments {
            tool: name.to_string(),
            problems,
        };
        return Err(Box::new((d, arguments)));
    }
    Ok(Checked::Connector(tool.clone(), arguments))
}

/// Looks the tool up, checks the grant, validates the arguments. A denial
/// comes with the arguments' digest (`digest_key`), for its record.
pub fn authorize(
    catalog: &Catalog,
    digest_key: &[u8],
    admitted: Admitted,
    name: &str,
    kind: ToolKind,
    arguments: Option<Map<String, Value>>,
) -> Result<Authorized, (Denial, String)> {
    let who = admitted.into_who();
    let digest = |a: &Map<String, Value>| args_digest(digest_key, a);
    let (target, arguments) =
        match check_tool(catalog, who.agent(), name, arguments.unwrap_or_default()) {
            // A prompt or resource is reached only by its own method, and
            // a tool only by `tools/call`: anything else is unknown.
            Ok(Checked::Connector(tool, args)) if tool.kind() != kind => {
                return Err((Denial::UnknownTool { name: capped(name) }, digest(&args)));
            }
            Ok(Checked::Gateway(_, args)) if kind != ToolKind::Tool => {
                return Err((Denial::UnknownTool { name: capped(name) }, digest(&args)));
            }
            Ok(Checked::Connector(tool, args)) => (Target::Connector(tool), args),
            Ok(Checked::Gateway(builtin, args)) => (Target::Gateway(builtin), args),
            Err(e) => {
                let (d, args) = *e;
                return Err((d, digest(&args)));
            }
        };
    let digest = digest(&arguments);
    Ok(Authorized {
        who,
        target,
        arguments,
        digest,
    })
}

fn cap_problem(text: String) -> String {
    if text.chars().count() <= MAX_PROBLEM_CHARS {
        return text;
    }
    let head: String = text.chars().take(MAX_PROBLEM_CHARS).collect();
    format!("{head}… (value cut)")
}

/// Whether a tool would be listed for this agent: it exists and is granted
/// (the same lookup and grant rule [`authorize`] applies to a call).
pub fn visible(catalog: &Catalog, who: &Authenticated, name: &str) -> bool {
    catalog.tools.contains_key(name) && who.agent().granted.contains(name)
}
