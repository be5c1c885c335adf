//! Decision benchmark: the whole in-memory decision for one call (the grant
//! and schema check, the task's scope, the Cedar decision with the task's
//! constraints, and the three rate limits) over a large catalog: 1,000
//! tools on 10 connectors, 100 agents, 50 policies.
//!
//! ```text
//! cargo bench -p tollgate-tests --bench decision
//! ```
//!
//! The catalog is built by the real loader from generated manifests and a
//! generated `.cedar` file, exactly as `tollgate serve` builds it. Each
//! iteration picks the next (agent, tool) pair round robin, with arguments
//! that pass the schema, inside a task with one constraint, and times
//! `pipeline::policy::explain` plus the agent, agent+tool and connector
//! rate limits on the in-process limiter. Task budgets are left out: they
//! are a store round trip, and only for tasks that declare one.
//!
//! Environment: `BENCH_ITERS` (200000), `BENCH_ROUNDS` (5), `BENCH_JSON=1`.
//! Run without `--bench` (as `cargo test --all-targets` does), it only does
//! a short smoke run.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};
use tollgate::catalog::Catalog;
use tollgate::limits::{LocalRateLimiter, RateKey, RateLimiter};
use tollgate::manifest::{Source, load_sources};
use tollgate::pipeline::policy::{dry_run_task, explain};
use tollgate::store::TaskRecord;

const CONNECTORS: usize = 10;
const TOOLS_PER_CONNECTOR: usize = 100;
const AGENTS: usize = 100;
const POLICIES: usize = 50;

fn manifests() -> Vec<Source> {
    let mut yaml = String::new();
    for c in 0..CONNECTORS {
        let _ = write!(
            yaml,
            "kind: Connector\nid: c{c}\ndescription: bench\nowners:\n  system: {{ name: s, contact: s@example.com }}\n  security: {{ name: sec, contact: sec@example.com }}\nhttp: {{ base_url: \"http://127.0.0.1:9/api\" }}\nlimits:\n  rate: {{ rate: 1000000/second }}\ntools:\n"
        );
        for t in 0..TOOLS_PER_CONNECTOR {
            let risk = ["low", "medium", "high"][t % 3];
            let _ = write!(
                yaml,
                "  - name: t{t}\n    description: bench tool\n    risk: {risk}\n    labels: [l{}]\n    input_schema:\n      type: object\n      properties:\n        id: {{ type: string, pattern: \"^[a-z0-9]+$\" }}\n        amount: {{ type: number, minimum: 0 }}\n        note: {{ type: string, maxLength: 200 }}\n      required: [id, amount]\n      additionalProperties: false\n    http: {{ request: {{ method: POST, path: /t{t} }} }}\n",
                t % 5
            );
        }
        yaml.push_str("---\n");
    }
    for a in 0..AGENTS {
        // Each agent is granted two connectors (200 tools).
        let (x, y) = (a % CONNECTORS, (a + 1) % CONNECTORS);
        let _ = write!(
            yaml,
            "kind: Agent\nid: a{a}\ndescription: bench\nowners:\n  business: {{ name: b, contact: b@example.com }}\n  system: {{ name: s, contact: s@example.com }}\n  security: {{ name: sec, contact: sec@example.com }}\ndeployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}\nreview_by: 2099-01-01\ntools: [\"c{x}.*\", \"c{y}.*\"]\nlabels: [team{}]\nlimits:\n  rate: {{ rate: 1000000/second }}\n  tools:\n    c{x}.t0: {{ rate: 1000000/second }}\n---\n",
            a % 7
        );
    }
    let mut cedar = String::new();
    for p in 0..POLICIES {
        // Five kinds of policy per connector, on five connectors.
        let c = (p / 5) % CONNECTORS;
        let text = match p % 5 {
            0 => format!(
                "@id(\"p{p}\")\n@approval(\"none\")\npermit (principal, action, resource in Connector::\"c{c}\")\nwhen {{ context.args.amount.lessThanOrEqual(decimal(\"100.0\")) }};\n"
            ),
            1 => format!(
                "@id(\"p{p}\")\n@approval(\"owner:business\")\npermit (principal, action, resource in Connector::\"c{c}\")\nwhen {{ decimal(\"100.0\").lessThan(context.args.amount) }};\n"
            ),
            2 => format!(
                "@id(\"p{p}\")\nforbid (principal, action, resource in Connector::\"c{c}\")\nwhen {{ principal.labels.contains(\"team{}\") && resource.labels.contains(\"l{}\") && context has task && !context.task.within_constraints }};\n",
                p % 7,
                p % 5
            ),
            3 => format!(
                "@id(\"p{p}\")\nforbid (principal, action, resource)\nwhen {{ resource.risk_level >= 3 && context.now.hour_utc < 6 && principal.labels.contains(\"team{}\") }};\n",
                p % 7
            ),
            _ => format!(
                "@id(\"p{p}\")\npermit (principal == Agent::\"a{}\", action, resource)\nwhen {{ resource.read_only }};\n",
                p % AGENTS
            ),
        };
        cedar.push_str(&text);
    }
    vec![
        Source {
            path: "bench.yaml".into(),
            text: yaml,
        },
        Source {
            path: "bench.cedar".into(),
            text: cedar,
        },
    ]
}

