//! The manifest file format, as Rust types. These types are the single
//! source of the committed JSON Schema (`tollgate schema`). Every struct is
//! strict (`deny_unknown_fields`): a typo is an error, never a silent no-op.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tollgate_connectors::http::{HttpConnectorConfig, HttpToolConfig};
use tollgate_connectors::mcp::McpConnectorConfig;

/// Any document Tollgate accepts; the `kind` field tells them apart.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(title = "Tollgate manifest document")]
// Only used to generate the JSON Schema; never built at run time.
#[allow(clippy::large_enum_variant)]
pub enum ManifestDocument {
    /// A backend and the tools it offers.
    Connector(ConnectorManifest),
    /// An agent that may call tools.
    Agent(AgentManifest),
    /// An external token issuer whose JWTs identify agents.
    Issuer(IssuerManifest),
    /// Tollgate's built-in demo backend.
    DemoBackend(DemoBackendManifest),
    /// A person who may approve high-risk calls.
    Approver(ApproverManifest),
    /// Where approval requests and decisions are announced.
    Webhook(WebhookManifest),
}

macro_rules! kind_tag {
    ($name:ident, $value:literal) => {
        #[doc = concat!("Always `", $value, "`.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub enum $name {
            #[doc = concat!("`", $value, "`")]
            #[serde(rename = $value)]
            Tag,
        }
    };
}
kind_tag!(ConnectorKind, "Connector");
kind_tag!(AgentKind, "Agent");
kind_tag!(DemoBackendKind, "DemoBackend");
kind_tag!(IssuerKind, "Issuer");
kind_tag!(ApproverKind, "Approver");
kind_tag!(WebhookKind, "Webhook");

/// A person or team accountable for something, and how to reach them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Name of the person, team or role, e.g. `platform-team`.
    pub name: String,
    /// How to reach them: an e-mail address, chat channel or URL.
    pub contact: String,
}

/// Who answers for a connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorOwners {
    /// Runs the backend system.
    pub system: Owner,
    /// Reviews its security.
    pub security: Owner,
}

/// Who answers for an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentOwners {
    /// Owns the use case and what the agent may do.
    pub business: Owner,
    /// Runs the agent.
    pub system: Owner,
    /// Reviews its security and owns exceptions.
    pub security: Owner,
}

/// A connector: one backend, how to reach it, and the tools it offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorManifest {
    /// Document kind.
    pub kind: ConnectorKind,
    /// Identifier, lowercase (`[a-z][a-z0-9_-]*`); tools are named `<id>.<tool>`.
    pub id: String,
    /// What this backend is.
    pub description: String,
    /// Who answers for this connector.
    pub owners: ConnectorOwners,
    /// An HTTP API backend (its tools in `tools`). Exactly one of `http`
    /// and `mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConnectorConfig>,
    /// An upstream MCP server (the tools it may expose in `expose`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpConnectorConfig>,
    /// Whether agents see this connector's tools as `<id>.<tool>` (the
    /// default) or by their bare names. Turn it off only when the names are
    /// unique across every connector (the load refuses a collision), for
    /// example to front an upstream whose clients expect its own names.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub prefix: bool,
    /// How the backend is authenticated. Credentials are issued per task
    /// (or per call outside a task), just before dispatch, and never shown
    /// to the agent. Without `auth`, requests carry no credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BackendAuth>,
    /// The tools an `http` connector offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolManifest>,
    /// The upstream tools an `mcp` connector exposes; any other tool of the
    /// upstream stays hidden and is refused like an unknown tool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<ExposedTool>,
    /// The upstream prompts an `mcp` connector exposes (`prompts/get`).
    /// Agents are granted them as `prompt:<connector>.<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<ExposedPrompt>,
    /// The upstream resources an `mcp` connector exposes (`resources/read`,
    /// by their upstream URI). Agents are granted them as
    /// `resource:<connector>.<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ExposedResource>,
    /// The upstream resource templates an `mcp` connector exposes: any URI
    /// that expands the template is read through it. Granted as
    /// `resource:<connector>.<name>`; the URI read is the entry's `uri`
    /// argument, which policies can test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_templates: Vec<ExposedTemplate>,
    /// Whether an `mcp` connector's upstream may ask the calling agent's
    /// client for an LLM completion (`sampling/createMessage`) during a
    /// call, and how that is governed. Each such request is a catalog
    /// entry of its own, `sampling:<connector>`: the agent must be granted
    /// it, and it goes through every stage a call does (task scope,
    /// policy, limits, approval) and is recorded. Absent: Tollgate does not
    /// declare the capability to the upstream, and refuses such requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<ClientAskManifest>,
    /// The same for input from the agent's user (`elicitation/create`),
    /// granted as `elicitation:<connector>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elicitation: Option<ClientAskManifest>,
    /// Limits that protect the backend from all agents together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ConnectorLimits>,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One upstream tool an `mcp` connector exposes, with Tollgate's own
