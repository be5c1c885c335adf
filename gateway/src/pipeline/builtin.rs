//! The gateway's own tools, through which an agent manages its task in
//! band: `tollgate.start_task` and `tollgate.end_task`. They pass
//! authentication and admission like any call and are recorded like any
//! call; the task they start applies to the agent's following calls on the
//! same connection (HTTP session or stdio process), or, for stateless
//! clients, to requests that carry `_meta["tollgate/task"]` or the returned
//! task token.
//!
//! Their arguments are normalised to and validated against exactly the
//! schema they advertise (compiled once), and refused with the same
//! `invalid_arguments` answer as a connector tool's.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tollgate_connectors::ToolOutput;

use super::ToolRequest;
use super::denial::Denial;
use crate::Gateway;
pub use crate::catalog::{END_TASK, START_TASK};
use crate::store::TaskStatus;
use crate::tasks::{self, StartTask, TaskError};

/// Most schema problems reported back for one call (as for connector tools).
const MAX_PROBLEMS: usize = 5;

fn end_schema() -> Value {
    json!({
        "type": "object",
        "properties": { "task_id": { "type": "string", "description": "Defaults to the current task." } },
        "additionalProperties": false,
    })
}

fn start_schema(max_ttl: u64) -> Value {
    json!({
        "type": "object",
        "properties": {
            "purpose": { "type": "string", "minLength": 1, "maxLength": 2000, "description": "What the task is for." },
            "tools": { "type": "array", "items": { "type": "string" }, "minItems": 1, "description": "Tools the task needs (names or globs within your grants)." },
            "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": max_ttl },
            "constraints": { "type": "array", "items": { "type": "string" }, "description": "Argument limits, e.g. \"amount <= 500\" (\"amount? <= 500\": may be absent)." },
        },
        "required": ["purpose", "tools", "ttl_seconds"],
        "additionalProperties": false,
    })
}

fn compile(schema: &Value) -> Arc<jsonschema::Validator> {
    // These schemas are written above and known valid; a failure here is a
    // programming error caught by the unit tests, never by an agent.
    Arc::new(jsonschema::validator_for(schema).expect("the gateway's own tool schemas are valid"))
}

/// The compiled schema of a gateway tool, exactly as advertised to this
/// agent (`start_task`'s TTL maximum is the agent's). Compiled once per
/// distinct maximum, then shared.
fn validator(name: &str, max_ttl: u64) -> Arc<jsonschema::Validator> {
    static END: LazyLock<Arc<jsonschema::Validator>> = LazyLock::new(|| compile(&end_schema()));
    static START: LazyLock<Mutex<HashMap<u64, Arc<jsonschema::Validator>>>> =
        LazyLock::new(Mutex::default);
    if name == END_TASK {
        return END.clone();
    }
    let mut cache = START.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(max_ttl)
        .or_insert_with(|| compile(&start_schema(max_ttl)))
        .clone()
}

/// Normalises `args` to the advertised schema of gateway tool `name` and
/// checks them against it; the problems, as for connector tools, if any.
pub fn check_arguments(
    name: &str,
    max_ttl: u64,
    args: &mut Map<String, Value>,
) -> Result<(), Denial> {
    let schema = if name == END_TASK {
        end_schema()
    } else {
        start_schema(max_ttl)
    };
    crate::args::normalize(&schema, args);
    let instance = Value::Object(std::mem::take(args));
    let problems: Vec<(String, String)> = validator(name, max_ttl)
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
    if let Value::Object(map) = instance {
        *args = map;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Denial::InvalidArguments {
            tool: name.to_string(),
            problems,
        })
    }
}

/// A gateway tool as listed: what the MCP front turns into a tool
/// definition.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayTool {
    /// Name.
    pub name: &'static str,
    /// Description for the model.
    pub description: &'static str,
    /// Input schema, exactly as enforced.
    pub input_schema: Value,
    /// Calling it twice does no more than calling it once.
    pub idempotent: bool,
}

