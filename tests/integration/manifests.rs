//! Manifests: every shipped file loads, broken ones are reported with file,
//! line and a message that says what is wrong, and the committed JSON
//! Schema matches the types.

use std::path::{Path, PathBuf};

use tollgate::manifest::{Source, load_dir, load_sources, types::json_schema};
use tollgate_tests::workspace_root;

fn manifest_dirs() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs = vec![root.join("manifests")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let dir = entry.unwrap().path().join("manifests");
        if dir.is_dir() {
            dirs.push(dir);
        }
    }
    dirs
}

#[test]
fn every_shipped_and_example_manifest_loads() {
    let dirs = manifest_dirs();
    assert!(
        dirs.len() >= 2,
        "expected at least one example with manifests"
    );
    for dir in dirs {
        let catalog = load_dir(&dir).unwrap_or_else(|e| panic!("{}:\n{e}", dir.display()));
        // Offline, an upstream MCP server's tools are declared but not
        // served (nothing is started): they count as declared.
        assert!(
            (!catalog.tools.is_empty() || !catalog.withdrawn.is_empty())
                && !catalog.agents.is_empty(),
            "{}",
            dir.display()
        );
        let yaml = std::fs::read_dir(&dir).unwrap().filter(|e| {
            let p = e.as_ref().unwrap().path();
            matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "cedar")
            )
        });
        assert_eq!(
            catalog.sources.len(),
            yaml.count(),
            "every YAML and Cedar file in {} is read",
            dir.display()
        );
    }
}

#[test]
fn the_committed_schema_is_up_to_date() {
    let committed =
        std::fs::read_to_string(workspace_root().join("manifests/schema.json")).unwrap();
    let committed: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert!(
        committed == json_schema(),
        "manifests/schema.json is stale: run `cargo run -- schema > manifests/schema.json`"
    );
}

#[test]
fn shipped_manifests_validate_against_the_committed_schema() {
    let schema = json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for dir in manifest_dirs() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|x| x.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
                let errors: Vec<String> = validator
                    .iter_errors(&value)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            }
        }
    }
}

const CONNECTOR: &str = "kind: Connector
id: shop
description: Shop
owners:
  system: { name: a, contact: a@example.com }
  security: { name: b, contact: b@example.com }
http:
  base_url: http://127.0.0.1:9/api