/// settings. Its schemas come from the upstream (and are pinned); its risk
/// is Tollgate's: the upstream's annotations can raise it, never lower it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposedTool {
    /// The name agents see inside this connector (`[a-z][a-z0-9_-]*`
    /// unless `prefix: false`, where the upstream's own name is kept).
    pub name: String,
    /// The upstream's name for it, when `name` renames it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// A title shown instead of the upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A description shown instead of the upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How much harm the tool can do, as Tollgate judges it. An upstream
    /// that does not declare the tool read-only raises a `low` to
    /// `medium`, and one that declares it destructive raises it to `high`.
    pub risk: Risk,
    /// The definition's digest (`sha256:...`, written by `tollgate
    /// connectors pin`). When the upstream's definition no longer matches,
    /// the tool is withdrawn until the manifest is updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// OAuth scopes the tool needs from the backend's authorization server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Free-form labels policies can test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Top-level arguments never shown in clear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
    /// How an agent waits for an approval this tool needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<ApprovalMode>,
}

/// One upstream prompt an `mcp` connector exposes. Getting it goes
/// through every stage a tool call does, and is recorded like one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposedPrompt {
    /// The name agents see inside this connector.
    pub name: String,
    /// The upstream's name for it, when `name` renames it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// A description shown instead of the upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How much harm getting it can do, as Tollgate judges it.
    pub risk: Risk,
    /// Free-form labels policies can test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// How requests an upstream makes of agents' clients (sampling,
/// elicitation) are governed: like a tool of the connector's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAskManifest {
    /// What such a request is for, shown to operators and policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How much harm passing one on can do, as Tollgate judges it (`high`
    /// and `critical` wait for human approval, as calls do).
    pub risk: Risk,
    /// Free-form labels policies can test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// One upstream resource an `mcp` connector exposes, by its URI. Reading
/// it goes through every stage a tool call does, and is recorded like one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposedResource {
    /// The name it is granted by (`resource:<connector>.<name>`).
    pub name: String,
    /// The upstream's URI for it (what agents read).
    pub uri: String,
    /// A description shown instead of the upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How much harm reading it can do, as Tollgate judges it.
    pub risk: Risk,
    /// Free-form labels policies can test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// One upstream resource template an `mcp` connector exposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposedTemplate {
    /// The name it is granted by (`resource:<connector>.<name>`).
    pub name: String,
    /// The upstream's URI template (RFC 6570), exactly as it lists it.
    pub template: String,
    /// A description shown instead of the upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How much harm reading through it can do, as Tollgate judges it.
    pub risk: Risk,
    /// Free-form labels policies can test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl ExposedTool {
    /// The upstream's name for the tool.
    pub fn upstream_name(&self) -> &str {
        self.upstream.as_deref().unwrap_or(&self.name)
    }
}

/// How much harm a tool can do. Later stages (tasks, approvals) key off it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Reads that expose nothing sensitive.
    Low,
    /// Reversible changes.
    Medium,
    /// Changes with business impact (money, access).
    High,
    /// Irreversible or destructive changes.
    Critical,
}

