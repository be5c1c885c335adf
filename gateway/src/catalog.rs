//! The catalog: the validated, runtime form of the manifests. Built only by
//! `manifest::load_sources`, immutable afterwards; a reload builds a new one
//! and swaps it in whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tollgate_connectors::mcp::ClientAsk;

use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Map, Value};
use tollgate_connectors::Connector;

use crate::identity::Issuer;
use crate::manifest::types::{
    AgentManifest, AgentOwners, AgentTaskPolicy, AuthKind, BackendAuth, ConnectorManifest,
    ConnectorOwners, DeploymentApproval, Risk, ToolManifest,
};

/// The gateway's own tool that starts a task in band.
pub const START_TASK: &str = "tollgate.start_task";
/// The gateway's own tool that ends a task in band.
pub const END_TASK: &str = "tollgate.end_task";

/// No credential lives longer than this from issue.
pub const MAX_CREDENTIAL_TTL: std::time::Duration = std::time::Duration::from_secs(900);

/// Everything the gateway serves, as loaded from one manifest directory.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Tools by their agent-visible name (`connector.tool`), sorted, so every
    /// list is in a fixed order.
    pub tools: BTreeMap<String, Arc<ToolEntry>>,
    /// Agents by id.
    pub agents: HashMap<String, Arc<AgentEntry>>,
    /// Connectors by id.
    pub connectors: BTreeMap<String, Arc<ConnectorEntry>>,
    /// Problems that do not stop the load but that an operator should see
    /// (long-lived static secrets, secrets not available here).
    pub warnings: Vec<crate::manifest::ManifestError>,
    /// Trusted token issuers by manifest id.
    pub issuers: BTreeMap<String, Arc<Issuer>>,
    /// The same issuers by their exact `iss` value.
    pub issuers_by_iss: HashMap<String, Arc<Issuer>>,
    /// Workload identities: (issuer id, subject) -> agent id. One agent per
    /// identity, checked at load.
    pub workloads: HashMap<(String, String), String>,
    /// Where the built-in demo backend should listen, if declared.
    pub demo_backend: Option<SocketAddr>,
    /// The files this catalog was built from, with content hashes.
    pub sources: Vec<SourceFile>,
    /// The policy set from the `*.cedar` files; `None` when there are none
    /// (the grants decide alone).
    pub policies: Option<Arc<crate::policy::Policies>>,
    /// People who may approve calls, by id.
    pub approvers: BTreeMap<String, Arc<ApproverEntry>>,
    /// Where approval requests and decisions are announced.
    pub webhooks: Vec<Arc<WebhookEntry>>,
    /// Tools of `mcp` connectors that are declared but not served now
    /// (upstream down, tool gone, pinned definition changed), by
    /// agent-visible name. Not listed; a call is refused with the reason.
    pub withdrawn: BTreeMap<String, Withdrawn>,
    /// Exposed upstream resources: URI -> catalog name (`resource:...`).
    pub resource_uris: HashMap<String, String>,
    /// Exposed upstream resource templates: (URI template, catalog name),
    /// tried in order for a URI that is not exposed exactly.
    pub resource_templates: Vec<(String, String)>,
}

/// What a catalog entry is, and so which MCP method reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolKind {
    /// A tool (`tools/call`).
    #[default]
    Tool,
    /// An upstream's prompt (`prompts/get`), named `prompt:<connector>.<name>`.
    Prompt,
    /// An upstream's resource (`resources/read`), named
    /// `resource:<connector>.<name>`.
    Resource,
    /// An upstream's request of the calling agent's client (sampling or
    /// elicitation), named `sampling:<connector>` /
    /// `elicitation:<connector>`; reached only from inside a call.
    Ask(ClientAsk),
}

impl ToolKind {
    /// The prefix of its catalog names (and grants).
    pub fn prefix(self) -> &'static str {
        match self {
            ToolKind::Tool => "",
            ToolKind::Prompt => "prompt:",
            ToolKind::Resource => "resource:",
            ToolKind::Ask(ClientAsk::Sampling) => "sampling:",
            ToolKind::Ask(ClientAsk::Elicitation) => "elicitation:",
        }
    }

    /// Whether it is a request an upstream makes of the agent's client
    /// (part of a call already running, not a call of its own).
    pub fn is_ask(self) -> bool {
        matches!(self, ToolKind::Ask(_))
    }
}

/// A declared tool that is not served now, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Withdrawn {
    /// Connector id.
    pub connector: String,
    /// Name inside the connector.
    pub tool: String,
    /// Stable reason code (`upstream_unavailable`, `upstream_tool_missing`,
    /// `tool_definition_changed`, `upstream_definition_invalid`).
    pub code: &'static str,
    /// What happened and what to do, for agents and operators.
    pub why: String,
}

