//! Policy: the in-process decision on one call, over the agent, the tool,
//! the arguments, the task and the time, with Cedar.
//!
//! Owns the policy set loaded from the `*.cedar` files beside the manifests
//! (validated against a schema generated from the manifests, see
//! [`schema`]), the decision [`decide`], and what it explains: the outcome
//! (allow, deny, or approval required and by whom), the policies that
//! matched and why. Pure and in memory: no store, no clock of its own (the
//! caller passes `now`), no transport.
//!
//! Rules, chosen to fail closed:
//! - with a policy set, anything no `permit` matches is denied, and any
//!   `forbid` that matches wins;
//! - a permit on a `high` or `critical` tool still needs human approval
//!   unless the permit says `@approval("none")`; a permit may ask for
//!   approval itself (`@approval("owner:business")`);
//! - a call outside its task's argument constraints is denied, unless a
//!   matching permit says `@task_constraints("approval")`: then it steps up
//!   to approval;
//! - a policy that errors while evaluating, or arguments Cedar cannot
//!   represent exactly, deny;
//! - without a policy set, the grants decide (as before policies existed),
//!   and the task's constraints still hold.

mod load;
pub mod schema;

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Effect, Entities, EntityUid, Policy, PolicyId,
    PolicySet, PrincipalConstraint, Request, ResourceConstraint, RestrictedExpression, Schema,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::manifest::types::{AgentOwners, ConnectorOwners, Risk, ToolHints};
pub use load::PolicyError;
use load::{ApprovalRule, Rule};
use schema::Shape;

/// What policies may know of an agent.
#[derive(Debug, Clone)]
pub struct AgentFacts {
    /// Agent id.
    pub id: String,
    /// Its owners.
    pub owners: AgentOwners,
    /// Who approved its deployment.
    pub approved_by: String,
    /// Its labels.
    pub labels: Vec<String>,
}

/// What policies may know of a connector.
#[derive(Debug, Clone)]
pub struct ConnectorFacts {
    /// Connector id.
    pub id: String,
    /// Its owners.
    pub owners: ConnectorOwners,
}

/// What policies may know of a tool.
#[derive(Debug, Clone)]
pub struct ToolFacts {
    /// `connector.tool`.
    pub name: String,
    /// Connector id.
    pub connector: String,
    /// Declared risk.
    pub risk: Risk,
    /// Declared hints.
    pub hints: ToolHints,
    /// Labels.
    pub labels: Vec<String>,
    /// Its arguments' Cedar shape.
    pub shape: Shape,
}

/// One `.cedar` file's path and text.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// Path shown in errors.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

#[derive(Debug)]
struct ToolInfo {
    /// The policies whose scope can match a call of this tool by any agent
    /// (principal unconstrained): the others are false for it before their
    /// conditions are read, so leaving them out changes no decision and
    /// saves their evaluation.
    generic: Arc<PolicySet>,
    /// For agents that some policy names in its scope: `generic` and those.
    by_agent: HashMap<String, Arc<PolicySet>>,
    action: EntityUid,
    resource: EntityUid,
    connector: String,
    risk: Risk,
    shape: Shape,
}

/// A validated policy set and everything a decision needs, built once per
/// manifest load and swapped with the catalog.
#[derive(Debug)]
pub struct Policies {
    authorizer: Authorizer,
    entities: Entities,
    rules: HashMap<PolicyId, Rule>,
    tools: HashMap<String, ToolInfo>,
    agents: HashMap<String, (EntityUid, AgentOwners)>,
    connectors: HashMap<String, ConnectorOwners>,
    files: Vec<PathBuf>,
    /// Whether any policy mentions `datetime`: building `now.datetime` is
    /// a third of a context's cost, and a context attribute no policy
    /// reads cannot change a decision.
    uses_datetime: bool,
    /// Policies about withdrawn tools only: not in force until they return.
    pub dormant: Vec<Dormant>,
}

/// A policy set aside because every tool it names is withdrawn.
#[derive(Debug, Clone)]
pub struct Dormant {
    /// Its id.
    pub id: String,
    /// Its file.
    pub file: PathBuf,
    /// Its first line.
    pub line: usize,
}

/// The Cedar schema for this manifest set, in Cedar's schema syntax (what
/// `tollgate policy schema` prints and `manifests/policies.cedarschema`
/// holds).
pub fn schema_text(tools: &[ToolFacts]) -> Result<String, String> {
    let fragment = cedar_policy::SchemaFragment::from_json_value(schema::cedar_schema(tools))
        .map_err(|e| format!("cannot build the policy schema: {e}"))?;
    fragment
        .to_cedarschema()
        .map_err(|e| format!("cannot print the policy schema: {e}"))
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind = cedar_policy::EntityTypeName::from_str(kind).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(
        kind,
        cedar_policy::EntityId::new(id),
    ))
}

