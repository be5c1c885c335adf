//! Human approvals: the queue of calls that wait for people, and the rules
//! of deciding them. Transport-free: the pipeline's `approve` stage creates
//! and waits on requests here; the HTTP API, the review page and the CLI
//! decide them through [`decide`].
//!
//! Rules this module owns:
//! - **Routing.** A request names whom the policy route resolves to (an
//!   owner's name or a role); an approver answers for it when their id or
//!   one of their roles is that name ([`eligible`]).
//! - **Separation of duties.** When a request needs two or more people
//!   ("four eyes"), the agent's system owner cannot approve it; a quorum
//!   counts each person once (the store keeps one vote per person).
//! - **Approve with changes.** An approver may change top-level arguments;
//!   the change is checked against the tool's schema and re-decided by
//!   policy here, and again with the real arguments before the call runs.
//! - **Binding.** An approval applies to one agent, task, tool and argument
//!   digest; "approve once" is used by exactly one call (the store decides
//!   races in one statement).

pub mod notify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::Gateway;
use crate::catalog::{ApproverEntry, Catalog};
use crate::policy::Verdict;
use crate::store::{
    ApprovalEvent, ApprovalFilter, ApprovalRequest, ApprovalStatus, ApprovalVote,
    ApproverKeyRecord, StoreError, VoteInput, Voted,
};
use crate::util::stamp;

/// Prefix of approver credentials (`tgp_…`, ids `apk_…`).
pub const APPROVER_KEY_PREFIX: &str = "tgp_";

/// Shown in place of a sensitive argument.
pub const REDACTED: &str = "<redacted>";

/// Default most pending requests per agent.
pub const DEFAULT_MAX_PENDING: u32 = 5;

/// What an agent is told about its pending request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pending {
    /// Request id.
    pub id: String,
    /// Always `pending`.
    pub status: &'static str,
    /// Whom the route names.
    pub approvers: String,
    /// The policy route.
    pub route: String,
    /// How many distinct people must approve.
    pub required: u32,
    /// Undecided by then means denied (RFC 3339).
    pub deadline: String,
    /// Where approvers review it, when the gateway knows its address.
    pub review_url: Option<String>,
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// Waiters on one request in this process.
#[derive(Debug, Default)]
struct Slot {
    notify: Notify,
    waiting: AtomicUsize,
}

/// The approval queue's in-process part: who waits on which request (so a
/// decision made here wakes them at once; decisions made by another
/// replica are seen by polling the store), where the review page is, and
/// the webhook sender.
#[derive(Debug)]
pub struct Approvals {
    slots: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
    base_url: RwLock<Option<String>>,
    timing: RwLock<Timing>,
    notifier: notify::Notifier,
}

/// How often a waiting call looks at its request and reports progress.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Store poll period while waiting (decisions by other replicas).
    pub poll: Duration,
    /// Progress notification period.
    pub progress: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            progress: Duration::from_secs(15),
        }
    }
}

impl Default for Approvals {
    fn default() -> Self {
        Self {
            slots: Arc::default(),
            base_url: RwLock::new(None),
            timing: RwLock::new(Timing::default()),
            notifier: notify::Notifier::default(),
        }
    }
}

/// Held while a call waits on a request; wakes and counts.
#[derive(Debug)]
pub struct WaitGuard {
    id: String,
    slot: Arc<Slot>,
    slots: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
}

impl WaitGuard {
    /// Resolves when someone in this process decides the request.
    pub async fn notified(&self) {
        self.slot.notify.notified().await;
    }
    /// Whether other calls in this process wait on the same request.
    pub fn shared(&self) -> bool {
        self.slot.waiting.load(Ordering::SeqCst) > 1
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.slot.waiting.fetch_sub(1, Ordering::SeqCst) == 1
            && let Ok(mut slots) = self.slots.lock()
            && slots
                .get(&self.id)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            slots.remove(&self.id);
        }
    }
}