impl Risk {
    /// The lowercase name used in manifests and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }
}

/// MCP behaviour hints shown to clients. Hints only: Tollgate decides by
/// `risk`, never by these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolHints {
    /// The tool does not change anything (`readOnlyHint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// The tool may destroy or overwrite data (`destructiveHint`). Defaults
    /// to the pessimistic `true` unless `read_only` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    /// Repeating the call has no further effect (`idempotentHint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// The tool reaches outside the organisation (`openWorldHint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world: Option<bool>,
}

/// One tool of a connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolManifest {
    /// Name inside the connector (`[a-z][a-z0-9_-]*`).
    pub name: String,
    /// Human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What the tool does, for the agent's model.
    pub description: String,
    /// How much harm the tool can do.
    pub risk: Risk,
    /// JSON Schema of the arguments (an object schema). Every call is
    /// validated against it before anything reaches the backend.
    pub input_schema: Map<String, Value>,
    /// JSON Schema of the structured result, if the backend's is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Map<String, Value>>,
    /// MCP annotations shown to clients.
    #[serde(default)]
    pub annotations: ToolHints,
    /// OAuth scopes this tool needs from the backend's authorization server
    /// (`oauth2_client_credentials`, `token_exchange`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Free-form labels policies can test (`resource.labels.contains("pii")`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Top-level arguments never shown in clear: approval requests,
    /// the review page and records show `<redacted>` instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
    /// How an agent waits for an approval this tool needs, unless the
    /// agent's manifest says otherwise. Default `blocking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<ApprovalMode>,
    /// How the call maps onto the HTTP backend.
    pub http: HttpToolConfig,
}

/// How an agent waits for a human approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// The `tools/call` stays open, with progress notifications, until the
    /// request is decided (or its deadline passes, or the client leaves).
    Blocking,
    /// The call returns at once with "approval pending" and the request id;
    /// once approved, the same call with the same arguments runs once.
    NonBlocking,
}

/// An agent's approval settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentApprovals {
    /// How the agent waits; overrides the tool's `approval_mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ApprovalMode>,
    /// Most approval requests of this agent pending at once (default 5):
    /// an agent cannot flood its approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
    /// How many new approval requests the agent may file (default
    /// `30/hour`); asking again for a request already pending is free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
}

/// A person who may approve calls. Routing: a policy's `owner:business`
/// (and the other owner routes) reaches the approver whose `id` or one of
/// whose `roles` is that owner's name; `role:NAME` reaches every approver
/// with role `NAME`. Their credential: `tollgate approvers issue-key ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproverManifest {
    /// Document kind.
    pub kind: ApproverKind,
    /// Identifier (`[a-z][a-z0-9_-]*`), e.g. `head-of-support`.
    pub id: String,
    /// Full name, shown on decisions.
    pub name: String,
    /// How to reach them: an e-mail address or chat handle.
    pub contact: String,
    /// Roles, e.g. `business-owner:support`, `security`, or an owner name
    /// used in agent manifests (`secops`).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A webhook told about approval requests and decisions (JSON POST, signed
/// with HMAC-SHA256 over `timestamp.body`; see the README). Failures are
/// retried with backoff and never block or decide anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookManifest {
    /// Document kind.
    pub kind: WebhookKind,
    /// Identifier (`[a-z][a-z0-9_-]*`).
    pub id: String,
    /// Requests routed to any of these roles or owner names are announced;
    /// empty: every request.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// `tollgate` (signed JSON event) or `slack` (incoming-webhook `text`).
    #[serde(default)]
    pub format: WebhookFormat,
    /// The HMAC key for the signature header (required for `tollgate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

/// A webhook's payload format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The Tollgate event, signed.
    #[default]
    Tollgate,
    /// Slack's incoming-webhook payload (`{"text": ...}`), also signed when
    /// a secret is set.
    Slack,
}