impl Policies {
    /// Parses and validates the policy files against the schema of these
    /// agents, connectors and tools. Errors carry file and line.
    pub fn build(
        agents: &[AgentFacts],
        connectors: &[ConnectorFacts],
        tools: &[ToolFacts],
        sources: &[PolicySource],
        withdrawn: &std::collections::BTreeSet<String>,
    ) -> Result<Self, Vec<PolicyError>> {
        let internal = |message: String| {
            vec![PolicyError {
                file: sources.first().map(|s| s.path.clone()).unwrap_or_default(),
                line: 0,
                column: 0,
                message,
            }]
        };
        let schema = Schema::from_json_value(schema::cedar_schema(tools))
            .map_err(|e| internal(format!("cannot build the policy schema: {e}")))?;
        let (set, rules, dormant) = load::parse(sources, &schema, withdrawn)?;
        let entities = Entities::from_json_value(
            schema::cedar_entities(agents, connectors, tools),
            Some(&schema),
        )
        .map_err(|e| internal(format!("cannot build the policy entities: {e}")))?;
        let call = uid("Action", "call").map_err(internal)?;
        let mut all: Vec<&Policy> = set.policies().collect();
        all.sort_by_key(|p| p.id().to_string());
        let agent_type =
            cedar_policy::EntityTypeName::from_str("Agent").map_err(|e| internal(e.to_string()))?;
        let uses_datetime = all.iter().any(|p| p.to_string().contains("datetime"));
        let mut slices = Slices::default();
        let mut tool_info = HashMap::new();
        for t in tools {
            let action = uid("Action", &t.name).map_err(internal)?;
            let resource = uid("Tool", &t.name).map_err(internal)?;
            let connector_uid = uid("Connector", &t.connector).map_err(internal)?;
            let mut generic = Vec::new();
            let mut specific: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, p) in all.iter().enumerate() {
                if !(action_scope(p, &action, &call)
                    && resource_scope(p, &resource, &connector_uid))
                {
                    continue;
                }
                match p.principal_constraint() {
                    PrincipalConstraint::Any => generic.push(i),
                    PrincipalConstraint::Is(k) if k == agent_type => generic.push(i),
                    PrincipalConstraint::Is(_) => {}
                    PrincipalConstraint::Eq(u) | PrincipalConstraint::In(u) => {
                        specific
                            .entry(u.id().unescaped().to_string())
                            .or_default()
                            .push(i);
                    }
                    PrincipalConstraint::IsIn(k, u) if k == agent_type => {
                        specific
                            .entry(u.id().unescaped().to_string())
                            .or_default()
                            .push(i);
                    }
                    PrincipalConstraint::IsIn(..) => {}
                }
            }
            let mut by_agent = HashMap::new();
            for (agent, extra) in specific {
                let mut ids = generic.clone();
                ids.extend(extra);
                ids.sort_unstable();
                by_agent.insert(agent, slices.get(&all, ids).map_err(internal)?);
            }
            let info = ToolInfo {
                generic: slices.get(&all, generic).map_err(internal)?,
                by_agent,
                action,
                resource,
                connector: t.connector.clone(),
                risk: t.risk,
                shape: t.shape.clone(),
            };
            tool_info.insert(t.name.clone(), info);
        }
        let mut agent_info = HashMap::new();
        for a in agents {
            agent_info.insert(
                a.id.clone(),
                (uid("Agent", &a.id).map_err(internal)?, a.owners.clone()),
            );
        }
        Ok(Self {
            authorizer: Authorizer::new(),
            entities,
            rules,
            tools: tool_info,
            agents: agent_info,
            connectors: connectors
                .iter()
                .map(|c| (c.id.clone(), c.owners.clone()))
                .collect(),
            files: sources.iter().map(|s| s.path.clone()).collect(),
            uses_datetime,
            dormant: dormant
                .into_iter()
                .map(|r| Dormant {
                    id: r.id,
                    file: r.file,
                    line: r.line,
                })
                .collect(),
        })
    }

    /// The policy files in force.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// How many policies are loaded.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no policy is loaded (a set of empty files: everything is
    /// denied).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some permit's scope covers this agent and tool, ignoring its
    /// conditions: a tool no permit could ever allow is not listed.
    pub fn may_permit(&self, agent: &str, tool: &str) -> bool {
        self.tools.get(tool).is_some_and(|t| {
            t.slice_for(agent)
                .policies()
                .any(|p| p.effect() == Effect::Permit)
        })
    }
}