impl Approvals {
    /// Registers a waiter on request `id`.
    pub fn wait_on(&self, id: &str) -> WaitGuard {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(id.to_string()).or_default().clone()
        };
        slot.waiting.fetch_add(1, Ordering::SeqCst);
        WaitGuard {
            id: id.to_string(),
            slot,
            slots: self.slots.clone(),
        }
    }

    /// Wakes this process's waiters on request `id`.
    pub fn wake(&self, id: &str) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        if let Some(s) = slot {
            s.notify.notify_waiters();
        }
    }

    /// Calls waiting in this process.
    pub fn waiting(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .map(|s| s.waiting.load(Ordering::SeqCst))
            .sum()
    }

    /// Sets the address the review page is served under (`https://host`).
    pub fn set_base_url(&self, url: &str) {
        *self.base_url.write().unwrap_or_else(|p| p.into_inner()) =
            Some(url.trim_end_matches('/').to_string());
    }

    /// The review page of request `id`, when the address is known.
    pub fn review_url(&self, id: &str) -> Option<String> {
        self.base_url
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|b| format!("{b}/ui/requests/{id}"))
    }

    /// Poll and progress periods.
    pub fn timing(&self) -> Timing {
        *self.timing.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the poll and progress periods (tests shorten them).
    pub fn set_timing(&self, timing: Timing) {
        *self.timing.write().unwrap_or_else(|p| p.into_inner()) = timing;
    }

    /// The webhook sender.
    pub fn notifier(&self) -> &notify::Notifier {
        &self.notifier
    }
}

