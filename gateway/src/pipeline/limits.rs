//! Limits: may the agent make this call now, and does it fit its task's
//! budgets?
//!
//! Contract: returns [`Limited`] only when every declared limit holds:
//! the agent's rate, its rate on this tool, the connector's rate (all
//! agents together), and, within a task, its calls in flight, its call
//! budget and its budgets over arguments. Rates are checked in memory
//! (`crate::limits::RateLimiter`); budgets are reserved in the store in
//! one atomic step each, before the call, so concurrent calls cannot
//! overspend. A call refused by a later limit may still have counted
//! against a rate checked before it (the safe side). Reservations are
//! given back if the call is refused before its `allow` record is written
//! (see `approve`); from then on they stay spent, whatever the backend
//! answers, because the backend may have acted. The gateway's own tools
//! count against the agent's rates, not against task budgets.

use serde_json::Value;

use super::authorize::Target;
use super::denial::Denial;
use super::policy::Decided;
use crate::Gateway;
use crate::catalog::Catalog;
use crate::limits::{CALLS_BUDGET, InFlightGuard, RateKey};
use crate::policy::schema::{decimal_units, units_text};

/// A call within its limits. Only [`take`] builds one.
#[derive(Debug)]
pub struct Limited {
    decided: Decided,
    reserved: Vec<(String, i64)>,
    exhausted: Option<String>,
    in_flight: Option<InFlightGuard>,
}

impl Limited {
    /// The decided call.
    pub fn decided(&self) -> &Decided {
        &self.decided
    }

    /// A budget this call spends to its last unit, if any: the task ends
    /// once the call is over.
    pub fn exhausted(&self) -> Option<&str> {
        self.exhausted.as_deref()
    }

    /// Takes the in-flight slot out, to be held until the call is over.
    pub fn hold_in_flight(&mut self) -> Option<InFlightGuard> {
        self.in_flight.take()
    }

    pub(super) fn into_decided(self) -> Decided {
        self.decided
    }

    /// Gives back what this call reserved (it will not run).
    pub(super) async fn release(&self, gw: &Gateway) {
        let Some(task) = self.decided.scoped().task() else {
            return;
        };
        for (budget, amount) in &self.reserved {
            if let Err(e) = gw.store().release_budget(&task.id, budget, *amount).await {
                // Stays spent: the safe side.
                tracing::warn!(error = %e, task = %task.id, %budget, "cannot give back a budget reservation");
            }
        }
    }
}

/// Checks every limit that applies to the call, in memory first.
pub async fn take(gw: &Gateway, catalog: &Catalog, decided: Decided) -> Result<Limited, Denial> {
    let taken = reserve(gw, catalog, decided).await;
    // Every limit refusal is counted here, by kind; rate refusals already
    // were (only there is the key known).
    match &taken {
        Err(Denial::TaskBusy { .. }) => gw.metrics().limit_refused("task_in_flight"),
        Err(Denial::TaskBudget { .. }) => gw.metrics().limit_refused("task_budget"),
        _ => {}
    }
    taken
}

async fn reserve(gw: &Gateway, catalog: &Catalog, decided: Decided) -> Result<Limited, Denial> {
    let call = decided.scoped().call();
    let agent = call.who().agent();
    let limiter = gw.rate_limiter();
    let rated = |key: RateKey, spec| {
        limiter.take(&key, spec).map_err(|retry_after| {
            gw.metrics().limit_refused(key.kind());
            Denial::RateLimited {
                limit: format!("{key}: {spec}"),
                retry_after,
            }
        })
    };
    if let Some(spec) = agent.rate {
        rated(RateKey::Agent(agent.id.clone()), spec)?;
    }
    let name = call.target().name();
    if let Some(spec) = agent.tool_rates.get(name) {
        rated(
            RateKey::AgentTool(agent.id.clone(), name.to_string()),
            *spec,
        )?;
    }
    let tool = match call.target() {
        Target::Connector(tool) => tool.clone(),
        Target::Gateway(_) => {
            return Ok(Limited {
                decided,
                reserved: Vec::new(),
                exhausted: None,
                in_flight: None,
            });
        }
    };
    if let Some(spec) = catalog
        .connectors
        .get(&tool.connector_id)
        .and_then(|c| c.rate)
    {
        rated(RateKey::Connector(tool.connector_id.clone()), spec)?;
    }
    let Some(task) = decided.scoped().task() else {
        return Ok(Limited {
            decided,
            reserved: Vec::new(),
            exhausted: None,
            in_flight: None,
        });
    };
    let limits = &agent.task_limits;
    // An upstream's request of the agent's client runs inside a call that
    // already holds the task's slot: it must not wait for itself.
    let in_flight = match limits.max_in_flight {
        None => None,
        Some(_) if tool.kind().is_ask() => None,
        Some(max) => Some(gw.in_flight.enter(&task.id, max).ok_or(Denial::TaskBusy {
            task: task.id.clone(),
            max,
        })?),
    };
    // What this call would spend: one call, and each budgeted argument.
    let mut wanted: Vec<(String, i64, i64, String)> = Vec::new();
    if let Some(max) = limits.max_calls {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        wanted.push((CALLS_BUDGET.into(), 1, max, "calls".into()));
    }
    for b in limits
        .budgets
        .iter()
        .filter(|b| b.tools.contains(&tool.full_name))
    {
        let units = match call.arguments().get(&b.argument) {
            Some(Value::Number(n)) => decimal_units(n).map_err(|e| Denial::TaskBudget {
                task: task.id.clone(),
                detail: format!(
                    "`{}` {e}, so it cannot be counted against its budget",
                    b.argument
                ),
            })?,
            // Required by the tool's schema (checked at load), so absent
            // only if the manifest changed: fail closed.
            _ => {
                return Err(Denial::TaskBudget {
                    task: task.id.clone(),
                    detail: format!(
                        "`{}` is missing, so its budget cannot be checked",
                        b.argument
                    ),
                });
            }
        };
        if units < 0 {
            return Err(Denial::TaskBudget {
                task: task.id.clone(),
                detail: format!(
                    "a negative `{}` cannot be counted against its budget",
                    b.argument
                ),
            });
        }
        wanted.push((b.name(), units, b.max_units, b.argument.clone()));
    }
    let task_id = task.id.clone();
    let mut limited = Limited {
        decided,
        reserved: Vec::new(),
        exhausted: None,
        in_flight,
    };
    for (budget, amount, max, what) in wanted {
        match gw
            .store()
            .reserve_budget(&task_id, &budget, amount, max)
            .await
        {
            Ok(Some(used)) => {
                if used >= max {
                    limited.exhausted = Some(budget.clone());
                }
                limited.reserved.push((budget, amount));
            }
            Ok(None) => {
                limited.release(gw).await;
                let used = gw
                    .store()
                    .budget_used(&task_id, &budget)
                    .await
                    .unwrap_or(max);
                let detail = if budget == CALLS_BUDGET {
                    format!("its budget of {max} calls is spent")
                } else {
                    format!(
                        "`{what}` would exceed its budget: {} of {} left",
                        units_text((max - used).max(0)),
                        units_text(max)
                    )
                };
                return Err(Denial::TaskBudget {
                    task: task_id,
                    detail,
                });
            }
            Err(e) => {
                limited.release(gw).await;
                tracing::error!(error = %e, task = %task_id, "cannot check a task budget; refusing");
                return Err(Denial::LimitsUnavailable);
            }
        }
    }
    Ok(limited)
}