impl ToolInfo {
    fn slice_for(&self, agent: &str) -> &PolicySet {
        self.by_agent.get(agent).unwrap_or(&self.generic)
    }
}

/// Policy slices by the policies they hold (sorted indices), so tools and
/// agents with the same relevant policies share one set.
#[derive(Default)]
struct Slices(HashMap<Vec<usize>, Arc<PolicySet>>);

impl Slices {
    fn get(&mut self, all: &[&Policy], ids: Vec<usize>) -> Result<Arc<PolicySet>, String> {
        if let Some(s) = self.0.get(&ids) {
            return Ok(s.clone());
        }
        let mut set = PolicySet::new();
        for &i in &ids {
            set.add(all[i].clone())
                .map_err(|e| format!("cannot slice the policy set: {e}"))?;
        }
        let set = Arc::new(set);
        self.0.insert(ids, set.clone());
        Ok(set)
    }
}

/// Whether a policy's action scope can match `action` (a member of `call`).
fn action_scope(p: &Policy, action: &EntityUid, call: &EntityUid) -> bool {
    match p.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(u) => u == *action,
        ActionConstraint::In(us) => us.iter().any(|u| u == action || u == call),
    }
}

/// Whether a policy's resource scope can match `resource` (in `connector`).
fn resource_scope(p: &Policy, resource: &EntityUid, connector: &EntityUid) -> bool {
    let within = |u: &EntityUid| u == resource || u == connector;
    match p.resource_constraint() {
        ResourceConstraint::Any => true,
        ResourceConstraint::Eq(u) => u == *resource,
        ResourceConstraint::In(u) => within(&u),
        ResourceConstraint::Is(k) => k == *resource.type_name(),
        ResourceConstraint::IsIn(k, u) => k == *resource.type_name() && within(&u),
    }
}

/// A task as policies see it.
#[derive(Debug, Clone, Copy)]
pub struct TaskFacts<'a> {
    /// Task id.
    pub id: &'a str,
    /// Declared purpose.
    pub purpose: &'a str,
    /// Its tools.
    pub tools: &'a [String],
    /// Its argument constraints.
    pub constraints: &'a [String],
    /// Who started it (`agent:<id>` or an admin).
    pub started_by: &'a str,
}

/// One call as policies see it.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    /// Agent id.
    pub agent: &'a str,
    /// Tool name.
    pub tool: &'a str,
    /// Validated arguments.
    pub args: &'a Map<String, Value>,
    /// Its task, if any.
    pub task: Option<TaskFacts<'a>>,
    /// The task constraints the arguments break (see `tasks::constraint`).
    pub violated: &'a [String],
    /// Now, by the gateway's clock.
    pub now: OffsetDateTime,
}

/// The three outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The call may go on.
    Allow,
    /// The call is refused.
    Deny,
    /// A person must approve the call first.
    ApprovalRequired,
}

impl Verdict {
    /// The name used in output and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::ApprovalRequired => "approval_required",
        }
    }
}

/// A policy that determined a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matched {
    /// Its id (`@id`, or `file:line`).
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// The file it is in.
    pub file: String,
    /// The line it starts on.
    pub line: usize,
    /// Its `@reason`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Who must approve a call, how many of them, and how long the call waits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    /// The route as declared: `owner:business`, `owner:system`,
    /// `owner:security` (the agent's owners), `connector:system`,
    /// `connector:security` (the tool's connector's owners) or `role:NAME`.
    pub route: String,
    /// Who that is for this call (the owner's or role's name).
    pub approvers: String,
    /// How many distinct people must approve.
    pub count: u32,
    /// How long the call may wait, in seconds.
    pub timeout_seconds: u64,
    /// What asked for it: a policy id, or the tool's risk default.
    pub source: String,
    /// A denial tells the agent neither who denied it nor why.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hide_reason: bool,
}

/// A decision, with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The outcome.
    pub verdict: Verdict,
    /// Stable reason code.
    pub code: &'static str,
    /// One sentence: why.
    pub summary: String,
    /// The policies that determined it.
    pub policies: Vec<Matched>,
    /// The approval needed, for `approval_required`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// The task constraints the arguments break.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violated_constraints: Vec<String>,
}

impl Decision {
    fn new(verdict: Verdict, code: &'static str, summary: String) -> Self {
        Self {
            verdict,
            code,
            summary,
            policies: Vec::new(),
            approval: None,
            violated_constraints: Vec::new(),
        }
    }