/// The agent's arguments with the tool's sensitive fields replaced.
pub fn redact(args: &Map<String, Value>, sensitive: &[String]) -> Value {
    Value::Object(
        args.iter()
            .map(|(k, v)| {
                if sensitive.iter().any(|s| s == k) {
                    (k.clone(), Value::String(REDACTED.into()))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect(),
    )
}

/// `args` with `patch`'s fields put over them.
pub fn apply_patch(args: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    let mut out = args.clone();
    for (k, v) in patch {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// How the arguments were changed: `{field: {from, to}}`, sensitive
/// values redacted on both sides.
pub fn describe_change(original: &Value, patch: &Value, sensitive: &[String]) -> Value {
    let mut out = Map::new();
    if let Some(p) = patch.as_object() {
        for (k, to) in p {
            let hide = sensitive.iter().any(|s| s == k);
            let from = original.get(k).cloned().unwrap_or(Value::Null);
            let shown = |v: &Value| {
                if hide {
                    Value::String(REDACTED.into())
                } else {
                    v.clone()
                }
            };
            out.insert(k.clone(), json!({ "from": shown(&from), "to": shown(to) }));
        }
    }
    Value::Object(out)
}

/// Whether `approver` may decide request `r`: the route names them, and
/// four eyes keep the agent's system owner out.
pub fn eligible(
    catalog: &Catalog,
    approver: &ApproverEntry,
    r: &ApprovalRequest,
) -> Result<(), String> {
    if !approver.answers_for(&r.approvers) {
        return Err(format!(
            "request {} is for {} ({}); you ({}) do not answer for it",
            r.id, r.approvers, r.route, approver.id
        ));
    }
    if r.four_eyes
        && let Some(agent) = catalog.agents.get(&r.agent_id)
        && approver.answers_for(&agent.owners.system.name)
    {
        return Err(format!(
            "separation of duties: you answer for `{}`, the system owner of agent `{}`, and this request needs {} other people",
            agent.owners.system.name, r.agent_id, r.required
        ));
    }
    Ok(())
}

/// How many declared approvers could decide a request with this route,
/// for this agent (the system owner excluded under four eyes).
pub fn routable(catalog: &Catalog, agent_id: &str, approvers: &str, four_eyes: bool) -> usize {
    let system = catalog
        .agents
        .get(agent_id)
        .map(|a| a.owners.system.name.clone());
    catalog
        .approvers
        .values()
        .filter(|a| a.answers_for(approvers))
        .filter(|a| !(four_eyes && system.as_deref().is_some_and(|s| a.answers_for(s))))
        .count()
}

/// An authenticated approver.
#[derive(Debug, Clone)]
pub struct ApproverIdentity {
    /// The person, as declared now.
    pub approver: Arc<ApproverEntry>,
    /// The credential used.
    pub key_id: String,
}

/// Why an approval action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No or a bad credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// No such request (or not one this approver may see).
    #[error("no approval request `{0}`")]
    NotFound(String),
    /// The approver may not decide it.
    #[error("{0}")]
    NotEligible(String),
    /// It was decided already.
    #[error("request {id} is already {status}")]
    NotPending {
        /// Request id.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// This person has voted on it.
    #[error("you have already decided request {0}")]
    AlreadyVoted(String),
    /// The change is not acceptable.
    #[error("{0}")]
    InvalidChange(String),
    /// The request is not valid as given.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("the approval queue could not be reached: {0}")]
    Store(#[from] StoreError),
}

impl ApprovalError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            ApprovalError::Unauthenticated(_) => "credential_invalid",
            ApprovalError::NotFound(_) => "approval_not_found",
            ApprovalError::NotEligible(_) => "approver_not_eligible",
            ApprovalError::NotPending { .. } => "approval_not_pending",
            ApprovalError::AlreadyVoted(_) => "approval_already_decided_by_you",
            ApprovalError::InvalidChange(_) => "approval_change_invalid",
            ApprovalError::Invalid(_) => "invalid_request",
            ApprovalError::Store(_) => "approvals_unavailable",
        }
    }

    /// The message to show (store details stay in the log).
    pub fn public_message(&self) -> String {
        match self {
            ApprovalError::Store(_) => {
                "the approval queue could not be reached; try again later".into()
            }
            other => other.to_string(),
        }
    }
}

/// Finds the approver a credential belongs to; the approver must still be
/// declared in the manifests.
pub async fn authenticate(gw: &Gateway, key: &str) -> Result<ApproverIdentity, ApprovalError> {
    if !key.starts_with(APPROVER_KEY_PREFIX) {
        return Err(ApprovalError::Unauthenticated(
            "not an approver credential (they start with `tgp_`; `tollgate approvers issue-key ID`)"
                .into(),
        ));
    }
    let Some(record) = gw
        .store()
        .find_approver_key(&crate::keys::key_hash(key))
        .await?
    else {
        return Err(ApprovalError::Unauthenticated(
            "the approver credential is not valid (unknown or revoked)".into(),
        ));
    };
    identity(gw, &record)
}

/// The identity behind a stored key record, if its approver is declared.
pub fn identity(
    gw: &Gateway,
    record: &ApproverKeyRecord,
) -> Result<ApproverIdentity, ApprovalError> {
    let catalog = gw.catalog();
    let approver = catalog
        .approvers
        .get(&record.approver_id)
        .cloned()
        .ok_or_else(|| {
            ApprovalError::Unauthenticated(format!(
                "approver `{}` is no longer declared in the manifests",
                record.approver_id
            ))
        })?;
    Ok(ApproverIdentity {
        approver,
        key_id: record.key_id.clone(),
    })
}

/// A request as a reviewer sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    /// The request.
    #[serde(flatten)]
    pub request: ApprovalRequest,
    /// Approvals so far.
    pub approvals: u32,
    /// The votes.
    pub votes: Vec<ApprovalVote>,
    /// What happened to it.
    pub events: Vec<ApprovalEvent>,
    /// Whether this approver may decide it now; if not, why.
    pub can_decide: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cannot_decide: Option<String>,
    /// How the arguments were changed, if they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Value>,
}

/// Filters a reviewer can apply.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// `pending`, `decided` or `all` (default `pending`).
    pub status: Option<String>,
    /// Only this agent's.
    pub agent: Option<String>,
    /// Only this tool's.
    pub tool: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
}

/// Requests this approver answers for, newest first.
pub async fn list(
    gw: &Gateway,
    who: &ApproverIdentity,
    filter: &ListFilter,
) -> Result<Vec<ApprovalRequest>, ApprovalError> {
    let statuses = match filter.status.as_deref().unwrap_or("pending") {
        "pending" => vec![ApprovalStatus::Pending],
        "decided" => vec![
            ApprovalStatus::Approved,
            ApprovalStatus::Denied,
            ApprovalStatus::Expired,
            ApprovalStatus::Withdrawn,
            ApprovalStatus::Used,
        ],
        "all" => Vec::new(),
        other => {
            return Err(ApprovalError::Invalid(format!(
                "unknown status filter `{other}` (pending, decided or all)"
            )));
        }
    };
    let rows = gw
        .store()
        .approvals(&ApprovalFilter {
            statuses,
            agent_id: filter.agent.clone(),
            tool: filter.tool.clone(),
            limit: Some(filter.limit.unwrap_or(200).min(1000)),
        })
        .await?;
    Ok(rows
        .into_iter()
        .filter(|r| who.approver.answers_for(&r.approvers))
        .collect())
}

/// One request, with its votes and events, if this approver answers for it.
pub async fn show(
    gw: &Gateway,
    who: &ApproverIdentity,
    id: &str,
) -> Result<RequestView, ApprovalError> {
    let request = gw
        .store()
        .approval(id)
        .await?
        .filter(|r| who.approver.answers_for(&r.approvers))
        .ok_or_else(|| ApprovalError::NotFound(crate::util::capped(id)))?;
    let votes = gw.store().approval_votes(id).await?;
    let events = gw.store().approval_events(id).await?;
    let catalog = gw.catalog();
    let mut cannot = eligible(&catalog, &who.approver, &request).err();
    if cannot.is_none() && request.status != ApprovalStatus::Pending {
        cannot = Some(format!("it is {}", request.status.as_str()));
    }
    if cannot.is_none() && votes.iter().any(|v| v.approver_id == who.approver.id) {
        cannot = Some("you have decided it already".into());
    }
    let sensitive = catalog
        .tools
        .get(&request.tool)
        .map(|t| t.sensitive.clone())
        .unwrap_or_default();
    let changes = request
        .patch
        .as_ref()
        .map(|p| describe_change(&request.arguments, p, &sensitive));
    Ok(RequestView {
        approvals: u32::try_from(votes.iter().filter(|v| v.verdict == "approve").count())
            .unwrap_or(u32::MAX),
        votes,
        events,
        can_decide: cannot.is_none(),
        cannot_decide: cannot,
        changes,
        request,
    })
}

/// An approver's decision.
#[derive(Debug, Clone, Default)]
pub struct Vote {
    /// Approve (true) or deny.
    pub approve: bool,
    /// Why (required).
    pub reason: String,
    /// Approve for the rest of the task rather than once.
    pub for_task: bool,
    /// Changed top-level arguments (approve only). Fields equal to what the
    /// request shows, or shown as `<redacted>`, are not changes.
    pub args: Option<Map<String, Value>>,
}

/// Records an approver's decision on a request and wakes the call waiting
/// on it.
pub async fn decide(
    gw: &Gateway,
    who: &ApproverIdentity,
    id: &str,
    vote: Vote,
) -> Result<ApprovalRequest, ApprovalError> {
    let reason = vote.reason.trim();
    if reason.is_empty() {
        return Err(ApprovalError::Invalid(
            "a reason is required (it is recorded, and a denial's reason is shown to the agent)"
                .into(),
        ));
    }
    if reason.chars().count() > 1000 {
        return Err(ApprovalError::Invalid(
            "the reason is longer than 1,000 characters".into(),
        ));
    }
    let view = show(gw, who, id).await?;
    let request = view.request;
    if request.status != ApprovalStatus::Pending {
        return Err(ApprovalError::NotPending {
            id: request.id,
            status: request.status.as_str(),
        });
    }
    let catalog = gw.catalog();
    eligible(&catalog, &who.approver, &request).map_err(ApprovalError::NotEligible)?;
    if !vote.approve && (vote.for_task || vote.args.is_some()) {
        return Err(ApprovalError::Invalid(
            "a denial takes only a reason (no --for-task, no --args)".into(),
        ));
    }
    if vote.for_task && request.task_id.is_none() {
        return Err(ApprovalError::Invalid(
            "this call was made outside any task: it can only be approved once".into(),
        ));
    }
    let patch = match (&vote.args, vote.approve) {
        (Some(args), true) => check_change(&catalog, who, &request, args, gw.now())?,
        _ => None,
    };
    let now = gw.now();
    let at = stamp(now);
    let use_by = if vote.for_task {
        // Ends with the task: the task's own end withdraws it sooner.
        stamp(now + time::Duration::days(365))
    } else {
        let secs = timeout_of(&request).max(60);
        stamp(now + time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2)))
    };
    let changed = patch.as_ref().map(|p| {
        let base = request.arguments.as_object().cloned().unwrap_or_default();
        Value::Object(apply_patch(&base, p))
    });
    let input = VoteInput {
        vote: ApprovalVote {
            request_id: request.id.clone(),
            approver_id: who.approver.id.clone(),
            key_id: who.key_id.clone(),
            verdict: if vote.approve { "approve" } else { "deny" }.into(),
            reason: reason.to_string(),
            for_task: vote.for_task,
            patch: patch.map(Value::Object),
            at,
        },
        changed,
        use_by,
    };
    let outcome = gw.store().vote_approval(&input).await?;
    let now_request = match outcome {
        Voted::Recorded(r) => *r,
        Voted::NotPending(s) => {
            return Err(ApprovalError::NotPending {
                id: request.id,
                status: s.as_str(),
            });
        }
        Voted::AlreadyVoted => return Err(ApprovalError::AlreadyVoted(request.id)),
        Voted::ConflictingChanges => {
            return Err(ApprovalError::InvalidChange(
                "another approver approved different arguments; approve those unchanged, or deny"
                    .into(),
            ));
        }
        Voted::NotFound => return Err(ApprovalError::NotFound(request.id)),
    };
    gw.approvals().wake(&now_request.id);
    if now_request.status != ApprovalStatus::Pending {
        notify::decided(gw, &now_request, &who.approver.id);
    }
    tracing::info!(
        request = %now_request.id,
        approver = %who.approver.id,
        verdict = if vote.approve { "approve" } else { "deny" },
        status = now_request.status.as_str(),
        "approval vote recorded"
    );
    Ok(now_request)
}

