//! Approve: a call policy marked "approval required" waits for people.
//!
//! Contract: returns [`Approved`] for a call policy allowed outright, or
//! for one a person approved — the same agent, task, tool and argument
//! digest, used atomically (an "approve once" by exactly one call). Else
//! the call gets a [`Gate`]:
//! - `Refused`: pending (non-blocking mode), denied, expired, withdrawn,
//!   already used, the agent's queue full, no approver declared for the
//!   route, or the queue unreachable (fail closed). The budget the call
//!   reserved is given back.
//! - `Changed`: an approver changed the arguments; the pipeline runs the
//!   changed call through authorize, scope, policy and limits again,
//!   carrying the approval it already used.
//!
//! In blocking mode the call waits here, reporting progress, until the
//! request is decided or its deadline passes; a client that leaves, or a
//! revocation of its agent, key or task, withdraws the request, and nothing
//! runs even if someone approves later. After an approval, the tool, the
//! grant and policy are checked again on the catalog in force (a reload
//! while waiting counts). Nothing has been written to the call record or
//! sent yet: this runs before the `allow` record.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::Progress;
use super::authorize::{self, Target};
use super::denial::Denial;
use super::fence;
use super::limits::Limited;
use super::scope::Scoped;
use crate::Gateway;
use crate::approvals::{self, Pending};
use crate::catalog::ToolEntry;
use crate::manifest::types::ApprovalMode;
use crate::policy::{Decision, Verdict};
use crate::store::{ApprovalRequest, ApprovalStatus, Created};
use crate::util::stamp;

/// A call cleared to run. Only [`approve`] builds one.
#[derive(Debug)]
pub struct Approved {
    scoped: Scoped,
    decision: Decision,
    approval: Option<UsedApproval>,
}

impl Approved {
    /// The call.
    pub fn scoped(&self) -> &Scoped {
        &self.scoped
    }
    /// The policy decision that let it through.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
    /// The approval it used, if it needed one.
    pub fn approval(&self) -> Option<&UsedApproval> {
        self.approval.as_ref()
    }
    /// What the record keeps of the decision: policy's, and the approval
    /// (request, who approved, scope, changes) when there was one.
    pub fn record(&self) -> Value {
        let mut v = self.decision.to_record();
        if let (Some(a), Some(o)) = (&self.approval, v.as_object_mut()) {
            o.insert("approval_request".into(), a.summary());
        }
        v
    }
}

/// An approval a call used.
#[derive(Debug, Clone)]
pub struct UsedApproval {
    /// The request, as it was when used.
    pub request: ApprovalRequest,
    /// Who approved it.
    pub approved_by: Vec<String>,
    /// How an approver changed the arguments (`{field: {from, to}}`).
    pub changes: Option<Value>,
}

impl UsedApproval {
    /// For the record and the agent's result.
    pub fn summary(&self) -> Value {
        json!({
            "request": self.request.id,
            "approved_by": self.approved_by,
            "scope": self.request.scope,
            "original_digest": self.request.args_digest,
            "changed": self.changes,
        })
    }
}

/// Why a call did not pass approval as it stands.
#[derive(Debug)]
pub enum Gate {
    /// Refused.
    Refused(Denial),
    /// Approved with changed arguments: run these instead, with this
    /// approval (already used).
    Changed {
        /// The changed arguments.
        arguments: Map<String, Value>,
        /// The approval.
        approval: Box<UsedApproval>,
    },
}

/// What a blocking wait needs from the caller's connection.
#[derive(Debug, Clone, Copy)]
pub struct Wait<'a> {
    /// Fires when the client cancels or disconnects.
    pub cancel: &'a CancellationToken,
    /// Where to report progress, if the client asked for it.
    pub progress: Option<&'a dyn Progress>,
}

