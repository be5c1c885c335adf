//! Scope: does the call fit the agent's task?
//!
//! Contract: returns [`Scoped`] only when (a) the call is made within an
//! active task that lists the tool (its argument constraints are the policy
//! stage's), or (b) there is no task and none is required (the
//! agent does not require one, and the tool's risk is below `high`). The
//! task is named by the bearer (a task token), else by the request's
//! `_meta["tollgate/task"]`, else by the connection it was started on in
//! band. The task is read from the store on every call; a task that ends
//! while the call is in flight is caught by the revocation confirmation
//! (`confirm.rs`). The gateway's own tools manage tasks themselves and pass
//! through with the task they name.

use super::ToolRequest;
use super::authorize::{Authorized, Target};
use super::denial::Denial;
use crate::Gateway;
use crate::catalog::{AgentEntry, ToolEntry};
use crate::manifest::types::Risk;
use crate::store::TaskRecord;
use crate::tasks::{self, TaskError};

/// A call that fits its task (or needs none). Only [`scope`] builds one.
#[derive(Debug)]
pub struct Scoped {
    call: Authorized,
    task: Option<TaskRecord>,
    /// The task the request named, for a gateway tool (which reads it
    /// itself).
    named: Option<String>,
}

impl Scoped {
    /// The authorized call.
    pub fn call(&self) -> &Authorized {
        &self.call
    }
    /// The task it runs in.
    pub fn task(&self) -> Option<&TaskRecord> {
        self.task.as_ref()
    }
    /// The task the request named, when the stage did not load it (gateway
    /// tools).
    pub fn named_task(&self) -> Option<&str> {
        self.named.as_deref()
    }
}

/// Which task a request runs in, if any: task token, then `_meta`, then the
/// task bound to its connection.
pub fn task_id_for(
    gw: &Gateway,
    who: &super::Authenticated,
    request: &ToolRequest,
) -> Option<String> {
    if let Some(id) = who.task_id() {
        return Some(id.to_string());
    }
    if let Some(id) = &request.task_hint {
        return Some(id.clone());
    }
    let key = request.connection.as_deref()?;
    gw.bound_tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .cloned()
}

/// Loads the named task for this agent, mapping failures to denials.
pub async fn load(gw: &Gateway, task_id: &str, agent_id: &str) -> Result<TaskRecord, Denial> {
    tasks::active_or_end_expired(gw, task_id, agent_id)
        .await
        .map_err(|e| match e {
            TaskError::NotFound(id) => Denial::TaskUnknown {
                task: super::denial::capped(&id),
            },
            TaskError::NotActive { id, status } => Denial::TaskNotActive { task: id, status },
            other => {
                tracing::error!(error = %other, "cannot read the task; refusing");
                Denial::TaskUnavailable
            }
        })
}

/// Checks the call against its task.
pub async fn scope(
    gw: &Gateway,
    call: Authorized,
    task_id: Option<&str>,
) -> Result<Scoped, Denial> {
    let tool = match call.target() {
        Target::Connector(tool) => tool.clone(),
        Target::Gateway(_) => {
            return Ok(Scoped {
                call,
                task: None,
                named: task_id.map(str::to_string),
            });
        }
    };
    let agent = call.who().agent().clone();
    let task = match task_id {
        Some(id) => Some(load(gw, id, &agent.id).await?),
        None => None,
    };
    fits(&agent, &tool, task.as_ref())?;
    // The task's argument constraints are checked by the policy stage, so
    // a policy can step a call outside them up to approval.
    Ok(Scoped {
        call,
        task,
        named: None,
    })
}

/// The scope rule for a loaded task (or none): the task must list the
/// tool; without a task, the agent must not require one and the tool's
/// risk must be below `high`. Shared with `policy explain`.
pub fn fits(agent: &AgentEntry, tool: &ToolEntry, task: Option<&TaskRecord>) -> Result<(), Denial> {
    let Some(task) = task else {
        if agent.tasks.required {
            return Err(Denial::TaskRequired {
                tool: tool.full_name.clone(),
                why: format!("agent `{}` must work within a task", agent.id),
            });
        }
        if tool.risk >= Risk::High {
            return Err(Denial::TaskRequired {
                tool: tool.full_name.clone(),
                why: format!("its risk is {}", tool.risk.as_str()),
            });
        }
        return Ok(());
    };
    if !task.tools.contains(&tool.full_name) {
        return Err(Denial::OutsideTask {
            tool: tool.full_name.clone(),
            task: task.id.clone(),
            purpose: task.purpose.clone(),
            allowed: task.tools.clone(),
        });
    }
    Ok(())
}
