//! Reading manifest files and checking them as a whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_connectors::Connector;
use tollgate_connectors::http::HttpConnector;

use super::diagnose::{self, Place, closest};
use super::types::{
    AgentLimits, AgentManifest, ApproverManifest, AuthKind, BackendAuth, ConnectorManifest,
    DemoBackendManifest, IssuerManifest, SecretRef, WebhookManifest,
};
use super::{Code, ManifestError, ManifestErrors};
use crate::catalog::{AgentEntry, Catalog, ConnectorEntry, SourceFile, ToolEntry};
use crate::limits::{BudgetSpec, RateSpec, TaskLimitSpec};
use crate::policy::{AgentFacts, ConnectorFacts, Policies, PolicySource, ToolFacts};

/// A manifest file's name and text, loaded from disk or given by a test.
#[derive(Debug, Clone)]
pub struct Source {
    /// Path shown in errors.
    pub path: PathBuf,
    /// The whole file.
    pub text: String,
}

/// How a manifest set is loaded beyond what its files say.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The running upstream MCP servers. With them, `mcp` connectors are
    /// started (or kept) and their tools built from what the upstreams
    /// offer; without (`tollgate check`), nothing is started and those
    /// tools are checked for form only and withdrawn.
    pub upstreams: Option<Arc<crate::upstream::Upstreams>>,
    /// Where the built-in demo backend really listens, when that differs
    /// from its manifest's `listen` (`serve --demo-listen`, or a port the
    /// OS picked): connectors whose `base_url` names the declared address
    /// are pointed here, so a second gateway on one machine gets its own
    /// demo backend with no manifest edited.
    pub demo_at: Option<SocketAddr>,
}

/// Reads every `*.yaml` / `*.yml` file directly in `dir` (sorted by name, so
/// load order and error order are stable) and builds the catalog.
pub fn load_dir(dir: &Path) -> Result<Catalog, ManifestErrors> {
    load_dir_with(dir, LoadOptions::default())
}

/// [`load_dir`], with `options`.
pub fn load_dir_with(dir: &Path, options: LoadOptions) -> Result<Catalog, ManifestErrors> {
    let one = |code: Code, message: String| {
        ManifestErrors(vec![ManifestError {
            file: dir.to_path_buf(),
            line: 0,
            column: 0,
            code,
            message,
            hint: Some("pass --manifests DIR (or `check DIR`) to point at another one".into()),
        }])
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        one(
            Code::UnreadableDir,
            format!("cannot read the manifest directory: {e}"),
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "cedar")
                )
        })
        .collect();
    paths.sort();
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push(Source { path, text }),
            Err(e) => errors.push(ManifestError {
                file: path,
                line: 0,
                column: 0,
                code: Code::Unreadable,
                message: format!("cannot read: {e}"),
                hint: None,
            }),
        }
    }
    if sources.iter().all(|s| is_policy(&s.path)) && errors.is_empty() {
        return Err(one(
            Code::NoManifests,
            "no manifest files (*.yaml, *.yml) in this directory".into(),
        ));
    }
    match load_sources_with(&sources, options) {
        Ok(c) if errors.is_empty() => Ok(c),
        Ok(_) => Err(ManifestErrors(errors)),
        Err(ManifestErrors(mut more)) => {
            errors.append(&mut more);
            Err(ManifestErrors(errors))
        }
    }
}

/// One YAML document of a file, with where it starts.
struct Doc<'a> {
    file: &'a Path,
    text: &'a str,
    /// Lines before this document in its file.
    line_offset: usize,
}

impl Doc<'_> {
    fn error(&self, line: usize, column: usize, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_path_buf(),
            line: if line == 0 {
                self.line_offset + 1
            } else {
                self.line_offset + line
            },
            column,
            code: Code::InvalidValue,
            message: message.into(),
            hint: None,
        }
    }

    /// Where serde_yaml_ng says `e` is, and its message without the
    /// position (which we print ourselves).
    fn serde_parts(e: &serde_yaml_ng::Error) -> ((usize, usize), String) {
        let at = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let text = e.to_string();
        let message = match text.find(" at line ") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        (at, message)
    }

    /// The first pass failed: not YAML, or not a mapping.
    fn syntax_error(&self, e: &serde_yaml_ng::Error) -> ManifestError {
        let ((line, column), message) = Self::serde_parts(e);
        let (message, hint) = if message.contains("KindProbe") {
            (
                "a manifest document must be a mapping (`key: value` lines) starting with `kind:`"
                    .to_string(),
                None,
            )
        } else {
            (
                format!("not valid YAML: {message}"),
                Some("check the indentation and the brackets and quotes on this line and the one before".into()),
            )
        };
        self.error(line, column, message)
            .with_code(Code::YamlSyntax)
            .with_hint(hint)
    }

    /// Deserializes the whole document as `T` (a `$defs` name of the
    /// schema, `root`), or says in words what is wrong.
    fn parse<T: serde::de::DeserializeOwned>(&self, root: &str) -> Result<T, ManifestError> {
        let de = serde_yaml_ng::Deserializer::from_str(self.text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let place = Place::from_serde(e.path());
            let ((line, column), message) = Self::serde_parts(e.inner());
            let plain = diagnose::explain(root, self.text, &place, &message);
            self.error(line, column, plain.message)
                .with_code(plain.code)
                .with_hint(plain.hint)
        })
    }

    /// The document's top-level `key: value`, read from the text, so that
    /// even a document that does not parse can be named (`id`, `kind`).
    fn top_level(&self, key: &str) -> Option<String> {
        if let Ok(serde_yaml_ng::Value::Mapping(m)) = serde_yaml_ng::from_str(self.text)
            && let Some(v) = m.get(key).and_then(|v| v.as_str())
        {
            return Some(v.to_string());
        }
        self.text.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix(':')?;
            let v = v.split('#').next()?.trim().trim_matches(['"', '\'']);
            (!v.is_empty()).then(|| v.to_string())
        })
    }

    /// Where `needle` first appears as a YAML scalar in this document, so a
    /// cross-reference error can point at the value it is about. Falls back
    /// to the document's first line.
    fn locate(&self, after: Option<&str>, needle: &str) -> (usize, usize) {
        self.locate_nth(after, needle, 0)
    }

    /// Like [`Doc::locate`], for the `n`-th (0-based) occurrence.
    fn locate_nth(&self, after: Option<&str>, needle: &str, n: usize) -> (usize, usize) {
        let mut start = 0;
        if let Some((l, _)) = after.and_then(|anchor| find_scalar(self.text, anchor, 0)) {
            start = l - 1;
        }
        let mut found = (0, 0);
        for _ in 0..=n {
            match find_scalar(self.text, needle, start) {
                Some((l, c)) => {
                    found = (l, c);
                    start = l;
                }
                None => break,
            }
        }
        found
    }
}