/// Lets a call through, makes it wait for approval, or refuses it.
/// `granted` is the approval a changed call already used (second pass).
pub async fn approve(
    gw: &Gateway,
    limited: Limited,
    granted: Option<UsedApproval>,
    wait: Wait<'_>,
) -> Result<Approved, Gate> {
    let verdict = limited.decided().decision().verdict;
    if let Some(approval) = granted {
        // The changed call an approver approved: policy allows it or asks
        // for the approval it already has.
        let (scoped, decision) = limited.into_decided().into_parts();
        return Ok(Approved {
            scoped,
            decision,
            approval: Some(approval),
        });
    }
    if verdict != Verdict::ApprovalRequired {
        let (scoped, decision) = limited.into_decided().into_parts();
        return Ok(Approved {
            scoped,
            decision,
            approval: None,
        });
    }
    match gate(gw, &limited, wait).await {
        Ok(used) => {
            if let Some(patch) = used.request.patch.as_ref().and_then(Value::as_object) {
                // The approver changed the call: it is checked again from
                // authorize on, as a call of its own.
                let arguments =
                    approvals::apply_patch(limited.decided().scoped().call().arguments(), patch);
                limited.release(gw).await;
                return Err(Gate::Changed {
                    arguments,
                    approval: Box::new(used),
                });
            }
            let (scoped, decision) = limited.into_decided().into_parts();
            Ok(Approved {
                scoped,
                decision,
                approval: Some(used),
            })
        }
        Err(d) => {
            limited.release(gw).await;
            Err(Gate::Refused(d))
        }
    }
}

/// The approval path: a standing approval, or a request (new, or the
/// identical one pending) and, when blocking, the wait for it.
async fn gate(gw: &Gateway, limited: &Limited, wait: Wait<'_>) -> Result<UsedApproval, Denial> {
    let scoped = limited.decided().scoped();
    let decision = limited.decided().decision();
    let call = scoped.call();
    let Target::Connector(tool) = call.target() else {
        // The gateway's own tools never need approval (policy allows them).
        return Err(Denial::ApprovalsUnavailable);
    };
    let agent = call.who().agent();
    let task_id = scoped.task().map(|t| t.id.clone());
    let digest = call.digest();
    let now = stamp(gw.now());
    let store = gw.store();
    let standing = store
        .approved_for(&agent.id, task_id.as_deref(), &tool.full_name, digest, &now)
        .await
        .map_err(|e| unavailable(&e))?;
    if let Some(r) = standing {
        return use_request(gw, scoped, tool, r).await;
    }
    let Some(route) = decision.approval.as_ref() else {
        return Err(Denial::ApprovalsUnavailable);
    };
    let four_eyes = route.count >= 2;
    let catalog = gw.catalog();
    if approvals::routable(&catalog, &agent.id, &route.approvers, four_eyes)
        < usize::try_from(route.count).unwrap_or(usize::MAX)
    {
        return Err(Denial::ApprovalRequired {
            tool: tool.full_name.clone(),
            decision: Box::new(decision.clone()),
        });
    }
    let request = new_request(gw, scoped, tool, decision, four_eyes);
    let max_pending = agent
        .approvals
        .max_pending
        .unwrap_or(approvals::DEFAULT_MAX_PENDING);
    let request = match store
        .create_approval(&request, max_pending)
        .await
        .map_err(|e| unavailable(&e))?
    {
        Created::New(r) => {
            let r = *r;
            let key = crate::limits::RateKey::ApprovalRequests(agent.id.clone());
            if let Err(retry_after) = gw.rate_limiter().take(&key, agent.approval_rate) {
                // Filed, but over the agent's rate: withdrawn before anyone
                // is told, so approvers never see the flood.
                let _ = store
                    .close_approval(
                        &r.id,
                        &[ApprovalStatus::Pending],
                        ApprovalStatus::Withdrawn,
                        "tollgate",
                        "the agent's approval request rate was exceeded",
                        &stamp(gw.now()),
                    )
                    .await;
                return Err(Denial::RateLimited {
                    limit: format!("{key}: {}", agent.approval_rate),
                    retry_after,
                });
            }
            tracing::info!(request = %r.id, agent = %r.agent_id, tool = %r.tool, approvers = %r.approvers, "approval requested");
            approvals::notify::requested(gw, &r);
            r
        }
        Created::Existing(r) => *r,
        Created::Full(pending) => return Err(Denial::ApprovalQueueFull { pending }),
    };
    let mode = agent
        .approvals
        .mode
        .or(tool.approval_mode)
        .unwrap_or(ApprovalMode::Blocking);
    if mode == ApprovalMode::NonBlocking {
        return Err(Denial::ApprovalPending {
            tool: tool.full_name.clone(),
            request: Box::new(pending(gw, &request)),
        });
    }
    let approved = wait_for(gw, scoped, request, wait).await?;
    recheck(gw, scoped)?;
    use_request(gw, scoped, tool, approved).await
}

fn unavailable(e: &crate::store::StoreError) -> Denial {
    tracing::error!(error = %e, "cannot reach the approval queue; refusing the call");
    Denial::ApprovalsUnavailable
}

