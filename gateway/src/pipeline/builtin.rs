//! The gateway's own tools, through which an agent manages its task in
//! band: `tollgate.start_task` and `tollgate.end_task`. They pass
//! authentication and admission like any call and are recorded like any
//! call; the task they start applies to the agent's following calls on the
//! same connection (HTTP session or stdio process), or, for stateless
//! clients, to requests that carry `_meta["tollgate/task"]` or the returned
//! task token.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, Tool, ToolAnnotations};
use serde_json::{Map, Value, json};
use tollgate_connectors::ToolOutput;

use super::ToolRequest;
use crate::Gateway;
use crate::store::TaskStatus;
use crate::tasks::{self, StartTask, TaskError};

/// Starts a task.
pub const START_TASK: &str = "tollgate.start_task";
/// Ends the current task.
pub const END_TASK: &str = "tollgate.end_task";

/// Whether `name` is one of the gateway's own tools.
pub fn is_builtin(name: &str) -> bool {
    lookup(name).is_some()
}

fn object(v: Value) -> Arc<Map<String, Value>> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

/// The gateway tools to list: `start_task` outside a task, `end_task` in one.
pub fn tools(in_task: bool, max_ttl: u64) -> Vec<Tool> {
    if in_task {
        let schema = object(json!({
            "type": "object",
            "properties": { "task_id": { "type": "string", "description": "Defaults to the current task." } },
            "additionalProperties": false,
        }));
        vec![
            Tool::new(
                END_TASK,
                "End the current task: its credentials are revoked at once.",
                schema,
            )
            .with_annotations(
                ToolAnnotations::new()
                    .read_only(false)
                    .destructive(false)
                    .idempotent(true),
            ),
        ]
    } else {
        let schema = object(json!({
            "type": "object",
            "properties": {
                "purpose": { "type": "string", "minLength": 1, "maxLength": 2000, "description": "What the task is for." },
                "tools": { "type": "array", "items": { "type": "string" }, "minItems": 1, "description": "Tools the task needs (names or globs within your grants)." },
                "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": max_ttl },
                "constraints": { "type": "array", "items": { "type": "string" }, "description": "Argument limits, e.g. \"amount <= 500\"." },
            },
            "required": ["purpose", "tools", "ttl_seconds"],
            "additionalProperties": false,
        }));
        vec![Tool::new(
            START_TASK,
            "Start a task: declare its purpose, the tools it needs and how long it may run. Until it ends, only those tools can be called.",
            schema,
        )
        .with_annotations(ToolAnnotations::new().read_only(false).destructive(false))]
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
        name: name.to_string(),
        arguments: None,
        task_hint: None,
        connection: connection.map(str::to_string),
    };
    let result = if name == START_TASK {
        start(gw, who, &request, current_task, args).await
    } else {
        end(gw, who, &request, current_task, args).await
    };
    result.map(|r| ToolOutput {
        text: r
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n"),
        structured: r.structured_content,
        is_error: r.is_error.unwrap_or(false),
        backend_status: None,
    })
}

type BuiltinResult = Result<CallToolResult, (&'static str, String)>;

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
        origin: "in_band",
    };
    let started = tasks::start(gw, req).await.map_err(failure)?;
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
    let mut result = CallToolResult::success(vec![ContentBlock::text(format!(
        "Task {} started until {}: {}",
        t.id,
        t.expires_at,
        t.tools.join(", ")
    ))]);
    result.structured_content = Some(body);
    Ok(result)
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
    let mut result = CallToolResult::success(vec![ContentBlock::text(format!(
        "Task {} ended; its credentials are revoked.",
        ended.id
    ))]);
    result.structured_content =
        Some(json!({ "task_id": ended.id, "status": ended.status, "ended_at": ended.ended_at }));
    Ok(result)
}