/// A person who may approve calls (see `ApproverManifest`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ApproverEntry {
    /// Id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// How to reach them.
    pub contact: String,
    /// Roles (and owner names) they answer for.
    pub roles: Vec<String>,
}

impl ApproverEntry {
    /// Whether this person answers for `name`: their id or one of their
    /// roles is that name.
    pub fn answers_for(&self, name: &str) -> bool {
        self.id == name || self.roles.iter().any(|r| r == name)
    }
}

/// A webhook for approval events (see `WebhookManifest`).
#[derive(Debug)]
pub struct WebhookEntry {
    /// Id.
    pub id: String,
    /// Roles or owner names it hears about; empty: all.
    pub roles: Vec<String>,
    /// Where to POST.
    pub url: String,
    /// Payload format.
    pub format: crate::manifest::types::WebhookFormat,
    /// HMAC key source.
    pub secret: Option<crate::manifest::types::SecretRef>,
    /// Directory of its manifest (for a secret file).
    pub base_dir: PathBuf,
}

impl Catalog {
    /// Every rate limit this catalog declares.
    pub fn rate_keys(&self) -> std::collections::HashSet<crate::limits::RateKey> {
        use crate::limits::RateKey;
        let mut keys = std::collections::HashSet::new();
        for a in self.agents.values() {
            if a.rate.is_some() {
                keys.insert(RateKey::Agent(a.id.clone()));
            }
            for t in a.tool_rates.keys() {
                keys.insert(RateKey::AgentTool(a.id.clone(), t.clone()));
            }
        }
        for a in self.agents.values() {
            keys.insert(RateKey::ApprovalRequests(a.id.clone()));
        }
        for c in self.connectors.values() {
            if c.rate.is_some() {
                keys.insert(RateKey::Connector(c.id.clone()));
            }
        }
        keys
    }
}

/// One manifest file and the SHA-256 of its content.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as read.
    pub path: PathBuf,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// A connector: where its backend is and how Tollgate authenticates to it.
#[derive(Debug)]
pub struct ConnectorEntry {
    /// Id.
    pub id: String,
    /// Backend authentication, if any.
    pub auth: Option<BackendAuth>,
    /// Directory of the manifest that declared it (for relative secret files).
    pub base_dir: PathBuf,
    /// All agents' calls to it together.
    pub rate: Option<crate::limits::RateSpec>,
    /// For an `mcp` connector served here: its running upstream.
    pub upstream: Option<Arc<tollgate_connectors::mcp::Upstream>>,
}

impl ConnectorEntry {
    /// The audience of tokens minted for this connector.
    pub fn audience(&self) -> String {
        let default = || format!("urn:tollgate:connector:{}", self.id);
        match self.auth.as_ref().map(BackendAuth::kind) {
            Some(Ok(AuthKind::GatewayJwt(j))) => j.audience.clone().unwrap_or_else(default),
            Some(Ok(AuthKind::TokenExchange(t))) => t.audience.clone(),
            _ => default(),
        }
    }
}

/// A tool ready to be listed and called.
#[derive(Debug)]
pub struct ToolEntry {
    /// Agent-visible name, `connector.tool`.
    pub full_name: String,
    /// Connector id.
    pub connector_id: String,
    /// Name inside the connector.
    pub local_name: String,
    /// Declared risk.
    pub risk: Risk,
    /// The MCP tool definition shown in `tools/list`.
    pub tool: Tool,
    /// Compiled input schema; every call is checked against it.
    pub validator: jsonschema::Validator,
    /// The connector that serves it.
    pub connector: Arc<dyn Connector>,
    /// The connector's owners.
    pub owners: Arc<ConnectorOwners>,
    /// OAuth scopes the tool needs from its backend's authorization server.
    pub scopes: Vec<String>,
    /// Labels, for policies.
    pub labels: Vec<String>,
    /// Declared hints, for policies.
    pub hints: crate::manifest::types::ToolHints,
    /// Arguments never shown in clear.
    pub sensitive: Vec<String>,
    /// How an agent waits for this tool's approvals (unless the agent says).
    pub approval_mode: Option<crate::manifest::types::ApprovalMode>,
    /// Compiled output schema of an upstream tool: its structured content
    /// is checked against it before the agent sees it.
    pub output_validator: Option<Arc<jsonschema::Validator>>,
    /// For an upstream's prompt or resource: how agents list it (its kind
    /// follows from it). `None` for a tool.
    pub listing: Option<Listing>,
}

/// How an upstream's prompt or resource is listed to agents.
#[derive(Debug, Clone)]
pub enum Listing {
    /// In `prompts/list`.
    Prompt(rmcp::model::Prompt),
    /// In `resources/list`.
    Resource(rmcp::model::Resource),
    /// In `resources/templates/list`.
    Template(rmcp::model::ResourceTemplate),
    /// Not listed: what an upstream may ask of agents' clients.
    Ask(ClientAsk),
}