    /// The record's view: verdict, code, policy ids and the approval route.
    pub fn to_record(&self) -> Value {
        json!({
            "verdict": self.verdict.as_str(),
            "code": self.code,
            "summary": self.summary,
            "policies": self.policies.iter().map(|p| &p.id).collect::<Vec<_>>(),
            "approval": self.approval,
            "violated_constraints": self.violated_constraints,
        })
    }
}

/// Decides one call. `policies` is `None` when no `.cedar` file is loaded.
pub fn decide(policies: Option<&Policies>, call: &CallFacts<'_>) -> Decision {
    let violated = call.violated.to_vec();
    let Some(p) = policies else {
        if let Some(first) = violated.first() {
            let mut d = Decision::new(
                Verdict::Deny,
                "task_constraint",
                format!("the arguments break the task's constraint `{first}`"),
            );
            d.violated_constraints = violated;
            return d;
        }
        return Decision::new(
            Verdict::Allow,
            "grants_only",
            "no policy files: the grants and the task decide".into(),
        );
    };
    let mut d = p.evaluate(call);
    d.violated_constraints = violated;
    d
}

impl Policies {
    fn evaluate(&self, call: &CallFacts<'_>) -> Decision {
        let deny =
            |code: &'static str, summary: String| Decision::new(Verdict::Deny, code, summary);
        let (Some(tool), Some((principal, owners))) =
            (self.tools.get(call.tool), self.agents.get(call.agent))
        else {
            return deny(
                "policy_error",
                format!(
                    "`{}` or `{}` is unknown to the policy set",
                    call.agent, call.tool
                ),
            );
        };
        let context = match self.context(tool, call) {
            Ok(c) => c,
            Err(why) => {
                return deny(
                    "policy_unrepresentable",
                    format!("an argument cannot be checked by policy: {why}"),
                );
            }
        };
        let request = match Request::new(
            principal.clone(),
            tool.action.clone(),
            tool.resource.clone(),
            context,
            None,
        ) {
            Ok(r) => r,
            Err(e) => return deny("policy_error", format!("cannot build the request: {e}")),
        };
        let response =
            self.authorizer
                .is_authorized(&request, tool.slice_for(call.agent), &self.entities);
        let failed: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(p) => {
                    format!("`{}`", p.policy_id())
                }
            })
            .collect();
        if !failed.is_empty() {
            // Cedar skips a policy that errors; a skipped forbid would let
            // the call through, so any error refuses. Only the policy ids
            // are said: Cedar's messages can quote argument values.
            return deny(
                "policy_error",
                format!("policy {} failed to evaluate", failed.join(", ")),
            );
        }
        let mut matched: Vec<&Rule> = response
            .diagnostics()
            .reason()
            .filter_map(|id| self.rules.get(id))
            .collect();
        matched.sort_by(|a, b| a.id.cmp(&b.id));
        let listed: Vec<Matched> = matched.iter().map(|r| r.matched()).collect();
        if response.decision() == cedar_policy::Decision::Deny {
            let mut d = match matched.first() {
                None => deny(
                    "policy_default_deny",
                    format!(
                        "no policy permits `{}` to call `{}` with these arguments",
                        call.agent, call.tool
                    ),
                ),
                Some(r) => deny(
                    "policy_forbid",
                    r.reason
                        .clone()
                        .unwrap_or_else(|| format!("forbidden by policy `{}`", r.id)),
                ),
            };
            d.policies = listed;
            return d;
        }
        let route = |rule: Option<&ApprovalRule>, source: String| -> Approval {
            let default = default_approval(tool.risk);
            let a = rule.unwrap_or(&default);
            let approvers = match a.route.as_str() {
                "owner:business" => owners.business.name.clone(),
                "owner:system" => owners.system.name.clone(),
                "owner:security" => owners.security.name.clone(),
                "connector:system" | "connector:security" => self
                    .connectors
                    .get(&tool.connector)
                    .map(|o| {
                        if a.route == "connector:system" {
                            o.system.name.clone()
                        } else {
                            o.security.name.clone()
                        }
                    })
                    .unwrap_or_default(),
                other => other.trim_start_matches("role:").to_string(),
            };
            Approval {
                route: a.route.clone(),
                approvers,
                count: a.count,
                timeout_seconds: a.timeout_seconds,
                source,
                hide_reason: a.hide_reason,
            }
        };
        let requiring = matched.iter().find_map(|r| match &r.approval {
            Some(Some(a)) => Some((r, a)),
            _ => None,
        });
        let mut d = if !call.violated.is_empty() {
            // Outside the task's constraints: only a permit that says so
            // turns this into an approval.
            match matched.iter().find(|r| r.step_up_constraints) {
                None => {
                    let mut d = deny(
                        "task_constraint",
                        format!(
                            "the arguments break the task's constraint `{}`",
                            call.violated[0]
                        ),
                    );
                    d.policies = listed;
                    return d;
                }
                Some(r) => {
                    let rule = match &r.approval {
                        Some(Some(a)) => Some(a),
                        _ => None,
                    };
                    let mut d = Decision::new(
                        Verdict::ApprovalRequired,
                        "approval_required",
                        format!(
                            "the arguments break the task's constraint `{}`; policy `{}` lets a person approve it",
                            call.violated[0], r.id
                        ),
                    );
                    d.approval = Some(route(rule, r.id.clone()));
                    d
                }
            }
        } else if let Some((r, a)) = requiring {
            let mut d = Decision::new(
                Verdict::ApprovalRequired,
                "approval_required",
                r.reason
                    .clone()
                    .unwrap_or_else(|| format!("policy `{}` requires approval", r.id)),
            );
            d.approval = Some(route(Some(a), r.id.clone()));
            d
        } else if matched.iter().any(|r| r.approval == Some(None)) || tool.risk < Risk::High {
            let by: Vec<&str> = matched.iter().map(|r| r.id.as_str()).collect();
            Decision::new(
                Verdict::Allow,
                "policy_allow",
                format!("permitted by {}", by.join(", ")),
            )
        } else {
            let mut d = Decision::new(
                Verdict::ApprovalRequired,
                "approval_required",
                format!(
                    "`{}` is {} risk: a permit needs approval unless it says @approval(\"none\")",
                    call.tool,
                    tool.risk.as_str()
                ),
            );
            d.approval = Some(route(None, format!("risk:{}", tool.risk.as_str())));
            d
        };
        d.policies = listed;
        d
    }

    fn context(&self, tool: &ToolInfo, call: &CallFacts<'_>) -> Result<Context, String> {
        let args = RestrictedExpression::new_record(tool.shape.record_fields(call.args)?)
            .map_err(|e| e.to_string())?;
        let now = call.now.to_offset(time::UtcOffset::UTC);
        let mut clock = vec![
            (
                "hour_utc",
                RestrictedExpression::new_long(i64::from(now.hour())),
            ),
            (
                "weekday_utc",
                RestrictedExpression::new_long(i64::from(now.weekday().number_from_monday())),
            ),
        ];
        if self.uses_datetime {
            let stamp = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            );
            clock.push(("datetime", schema::datetime_expr(&stamp)));
        }
        let record = |fields: Vec<(&str, RestrictedExpression)>| {
            RestrictedExpression::new_record(fields.into_iter().map(|(k, v)| (k.to_string(), v)))
                .map_err(|e| e.to_string())
        };
        let strings = |items: &[String]| {
            RestrictedExpression::new_set(
                items.iter().cloned().map(RestrictedExpression::new_string),
            )
        };
        let mut pairs = vec![
            ("args".to_string(), args),
            ("now".to_string(), record(clock)?),
        ];
        if let Some(t) = call.task {
            pairs.push((
                "task".to_string(),
                record(vec![
                    ("id", RestrictedExpression::new_string(t.id.to_string())),
                    (
                        "purpose",
                        RestrictedExpression::new_string(t.purpose.to_string()),
                    ),
                    ("tools", strings(t.tools)),
                    ("constraints", strings(t.constraints)),
                    (
                        "started_by",
                        RestrictedExpression::new_string(t.started_by.to_string()),
                    ),
                    (
                        "within_constraints",
                        RestrictedExpression::new_bool(call.violated.is_empty()),
                    ),
                    ("violated_constraints", strings(call.violated)),
                ])?,
            ));
        }
        Context::from_pairs(pairs).map_err(|e| e.to_string())
    }
}

/// The approval a tool's risk asks for when no policy names one: `high`,
/// the agent's business owner; `critical`, two people of its security
/// owner. Fifteen minutes either way.
fn default_approval(risk: Risk) -> ApprovalRule {
    match risk {
        Risk::Critical => ApprovalRule {
            route: "owner:security".into(),
            count: 2,
            timeout_seconds: 900,
            hide_reason: false,
        },
        _ => ApprovalRule {
            route: "owner:business".into(),
            count: 1,
            timeout_seconds: 900,
            hide_reason: false,
        },
    }
}