struct Case {
    agent: String,
    tool: String,
    connector: String,
    args: Map<String, Value>,
    task: TaskRecord,
}

fn cases(catalog: &Catalog) -> Vec<Case> {
    let mut out = Vec::new();
    for a in 0..AGENTS {
        let agent = &catalog.agents[&format!("a{a}")];
        for (i, tool) in agent.granted.iter().enumerate().step_by(7) {
            let amount = if i % 2 == 0 { 40 } else { 400 };
            out.push(Case {
                agent: agent.id.clone(),
                tool: tool.clone(),
                connector: tool.split('.').next().unwrap().to_string(),
                args: json!({ "id": "x1", "amount": amount, "note": "bench" })
                    .as_object()
                    .unwrap()
                    .clone(),
                task: dry_run_task(&agent.id, tool, vec!["amount <= 500".into()]),
            });
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 200_000 } else { 2_000 });
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 5 } else { 1 });
    let started = Instant::now();
    let catalog = load_sources(&manifests()).unwrap_or_else(|e| panic!("{e}"));
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let policies = catalog.policies.as_ref().map_or(0, |p| p.len());
    assert_eq!(
        (catalog.tools.len(), catalog.agents.len(), policies),
        (CONNECTORS * TOOLS_PER_CONNECTOR, AGENTS, POLICIES)
    );
    let cases = cases(&catalog);
    let clock: Arc<dyn tollgate::clock::Clock> = Arc::new(tollgate::clock::SystemClock);
    let limiter = LocalRateLimiter::new(clock.clone());
    let now = clock.now();
    let mut verdicts = std::collections::BTreeMap::<&str, usize>::new();
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    for round in 0..rounds {
        let mut ns = Vec::with_capacity(iters);
        for i in 0..iters {
            let c = &cases[(i * 31 + round) % cases.len()];
            let agent = &catalog.agents[&c.agent];
            let t0 = Instant::now();
            let e = explain(&catalog, agent, &c.tool, c.args.clone(), Some(&c.task), now);
            if let Some(spec) = agent.rate {
                limiter
                    .take(&RateKey::Agent(c.agent.clone()), spec)
                    .unwrap();
            }
            if let Some(spec) = agent.tool_rates.get(&c.tool) {
                limiter
                    .take(&RateKey::AgentTool(c.agent.clone(), c.tool.clone()), *spec)
                    .unwrap();
            }
            if let Some(spec) = catalog.connectors[&c.connector].rate {
                limiter
                    .take(&RateKey::Connector(c.connector.clone()), spec)
                    .unwrap();
            }
            ns.push(t0.elapsed().as_nanos() as u64);
            if round == 0 {
                *verdicts.entry(e.verdict).or_default() += 1;
            }
        }
        ns.sort_unstable();
        p50s.push(percentile(&ns, 0.5));
        p99s.push(percentile(&ns, 0.99));
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p50, p99) = (med(p50s), med(p99s));
    if std::env::var("BENCH_JSON").is_ok_and(|v| v == "1") {
        println!(
            "{}",
            json!({ "p50_us": p50, "p99_us": p99, "iters": iters, "rounds": rounds, "load_ms": load_ms, "verdicts": verdicts })
        );
    } else {
        println!(
            "decision ({} tools, {} agents, {} policies; catalog loaded in {load_ms:.0} ms)",
            catalog.tools.len(),
            catalog.agents.len(),
            policies
        );
        println!("  p50 {p50:.1} µs   p99 {p99:.1} µs   (median of {rounds} rounds of {iters})");
        println!("  verdicts in round 1: {verdicts:?}");
    }
}