impl ToolEntry {
    pub(crate) fn new(
        c: &ConnectorManifest,
        t: &ToolManifest,
        full_name: String,
        validator: jsonschema::Validator,
        connector: Arc<dyn Connector>,
        owners: Arc<ConnectorOwners>,
    ) -> Self {
        let read_only = t.annotations.read_only.unwrap_or(false);
        let mut hints = ToolAnnotations::new()
            .read_only(read_only)
            // Pessimistic default: a tool that is not declared read-only is
            // assumed destructive unless the manifest says otherwise.
            .destructive(t.annotations.destructive.unwrap_or(!read_only));
        if let Some(i) = t.annotations.idempotent {
            hints = hints.idempotent(i);
        }
        if let Some(o) = t.annotations.open_world {
            hints = hints.open_world(o);
        }
        if let Some(title) = &t.title {
            hints.title = Some(title.clone());
        }
        let mut meta = Map::new();
        meta.insert(
            "tollgate/risk".into(),
            Value::String(t.risk.as_str().into()),
        );
        meta.insert("tollgate/connector".into(), Value::String(c.id.clone()));
        let mut tool = Tool::new(
            full_name.clone(),
            t.description.clone(),
            Arc::new(t.input_schema.clone()),
        )
        .with_annotations(hints)
        .with_meta(rmcp::model::MetaObject(meta));
        if let Some(title) = &t.title {
            tool = tool.with_title(title.clone());
        }
        if let Some(out) = &t.output_schema {
            tool = tool.with_raw_output_schema(Arc::new(out.clone()));
        }
        Self {
            full_name,
            connector_id: c.id.clone(),
            local_name: t.name.clone(),
            risk: t.risk,
            tool,
            validator,
            connector,
            owners,
            scopes: t.scopes.clone(),
            labels: t.labels.clone(),
            hints: t.annotations.clone(),
            sensitive: t.sensitive.clone(),
            approval_mode: t.approval_mode,
            output_validator: None,
            listing: None,
        }
    }

    /// An upstream MCP tool as exposed: the upstream's schemas and hints,
    /// the manifest's name, title, description and risk. The risk is never
    /// below what the upstream's own hints imply (a tool not declared
    /// read-only is at least `medium`, a destructive one at least `high`):
    /// hints may raise Tollgate's judgement, never lower it.
    pub(crate) fn from_upstream(
        c: &ConnectorManifest,
        t: &crate::manifest::types::ExposedTool,
        full_name: String,
        def: &Tool,
        connector: Arc<dyn Connector>,
        owners: Arc<ConnectorOwners>,
    ) -> Result<Self, String> {
        let validator = compile_input_schema(&def.input_schema)
            .map_err(|e| format!("the upstream's definition of `{}`: {e}", def.name))?;
        let output_validator = match &def.output_schema {
            None => None,
            Some(schema) => Some(Arc::new(
                jsonschema::options()
                    .build(&Value::Object((**schema).clone()))
                    .map_err(|e| {
                        format!(
                            "the upstream's output schema of `{}` is not a valid JSON Schema: {e}",
                            def.name
                        )
                    })?,
            )),
        };
        let upstream_hints = def.annotations.clone().unwrap_or_default();
        let read_only = upstream_hints.read_only_hint == Some(true);
        let floor = if upstream_hints.destructive_hint == Some(true) && !read_only {
            Risk::High
        } else if read_only {
            Risk::Low
        } else {
            Risk::Medium
        };
        let risk = t.risk.max(floor);
        let hints = crate::manifest::types::ToolHints {
            read_only: upstream_hints.read_only_hint,
            destructive: upstream_hints.destructive_hint,
            idempotent: upstream_hints.idempotent_hint,
            open_world: upstream_hints.open_world_hint,
        };
        let mut meta = Map::new();
        meta.insert("tollgate/risk".into(), Value::String(risk.as_str().into()));
        meta.insert("tollgate/connector".into(), Value::String(c.id.clone()));
        let mut tool = def.clone();
        tool.name = full_name.clone().into();
        tool.meta = Some(rmcp::model::MetaObject(meta));
        if let Some(d) = &t.description {
            tool.description = Some(d.clone().into());
        }
        if let Some(title) = &t.title {
            tool.title = Some(title.clone());
        }
        Ok(Self {
            full_name,
            connector_id: c.id.clone(),
            local_name: t.name.clone(),
            risk,
            tool,
            validator,
            connector,
            owners,
            scopes: t.scopes.clone(),
            labels: t.labels.clone(),
            hints,
            sensitive: t.sensitive.clone(),
            approval_mode: t.approval_mode,
            output_validator,
            listing: None,
        })
    }