tools:
  - name: get_order
    description: Read an order
    risk: low
    input_schema:
      type: object
      properties:
        order_id: { type: string }
    http:
      request: { method: GET, path: \"/orders/{order_id}\" }
";

const AGENT: &str = "kind: Agent
id: bot
description: Bot
owners:
  business: { name: a, contact: a@example.com }
  system: { name: a, contact: a@example.com }
  security: { name: b, contact: b@example.com }
deployment: { approved_by: ciso, approved_at: 2026-01-01 }
review_by: 2099-01-01
tools: [shop.get_order]
";

const ISSUER: &str = "kind: Issuer
id: corp
description: Corporate IdP
issuer: https://idp.example.com
audience: https://tollgate.example.com
algorithms: [ES256]
jwks: { url: \"https://idp.example.com/jwks\" }
";

fn errors_of(files: &[(&str, String)]) -> Vec<tollgate::manifest::ManifestError> {
    let sources: Vec<Source> = files
        .iter()
        .map(|(p, t)| Source {
            path: Path::new(p).to_path_buf(),
            text: t.clone(),
        })
        .collect();
    match load_sources(&sources) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

#[test]
fn the_base_fixture_is_valid() {
    assert!(errors_of(&[("shop.yaml", CONNECTOR.into()), ("bot.yaml", AGENT.into())]).is_empty());
}

/// What is broken, the files, the file and line the error must name, and a
/// fragment of its message.
type Case = (
    &'static str,
    Vec<(&'static str, String)>,
    &'static str,
    usize,
    &'static str,
);

#[test]
fn broken_manifests_report_file_line_and_reason() {
    // (what is broken, files, expected file, expected line, message fragment)
    let cases: Vec<Case> = vec![
        (
            "unknown field in a tool",
            vec![("shop.yaml", CONNECTOR.replace("    risk: low", "    risk: low\n    cost: 3")), ("bot.yaml", AGENT.into())],
            "shop.yaml",
            13,
            "unknown field `cost`",
        ),
        (
            "bad risk value",
            vec![("shop.yaml", CONNECTOR.replace("risk: low", "risk: extreme")), ("bot.yaml", AGENT.into())],
            "shop.yaml",
            12,
            "`tools[0].risk` must be one of `low`, `medium`, `high` or `critical`, got `extreme`",
        ),
        ("missing kind", vec![("x.yaml", "id: x\n".into())], "x.yaml", 1, "missing `kind`"),
        ("unknown kind", vec![("x.yaml", "kind: Robot\nid: x\n".into())], "x.yaml", 1, "unknown kind `Robot`"),
        (
            "missing owners",
            vec![("bot.yaml", AGENT.replace("owners:\n  business: { name: a, contact: a@example.com }\n  system: { name: a, contact: a@example.com }\n  security: { name: b, contact: b@example.com }\n", ""))],
            "bot.yaml",
            1,
            "missing field `owners`",
        ),
        (
            "grant that matches no tool",
            vec![("shop.yaml", CONNECTOR.into()), ("bot.yaml", AGENT.replace("[shop.get_order]", "[shop.get_ordr]"))],
            "bot.yaml",
            10,
            "grant `shop.get_ordr` matches no tool (did you mean `shop.get_order`?)",
        ),
        (
            "duplicate agent across files",
            vec![("shop.yaml", CONNECTOR.into()), ("a.yaml", AGENT.into()), ("b.yaml", format!("# second\n{AGENT}"))],
            "b.yaml",
            3,
            "agent `bot` is already declared in a.yaml",
        ),
        (
            "error in the second document of a file",
            vec![("shop.yaml", format!("{CONNECTOR}---\n{}", AGENT.replace("description: Bot", "descripton: Bot")))],
            "shop.yaml",
            22,
            "unknown field `descripton`",
        ),
        (
            "input schema that is not an object schema",
            vec![("shop.yaml", CONNECTOR.replace("      type: object\n", "      type: string\n")), ("bot.yaml", AGENT.into())],
            "shop.yaml",
            10,
            "input_schema must be an object schema",
        ),
        (
            "path placeholder the schema does not declare",
            vec![("shop.yaml", CONNECTOR.replace("/orders/{order_id}", "/orders/{id}")), ("bot.yaml", AGENT.into())],
            "shop.yaml",
            10,
            "uses argument `id`, which the tool's input_schema does not declare",
        ),
        (
            "base URL that is not a URL",
            vec![("shop.yaml", CONNECTOR.replace("http://127.0.0.1:9/api", "not a url")), ("bot.yaml", AGENT.into())],
            "shop.yaml",
            8,
            "base_url `not a url` is not a valid URL",
        ),
        (
            "YAML syntax error",
            vec![("shop.yaml", CONNECTOR.replace("description: Shop", "description: [Shop")), ("bot.yaml", AGENT.into())],
            "shop.yaml",
            4,
            "did not find expected",
        ),
        (
            "duplicate tool name",
            vec![("shop.yaml", format!("{CONNECTOR}  - name: get_order\n    description: again\n    risk: low\n    input_schema: {{ type: object }}\n    http: {{ request: {{ method: GET, path: /x }} }}\n")), ("bot.yaml", AGENT.into())],
            "shop.yaml",
            19,
            "tool `shop.get_order` is declared twice",
        ),
        (
            "empty owner contact",
            vec![("shop.yaml", CONNECTOR.replace("contact: b@example.com", "contact: \"\"")), ("bot.yaml", AGENT.into())],
            "shop.yaml",
            6,
            "owners.security needs a non-empty `name` and `contact`",
        ),
        (
            "agent without deployment approval",
            vec![("shop.yaml", CONNECTOR.into()), ("bot.yaml", AGENT.replace("deployment: { approved_by: ciso, approved_at: 2026-01-01 }\n", ""))],
            "bot.yaml",
            1,
            "missing field `deployment`",
        ),
        (
            "agent without a review date",
            vec![("shop.yaml", CONNECTOR.into()), ("bot.yaml", AGENT.replace("review_by: 2099-01-01\n", ""))],
            "bot.yaml",
            1,
            "missing field `review_by`",
        ),
        (
            "review date that is not a date",
            vec![("shop.yaml", CONNECTOR.into()), ("bot.yaml", AGENT.replace("review_by: 2099-01-01", "review_by: next year"))],
            "bot.yaml",
            9,
            "review_by: `next year` is not a date",
        ),
        (
            "agent without a security owner",
            vec![("shop.yaml", CONNECTOR.into()), ("bot.yaml", AGENT.replace("  security: { name: b, contact: b@example.com }\n", ""))],
            "bot.yaml",
            5,
            "missing field `security`",
        ),
        (
            "two agents claiming one workload identity",
            vec![
                ("shop.yaml", CONNECTOR.into()),
                ("issuer.yaml", ISSUER.into()),
                ("a.yaml", AGENT.replace("tools:", "credentials:\n  workload: [{ issuer: corp, subject: \"spiffe://corp/bot\" }]\ntools:")),
                (
                    "b.yaml",
                    AGENT
                        .replace("id: bot", "id: bot2")
                        .replace("tools:", "credentials:\n  workload: [{ issuer: corp, subject: \"spiffe://corp/bot\" }]\ntools:"),
                ),
            ],
            "b.yaml",
            11,
            "already belongs to agent `bot`; two agents can never share an identity",
        ),
        (
            "workload identity naming an undeclared issuer",
            vec![
                ("shop.yaml", CONNECTOR.into()),
                ("a.yaml", AGENT.replace("tools:", "credentials:\n  workload: [{ issuer: nope, subject: x }]\ntools:")),
            ],
            "a.yaml",
            11,
            "names issuer `nope`, which is not declared",
        ),
        (
            "issuer with two key sources",
            vec![("issuer.yaml", ISSUER.replace("jwks: { url: \"https://idp.example.com/jwks\" }", "jwks: { url: \"https://idp.example.com/jwks\", file: k.json }"))],
            "issuer.yaml",
            7,
            "needs exactly one of `url` or `file`",
        ),
        (
            "issuer fetching keys over plain http",
            vec![("issuer.yaml", ISSUER.replace("https://idp.example.com/jwks", "http://idp.example.com/jwks"))],
            "issuer.yaml",
            7,
            "must use https",
        ),
        (
            "connector without a system owner",
            vec![("shop.yaml", CONNECTOR.replace("  system: { name: a, contact: a@example.com }\n", "")), ("bot.yaml", AGENT.into())],
            "shop.yaml",
            5,
            "missing field `system`",
        ),
    ];
    for (what, files, file, line, fragment) in cases {
        let errors = errors_of(&files);
        let hit = errors
            .iter()
            .find(|e| e.file == Path::new(file) && e.to_string().contains(fragment));
        let Some(e) = hit else {
            panic!("{what}: expected an error in {file} containing {fragment:?}, got {errors:#?}")
        };
        assert_eq!(e.line, line, "{what}: {e}");
        assert!(
            e.to_string().starts_with(&format!("{file}:{line}")),
            "{what}: {e}"
        );
    }
}