fn pending(gw: &Gateway, r: &ApprovalRequest) -> Pending {
    Pending {
        id: r.id.clone(),
        status: "pending",
        approvers: r.approvers.clone(),
        route: r.route.clone(),
        required: r.required,
        deadline: r.deadline.clone(),
        review_url: gw.approvals().review_url(&r.id),
    }
}

fn new_request(
    gw: &Gateway,
    scoped: &Scoped,
    tool: &ToolEntry,
    decision: &Decision,
    four_eyes: bool,
) -> ApprovalRequest {
    let call = scoped.call();
    let agent = call.who().agent();
    let route = decision.approval.as_ref();
    let now = gw.now();
    let timeout = route.map_or(900, |r| r.timeout_seconds);
    ApprovalRequest {
        id: uuid::Uuid::now_v7().to_string(),
        created_at: stamp(now),
        deadline: stamp(now + time::Duration::seconds(i64::try_from(timeout).unwrap_or(900))),
        agent_id: agent.id.clone(),
        credential_id: call.who().credential_id().to_string(),
        task_id: scoped.task().map(|t| t.id.clone()),
        purpose: scoped.task().map(|t| t.purpose.clone()),
        tool: tool.full_name.clone(),
        connector_id: tool.connector_id.clone(),
        risk: tool.risk.as_str().to_string(),
        args_digest: call.digest().to_string(),
        arguments: approvals::redact(call.arguments(), &tool.sensitive),
        route: route.map(|r| r.route.clone()).unwrap_or_default(),
        approvers: route.map(|r| r.approvers.clone()).unwrap_or_default(),
        required: route.map_or(1, |r| r.count),
        four_eyes,
        policy: decision.to_record(),
        owners: json!({ "agent": agent.owners, "connector": *tool.owners }),
        status: ApprovalStatus::Pending,
        scope: None,
        patch: None,
        changed_arguments: None,
        decided_at: None,
        reason: None,
        use_by: None,
        uses: 0,
    }
}

/// Uses an approved request for this call (atomically), with who approved
/// it and how they changed it.
async fn use_request(
    gw: &Gateway,
    scoped: &Scoped,
    tool: &ToolEntry,
    request: ApprovalRequest,
) -> Result<UsedApproval, Denial> {
    let agent = &scoped.call().who().agent().id;
    let used = gw
        .store()
        .use_approval(&request.id, agent, &stamp(gw.now()))
        .await
        .map_err(|e| unavailable(&e))?;
    if !used {
        return Err(Denial::ApprovalUsed {
            tool: tool.full_name.clone(),
            request: request.id,
        });
    }
    let votes = gw
        .store()
        .approval_votes(&request.id)
        .await
        .map_err(|e| unavailable(&e))?;
    let approved_by = votes
        .iter()
        .filter(|v| v.verdict == "approve")
        .map(|v| v.approver_id.clone())
        .collect();
    let changes = request
        .patch
        .as_ref()
        .map(|p| approvals::describe_change(&request.arguments, p, &tool.sensitive));
    tracing::info!(request = %request.id, %agent, tool = %tool.full_name, "approval used");
    Ok(UsedApproval {
        request,
        approved_by,
        changes,
    })
}

/// Before an approved call goes on: the tool and the grant still exist in
/// the catalog in force, and policy there does not now forbid the call.
fn recheck(gw: &Gateway, scoped: &Scoped) -> Result<(), Denial> {
    let catalog = gw.catalog();
    let call = scoped.call();
    let agent_id = &call.who().agent().id;
    let Some(agent) = catalog.agents.get(agent_id) else {
        return Err(Denial::NotGranted {
            name: call.target().name().to_string(),
        });
    };
    if let Err(refused) = authorize::check_tool(
        &catalog,
        agent,
        call.target().name(),
        call.arguments().clone(),
    ) {
        return Err(refused.0);
    }
    super::policy::still_allows(&catalog, scoped, gw.now())
}

