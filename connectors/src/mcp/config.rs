//! Manifest types for the upstream-MCP connector: how to reach the upstream
//! server (a child process over stdio, or Streamable HTTP). Strict like the
//! HTTP connector's: an unknown field is a typo, not an option.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    20_000
}

/// An upstream MCP server. Exactly one of `stdio` and `url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpConnectorConfig {
    /// Start the upstream as a child process and speak MCP over its
    /// stdin/stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdio: Option<StdioConfig>,
    /// The upstream's Streamable HTTP endpoint, e.g.
    /// `https://mcp.internal/mcp`. The connector's `auth` supplies the
    /// credential; the agent's own token is never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Longest a tool call may take, in milliseconds; progress from the
    /// upstream does not extend it. Default 30000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest the start and the handshake may take, in milliseconds
    /// (an `npx` upstream may download itself first). Default 20000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Which protocol revisions to offer the upstream. Default `auto`.
    #[serde(default, skip_serializing_if = "McpProtocol::is_auto")]
    pub protocol: McpProtocol,
}

/// How Tollgate opens a connection to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum McpProtocol {
    /// The stateless revision (2026-07-28) where the upstream speaks it,
    /// else the `initialize` handshake.
    #[default]
    Auto,
    /// Only the `initialize` handshake (revisions up to 2025-11-25): for
    /// an upstream that speaks both but sends sampling or elicitation
    /// requests only on handshake sessions.
    Handshake,
}

impl McpProtocol {
    fn is_auto(&self) -> bool {
        *self == McpProtocol::Auto
    }
}

/// A child-process upstream. Nothing of the gateway's environment reaches
/// it except the variables named in `inherit_env`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdioConfig {
    /// The program to run (looked up on `PATH` when it has no `/`).
    pub command: String,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Working directory, relative to the manifest's directory. Default:
    /// the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment variables set for the child, with literal values. Not
    /// for secrets: manifests are reviewed text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of the gateway's own environment variables passed through
    /// (for example `PATH`, `HOME`). Anything not named here or in `env` is
    /// not inherited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
}

impl McpConnectorConfig {
    /// Checks what can be checked without starting anything.
    pub fn check(&self) -> Result<(), String> {
        match (&self.stdio, &self.url) {
            (None, None) => return Err("`mcp` needs `stdio` or `url`".into()),
            (Some(_), Some(_)) => {
                return Err("`mcp` declares both `stdio` and `url`; choose one".into());
            }
            _ => {}
        }
        if let Some(url) = &self.url {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| format!("url `{url}` is not a valid URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("url `{url}` must use http or https"));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(format!(
                    "url `{url}` must not carry credentials; declare `auth` instead"
                ));
            }
        }
        if let Some(s) = &self.stdio {
            if s.command.trim().is_empty() {
                return Err("`stdio.command` is empty".into());
            }
            let valid = |n: &str| {
                !n.is_empty()
                    && !n.contains('=')
                    && !n.contains('\0')
                    && !n.starts_with(|c: char| c.is_ascii_digit())
            };
            if let Some(bad) = s.env.keys().chain(s.inherit_env.iter()).find(|n| !valid(n)) {
                return Err(format!("`{bad}` is not an environment variable name"));
            }
        }
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err("timeouts must be greater than 0".into());
        }
        Ok(())
    }

    /// The call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The start and handshake timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// A digest of everything that decides which upstream this is and how
    /// it is started: a reload that changes none of it keeps the running
    /// upstream (and its session); one that changes any of it restarts it.
    pub fn fingerprint(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }

    /// Where it runs, for logs and the credential cache (never for agents).
    pub fn target(&self) -> String {
        match (&self.url, &self.stdio) {
            (Some(url), _) => url.clone(),
            (None, Some(s)) => format!("stdio:{}", s.command),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stdio(command: &str) -> McpConnectorConfig {
        McpConnectorConfig {
            stdio: Some(StdioConfig {
                command: command.into(),
                args: vec![],
                cwd: None,
                env: BTreeMap::new(),
                inherit_env: vec![],
            }),
            url: None,
            timeout_ms: 1,
            connect_timeout_ms: 1,
            protocol: McpProtocol::Auto,
        }
    }

    #[test]
    fn exactly_one_transport_and_sane_values() {
        assert!(stdio("server").check().is_ok());
        assert!(stdio(" ").check().is_err());
        let mut both = stdio("server");
        both.url = Some("http://127.0.0.1:1/mcp".into());
        assert!(both.check().unwrap_err().contains("both"));
        let mut none = stdio("x");
        none.stdio = None;
        assert!(none.check().is_err());
        let mut creds = none.clone();
        creds.url = Some("http://user:pw@127.0.0.1/mcp".into());
        assert!(creds.check().unwrap_err().contains("credentials"));
        let mut bad_env = stdio("x");
        if let Some(s) = bad_env.stdio.as_mut() {
            s.inherit_env.push("A=B".into());
        }
        assert!(bad_env.check().is_err());
    }

    #[test]
    fn the_fingerprint_follows_the_configuration() {
        let a = stdio("server");
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        if let Some(s) = b.stdio.as_mut() {
            s.args.push("--flag".into());
        }
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