fn find_scalar(text: &str, needle: &str, from_line: usize) -> Option<(usize, usize)> {
    for (i, line) in text.lines().enumerate().skip(from_line) {
        for quoted in [
            needle.to_string(),
            format!("\"{needle}\""),
            format!("'{needle}'"),
        ] {
            let mut search = 0;
            while let Some(pos) = line[search..].find(&quoted).map(|p| p + search) {
                let before = line[..pos].chars().next_back();
                let after = line[pos + quoted.len()..].chars().next();
                let bounded_before =
                    before.is_none_or(|c| matches!(c, ' ' | ':' | '-' | '[' | ',' | '{'));
                let bounded_after =
                    after.is_none_or(|c| matches!(c, ' ' | ',' | ']' | '}' | '#' | ':'));
                if bounded_before && bounded_after {
                    return Some((i + 1, pos + 1));
                }
                // Past the whole first character: `pos + 1` can land
                // inside a multi-byte one, and slicing there panics.
                search = pos + quoted.chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    None
}

/// Splits a file into YAML documents at `---` lines.
fn split_documents<'a>(file: &'a Path, text: &'a str) -> Vec<Doc<'a>> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 0;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare == "..." {
            docs.push(Doc {
                file,
                text: &text[start_byte..offset],
                line_offset: start_line,
            });
            start_byte = offset + line.len();
            start_line = i + 1;
        }
        offset += line.len();
    }
    docs.push(Doc {
        file,
        text: &text[start_byte..],
        line_offset: start_line,
    });
    docs.retain(|d| {
        d.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// One `Connector` document as written: where it is, for tools that edit
/// it (`tollgate connectors pin`).
#[derive(Debug, Clone)]
pub struct ConnectorDocument {
    /// The file.
    pub file: PathBuf,
    /// Its first line in the file (0-based).
    pub first_line: usize,
    /// How many lines it spans.
    pub lines: usize,
    /// The parsed document.
    pub manifest: ConnectorManifest,
}

/// Every `Connector` document in the manifest files of `dir` that parses.
pub fn connector_documents(dir: &Path) -> std::io::Result<Vec<ConnectorDocument>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        for doc in split_documents(&path, &text) {
            let is_connector = serde_yaml_ng::from_str::<KindProbe>(doc.text)
                .ok()
                .and_then(|k| k.kind)
                .is_some_and(|k| k.as_str() == Some("Connector"));
            if !is_connector {
                continue;
            }
            if let Ok(manifest) = serde_yaml_ng::from_str::<ConnectorManifest>(doc.text) {
                out.push(ConnectorDocument {
                    file: path.clone(),
                    first_line: doc.line_offset,
                    lines: doc.text.lines().count(),
                    manifest,
                });
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct KindProbe {
    kind: Option<serde_yaml_ng::Value>,
}

struct Parsed<'a, T> {
    doc: Doc<'a>,
    value: T,
}

/// Checks the given files as one manifest set and builds the catalog: the
/// documents are parsed by kind, then each kind is checked in the order
/// their references need (connectors and issuers before the agents that
/// name them).
pub fn load_sources(sources: &[Source]) -> Result<Catalog, ManifestErrors> {
    load_sources_with(sources, LoadOptions::default())
}

/// [`load_sources`], with `options`.
pub fn load_sources_with(
    sources: &[Source],
    options: LoadOptions,
) -> Result<Catalog, ManifestErrors> {
    let mut errors = Vec::new();
    let (policy_sources, manifests): (Vec<&Source>, Vec<&Source>) =
        sources.iter().partition(|s| is_policy(&s.path));
    let manifests: Vec<Source> = manifests.into_iter().cloned().collect();
    let mut broken = Broken::default();
    let mut docs = parse_documents(&manifests, &mut errors, &mut broken);
    if let (Some(at), Some(declared)) = (options.demo_at, docs.demos.first()) {
        let declared = declared.value.listen;
        if at != declared {
            for c in &mut docs.connectors {
                if let Some(http) = c.value.http.as_mut()
                    && let Some(url) = redirect(&http.base_url, declared, at)
                {
                    http.base_url = url;
                }
            }
        }
    }
    let mut catalog = Catalog {
        sources: sources
            .iter()
            .map(|s| SourceFile {
                path: s.path.clone(),
                sha256: hex::encode(Sha256::digest(s.text.as_bytes())),
            })
            .collect(),
        ..Catalog::default()
    };

    let mut tool_sites = BTreeMap::new();
    check_connectors(
        &docs.connectors,
        options.upstreams.as_deref(),
        &mut catalog,
        &mut errors,
        &mut broken,
        &mut tool_sites,
    );
    check_issuers(&docs.issuers, &mut catalog, &mut errors, &mut broken);
    let today = time::OffsetDateTime::now_utc().date();
    check_agents(&docs.agents, &mut catalog, &mut errors, &mut broken, today);
    check_demo_backends(&docs.demos, &mut catalog, &mut errors);
    check_approvers(&docs.approvers, &mut catalog, &mut errors);
    check_webhooks(&docs.webhooks, &mut catalog, &mut errors);
    if errors.is_empty() && !policy_sources.is_empty() {
        let policies: Vec<PolicySource> = policy_sources
            .iter()
            .map(|s| PolicySource {
                path: s.path.clone(),
                text: s.text.clone(),
            })
            .collect();
        let (agents, connectors, tools) = policy_facts(&catalog);
        let withdrawn: std::collections::BTreeSet<String> =
            catalog.withdrawn.keys().cloned().collect();
        match Policies::build(&agents, &connectors, &tools, &policies, &withdrawn) {
            Ok(p) => {
                for d in &p.dormant {
                    catalog.warnings.push(ManifestError {
                        file: d.file.clone(),
                        line: d.line,
                        column: 0,
                        code: Code::Policy,
                        message: format!(
                            "policy `{}` names only tools that are withdrawn now; it is not in force (and not checked) until they are served again",
                            d.id
                        ),
                        hint: None,
                    });
                }
                catalog.policies = Some(Arc::new(p));
            }
            Err(problems) => errors.extend(problems.into_iter().map(|p| ManifestError {
                file: p.file,
                line: p.line,
                column: p.column,
                code: Code::Policy,
                message: p.message,
                hint: None,
            })),
        }
    }
    broken.annotate(&mut errors);
    if errors.is_empty() {
        warn_unreachable_tools(&catalog.agents, tool_sites, &mut catalog.warnings);
        catalog
            .warnings
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Ok(catalog)
    } else {
        Err(ManifestErrors(errors))
    }
}

/// Warns about each tool (of `sites`: its name and where it is declared)
/// that no agent is granted: nothing can call it, which is either dead
/// weight or a grant someone forgot.
fn warn_unreachable_tools(
    agents: &HashMap<String, Arc<AgentEntry>>,
    sites: BTreeMap<String, ManifestError>,
    warnings: &mut Vec<ManifestError>,
) {
    for (tool, site) in sites {
        if !agents.values().any(|a| a.granted.contains(&tool)) {
            warnings.push(site);
        }
    }
}

/// Whether a source is a Cedar policy file rather than a manifest.
fn is_policy(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("cedar")
}

/// What the policy engine may know of a catalog's agents, connectors and
/// tools (also what the generated Cedar schema describes).
pub fn policy_facts(catalog: &Catalog) -> (Vec<AgentFacts>, Vec<ConnectorFacts>, Vec<ToolFacts>) {
    let mut agents: Vec<AgentFacts> = catalog
        .agents
        .values()
        .map(|a| AgentFacts {
            id: a.id.clone(),
            owners: a.owners.clone(),
            approved_by: a.deployment.approved_by.clone(),
            labels: a.labels.clone(),
        })
        .collect();
    agents.sort_by(|a, b| a.id.cmp(&b.id));
    let connectors = catalog
        .tools
        .values()
        .map(|t| (t.connector_id.clone(), t.owners.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .map(|(id, owners)| ConnectorFacts {
            id,
            owners: (*owners).clone(),
        })
        .collect();
    let tools = catalog
        .tools
        .values()
        .map(|t| ToolFacts {
            name: t.full_name.clone(),
            connector: t.connector_id.clone(),
            risk: t.risk,
            hints: t.hints.clone(),
            labels: t.labels.clone(),
            shape: crate::policy::schema::args_shape(&t.tool.input_schema),
        })
        .collect();
    (agents, connectors, tools)
}

/// The documents of a manifest set, parsed into their kind's type.
#[derive(Default)]
struct Documents<'a> {
    connectors: Vec<Parsed<'a, ConnectorManifest>>,
    agents: Vec<Parsed<'a, AgentManifest>>,
    demos: Vec<Parsed<'a, DemoBackendManifest>>,
    issuers: Vec<Parsed<'a, IssuerManifest>>,
    approvers: Vec<Parsed<'a, ApproverManifest>>,
    webhooks: Vec<Parsed<'a, WebhookManifest>>,
}

/// The document kinds, in the words of `kind:`.
const KINDS: [&str; 6] = [
    "Connector",
    "Agent",
    "Issuer",
    "DemoBackend",
    "Approver",
    "Webhook",
];

/// What failed to load, so the errors that only follow from it are not
/// reported again: one typo in a connector is one error, not one more per
/// grant naming its tools. Each entry keeps the index (in the error list)
/// of the error that explains it.
#[derive(Default)]
struct Broken {
    /// Connectors (by id) that did not load at all.
    connectors: HashMap<String, usize>,
    /// Tools (`connector.tool`) that did not load.
    tools: HashMap<String, usize>,
    /// Issuers (by id) that did not load.
    issuers: HashMap<String, usize>,
    /// Error index to the agents left unchecked because of it.
    skipped: BTreeMap<usize, BTreeSet<String>>,
}

impl Broken {
    /// Records `error` for a document of `kind` that did not parse.
    fn document(
        &mut self,
        kind: &str,
        doc: &Doc<'_>,
        error: ManifestError,
        errors: &mut Vec<ManifestError>,
    ) {
        let index = errors.len();
        errors.push(error);
        let Some(id) = doc.top_level("id") else {
            return;
        };
        match kind {
            "Connector" => {
                self.connectors.entry(id).or_insert(index);
            }
            "Issuer" => {
                self.issuers.entry(id).or_insert(index);
            }
            _ => {}
        }
    }

    /// The error that explains why a grant matches nothing, if the grant
    /// names a tool or connector that failed to load.
    fn cause_of_grant(&self, pattern: &str) -> Option<usize> {
        if let Some(i) = self.tools.get(pattern) {
            return Some(*i);
        }
        let prefix = pattern.split('.').next().unwrap_or(pattern);
        if let Some(i) = self.connectors.get(prefix) {
            return Some(*i);
        }
        // A glob (`*.get_*`, `bill*`) that could have matched what failed.
        let glob = |p: &str| globset::Glob::new(p).ok().map(|g| g.compile_matcher());
        if let Some(g) = glob(prefix)
            && let Some(i) = self
                .connectors
                .iter()
                .find(|(c, _)| g.is_match(c.as_str()))
                .map(|(_, i)| i)
        {
            return Some(*i);
        }
        let g = glob(pattern)?;
        self.tools
            .iter()
            .find(|(t, _)| g.is_match(t.as_str()))
            .map(|(_, i)| *i)
    }

    /// Notes `agent` as not fully checked because of error `index`.
    fn skip(&mut self, index: usize, agent: &str) {
        self.skipped
            .entry(index)
            .or_default()
            .insert(agent.to_string());
    }

    /// Tells, on each error that left agents unchecked, which ones.
    fn annotate(&self, errors: &mut [ManifestError]) {
        for (index, agents) in &self.skipped {
            let Some(e) = errors.get_mut(*index) else {
                continue;
            };
            let names: Vec<String> = agents.iter().map(|a| format!("`{a}`")).collect();
            let note = match names.as_slice() {
                [one] => format!("agent {one} depends on it and is checked once it is fixed"),
                [init @ .., last] => format!(
                    "agents {} and {last} depend on it and are checked once it is fixed",
                    init.join(", ")
                ),
                [] => continue,
            };
            e.hint = Some(match e.hint.take() {
                Some(h) => format!("{h} ({note})"),
                None => note,
            });
        }
    }
}

/// Splits every file into documents and parses each by its `kind` (two
/// passes, so serde's errors keep their line and column).
fn parse_documents<'a>(
    sources: &'a [Source],
    errors: &mut Vec<ManifestError>,
    broken: &mut Broken,
) -> Documents<'a> {
    let mut docs = Documents::default();
    for source in sources {
        for doc in split_documents(&source.path, &source.text) {
            let probe: KindProbe = match serde_yaml_ng::from_str(doc.text) {
                Ok(p) => p,
                Err(e) => {
                    let error = doc.syntax_error(&e);
                    let kind = doc
                        .top_level("kind")
                        .and_then(|k| closest(&k, KINDS.into_iter()).map(str::to_string));
                    broken.document(kind.as_deref().unwrap_or(""), &doc, error, errors);
                    continue;
                }
            };
            let kind = probe
                .kind
                .as_ref()
                .and_then(|k| k.as_str())
                .map(str::to_string);
            match kind.as_deref() {
                Some("Connector") => match doc.parse("ConnectorManifest") {
                    Ok(value) => docs.connectors.push(Parsed { doc, value }),
                    Err(e) => broken.document("Connector", &doc, e, errors),
                },
                Some("Agent") => match doc.parse("AgentManifest") {
                    Ok(value) => docs.agents.push(Parsed { doc, value }),
                    Err(e) => broken.document("Agent", &doc, e, errors),
                },
                Some("Issuer") => match doc.parse("IssuerManifest") {
                    Ok(value) => docs.issuers.push(Parsed { doc, value }),
                    Err(e) => broken.document("Issuer", &doc, e, errors),
                },
                Some("DemoBackend") => match doc.parse("DemoBackendManifest") {
                    Ok(value) => docs.demos.push(Parsed { doc, value }),
                    Err(e) => broken.document("DemoBackend", &doc, e, errors),
                },
                Some("Approver") => match doc.parse("ApproverManifest") {
                    Ok(value) => docs.approvers.push(Parsed { doc, value }),
                    Err(e) => broken.document("Approver", &doc, e, errors),
                },
                Some("Webhook") => match doc.parse("WebhookManifest") {
                    Ok(value) => docs.webhooks.push(Parsed { doc, value }),
                    Err(e) => broken.document("Webhook", &doc, e, errors),
                },
                Some(other) => {
                    let (l, c) = doc.locate(None, other);
                    let near = closest(other, KINDS.into_iter());
                    let error = doc
                        .error(l, c, format!("unknown kind `{other}`"))
                        .with_code(Code::UnknownKind)
                        .with_hint(Some(match near {
                            Some(k) => format!("did you mean `{k}`?"),
                            None => format!("the kinds are `{}`", KINDS.join("`, `")),
                        }));
                    broken.document(near.unwrap_or(""), &doc, error, errors);
                }
                None => errors.push(
                    doc.error(0, 0, "missing `kind`")
                        .with_code(Code::MissingKind)
                        .with_hint(Some(format!(
                            "start the document with `kind:` and one of `{}`",
                            KINDS.join("`, `")
                        ))),
                ),
            }
        }
    }

    docs
}

/// Connectors and their tools: ids, owners, schemas, HTTP mappings, auth.
fn check_connectors(
    connectors: &[Parsed<ConnectorManifest>],
    upstreams: Option<&crate::upstream::Upstreams>,
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
    broken: &mut Broken,
    tool_sites: &mut BTreeMap<String, ManifestError>,
) {
    let mut seen_connectors: HashMap<String, PathBuf> = HashMap::new();
    // Each connector and the first error it may cause: one that is not in
    // the catalog after the loop failed, and that error explains it.
    let mut attempts: Vec<(&str, usize)> = Vec::new();
    for Parsed { doc, value: c } in connectors {
        attempts.push((&c.id, errors.len()));
        let (l, col) = doc.locate(None, &c.id);
        if !valid_id(&c.id) {
            errors.push(doc.error(
                l,
                col,
                format!("connector id `{}` must match [a-z][a-z0-9_-]*", c.id),
            ));
            continue;
        }
        if let Some(first) = seen_connectors.insert(c.id.clone(), doc.file.to_path_buf()) {
            errors.push(
                doc.error(
                    l,
                    col,
                    format!(
                        "connector `{}` is already declared in {}",
                        c.id,
                        first.display()
                    ),
                )
                .with_code(Code::Duplicate),
            );
            continue;
        }
        check_owner(doc, "owners.system", &c.owners.system, errors);
        check_owner(doc, "owners.security", &c.owners.security, errors);
        let http = match (&c.http, &c.mcp) {
            (Some(http), None) => http,
            (None, Some(mcp)) => {
                check_mcp_connector(doc, c, mcp, upstreams, catalog, errors, broken, tool_sites);
                continue;
            }
            (None, None) => {
                errors.push(doc.error(
                    l,
                    col,
                    format!(
                        "connector `{}` declares neither `http` (an HTTP API) nor `mcp` (an upstream MCP server)",
                        c.id
                    ),
                ));
                continue;
            }
            (Some(_), Some(_)) => {
                errors.push(doc.error(
                    l,
                    col,
                    format!(
                        "connector `{}` declares both `http` and `mcp`; a connector reaches one backend",
                        c.id
                    ),
                ));
                continue;
            }
        };
        if !c.prompts.is_empty() || !c.resources.is_empty() || !c.resource_templates.is_empty() {
            errors.push(doc.error(
                l,
                col,
                format!(
                    "connector `{}`: `prompts` and `resources` are for `mcp` connectors",
                    c.id
                ),
            ));
            continue;
        }
        if c.sampling.is_some() || c.elicitation.is_some() {
            errors.push(doc.error(
                l,
                col,
                format!(
                    "connector `{}`: `sampling` and `elicitation` govern what an upstream MCP server asks of agents' clients; they are for `mcp` connectors",
                    c.id
                ),
            ));
            continue;
        }
        if !c.expose.is_empty() {
            let (el, ec) = doc.locate(None, "expose:");
            errors.push(doc.error(
                el,
                ec,
                format!(
                    "connector `{}`: `expose` is for `mcp` connectors; an `http` connector declares `tools`",
                    c.id
                ),
            ));
            continue;
        }
        if c.tools.is_empty() {
            errors.push(doc.error(l, col, format!("connector `{}` declares no tools", c.id)));
        }
        let mut ok_tools = Vec::new();
        let mut seen_tools: HashMap<&str, usize> = HashMap::new();
        for t in &c.tools {
            let nth = seen_tools.get(t.name.as_str()).copied().unwrap_or(0);
            let (tl, tc) = doc.locate_nth(Some("tools:"), &t.name, nth);
            // Whatever fails below explains the grants naming this tool.
            broken
                .tools
                .entry(format!("{}.{}", c.id, t.name))
                .or_insert(errors.len());
            if !valid_id(&t.name) {
                errors.push(doc.error(
                    tl,
                    tc,
                    format!("tool name `{}` must match [a-z][a-z0-9_-]*", t.name),
                ));
                continue;
            }
            if seen_tools.insert(&t.name, nth + 1).is_some() {
                errors.push(
                    doc.error(
                        tl,
                        tc,
                        format!("tool `{}.{}` is declared twice", c.id, t.name),
                    )
                    .with_code(Code::Duplicate),
                );
                continue;
            }
            let properties = schema_properties(&t.input_schema);
            if let Some(unknown) = t.sensitive.iter().find(|n| !properties.contains(n)) {
                let near = closest(unknown, properties.iter().map(String::as_str));
                errors.push(
                    doc.error(
                        tl,
                        tc,
                        format!(
                            "tool `{}`: `sensitive` names `{unknown}`, which is not a property of its input_schema",
                            t.name
                        ),
                    )
                    .with_code(Code::UnknownReference)
                    .with_hint(near.map(|n| format!("did you mean `{n}`?"))),
                );
                continue;
            }
            match crate::catalog::compile_input_schema(&t.input_schema) {
                Ok(validator) => ok_tools.push((t, validator, tl, tc)),
                Err(message) => {
                    errors.push(doc.error(tl, tc, format!("tool `{}`: {message}", t.name)))
                }
            }
        }
        for (t, _, _, _) in &ok_tools {
            broken.tools.remove(&format!("{}.{}", c.id, t.name));
        }
        let connector: Arc<dyn Connector> = match HttpConnector::build(
            http,
            ok_tools
                .iter()
                .map(|(t, _, _, _)| (t.name.as_str(), &t.http, schema_properties(&t.input_schema))),
        ) {
            Ok(conn) => Arc::new(conn),
            Err(e) => {
                let (el, ec) = match &e.tool {
                    Some(tool) => doc.locate(Some("tools:"), tool),
                    None => doc.locate(None, "base_url:"),
                };
                let what = e
                    .tool
                    .as_ref()
                    .map(|t| format!("tool `{t}`: "))
                    .unwrap_or_default();
                errors.push(doc.error(el, ec, format!("{what}{}", e.message)));
                continue;
            }
        };
        let Some(entry) = connector_entry(doc, c, catalog, errors) else {
            continue;
        };
        let owners = Arc::new(c.owners.clone());
        catalog.connectors.insert(c.id.clone(), Arc::new(entry));
        for (t, validator, tl, tc) in ok_tools {
            let full_name = tool_name(c, &t.name);
            if claimed(catalog, &full_name, doc, tl, tc, errors) {
                continue;
            }
            let entry = ToolEntry::new(
                c,
                t,
                full_name,
                validator,
                connector.clone(),
                owners.clone(),
            );
            tool_sites.insert(
                entry.full_name.clone(),
                unreachable_site(doc, tl, tc, &entry.full_name),
            );
            catalog
                .tools
                .insert(entry.full_name.clone(), Arc::new(entry));
        }
    }
    for (id, first_error) in attempts {
        if !catalog.connectors.contains_key(id) && first_error < errors.len() {
            broken
                .connectors
                .entry(id.to_string())
                .or_insert(first_error);
        }
    }
}

/// What agents call a connector's tool: `<connector>.<tool>`, or the bare
/// name for a connector declared with `prefix: false`.
fn tool_name(c: &ConnectorManifest, local: &str) -> String {
    if c.prefix {
        format!("{}.{}", c.id, local)
    } else {
        local.to_string()
    }
}

/// True (and an error) when another connector already has `full_name`:
/// possible only with `prefix: false`.
fn claimed(
    catalog: &Catalog,
    full_name: &str,
    doc: &Doc<'_>,
    line: usize,
    column: usize,
    errors: &mut Vec<ManifestError>,
) -> bool {
    let owner = catalog
        .tools
        .get(full_name)
        .map(|t| t.connector_id.clone())
        .or_else(|| {
            catalog
                .withdrawn
                .get(full_name)
                .map(|w| w.connector.clone())
        });
    let Some(owner) = owner else {
        return false;
    };
    errors.push(
        doc.error(
            line,
            column,
            format!("tool name `{full_name}` is already taken by connector `{owner}`"),
        )
        .with_code(Code::Duplicate)
        .with_hint(Some(
            "keep `prefix: true` (the default) on one of them, or rename the tool".into(),
        )),
    );
    true
}

fn unreachable_site(doc: &Doc<'_>, line: usize, column: usize, full_name: &str) -> ManifestError {
    doc.error(
        line,
        column,
        format!("no agent is granted tool `{full_name}`: nothing can call it"),
    )
    .with_code(Code::UnreachableTool)
    .with_hint(Some(
        "grant it to the agent that needs it, or remove it from the connector".into(),
    ))
}

/// The checks every connector kind shares (auth, limits), and its entry.
fn connector_entry(
    doc: &Doc<'_>,
    c: &ConnectorManifest,
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
) -> Option<ConnectorEntry> {
    let (l, col) = doc.locate(None, &c.id);
    let base_dir = doc.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    // A child process over stdio has no network identity to prove: its
    // environment is what the manifest gives it.
    let stdio = c.mcp.as_ref().is_some_and(|m| m.stdio.is_some());
    if c.auth.is_none() && !stdio {
        catalog.warnings.push(
            doc.error(
                l,
                col,
                format!(
                    "connector `{}` has no `auth`: its backend gets no credential from Tollgate and cannot tell the gateway's calls from anyone else's",
                    c.id
                ),
            )
            .with_code(Code::NoAuth)
            .with_hint(Some(
                "add `auth: { gateway_jwt: {} }` (short-lived, task-scoped tokens) or another kind of `auth`".into(),
            )),
        );
    }
    if let Some(auth) = &c.auth {
        let (al, ac) = doc.locate(None, "auth:");
        match check_auth(auth, &base_dir) {
            Ok(warnings) => {
                for (code, w) in warnings {
                    catalog.warnings.push(
                        doc.error(al, ac, format!("connector `{}`: {w}", c.id))
                            .with_code(code),
                    );
                }
            }
            Err(message) => {
                errors.push(doc.error(al, ac, format!("connector `{}`: {message}", c.id)));
                return None;
            }
        }
    }
    let rate = match c.limits.as_ref().and_then(|l| l.rate.as_ref()) {
        None => None,
        Some(r) => match RateSpec::parse(r) {
            Ok(spec) => Some(spec),
            Err(message) => {
                let (rl, rc) = doc.locate(Some("limits:"), &r.rate);
                errors.push(doc.error(rl, rc, format!("connector `{}`: {message}", c.id)));
                return None;
            }
        },
    };
    Some(ConnectorEntry {
        id: c.id.clone(),
        auth: c.auth.clone(),
        base_dir,
        rate,
        upstream: None,
    })
}

/// An `mcp` connector: its upstream started (or kept) when `upstreams` is
/// given, and each exposed tool built from the upstream's definition, or
/// withdrawn with the reason (not connected, not offered, pin broken).
#[allow(clippy::too_many_arguments)]
fn check_mcp_connector(
    doc: &Doc<'_>,
    c: &ConnectorManifest,
    mcp: &tollgate_connectors::mcp::McpConnectorConfig,
    upstreams: Option<&crate::upstream::Upstreams>,
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
    broken: &mut Broken,
    tool_sites: &mut BTreeMap<String, ManifestError>,
) {
    use crate::catalog::Withdrawn;
    use tollgate_connectors::mcp::{Discovery, McpConnector, Operation};
    let (l, col) = doc.locate(None, &c.id);
    let (ml, mc) = doc.locate(None, "mcp:");
    if let Err(message) = mcp.check() {
        errors.push(doc.error(ml, mc, format!("connector `{}`: {message}", c.id)));
        return;
    }
    if !c.tools.is_empty() {
        let (tl, tc) = doc.locate(None, "tools:");
        errors.push(
            doc.error(
                tl,
                tc,
                format!(
                    "connector `{}` is an `mcp` connector: list the upstream tools it exposes under `expose` (their schemas come from the upstream), not `tools`",
                    c.id
                ),
            ),
        );
        return;
    }
    if c.expose.is_empty() {
        errors.push(
            doc.error(
                l,
                col,
                format!("connector `{}` exposes no tools", c.id),
            )
            .with_hint(Some(
                "list the upstream tools agents may use under `expose:`; `tollgate connectors status` shows what the upstream offers".into(),
            )),
        );
        return;
    }
    let mut ok = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in &c.expose {
        let nth = seen.get(t.name.as_str()).copied().unwrap_or(0);
        let (tl, tc) = doc.locate_nth(Some("expose:"), &t.name, nth);
        broken
            .tools
            .entry(tool_name(c, &t.name))
            .or_insert(errors.len());
        if !valid_tool_name(&t.name) {
            errors.push(doc.error(
                tl,
                tc,
                format!(
                    "tool name `{}` must be 1-128 of A-Z a-z 0-9 _ - (MCP's tool name characters)",
                    t.name
                ),
            ));
            continue;
        }
        if seen.insert(&t.name, nth + 1).is_some() {
            errors.push(
                doc.error(tl, tc, format!("tool `{}` is exposed twice", t.name))
                    .with_code(Code::Duplicate),
            );
            continue;
        }
        if let Some(pin) = &t.pin
            && !valid_pin(pin)
        {
            let (pl, pc) = doc.locate(Some(&t.name), pin);
            errors.push(
                doc.error(
                    pl,
                    pc,
                    format!(
                        "tool `{}`: pin `{pin}` is not `sha256:` and 64 hex digits",
                        t.name
                    ),
                )
                .with_hint(Some(format!(
                    "`tollgate connectors pin {}` writes it",
                    c.id
                ))),
            );
            continue;
        }
        ok.push((t, tl, tc));
    }
    for (t, _, _) in &ok {
        broken.tools.remove(&tool_name(c, &t.name));
    }
    let Some(mut entry) = connector_entry(doc, c, catalog, errors) else {
        return;
    };
    let base_dir = entry.base_dir.clone();
    let asks = tollgate_connectors::mcp::ClientAsks {
        sampling: c.sampling.is_some(),
        elicitation: c.elicitation.is_some(),
    };
    let upstream = match upstreams.map(|u| u.ensure(&c.id, mcp, asks, &base_dir)) {
        Some(Ok(up)) => Some(up),
        Some(Err(message)) => {
            errors.push(doc.error(ml, mc, format!("connector `{}`: {message}", c.id)));
            return;
        }
        None => None,
    };
    let discovery = upstream
        .as_ref()
        .map(|u| u.discovery())
        .unwrap_or(Discovery::Failed("not contacted (checked offline)".into()));
    let owners = Arc::new(c.owners.clone());
    let connector: Option<Arc<dyn Connector>> = upstream.as_ref().map(|up| {
        let tools = ok.iter().map(|(t, _, _)| {
            (
                t.name.clone(),
                Operation::Tool(t.upstream_name().to_string()),
            )
        });
        let prompts = c.prompts.iter().map(|p| {
            (
                format!("prompt:{}", p.name),
                Operation::Prompt(p.upstream.clone().unwrap_or_else(|| p.name.clone())),
            )
        });
        let resources = c.resources.iter().map(|r| {
            (
                format!("resource:{}", r.name),
                Operation::Resource(r.uri.clone()),
            )
        });
        let templates = c.resource_templates.iter().map(|r| {
            (
                format!("resource:{}", r.name),
                Operation::ResourceTemplate(r.template.clone()),
            )
        });
        Arc::new(McpConnector::new(
            up.clone(),
            tools.chain(prompts).chain(resources).chain(templates),
        )) as Arc<dyn Connector>
    });
    let extras = upstream.as_ref().map(|u| u.extras());
    entry.upstream = upstream;
    catalog.connectors.insert(c.id.clone(), Arc::new(entry));
    for (t, tl, tc) in ok {
        let full_name = tool_name(c, &t.name);
        if claimed(catalog, &full_name, doc, tl, tc, errors) {
            continue;
        }
        tool_sites.insert(full_name.clone(), unreachable_site(doc, tl, tc, &full_name));
        let withdrawn = |code: &'static str, why: String| Withdrawn {
            connector: c.id.clone(),
            tool: t.name.clone(),
            code,
            why,
        };
        let built = match (&discovery, &connector) {
            (Discovery::Ready(defs), Some(connector)) => {
                match defs.iter().find(|d| d.name == t.upstream_name()) {
                    None => Err(withdrawn(
                        "upstream_tool_missing",
                        format!(
                            "upstream `{}` does not offer a tool named `{}`",
                            c.id,
                            t.upstream_name()
                        ),
                    )),
                    Some(def) => {
                        let now = tollgate_connectors::mcp::definition_hash(def);
                        match &t.pin {
                            Some(pin) if *pin != now => Err(withdrawn(
                                "tool_definition_changed",
                                format!(
                                    "the upstream changed the definition of `{}` since it was pinned ({pin}, now {now}); review it with `tollgate connectors diff {}` and pin it again",
                                    t.upstream_name(),
                                    c.id
                                ),
                            )),
                            _ => ToolEntry::from_upstream(
                                c,
                                t,
                                full_name.clone(),
                                def,
                                connector.clone(),
                                owners.clone(),
                            )
                            .map_err(|why| withdrawn("upstream_definition_invalid", why)),
                        }
                    }
                }
            }
            (Discovery::Pending, _) => Err(withdrawn(
                "upstream_unavailable",
                format!("upstream `{}` has not connected yet", c.id),
            )),
            (Discovery::Failed(why), _) => Err(withdrawn(
                "upstream_unavailable",
                format!("upstream `{}` is not available: {why}", c.id),
            )),
            (Discovery::Ready(_), None) => Err(withdrawn(
                "upstream_unavailable",
                format!("upstream `{}` is not running here", c.id),
            )),
        };
        match built {
            Ok(entry) => {
                catalog.tools.insert(full_name, Arc::new(entry));
            }
            Err(w) => {
                catalog.withdrawn.insert(full_name, w);
            }
        }
    }
    check_mcp_extras(
        doc,
        c,
        &discovery,
        extras.as_deref(),
        connector,
        &owners,
        catalog,
        errors,
        tool_sites,
    );
}

/// An `mcp` connector's exposed prompts, resources and resource templates:
/// each a catalog entry (`prompt:...`, `resource:...`) built from what the
/// upstream offers, or withdrawn with the reason.
#[allow(clippy::too_many_arguments)]
fn check_mcp_extras(
    doc: &Doc<'_>,
    c: &ConnectorManifest,
    discovery: &tollgate_connectors::mcp::Discovery,
    extras: Option<&tollgate_connectors::mcp::Extras>,
    connector: Option<Arc<dyn Connector>>,
    owners: &Arc<crate::manifest::types::ConnectorOwners>,
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
    tool_sites: &mut BTreeMap<String, ManifestError>,
) {
    use crate::catalog::{Listing, ToolKind, Withdrawn};
    use crate::manifest::types::Risk;
    use tollgate_connectors::mcp::Discovery;
    /// One exposed entry as found upstream: its listing, description and
    /// argument schema.
    struct Found {
        listing: Listing,
        description: String,
        schema: serde_json::Value,
    }
    let object = |properties: serde_json::Value, required: Vec<String>| {
        serde_json::json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false
        })
    };
    // Why an entry the upstream does not offer (now) is withdrawn.
    let absent = |what: String| match discovery {
        Discovery::Ready(_) if extras.is_some() => (
            "upstream_tool_missing",
            format!("upstream `{}` does not offer {what}", c.id),
        ),
        Discovery::Failed(why) => (
            "upstream_unavailable",
            format!("upstream `{}` is not available: {why}", c.id),
        ),
        _ => (
            "upstream_unavailable",
            format!("upstream `{}` has not connected yet", c.id),
        ),
    };
    let mut declare = |kind: ToolKind,
                       name: &str,
                       risk: Risk,
                       labels: &[String],
                       found: Result<Found, (&'static str, String)>,
                       catalog: &mut Catalog,
                       errors: &mut Vec<ManifestError>|
     -> Option<String> {
        let section = if kind == ToolKind::Prompt {
            "prompts:"
        } else {
            "resources:"
        };
        let (tl, tc) = doc.locate(Some(section), name);
        if !valid_tool_name(name) {
            errors.push(doc.error(
                tl,
                tc,
                format!("name `{name}` must be 1-128 of A-Z a-z 0-9 _ -"),
            ));
            return None;
        }
        let full_name = format!("{}{}", kind.prefix(), tool_name(c, name));
        if catalog.tools.contains_key(&full_name) || catalog.withdrawn.contains_key(&full_name) {
            errors.push(
                doc.error(tl, tc, format!("`{full_name}` is declared twice"))
                    .with_code(Code::Duplicate),
            );
            return None;
        }
        tool_sites.insert(full_name.clone(), unreachable_site(doc, tl, tc, &full_name));
        let built = found.and_then(|f| {
            let Some(connector) = &connector else {
                return Err(absent(String::new()));
            };
            ToolEntry::upstream_extra(
                c,
                full_name.clone(),
                format!("{}{name}", kind.prefix()),
                f.description,
                f.schema.as_object().cloned().unwrap_or_default(),
                risk,
                labels.to_vec(),
                f.listing,
                connector.clone(),
                owners.clone(),
            )
            .map_err(|why| ("upstream_definition_invalid", why))
        });
        match built {
            Ok(entry) => {
                catalog.tools.insert(full_name.clone(), Arc::new(entry));
            }
            Err((code, why)) => {
                let w = Withdrawn {
                    connector: c.id.clone(),
                    tool: name.to_string(),
                    code,
                    why,
                };
                catalog.withdrawn.insert(full_name.clone(), w);
            }
        }
        Some(full_name)
    };
    for p in &c.prompts {
        let upstream_name = p.upstream.as_deref().unwrap_or(&p.name);
        let found = extras
            .and_then(|e| e.prompts.iter().find(|d| d.name == upstream_name))
            .map(|def| {
                let mut properties = serde_json::Map::new();
                let mut required = Vec::new();
                for a in def.arguments.iter().flatten() {
                    let mut prop = serde_json::json!({ "type": "string" });
                    if let Some(d) = &a.description {
                        prop["description"] = d.clone().into();
                    }
                    properties.insert(a.name.clone(), prop);
                    if a.required == Some(true) {
                        required.push(a.name.clone());
                    }
                }
                let mut listed = def.clone();
                listed.name = tool_name(c, &p.name);
                if let Some(d) = &p.description {
                    listed.description = Some(d.clone());
                }
                Found {
                    description: listed.description.clone().unwrap_or_default(),
                    schema: object(properties.into(), required),
                    listing: Listing::Prompt(listed),
                }
            })
            .ok_or_else(|| absent(format!("a prompt named `{upstream_name}`")));
        declare(
            ToolKind::Prompt,
            &p.name,
            p.risk,
            &p.labels,
            found,
            catalog,
            errors,
        );
    }
    for r in &c.resources {
        if let Some(other) = catalog.resource_uris.get(&r.uri) {
            let (tl, tc) = doc.locate(Some("resources:"), &r.uri);
            errors.push(
                doc.error(
                    tl,
                    tc,
                    format!("resource `{}` is already exposed as `{other}`", r.uri),
                )
                .with_code(Code::Duplicate),
            );
            continue;
        }
        let found = extras
            .and_then(|e| e.resources.iter().find(|d| d.uri == r.uri))
            .map(|def| {
                let mut listed = def.clone();
                if let Some(d) = &r.description {
                    listed.description = Some(d.clone());
                }
                Found {
                    description: listed.description.clone().unwrap_or_else(|| r.uri.clone()),
                    schema: object(serde_json::json!({}), Vec::new()),
                    listing: Listing::Resource(listed),
                }
            })
            .ok_or_else(|| absent(format!("a resource `{}`", r.uri)));
        if let Some(full_name) = declare(
            ToolKind::Resource,
            &r.name,
            r.risk,
            &r.labels,
            found,
            catalog,
            errors,
        ) {
            catalog.resource_uris.insert(r.uri.clone(), full_name);
        }
    }
    for r in &c.resource_templates {
        let found = extras
            .and_then(|e| e.templates.iter().find(|d| d.uri_template == r.template))
            .map(|def| {
                let mut listed = def.clone();
                if let Some(d) = &r.description {
                    listed.description = Some(d.clone());
                }
                Found {
                    description: listed
                        .description
                        .clone()
                        .unwrap_or_else(|| r.template.clone()),
                    // The URI read is the argument policies can test.
                    schema: object(
                        serde_json::json!({ "uri": { "type": "string", "description": "The URI read" } }),
                        vec!["uri".into()],
                    ),
                    listing: Listing::Template(listed),
                }
            })
            .ok_or_else(|| absent(format!("a resource template `{}`", r.template)));
        if let Some(full_name) = declare(
            ToolKind::Resource,
            &r.name,
            r.risk,
            &r.labels,
            found,
            catalog,
            errors,
        ) {
            catalog
                .resource_templates
                .push((r.template.clone(), full_name));
        }
    }
    check_mcp_asks(doc, c, connector, owners, catalog, errors);
}

/// What an `mcp` connector's upstream may ask of agents' clients
/// (`sampling:`, `elicitation:`): one catalog entry each, named
/// `sampling:<connector>` / `elicitation:<connector>`, whose arguments are
/// the request's MCP params (so policies and task constraints can test
/// them). Not listed to agents; reached only from inside a call.
fn check_mcp_asks(
    doc: &Doc<'_>,
    c: &ConnectorManifest,
    connector: Option<Arc<dyn Connector>>,
    owners: &Arc<crate::manifest::types::ConnectorOwners>,
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
) {
    use crate::catalog::{Listing, ToolKind, Withdrawn};
    use tollgate_connectors::mcp::ClientAsk;
    let asks = [
        (ClientAsk::Sampling, &c.sampling),
        (ClientAsk::Elicitation, &c.elicitation),
    ];
    for (what, declared) in asks {
        let Some(m) = declared else { continue };
        let full_name = format!("{}{}", ToolKind::Ask(what).prefix(), c.id);
        let schema = match what {
            ClientAsk::Sampling => serde_json::json!({
                "type": "object",
                "properties": {
                    "messages": { "type": "array", "items": { "type": "object" } },
                    "maxTokens": { "type": "integer" },
                    "systemPrompt": { "type": "string" },
                    "includeContext": { "type": "string" },
                    "temperature": { "type": "number" },
                    "stopSequences": { "type": "array", "items": { "type": "string" } },
                    "modelPreferences": { "type": "object" },
                    "metadata": { "type": "object" }
                },
                "required": ["messages", "maxTokens"]
            }),
            ClientAsk::Elicitation => serde_json::json!({
                "type": "object",
                "properties": {
                    "message": { "type": "string" },
                    "mode": { "type": "string" },
                    "requestedSchema": { "type": "object" },
                    "url": { "type": "string" },
                    "elicitationId": { "type": "string" }
                },
                "required": ["message"]
            }),
        };
        let description = m.description.clone().unwrap_or_else(|| {
            format!(
                "{} requests of upstream `{}` to the calling agent's client",
                what.as_str(),
                c.id
            )
        });
        let built = match &connector {
            None => Err((
                "upstream_unavailable",
                format!("upstream `{}` is not running here", c.id),
            )),
            Some(connector) => ToolEntry::upstream_extra(
                c,
                full_name.clone(),
                what.as_str().to_string(),
                description,
                schema.as_object().cloned().unwrap_or_default(),
                m.risk,
                m.labels.clone(),
                Listing::Ask(what),
                connector.clone(),
                owners.clone(),
            )
            .map_err(|why| ("upstream_definition_invalid", why)),
        };
        if catalog.tools.contains_key(&full_name) || catalog.withdrawn.contains_key(&full_name) {
            let (l, col) = doc.locate(None, &format!("{}:", what.as_str()));
            errors.push(
                doc.error(l, col, format!("`{full_name}` is declared twice"))
                    .with_code(Code::Duplicate),
            );
            continue;
        }
        match built {
            Ok(entry) => {
                catalog.tools.insert(full_name, Arc::new(entry));
            }
            Err((code, why)) => {
                catalog.withdrawn.insert(
                    full_name,
                    Withdrawn {
                        connector: c.id.clone(),
                        tool: what.as_str().to_string(),
                        code,
                        why,
                    },
                );
            }
        }
    }
}

/// MCP's tool name characters (SEP-986), without the dot Tollgate uses
/// for its prefix.
fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_pin(pin: &str) -> bool {
    pin.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Issuers of workload identities.
fn check_issuers(
    issuers: &[Parsed<IssuerManifest>],
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
    broken: &mut Broken,
) {
    for Parsed { doc, value: m } in issuers {
        let first_error = errors.len();
        check_issuer(doc, m, catalog, errors);
        if !catalog.issuers.contains_key(&m.id) && first_error < errors.len() {
            broken.issuers.entry(m.id.clone()).or_insert(first_error);
        }
    }
}

/// One issuer; in the catalog if it is valid.
fn check_issuer(
    doc: &Doc<'_>,
    m: &IssuerManifest,
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
) {
    let (l, col) = doc.locate(None, &m.id);
    if !valid_id(&m.id) {
        errors.push(doc.error(
            l,
            col,
            format!("issuer id `{}` must match [a-z][a-z0-9_-]*", m.id),
        ));
        return;
    }
    if catalog.issuers.contains_key(&m.id) {
        errors.push(
            doc.error(l, col, format!("issuer `{}` is declared twice", m.id))
                .with_code(Code::Duplicate),
        );
        return;
    }
    if catalog.issuers_by_iss.contains_key(&m.issuer) {
        let (il, ic) = doc.locate(None, &m.issuer);
        errors.push(
            doc.error(
                il,
                ic,
                format!("another Issuer already declares `issuer: {}`", m.issuer),
            )
            .with_code(Code::Duplicate),
        );
        return;
    }
    let base = doc.file.parent().unwrap_or(Path::new("."));
    match crate::identity::Issuer::from_manifest(m, base) {
        Ok(issuer) => {
            let issuer = Arc::new(issuer);
            catalog
                .issuers_by_iss
                .insert(m.issuer.clone(), issuer.clone());
            catalog.issuers.insert(m.id.clone(), issuer);
        }
        Err(message) => {
            let (jl, jc) = doc.locate(None, "jwks:");
            errors.push(doc.error(jl, jc, format!("issuer `{}`: {message}", m.id)));
        }
    }
}

/// Agents: owners, deployment approval, review date, workload identities
/// (naming declared issuers) and grants (matching declared tools).
fn check_agents(
    agents: &[Parsed<AgentManifest>],
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
    broken: &mut Broken,
    today: time::Date,
) {
    let mut seen_agents: HashMap<String, PathBuf> = HashMap::new();
    for Parsed { doc, value: a } in agents {
        let (l, col) = doc.locate(None, &a.id);
        if !valid_id(&a.id) {
            errors.push(doc.error(
                l,
                col,
                format!("agent id `{}` must match [a-z][a-z0-9_-]*", a.id),
            ));
            continue;
        }
        if let Some(first) = seen_agents.insert(a.id.clone(), doc.file.to_path_buf()) {
            errors.push(
                doc.error(
                    l,
                    col,
                    format!(
                        "agent `{}` is already declared in {}",
                        a.id,
                        first.display()
                    ),
                )
                .with_code(Code::Duplicate),
            );
            continue;
        }
        check_owner(doc, "owners.business", &a.owners.business, errors);
        check_owner(doc, "owners.system", &a.owners.system, errors);
        check_owner(doc, "owners.security", &a.owners.security, errors);
        if a.deployment.approved_by.trim().is_empty() {
            let (dl, dc) = doc.locate(None, "approved_by:");
            errors.push(doc.error(
                dl,
                dc,
                "deployment.approved_by must name who approved this agent",
            ));
        }
        if let Err(message) = parse_date(&a.deployment.approved_at) {
            let (dl, dc) = doc.locate(None, "approved_at:");
            errors.push(doc.error(dl, dc, format!("deployment.approved_at: {message}")));
        }
        let review_by = match parse_date(&a.review_by) {
            Ok(d) => d,
            Err(message) => {
                let (rl, rc) = doc.locate(None, "review_by:");
                errors.push(doc.error(rl, rc, format!("review_by: {message}")));
                continue;
            }
        };
        if let Some(w) = review_warning(doc, &a.id, review_by, today) {
            catalog.warnings.push(w);
        }
        let mut identity_errors = false;
        for w in &a.credentials.workload {
            let (wl, wc) = doc.locate(None, &w.subject);
            if let Some(cause) = broken.issuers.get(&w.issuer) {
                // The issuer's own error says it all.
                broken.skip(*cause, &a.id);
                identity_errors = true;
            } else if !catalog.issuers.contains_key(&w.issuer) {
                let (il, ic) = doc.locate(Some("workload:"), &w.issuer);
                let near = closest(&w.issuer, catalog.issuers.keys().map(String::as_str));
                errors.push(
                    doc.error(
                        il,
                        ic,
                        format!(
                            "workload identity names issuer `{}`, which is not declared",
                            w.issuer
                        ),
                    )
                    .with_code(Code::UnknownReference)
                    .with_hint(near.map(|n| format!("did you mean `{n}`?"))),
                );
                identity_errors = true;
            } else if w.subject.trim().is_empty() {
                errors.push(doc.error(wl, wc, "workload identity needs a non-empty `subject`"));
                identity_errors = true;
            } else if let Some(owner) = catalog
                .workloads
                .insert((w.issuer.clone(), w.subject.clone()), a.id.clone())
                .filter(|o| *o != a.id)
            {
                errors.push(doc.error(
                    wl,
                    wc,
                    format!("identity `{}` from issuer `{}` already belongs to agent `{owner}`; two agents can never share an identity", w.subject, w.issuer),
                ).with_code(Code::Duplicate));
                identity_errors = true;
            }
        }
        if identity_errors {
            continue;
        }
        let mut granted = std::collections::BTreeSet::new();
        let mut grant_errors = false;
        for pattern in &a.tools {
            let (gl, gc) = doc.locate(Some("tools:"), pattern);
            let glob = match globset::GlobBuilder::new(pattern)
                .literal_separator(false)
                .build()
            {
                Ok(g) => g.compile_matcher(),
                Err(e) => {
                    errors.push(doc.error(
                        gl,
                        gc,
                        format!("grant `{pattern}` is not a valid glob: {}", e.kind()),
                    ));
                    grant_errors = true;
                    continue;
                }
            };
            // Withdrawn tools stay granted: they come back when their
            // upstream does (or is pinned again), and meanwhile a call is
            // refused with the reason rather than as unknown.
            let matched: Vec<&String> = catalog
                .tools
                .keys()
                .chain(catalog.withdrawn.keys())
                .filter(|name| glob.is_match(name.as_str()))
                .collect();
            if matched.is_empty() {
                if let Some(cause) = broken.cause_of_grant(pattern) {
                    // What it names failed to load: that error is the one
                    // to fix, and it says this agent waits on it.
                    broken.skip(cause, &a.id);
                    grant_errors = true;
                    continue;
                }
                errors.push(
                    doc.error(gl, gc, format!("grant `{pattern}` matches no tool"))
                        .with_code(Code::UnknownReference)
                        .with_hint(grant_hint(pattern, catalog)),
                );
                grant_errors = true;
                continue;
            }
            granted.extend(matched.into_iter().cloned());
        }
        if grant_errors {
            continue;
        }
        if granted.is_empty() {
            let (tl, tc) = doc.locate(None, "tools:");
            catalog.warnings.push(
                doc.error(
                    tl,
                    tc,
                    format!(
                        "agent `{}` is granted no tools: it can only start and end tasks",
                        a.id
                    ),
                )
                .with_code(Code::NothingGranted)
                .with_hint(Some(
                    "list the tools it may call under `tools:`, or remove the agent".into(),
                )),
            );
        }
        let mut entry = AgentEntry::new(a, review_by, granted, &catalog.tools);
        if let Some(limits) = &a.limits
            && let Err(e) = check_agent_limits(limits, &mut entry, &catalog.tools)
        {
            let (ll, lc) = doc.locate(Some("limits:"), &e.at);
            errors.push(
                doc.error(ll, lc, format!("agent `{}`: {}", a.id, e.message))
                    .with_code(e.code)
                    .with_hint(e.hint),
            );
            continue;
        }
        if let Some(r) = a.approvals.as_ref().and_then(|x| x.rate.as_ref()) {
            match RateSpec::parse(r) {
                Ok(spec) => entry.approval_rate = spec,
                Err(message) => {
                    let (rl, rc) = doc.locate(Some("approvals:"), &r.rate);
                    errors.push(doc.error(
                        rl,
                        rc,
                        format!("agent `{}`: approvals.{message}", a.id),
                    ));
                    continue;
                }
            }
        }
        if a.approvals.as_ref().and_then(|x| x.max_pending) == Some(0) {
            let (pl, pc) = doc.locate(Some("approvals:"), "max_pending");
            errors.push(doc.error(
                pl,
                pc,
                format!("agent `{}`: approvals.max_pending must be at least 1", a.id),
            ));
            continue;
        }
        catalog.agents.insert(entry.id.clone(), Arc::new(entry));
    }
}

/// A warning when `review_by` has passed or is less than 14 days away:
/// from that day on the agent is refused every call (the admit stage).
fn review_warning(
    doc: &Doc<'_>,
    agent: &str,
    review_by: time::Date,
    today: time::Date,
) -> Option<ManifestError> {
    let days = (review_by - today).whole_days();
    let (code, message) = if days <= 0 {
        (
            Code::ReviewOverdue,
            format!(
                "agent `{agent}`: review_by {review_by} has come; the agent is refused every call until it is reviewed and the date moved"
            ),
        )
    } else if days < 14 {
        (
            Code::ReviewDue,
            format!(
                "agent `{agent}` is due for review by {review_by} (in {days} day{}); from that day on it is refused every call",
                if days == 1 { "" } else { "s" }
            ),
        )
    } else {
        return None;
    };
    let (l, c) = doc.locate(None, "review_by:");
    Some(doc.error(l, c, message).with_code(code).with_hint(Some(
        "review the agent with its owners, then set `review_by` to the next review date".into(),
    )))
}

/// Why a grant that matches nothing might: the nearest tool name, else
/// the tools of the connector it names, else the nearest connector.
fn grant_hint(pattern: &str, catalog: &Catalog) -> Option<String> {
    if let Some(near) = closest(pattern, catalog.tools.keys().map(String::as_str)) {
        return Some(format!("did you mean `{near}`?"));
    }
    let (connector, _) = pattern.split_once('.')?;
    let prefix = format!("{connector}.");
    let tools: Vec<String> = catalog
        .tools
        .keys()
        .filter(|t| t.starts_with(&prefix))
        .map(|t| format!("`{t}`"))
        .collect();
    if !tools.is_empty() {
        return Some(format!("connector `{connector}` has {}", tools.join(", ")));
    }
    closest(connector, catalog.connectors.keys().map(String::as_str))
        .map(|near| format!("there is no connector `{connector}`; did you mean `{near}`?"))
}

/// A limits problem and the text to find its line by.
struct LimitError {
    at: String,
    code: Code,
    message: String,
    hint: Option<String>,
}

/// Checks an agent's `limits` and fills them into its entry: rates parse,
/// per-tool rates name tools it may call, budgets name numeric arguments
/// the tools require.
fn check_agent_limits(
    limits: &AgentLimits,
    entry: &mut AgentEntry,
    tools: &std::collections::BTreeMap<String, Arc<ToolEntry>>,
) -> Result<(), LimitError> {
    let rate = |r: &crate::manifest::types::RateLimit| {
        RateSpec::parse(r).map_err(|message| LimitError {
            at: r.rate.clone(),
            code: Code::InvalidValue,
            message,
            hint: None,
        })
    };
    if let Some(r) = &limits.rate {
        entry.rate = Some(rate(r)?);
    }
    for (tool, r) in &limits.tools {
        let builtin =
            [crate::catalog::START_TASK, crate::catalog::END_TASK].contains(&tool.as_str());
        if !builtin && !entry.granted.contains(tool) {
            let known = entry
                .granted
                .iter()
                .map(String::as_str)
                .chain([crate::catalog::START_TASK, crate::catalog::END_TASK]);
            return Err(LimitError {
                at: tool.clone(),
                code: Code::UnknownReference,
                message: format!("`limits.tools` names `{tool}`, which this agent is not granted"),
                hint: closest(tool, known).map(|n| format!("did you mean `{n}`?")),
            });
        }
        entry.tool_rates.insert(tool.clone(), rate(r)?);
    }
    let Some(t) = &limits.per_task else {
        return Ok(());
    };
    if t.max_calls == Some(0) || t.max_in_flight == Some(0) {
        return Err(LimitError {
            at: "per_task:".into(),
            code: Code::InvalidValue,
            message: "`per_task` limits must be at least 1".into(),
            hint: None,
        });
    }
    let mut spec = TaskLimitSpec {
        max_calls: t.max_calls,
        max_in_flight: t.max_in_flight,
        budgets: Vec::new(),
    };
    for b in &t.budgets {
        let err = |message: String| LimitError {
            at: b.argument.clone(),
            code: Code::InvalidValue,
            message,
            hint: None,
        };
        let max = serde_json::Number::from_f64(b.max)
            .ok_or_else(|| err(format!("budget max {} is not a number", b.max)))?;
        let max_units = crate::policy::schema::decimal_units(&max)
            .map_err(|e| err(format!("budget max: {e}")))?;
        if max_units <= 0 {
            return Err(err("a budget's `max` must be above 0".into()));
        }
        if b.tools.is_empty() {
            return Err(err(format!("budget over `{}` names no tools", b.argument)));
        }
        for name in &b.tools {
            let Some(tool) = tools.get(name).filter(|_| entry.granted.contains(name)) else {
                return Err(LimitError {
                    code: Code::UnknownReference,
                    hint: closest(name, entry.granted.iter().map(String::as_str))
                        .map(|n| format!("did you mean `{n}`?")),
                    ..err(format!(
                        "budget over `{}` names `{name}`, which this agent is not granted",
                        b.argument
                    ))
                });
            };
            let schema = &tool.tool.input_schema;
            let kind = schema
                .get("properties")
                .and_then(|p| p.get(&b.argument))
                .and_then(|p| p.get("type"))
                .and_then(serde_json::Value::as_str);
            let required = schema
                .get("required")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|r| r.iter().any(|v| v.as_str() == Some(b.argument.as_str())));
            if !matches!(kind, Some("number" | "integer")) || !required {
                return Err(err(format!(
                    "budget over `{}`: `{name}` must declare `{}` as a required number or integer",
                    b.argument, b.argument
                )));
            }
        }
        spec.budgets.push(BudgetSpec {
            tools: b.tools.clone(),
            argument: b.argument.clone(),
            max_units,
        });
    }
    entry.task_limits = spec;
    Ok(())
}

/// `base_url` pointed at `to` when it names the address `from` (by IP, or
/// as `localhost` for a loopback one); `None` when it names another host.
fn redirect(base_url: &str, from: SocketAddr, to: SocketAddr) -> Option<String> {
    let mut url = reqwest::Url::parse(base_url).ok()?;
    let host = url.host_str()?;
    let same_host = match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(ip) => ip == from.ip(),
        Err(_) => host.eq_ignore_ascii_case("localhost") && from.ip().is_loopback(),
    };
    if !same_host || url.port_or_known_default() != Some(from.port()) {
        return None;
    }
    url.set_ip_host(to.ip()).ok()?;
    url.set_port(Some(to.port())).ok()?;
    Some(url.to_string())
}

/// At most one demo backend, on loopback.
fn check_demo_backends(
    demos: &[Parsed<DemoBackendManifest>],
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
) {
    for (i, Parsed { doc, value: d }) in demos.iter().enumerate() {
        let (l, c) = doc.locate(None, "listen:");
        if i > 0 {
            errors.push(doc.error(l, c, "only one DemoBackend may be declared"));
        } else if !d.listen.ip().is_loopback() {
            errors.push(doc.error(
                l,
                c,
                format!("the demo backend must listen on loopback, not {}", d.listen),
            ));
        } else {
            catalog.demo_backend = Some(d.listen);
        }
    }
}

/// Approvers: ids unique and well-formed, a name and a contact.
fn check_approvers(
    approvers: &[Parsed<ApproverManifest>],
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
) {
    for Parsed { doc, value: a } in approvers {
        let (l, c) = doc.locate(None, &a.id);
        if !valid_id(&a.id) {
            errors.push(doc.error(
                l,
                c,
                format!("approver id `{}` must match [a-z][a-z0-9_-]*", a.id),
            ));
            continue;
        }
        if catalog.approvers.contains_key(&a.id) {
            errors.push(doc.error(l, c, format!("approver `{}` is declared twice", a.id)));
            continue;
        }
        if a.name.trim().is_empty() || a.contact.trim().is_empty() {
            errors.push(doc.error(
                l,
                c,
                format!("approver `{}` needs a non-empty `name` and `contact`", a.id),
            ));
            continue;
        }
        if let Some(bad) = a
            .roles
            .iter()
            .find(|r| r.trim().is_empty() || r.len() > 128)
        {
            let (rl, rc) = doc.locate(Some("roles:"), bad);
            errors.push(doc.error(
                rl,
                rc,
                format!("approver `{}`: a role must be 1 to 128 characters", a.id),
            ));
            continue;
        }
        catalog.approvers.insert(
            a.id.clone(),
            Arc::new(crate::catalog::ApproverEntry {
                id: a.id.clone(),
                name: a.name.clone(),
                contact: a.contact.clone(),
                roles: a.roles.clone(),
            }),
        );
    }
}

/// Webhooks: ids unique, an http(s) URL (plain http only on loopback), and a
/// secret for the signed format.
fn check_webhooks(
    webhooks: &[Parsed<WebhookManifest>],
    catalog: &mut Catalog,
    errors: &mut Vec<ManifestError>,
) {
    for Parsed { doc, value: w } in webhooks {
        let (l, c) = doc.locate(None, &w.id);
        if !valid_id(&w.id) || catalog.webhooks.iter().any(|x| x.id == w.id) {
            errors.push(doc.error(
                l,
                c,
                format!(
                    "webhook id `{}` must match [a-z][a-z0-9_-]* and be unique",
                    w.id
                ),
            ));
            continue;
        }
        let (ul, uc) = doc.locate(None, "url:");
        match reqwest::Url::parse(&w.url) {
            Ok(u) => {
                let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
                    errors.push(doc.error(
                        ul,
                        uc,
                        format!(
                            "webhook `{}`: url must use https (plain http only on loopback)",
                            w.id
                        ),
                    ));
                    continue;
                }
            }
            Err(e) => {
                errors.push(doc.error(
                    ul,
                    uc,
                    format!("webhook `{}`: url is not valid: {e}", w.id),
                ));
                continue;
            }
        }
        let base_dir = doc.file.parent().unwrap_or(Path::new(".")).to_path_buf();
        match &w.secret {
            None if w.format == crate::manifest::types::WebhookFormat::Tollgate => {
                errors.push(doc.error(
                    l,
                    c,
                    format!(
                        "webhook `{}` needs a `secret` (env or file) to sign its events",
                        w.id
                    ),
                ));
                continue;
            }
            Some(s) if s.env.is_some() == s.file.is_some() => {
                let (sl, sc) = doc.locate(None, "secret:");
                errors.push(doc.error(
                    sl,
                    sc,
                    format!(
                        "webhook `{}`: secret needs exactly one of `env` or `file`",
                        w.id
                    ),
                ));
                continue;
            }
            _ => {}
        }
        catalog
            .webhooks
            .push(Arc::new(crate::catalog::WebhookEntry {
                id: w.id.clone(),
                roles: w.roles.clone(),
                url: w.url.clone(),
                format: w.format,
                secret: w.secret.clone(),
                base_dir,
            }));
    }
}