/// The request's waiting time as decided by policy, in seconds.
pub fn timeout_of(r: &ApprovalRequest) -> u64 {
    r.policy
        .get("approval")
        .and_then(|a| a.get("timeout_seconds"))
        .and_then(Value::as_u64)
        .unwrap_or(900)
}

/// Checks an approver's change: only declared properties, each valid by
/// its own schema, and policy on the changed call (with sensitive fields
/// as shown) neither denies it nor routes it past this approver. The real
/// arguments are checked in full again before the call runs.
fn check_change(
    catalog: &Catalog,
    who: &ApproverIdentity,
    request: &ApprovalRequest,
    args: &Map<String, Value>,
    now: time::OffsetDateTime,
) -> Result<Option<Map<String, Value>>, ApprovalError> {
    let tool = catalog.tools.get(&request.tool).ok_or_else(|| {
        ApprovalError::InvalidChange(format!(
            "tool `{}` is no longer declared; the request cannot be changed",
            request.tool
        ))
    })?;
    let shown = request.arguments.as_object().cloned().unwrap_or_default();
    let patch: Map<String, Value> = args
        .iter()
        .filter(|(k, v)| shown.get(*k) != Some(v) && v.as_str() != Some(REDACTED))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if patch.is_empty() {
        return Ok(None);
    }
    let properties = tool
        .tool
        .input_schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut normalised = Map::new();
    for (k, v) in &patch {
        let Some(schema) = properties.get(k) else {
            return Err(ApprovalError::InvalidChange(format!(
                "`{}` is not an argument of `{}`",
                crate::util::capped(k),
                request.tool
            )));
        };
        let mut one = Map::new();
        one.insert(k.clone(), v.clone());
        let mut wrapper = Map::new();
        wrapper.insert("type".into(), json!("object"));
        wrapper.insert("properties".into(), json!({ k.clone(): schema }));
        crate::args::normalize_input(&wrapper, &mut one);
        let validator = jsonschema::options()
            .build(schema)
            .map_err(|e| ApprovalError::InvalidChange(format!("`{k}`: {e}")))?;
        let value = one.remove(k).unwrap_or(Value::Null);
        if let Some(e) = validator.iter_errors(&value).next() {
            return Err(ApprovalError::InvalidChange(format!(
                "`{k}` does not match the tool's schema: {}",
                crate::util::capped(&e.to_string())
            )));
        }
        normalised.insert(k.clone(), value);
    }
    let changed = apply_patch(&shown, &normalised);
    // Decided as a call outside any task: the call is decided again, in its
    // task and with the real arguments, before it runs.
    let facts = crate::policy::CallFacts {
        agent: &request.agent_id,
        tool: &tool.full_name,
        args: &changed,
        task: None,
        violated: &[],
        now,
    };
    if catalog.agents.contains_key(&request.agent_id) {
        let d = crate::policy::decide(catalog.policies.as_deref(), &facts);
        if d.verdict == Verdict::Deny
            && !matches!(d.code, "policy_unrepresentable" | "policy_error")
        {
            return Err(ApprovalError::InvalidChange(format!(
                "policy refuses the changed call: {}",
                d.summary
            )));
        }
        if d.verdict == Verdict::ApprovalRequired
            && let Some(a) = &d.approval
            && (!who.approver.answers_for(&a.approvers) || a.count > request.required)
        {
            return Err(ApprovalError::InvalidChange(format!(
                "the changed call needs approval by {} ({} people); deny this request and let the agent ask again",
                a.approvers, a.count
            )));
        }
    }
    Ok(Some(normalised))
}

/// Expires and withdraws what is due, wakes the calls waiting on those
/// requests and tells the webhooks. Run by the sweeper.
pub async fn sweep(gw: &Gateway) -> Result<usize, StoreError> {
    let changed = gw.store().sweep_approvals(&stamp(gw.now())).await?;
    for r in &changed {
        gw.approvals().wake(&r.id);
        notify::decided(gw, r, "tollgate");
        tracing::info!(request = %r.id, status = r.status.as_str(), reason = r.reason.as_deref().unwrap_or(""), "approval request closed");
    }
    Ok(changed.len())
}