/// The gateway tools to list: `start_task` outside a task, `end_task` in one.
pub fn tools(in_task: bool, max_ttl: u64) -> Vec<GatewayTool> {
    if in_task {
        vec![GatewayTool {
            name: END_TASK,
            description: "End the current task: its credentials are revoked at once.",
            input_schema: end_schema(),
            idempotent: true,
        }]
    } else {
        vec![GatewayTool {
            name: START_TASK,
            description: "Start a task: declare its purpose, the tools it needs and how long it may run. Until it ends, only those tools can be called.",
            input_schema: start_schema(max_ttl),
            idempotent: false,
        }]
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The gateway tool of that name, if it is one.
pub fn lookup(name: &str) -> Option<&'static str> {
    [START_TASK, END_TASK].into_iter().find(|n| *n == name)
}

/// Runs a gateway tool for a call that passed the pipeline's stages up to
/// the revocation confirmation. `current_task` is the task the request
/// named or its connection is bound to.
pub async fn run(
    gw: &Gateway,
    who: &super::Authenticated,
    name: &'static str,
    args: &Map<String, Value>,
    connection: Option<&str>,
    current_task: Option<&str>,
) -> Result<ToolOutput, (&'static str, String)> {
    let request = ToolRequest {
        within: None,
        resume: None,
        client: None,
        name: name.to_string(),
        arguments: None,
        task_hint: None,
        connection: connection.map(str::to_string),
        progress: None,
        trace_parent: None,
        kind: crate::catalog::ToolKind::Tool,
    };
    if name == START_TASK {
        start(gw, who, &request, current_task, args).await
    } else {
        end(gw, who, &request, current_task, args).await
    }
}

type BuiltinResult = Result<ToolOutput, (&'static str, String)>;

fn output(text: String, structured: Value) -> ToolOutput {
    ToolOutput {
        text,
        structured: Some(structured),
        is_error: false,
        backend_status: None,
        content: Vec::new(),
        raw: None,
        input_required: false,
    }
}

fn failure(e: TaskError) -> (&'static str, String) {
    (e.code(), e.public_message())
}

async fn start(
    gw: &Gateway,
    who: &super::Authenticated,
    request: &ToolRequest,
    current: Option<&str>,
    args: &Map<String, Value>,
) -> BuiltinResult {
    if let Some(id) = current
        && matches!(gw.store().task(id).await, Ok(Some(t)) if t.status == TaskStatus::Active)
    {
        return Err((
            "task_already_active",
            format!("task `{id}` is still active here; end it first"),
        ));
    }
    let purpose = args
        .get("purpose")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ttl = args.get("ttl_seconds").and_then(Value::as_u64).unwrap_or(0);
    let req = StartTask {
        agent_id: who.agent().id.clone(),
        purpose,
        tools: strings(args.get("tools")),
        constraints: strings(args.get("constraints")),
        ttl: Duration::from_secs(ttl),
        started_by: format!("agent:{}", who.agent().id),
        origin: tasks::ORIGIN_IN_BAND,
    };
    let credential = tasks::StartingCredential {
        id: who.credential_id().to_string(),
        expires_at: who.credential_expires_at(),
    };
    let started = tasks::start_in_band(gw, req, credential)
        .await
        .map_err(failure)?;
    if let Some(conn) = &request.connection {
        gw.bound_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn.clone(), started.task.id.clone());
    }
    let t = &started.task;
    let body = json!({
        "task_id": t.id, "purpose": t.purpose, "tools": t.tools, "constraints": t.constraints,
        "expires_at": t.expires_at, "task_token": started.token,
        "note": "This connection now works within the task. Stateless clients: send _meta {\"tollgate/task\": task_id} or use task_token as the bearer.",
    });
    let text = format!(
        "Task {} started until {}: {}",
        t.id,
        t.expires_at,
        t.tools.join(", ")
    );
    Ok(output(text, body))
}

async fn end(
    gw: &Gateway,
    who: &super::Authenticated,
    request: &ToolRequest,
    current: Option<&str>,
    args: &Map<String, Value>,
) -> BuiltinResult {
    let id = args
        .get("task_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| current.map(str::to_string));
    let Some(id) = id else {
        return Err(("task_unknown", "there is no current task to end".into()));
    };
    // Only the agent's own task; another agent's id is "unknown".
    match gw.store().task(&id).await {
        Ok(Some(t)) if t.agent_id == who.agent().id => {}
        Ok(_) => return Err(("task_unknown", format!("no task `{id}` for this agent"))),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a task");
            return Err((
                "task_unavailable",
                "the task could not be read right now".into(),
            ));
        }
    }
    let by = format!("agent:{}", who.agent().id);
    let ended = tasks::end(gw, &id, TaskStatus::Completed, &by, "ended by the agent")
        .await
        .map_err(failure)?;
    if let Some(conn) = &request.connection {
        gw.bound_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(conn);
    }
    let text = format!("Task {} ended; its credentials are revoked.", ended.id);
    Ok(output(
        text,
        json!({ "task_id": ended.id, "status": ended.status, "ended_at": ended.ended_at }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn problems(name: &str, v: Value) -> Vec<(String, String)> {
        match check_arguments(name, 3600, &mut args(v)) {
            Ok(()) => vec![],
            Err(Denial::InvalidArguments { problems, .. }) => problems,
            Err(other) => panic!("unexpected denial {other:?}"),
        }
    }

    #[test]
    fn the_advertised_schemas_are_the_ones_enforced() {
        for (in_task, name) in [(false, START_TASK), (true, END_TASK)] {
            let listed = tools(in_task, 900);
            assert_eq!(listed[0].name, name);
            let shown = listed[0].input_schema.clone();
            let expected = if in_task {
                end_schema()
            } else {
                start_schema(900)
            };
            assert_eq!(shown, expected);
        }
        let ok = json!({ "purpose": "p", "tools": ["a.b"], "ttl_seconds": 60 });
        assert!(problems(START_TASK, ok).is_empty());
        // The per-agent maximum is the one advertised to that agent.
        let long = json!({ "purpose": "p", "tools": ["a.b"], "ttl_seconds": 901 });
        assert!(check_arguments(START_TASK, 900, &mut args(long.clone())).is_err());
        assert!(check_arguments(START_TASK, 3600, &mut args(long)).is_ok());
    }

    #[test]
    fn unknown_wrong_and_missing_arguments_are_refused() {
        let p = problems(
            START_TASK,
            json!({ "purpose": "p", "tools": ["a.b"], "ttl_seconds": 60, "sudo": true }),
        );
        assert!(p.iter().any(|(_, m)| m.contains("sudo")), "{p:?}");
        let p = problems(
            START_TASK,
            json!({ "purpose": "p", "tools": "a.b", "ttl_seconds": "60" }),
        );
        assert!(p.iter().any(|(at, _)| at == "/tools"), "{p:?}");
        assert!(p.iter().any(|(at, _)| at == "/ttl_seconds"), "{p:?}");
        let p = problems(START_TASK, json!({ "tools": ["a.b"], "ttl_seconds": 60 }));
        assert!(p.iter().any(|(_, m)| m.contains("purpose")), "{p:?}");
        let p = problems(END_TASK, json!({ "task_id": 7, "force": true }));
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn an_integral_ttl_written_as_a_float_is_normalised_then_accepted() {
        let mut a = args(json!({ "purpose": "p", "tools": ["a.b"], "ttl_seconds": 60.0 }));
        assert!(check_arguments(START_TASK, 3600, &mut a).is_ok());
        assert_eq!(a["ttl_seconds"].as_u64(), Some(60));
    }
}