/// Checks a connector's backend authentication; returns warnings.
fn check_auth(auth: &BackendAuth, base_dir: &Path) -> Result<Vec<(Code, String)>, String> {
    let mut warnings = Vec::new();
    let header = |h: &str| {
        http::HeaderName::from_bytes(h.as_bytes())
            .map(|_| ())
            .map_err(|_| format!("`{h}` is not a valid header name"))
    };
    let url = |u: &str, what: &str| -> Result<(), String> {
        let parsed =
            reqwest::Url::parse(u).map_err(|e| format!("{what} `{u}` is not a valid URL: {e}"))?;
        let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if parsed.scheme() != "https" && !loopback {
            return Err(format!(
                "{what} `{u}` must use https (plain http only on loopback)"
            ));
        }
        Ok(())
    };
    let mut secret = |s: &SecretRef, what: &str| -> Result<(), String> {
        match (&s.env, &s.file) {
            (Some(var), None) => {
                if std::env::var_os(var).is_none() {
                    warnings.push((Code::SecretUnavailable, format!("{what}: environment variable `{var}` is not set here; calls will be refused until it is")));
                }
                Ok(())
            }
            (None, Some(file)) => {
                if !base_dir.join(file).is_file() {
                    warnings.push((Code::SecretUnavailable, format!("{what}: file `{file}` does not exist here; calls will be refused until it does")));
                }
                Ok(())
            }
            _ => Err(format!("{what} needs exactly one of `env` or `file`")),
        }
    };
    match auth.kind()? {
        AuthKind::GatewayJwt(j) => {
            header(&j.header)?;
            if j.ttl_seconds == 0 || j.ttl_seconds > crate::catalog::MAX_CREDENTIAL_TTL.as_secs() {
                return Err(format!(
                    "gateway_jwt.ttl_seconds must be between 1 and {}",
                    crate::catalog::MAX_CREDENTIAL_TTL.as_secs()
                ));
            }
        }
        AuthKind::Oauth2ClientCredentials(c) => {
            header(&c.header)?;
            url(&c.token_url, "token_url")?;
            if let Some(r) = &c.revocation_url {
                url(r, "revocation_url")?;
            }
            secret(&c.client_secret, "client_secret")?;
        }
        AuthKind::TokenExchange(t) => {
            header(&t.header)?;
            url(&t.token_url, "token_url")?;
            if let Some(r) = &t.revocation_url {
                url(r, "revocation_url")?;
            }
            match (&t.client_id, &t.client_secret) {
                (Some(_), Some(s)) => secret(s, "client_secret")?,
                (None, None) => {}
                _ => {
                    return Err(
                        "token_exchange needs both `client_id` and `client_secret`, or neither"
                            .into(),
                    );
                }
            }
        }
        AuthKind::Static(st) => {
            header(&st.header)?;
            secret(&st.value, "static value")?;
            warnings.push((
                Code::StaticCredential,
                "uses a static secret: it is long-lived and not task-scoped; prefer gateway_jwt, oauth2_client_credentials or token_exchange".into(),
            ));
        }
    }
    Ok(warnings)
}

fn parse_date(text: &str) -> Result<time::Date, String> {
    time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| format!("`{text}` is not a date (YYYY-MM-DD)"))
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && id.len() <= 64
}

fn check_owner(
    doc: &Doc<'_>,
    what: &str,
    owner: &super::types::Owner,
    errors: &mut Vec<ManifestError>,
) {
    if owner.name.trim().is_empty() || owner.contact.trim().is_empty() {
        let (l, c) = doc.locate(None, what.rsplit('.').next().unwrap_or(what));
        errors.push(doc.error(
            l,
            c,
            format!("{what} needs a non-empty `name` and `contact`"),
        ));
    }
}

fn schema_properties(schema: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}