    /// What it is, and so which MCP method reaches it.
    pub fn kind(&self) -> ToolKind {
        match self.listing {
            None => ToolKind::Tool,
            Some(Listing::Prompt(_)) => ToolKind::Prompt,
            Some(Listing::Resource(_) | Listing::Template(_)) => ToolKind::Resource,
            Some(Listing::Ask(what)) => ToolKind::Ask(what),
        }
    }

    /// An upstream's prompt or resource as a catalog entry, so that getting
    /// or reading it goes through every stage a call does. `schema` is
    /// what its arguments must be (a prompt's declared arguments, a
    /// template's `uri`, nothing for a resource).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upstream_extra(
        c: &ConnectorManifest,
        full_name: String,
        local_name: String,
        description: String,
        schema: Map<String, Value>,
        risk: Risk,
        labels: Vec<String>,
        listing: Listing,
        connector: Arc<dyn Connector>,
        owners: Arc<ConnectorOwners>,
    ) -> Result<Self, String> {
        let validator = compile_input_schema(&schema)?;
        let mut meta = Map::new();
        meta.insert("tollgate/risk".into(), Value::String(risk.as_str().into()));
        meta.insert("tollgate/connector".into(), Value::String(c.id.clone()));
        let tool = Tool::new(full_name.clone(), description, Arc::new(schema))
            .with_annotations(ToolAnnotations::new().read_only(true))
            .with_meta(rmcp::model::MetaObject(meta));
        Ok(Self {
            full_name,
            connector_id: c.id.clone(),
            local_name,
            risk,
            tool,
            validator,
            connector,
            owners,
            scopes: Vec::new(),
            labels,
            // What an upstream asks of an agent's client is not a read.
            hints: crate::manifest::types::ToolHints {
                read_only: Some(!matches!(listing, Listing::Ask(_))),
                ..Default::default()
            },
            sensitive: Vec::new(),
            approval_mode: None,
            output_validator: None,
            listing: Some(listing),
        })
    }
}

/// An agent as the pipeline sees it.
#[derive(Debug)]
pub struct AgentEntry {
    /// Agent id.
    pub id: String,
    /// What it is for.
    pub description: String,
    /// Who answers for it.
    pub owners: AgentOwners,
    /// Who approved its deployment, and when.
    pub deployment: DeploymentApproval,
    /// From this day on the agent is treated as suspended.
    pub review_by: time::Date,
    /// The grant patterns as written.
    pub grants: Vec<String>,
    /// Every tool the grants match, resolved once at load.
    pub granted: BTreeSet<String>,
    /// The `tools/list` answer for this agent, built once at load.
    pub listed: Arc<Vec<Tool>>,
    /// Whether gateway-issued keys are accepted.
    pub gateway_keys: bool,
    /// Task rules.
    pub tasks: AgentTaskPolicy,
    /// Labels, for policies.
    pub labels: Vec<String>,
    /// All of the agent's calls together.
    pub rate: Option<crate::limits::RateSpec>,
    /// Per tool.
    pub tool_rates: HashMap<String, crate::limits::RateSpec>,
    /// Limits on each of its tasks.
    pub task_limits: crate::limits::TaskLimitSpec,
    /// How it waits for approvals, and how many may be pending.
    pub approvals: crate::manifest::types::AgentApprovals,
    /// How many new approval requests it may file.
    pub approval_rate: crate::limits::RateSpec,
}

impl AgentEntry {
    pub(crate) fn new(
        a: &AgentManifest,
        review_by: time::Date,
        granted: BTreeSet<String>,
        tools: &BTreeMap<String, Arc<ToolEntry>>,
    ) -> Self {
        let listed = granted
            .iter()
            .filter_map(|n| tools.get(n))
            .filter(|t| t.kind() == ToolKind::Tool)
            .map(|t| t.tool.clone())
            .collect();
        Self {
            id: a.id.clone(),
            description: a.description.clone(),
            owners: a.owners.clone(),
            deployment: a.deployment.clone(),
            review_by,
            grants: a.tools.clone(),
            granted,
            listed: Arc::new(listed),
            gateway_keys: a.credentials.gateway_keys,
            tasks: a.tasks.clone(),
            labels: a.labels.clone(),
            rate: None,
            tool_rates: HashMap::new(),
            task_limits: crate::limits::TaskLimitSpec::default(),
            approvals: a.approvals.clone().unwrap_or_default(),
            approval_rate: crate::limits::DEFAULT_APPROVAL_RATE,
        }
    }
}

/// Compiles a tool's input schema, refusing schemas MCP clients could not use.
pub(crate) fn compile_input_schema(
    schema: &Map<String, Value>,
) -> Result<jsonschema::Validator, String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("input_schema must be an object schema (`type: object`)".into());
    }
    let value = Value::Object(schema.clone());
    jsonschema::options()
        .should_validate_formats(true)
        .build(&value)
        .map_err(|e| format!("input_schema is not a valid JSON Schema: {e}"))
}