/// An agent: an accountable, authenticated caller with grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentManifest {
    /// Document kind.
    pub kind: AgentKind,
    /// Identifier (`[a-z][a-z0-9_-]*`).
    pub id: String,
    /// What the agent is for.
    pub description: String,
    /// Who answers for this agent.
    pub owners: AgentOwners,
    /// Who approved this agent's deployment, and when.
    pub deployment: DeploymentApproval,
    /// Date (`YYYY-MM-DD`) by which the agent must be reviewed again. From
    /// that day on it is treated as suspended until this date is moved.
    #[schemars(regex(pattern = r"^\d{4}-\d{2}-\d{2}$"))]
    pub review_by: String,
    /// Tools the agent may call: exact names (`billing.refund`) or globs
    /// (`helpdesk.*`). Each entry must match at least one tool.
    pub tools: Vec<String>,
    /// How the agent proves who it is.
    #[serde(default)]
    pub credentials: AgentCredentials,
    /// Task rules for this agent.
    #[serde(default)]
    pub tasks: AgentTaskPolicy,
    /// Free-form labels policies can test (`principal.labels.contains("tier1")`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// How much the agent may call: rates, and budgets per task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<AgentLimits>,
    /// How the agent waits for approvals, and how many it may have pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<AgentApprovals>,
}

/// A rate: `N/second`, `N/minute`, `N/hour` or `N/day`, with an optional
/// burst (calls allowed at once after a quiet spell; default N).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// `N/second`, `N/minute`, `N/hour` or `N/day`, e.g. `60/minute`.
    #[schemars(regex(pattern = r"^[1-9][0-9]*/(second|minute|hour|day)$"))]
    pub rate: String,
    /// Calls allowed back to back after a quiet spell. Default: N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// An agent's limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// All of the agent's calls together (the gateway's own tools included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
    /// Per tool (exact names, including `tollgate.start_task` and
    /// `tollgate.end_task`): the agent's calls to that tool.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tools: std::collections::BTreeMap<String, RateLimit>,
    /// Limits on each task of this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_task: Option<TaskLimits>,
}

/// Limits on one task. Exhausting `max_calls` or a budget ends the task and
/// revokes its credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskLimits {
    /// Most connector calls one task may make.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u64>,
    /// Most calls of one task running at the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Budgets over a numeric argument, summed over the task's calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<ArgumentBudget>,
}

/// A budget over one numeric argument: the sum of its values over a task's
/// calls to these tools never exceeds `max` (checked before each call, so
/// concurrent calls cannot both squeeze under it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArgumentBudget {
    /// Tools whose calls count (exact names); each must declare `argument`
    /// as a required number or integer.
    pub tools: Vec<String>,
    /// The argument summed, e.g. `amount`.
    pub argument: String,
    /// The most the sum may reach (up to 4 decimal places).
    pub max: f64,
}

/// A connector's limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorLimits {
    /// All agents' calls to this connector together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
}

fn default_max_task_ttl() -> u64 {
    3600
}

/// Task rules for one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTaskPolicy {
    /// Every call must be made within a task. (Tools of risk `high` and
    /// `critical` always need one.) Default false.
    #[serde(default)]
    pub required: bool,
    /// Longest TTL a task of this agent may have, in seconds. Default 3600.
    #[serde(default = "default_max_task_ttl")]
    pub max_ttl_seconds: u64,
    /// The highest tool risk the agent may start a task for itself, in
    /// band (`tollgate.start_task`). A task naming a riskier tool must be
    /// started by an operator (CLI or admin API). Default `high`: agents
    /// never start their own tasks for `critical` tools unless this says
    /// `critical`.
    #[serde(default = "default_self_start_max_risk")]
    pub self_start_max_risk: Risk,
}

fn default_self_start_max_risk() -> Risk {
    Risk::High
}

impl Default for AgentTaskPolicy {
    fn default() -> Self {
        Self {
            required: false,
            max_ttl_seconds: default_max_task_ttl(),
            self_start_max_risk: default_self_start_max_risk(),
        }
    }
}

