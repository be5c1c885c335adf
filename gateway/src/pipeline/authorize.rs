//! Stage 3, authorize: is this tool granted to this agent, and do the
//! arguments match the tool's input schema?
//!
//! Contract: returns [`Authorized`] only for a tool that exists in the
//! current catalog, is granted to the agent, and whose arguments validate.
//! It touches nothing outside memory, so it is cheap and runs before
//! anything is written or sent. A tool the agent may not see is refused
//! exactly like an unknown tool (no existence leak); the record keeps the
//! real reason.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::admit::Admitted;
use super::authenticate::Authenticated;
use super::denial::Denial;
use crate::catalog::{Catalog, ToolEntry};

/// Most schema problems reported back for one call.
const MAX_PROBLEMS: usize = 5;

/// A call that passed authorization. Only [`authorize`] can build one.
#[derive(Debug)]
pub struct Authorized {
    who: Authenticated,
    tool: Arc<ToolEntry>,
    arguments: Map<String, Value>,
}

impl Authorized {
    /// Who is calling.
    pub fn who(&self) -> &Authenticated {
        &self.who
    }
    /// The tool to call.
    pub fn tool(&self) -> &Arc<ToolEntry> {
        &self.tool
    }
    /// The validated arguments.
    pub fn arguments(&self) -> &Map<String, Value> {
        &self.arguments
    }
}

/// Looks the tool up, checks the grant, validates the arguments.
pub fn authorize(
    catalog: &Catalog,
    admitted: &Admitted,
    name: &str,
    arguments: Option<Map<String, Value>>,
) -> Result<Authorized, Denial> {
    let who = admitted.who();
    let tool = catalog.tools.get(name).ok_or_else(|| Denial::UnknownTool {
        name: name.to_string(),
    })?;
    if !who.agent().granted.contains(name) {
        return Err(Denial::NotGranted {
            name: name.to_string(),
        });
    }
    let arguments = arguments.unwrap_or_default();
    let instance = Value::Object(arguments);
    let problems: Vec<(String, String)> = tool
        .validator
        .iter_errors(&instance)
        .take(MAX_PROBLEMS)
        .map(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() {
                "(arguments)".to_string()
            } else {
                path
            };
            (at, e.to_string())
        })
        .collect();
    if !problems.is_empty() {
        return Err(Denial::InvalidArguments {
            tool: name.to_string(),
            problems,
        });
    }
    let Value::Object(arguments) = instance else {
        unreachable!("built as an object above")
    };
    Ok(Authorized {
        who: who.clone(),
        tool: tool.clone(),
        arguments,
    })
}