/// Waits until the request is decided, its deadline passes, the client
/// leaves or the agent, key or task is cut off.
async fn wait_for(
    gw: &Gateway,
    scoped: &Scoped,
    request: ApprovalRequest,
    wait: Wait<'_>,
) -> Result<ApprovalRequest, Denial> {
    let tool = request.tool.clone();
    let id = request.id.clone();
    let guard = gw.approvals().wait_on(&id);
    let timing = gw.approvals().timing();
    let total = approvals::timeout_of(&request);
    let started = Instant::now();
    let mut next_report = Instant::now();
    let who = scoped.call().who();
    let task_id = scoped.task().map(|t| t.id.clone());
    let withdraw = |why: String| {
        let id = id.clone();
        let tool = tool.clone();
        let shared = guard.shared();
        async move {
            // Another call in this process waits on the same request: it
            // stays for that one.
            if !shared {
                let closed = gw
                    .store()
                    .close_approval(
                        &id,
                        &[ApprovalStatus::Pending, ApprovalStatus::Approved],
                        ApprovalStatus::Withdrawn,
                        &who.agent().id,
                        &why,
                        &stamp(gw.now()),
                    )
                    .await;
                match closed {
                    Ok(true) => {
                        if let Ok(Some(r)) = gw.store().approval(&id).await {
                            approvals::notify::decided(gw, &r, "tollgate");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(request = %id, error = %e, "cannot withdraw an approval request")
                    }
                }
            }
            tracing::info!(request = %id, %why, "approval wait ended; the call does not run");
            Denial::ApprovalWithdrawn {
                tool,
                request: id,
                why,
            }
        }
    };
    loop {
        let current = match gw.store().approval(&id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Denial::ApprovalsUnavailable),
            Err(e) => {
                tracing::error!(error = %e, "cannot read an approval request while waiting; refusing the call");
                withdraw("the approval queue could not be read".into()).await;
                return Err(Denial::ApprovalsUnavailable);
            }
        };
        match current.status {
            ApprovalStatus::Pending => {}
            ApprovalStatus::Approved => return Ok(current),
            ApprovalStatus::Denied if hides_reason(&current) => {
                return Err(Denial::ApprovalDenied {
                    tool,
                    request: id,
                    by: "an approver".into(),
                    reason: None,
                });
            }
            ApprovalStatus::Denied => {
                let by = gw
                    .store()
                    .approval_votes(&id)
                    .await
                    .ok()
                    .and_then(|v| v.into_iter().find(|v| v.verdict == "deny"))
                    .map(|v| v.approver_id)
                    .unwrap_or_else(|| "an approver".into());
                return Err(Denial::ApprovalDenied {
                    tool,
                    request: id,
                    by,
                    reason: current.reason.map(String::into_boxed_str),
                });
            }
            ApprovalStatus::Expired => {
                return Err(Denial::ApprovalExpired { tool, request: id });
            }
            ApprovalStatus::Used => {
                return Err(Denial::ApprovalUsed { tool, request: id });
            }
            ApprovalStatus::Withdrawn => {
                return Err(Denial::ApprovalWithdrawn {
                    tool,
                    request: id,
                    why: current.reason.unwrap_or_else(|| "withdrawn".into()),
                });
            }
        }
        let now = stamp(gw.now());
        if now >= current.deadline {
            let _ = gw
                .store()
                .close_approval(
                    &id,
                    &[ApprovalStatus::Pending],
                    ApprovalStatus::Expired,
                    "tollgate",
                    "no decision by the deadline",
                    &now,
                )
                .await;
            // Whoever closed it, the answer is in the store: read it again.
            continue;
        }
        if let Err(d) = fence::check(gw, who, scoped.task(), task_id.as_deref()).await {
            return Err(withdraw(format!("{d}")).await);
        }
        if let Some(p) = wait.progress
            && Instant::now() >= next_report
        {
            let waited = started.elapsed().as_secs();
            p.report(
                waited as f64,
                Some(total as f64),
                format!(
                    "waiting for approval by {} ({}), request {}, {} of {} minutes",
                    current.approvers,
                    current.route,
                    short(&id),
                    waited / 60,
                    total.div_ceil(60)
                ),
            )
            .await;
            next_report = Instant::now() + timing.progress;
        }
        let until_report = next_report.saturating_duration_since(Instant::now());
        let nap = timing.poll.min(until_report.max(Duration::from_millis(10)));
        tokio::select! {
            _ = wait.cancel.cancelled() => {
                return Err(withdraw("the client cancelled the call or disconnected".into()).await);
            }
            _ = guard.notified() => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// Whether the policy that asked for the approval hides a denial's who
/// and why from the agent.
fn hides_reason(r: &ApprovalRequest) -> bool {
    r.policy["approval"]["hide_reason"].as_bool() == Some(true)
}

/// The last block of a request id (its random part), as people say it.
pub fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}