/// Where a secret comes from (exactly one of `env`, `file`). The value is
/// read when needed and never written anywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file (relative to the manifest's directory); surrounding
    /// whitespace is trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

fn default_auth_header() -> String {
    "authorization".into()
}

fn default_credential_ttl() -> u64 {
    300
}

/// How Tollgate authenticates to a backend: exactly one of the fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendAuth {
    /// Tollgate mints a JWT for this backend only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_jwt: Option<GatewayJwtAuth>,
    /// Tollgate fetches a token from an OAuth 2.0 token endpoint (client
    /// credentials grant) with the scopes the task's tools need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_client_credentials: Option<ClientCredentialsAuth>,
    /// Tollgate exchanges its own token for the agent and task for a
    /// down-scoped, audience-bound token (RFC 8693), the agent as actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchangeAuth>,
    /// A long-lived secret injected as a header. Allowed, but flagged by
    /// `tollgate check`: it is neither short-lived nor task-scoped.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_secret: Option<StaticAuth>,
}

/// The one kind of backend authentication a connector declares.
#[derive(Debug, Clone, Copy)]
pub enum AuthKind<'a> {
    /// `gateway_jwt`.
    GatewayJwt(&'a GatewayJwtAuth),
    /// `oauth2_client_credentials`.
    Oauth2ClientCredentials(&'a ClientCredentialsAuth),
    /// `token_exchange`.
    TokenExchange(&'a TokenExchangeAuth),
    /// `static`.
    Static(&'a StaticAuth),
}

impl BackendAuth {
    /// The declared kind, or why the block is not exactly one kind.
    pub fn kind(&self) -> Result<AuthKind<'_>, String> {
        let mut kinds = Vec::new();
        if let Some(a) = &self.gateway_jwt {
            kinds.push(AuthKind::GatewayJwt(a));
        }
        if let Some(a) = &self.oauth2_client_credentials {
            kinds.push(AuthKind::Oauth2ClientCredentials(a));
        }
        if let Some(a) = &self.token_exchange {
            kinds.push(AuthKind::TokenExchange(a));
        }
        if let Some(a) = &self.static_secret {
            kinds.push(AuthKind::Static(a));
        }
        match kinds.as_slice() {
            [one] => Ok(*one),
            [] => Err("`auth` needs one of `gateway_jwt`, `oauth2_client_credentials`, `token_exchange`, `static`".into()),
            _ => Err("`auth` declares more than one kind; choose one".into()),
        }
    }
}

/// `gateway_jwt` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayJwtAuth {
    /// `aud` of the minted tokens. Default `urn:tollgate:connector:<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Lifetime of one token, in seconds (never past the task's end, never
    /// past the global cap). Default 300.
    #[serde(default = "default_credential_ttl")]
    pub ttl_seconds: u64,
    /// Header carrying `Bearer <token>`. Default `authorization`.
    #[serde(default = "default_auth_header")]
    pub header: String,
}

/// How Tollgate authenticates itself to a token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic (`client_secret_basic`).
    Basic,
    /// Form fields (`client_secret_post`).
    Post,
}

fn default_client_auth() -> ClientAuthMethod {
    ClientAuthMethod::Basic
}

/// `oauth2_client_credentials` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentialsAuth {
    /// Token endpoint.
    pub token_url: String,
    /// RFC 7009 revocation endpoint, called when the task ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: SecretRef,
    /// How the client authenticates. Default `basic`.
    #[serde(default = "default_client_auth")]
    pub client_auth: ClientAuthMethod,
    /// Header carrying `Bearer <token>`. Default `authorization`.
    #[serde(default = "default_auth_header")]
    pub header: String,
}

/// `token_exchange` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeAuth {
    /// Token endpoint that implements RFC 8693.
    pub token_url: String,
    /// Audience of the exchanged token (the backend).
    pub audience: String,
    /// Optional `resource` (RFC 8707) to request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// RFC 7009 revocation endpoint, called when the task ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
    /// Client id, if the endpoint authenticates clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Client secret, with `client_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretRef>,
    /// How the client authenticates. Default `basic`.
    #[serde(default = "default_client_auth")]
    pub client_auth: ClientAuthMethod,
    /// Header carrying `Bearer <token>`. Default `authorization`.
    #[serde(default = "default_auth_header")]
    pub header: String,
}

/// `static` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticAuth {
    /// Header to set, e.g. `x-api-key`.
    pub header: String,
    /// Where the secret comes from.
    pub value: SecretRef,
    /// Text before the secret, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Who approved an agent's deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentApproval {
    /// The approver (person or role), e.g. `ciso`.
    pub approved_by: String,
    /// Date of approval, `YYYY-MM-DD`.
    #[schemars(regex(pattern = r"^\d{4}-\d{2}-\d{2}$"))]
    pub approved_at: String,
}

/// The ways an agent may authenticate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentCredentials {
    /// Accept bearer keys issued by `tollgate agents issue-key`. Default true.
    #[serde(default = "yes")]
    pub gateway_keys: bool,
    /// Workload identities (JWTs from a declared `Issuer`) that are this
    /// agent. An identity may belong to one agent only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workload: Vec<WorkloadIdentity>,
}

/// One external identity: an issuer and the token subject it issues for
/// this agent (e.g. a SPIFFE ID).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentity {
    /// Id of an `Issuer` document.
    pub issuer: String,
    /// The `sub` claim, e.g. `spiffe://corp/agents/invoice-bot`.
    pub subject: String,
}

/// Signature algorithms an issuer may use. `none` does not exist here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// Where an issuer's public keys come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwksSource {
    /// A JWKS URL, fetched on first use and refreshed every
    /// `refresh_seconds` and when a token names an unknown key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A JWKS file, relative to this manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Seconds a fetched key set is trusted before it is fetched again.
    /// Default 300.
    #[serde(default = "default_jwks_refresh")]
    pub refresh_seconds: u64,
    /// Seconds the last good key set is still used while refreshing it
    /// fails (the issuer is down); past that, tokens are refused until a
    /// fetch succeeds. Never less than `refresh_seconds`. Default 3600.
    #[serde(default = "default_jwks_max_stale")]
    pub max_stale_seconds: u64,
}

fn default_jwks_max_stale() -> u64 {
    3600
}

fn default_jwks_refresh() -> u64 {
    300
}

fn default_leeway() -> u64 {
    30
}

/// An external issuer of agent identity tokens (OIDC provider, SPIFFE
/// JWT-SVID issuer, Kubernetes service-account tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerManifest {
    /// Document kind.
    pub kind: IssuerKind,
    /// Identifier used by agents' `credentials.workload[].issuer`.
    pub id: String,
    /// What this issuer is.
    pub description: String,
    /// The exact `iss` claim its tokens carry.
    pub issuer: String,
    /// The audience that names this gateway; tokens whose `aud` does not
    /// contain it are refused.
    pub audience: String,
    /// Algorithms accepted from this issuer (at least one).
    pub algorithms: Vec<JwtAlgorithm>,
    /// Where its public keys come from (exactly one of `url`, `file`).
    pub jwks: JwksSource,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds. Default 30.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Authorization server advertised to clients in the protected
    /// resource metadata (RFC 9728). Default: `issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_server: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for AgentCredentials {
    fn default() -> Self {
        Self {
            gateway_keys: true,
            workload: Vec::new(),
        }
    }
}

/// Starts Tollgate's built-in demo backend (helpdesk and billing APIs with
/// sample data) next to the gateway, so the shipped manifests work with no
/// other service. Remove this document to run without it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoBackendManifest {
    /// Document kind.
    pub kind: DemoBackendKind,
    /// Address the demo backend listens on; loopback only.
    pub listen: SocketAddr,
}

/// The JSON Schema of a manifest document, generated from these types.
pub fn json_schema() -> Value {
    let schema = schemars::schema_for!(ManifestDocument);
    serde_json::to_value(schema).unwrap_or(Value::Null)
}
