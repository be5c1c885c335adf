#!/usr/bin/env bash
# Runs the conformance suite through Tollgate: the conformance upstream
# (tests/conformance-upstream, over stdio) behind a real `tollgate serve`
# as an `mcp` connector with `prefix: false` (the suite calls the
# upstream's own tool names), every tool exposed and granted to one agent.
# The suite cannot send an Authorization header, so it talks to a small
# proxy (`tollgate-conformance-upstream --proxy-to`) that adds the agent's
# key. Compared with tests/conformance/baseline-tollgate-<suite>.txt.
#
#   tests/conformance/through-tollgate.sh [--suite 0.1.12|latest]
#
# Exit codes as run.sh's.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
suite=0.1.12
while [ $# -gt 0 ]; do
    case "$1" in
    --suite) suite=${2:-}; shift 2 ;;
    --suite=*) suite=${1#--suite=}; shift ;;
    *) echo "usage: $0 [--suite 0.1.12|latest]" >&2; exit 2 ;;
    esac
done

# The older suite's sampling and elicitation scenarios need the upstream
# on a handshake session (the stateless revision has no server-to-client
# requests; the upstream asks with input_required results there).
case "$suite" in
0.1.12) protocol=handshake ;;
*) protocol=auto ;;
esac

cd "$root"
cargo build -q -p tollgate -p tollgate-conformance-upstream
target=${CARGO_TARGET_DIR:-$root/target}
tollgate=$target/debug/tollgate
upstream=$target/debug/tollgate-conformance-upstream

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/manifests" "$work/data"

connector() { # $1: the expose list (YAML lines); $2: prompts and resources (YAML)
    cat >"$work/manifests/conformance.yaml" <<YAML
kind: Connector
id: conformance
description: The conformance suite's upstream, over stdio.
owners:
  system: { name: platform-team, contact: platform@example.com }
  security: { name: secops, contact: secops@example.com }
mcp:
  stdio: { command: "$upstream", args: [--stdio] }
  protocol: $protocol
prefix: false
# What the upstream asks of the suite's client (sampling, elicitation) is
# relayed as calls of their own, granted by the agent's "*".
sampling: { risk: low }
elicitation: { risk: low }
expose:
$1
${2:-}
---
kind: Agent
id: conformance
description: The conformance suite, as an agent.
owners:
  business: { name: qa, contact: qa@example.com }
  system: { name: platform-team, contact: platform@example.com }
  security: { name: secops, contact: secops@example.com }
deployment: { approved_by: secops, approved_at: 2026-12-01 }
review_by: 2099-01-01
tools: ["*"]
YAML
}

# Every tool the upstream offers, as `tollgate connectors status` sees it.
connector "  - { name: test_simple_text, risk: low }"
status=$("$tollgate" --manifests "$work/manifests" connectors status conformance --json 2>/dev/null)
names=$(printf '%s' "$status" | node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"))[0];
             console.log([...r.tools.map(t=>t.upstream), ...r.hidden].join("\n"))')
expose=$(printf '%s\n' "$names" | sed 's/.*/  - { name: &, risk: low }/')
# Its prompts, resources and resource templates too (named r0, r1, ...
# and t0, t1, ... by position).
extras=$(printf '%s' "$status" | node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"))[0];
    const out=[];
    if (r.upstream_prompts.length) { out.push("prompts:"); for (const p of r.upstream_prompts) out.push(`  - { name: ${p}, risk: low }`); }
    if (r.upstream_resources.length) { out.push("resources:"); r.upstream_resources.forEach((u,i)=>out.push(`  - { name: r${i}, uri: ${JSON.stringify(u)}, risk: low }`)); }
    if (r.upstream_templates.length) { out.push("resource_templates:"); r.upstream_templates.forEach((u,i)=>out.push(`  - { name: t${i}, template: ${JSON.stringify(u)}, risk: low }`)); }
    console.log(out.join("\n"))')
connector "$expose" "$extras"
echo "through-tollgate: exposing $(printf '%s\n' "$names" | wc -l) upstream tools and its prompts and resources"

port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
gw_port=$(port)
TOLLGATE_DATA=$work/data "$tollgate" --manifests "$work/manifests" agents issue-key conformance >"$work/key" 2>/dev/null
"$tollgate" --manifests "$work/manifests" --data "$work/data" serve --listen "127.0.0.1:$gw_port" --no-demo \
    >"$work/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$gw_port/healthz" 2>/dev/null && break
    sleep 0.2
done
TOLLGATE_AGENT_KEY=$(cat "$work/key") "$upstream" --proxy-to "http://127.0.0.1:$gw_port" >"$work/proxy.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
    grep -q '^listening on ' "$work/proxy.out" 2>/dev/null && break
    sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$work/proxy.out")
set +e
"$here/run.sh" "$url" --suite "$suite" --baseline "$here/baseline-tollgate-$suite.txt" \
    --out "$root/target/conformance/tollgate-$suite"
rc=$?
set -e
# The gateway's log stays beside the suite's results.
cp "$work/gateway.log" "$root/target/conformance/tollgate-$suite/gateway.log" 2>/dev/null || true
if [ $rc -ne 0 ]; then
    echo "through-tollgate: tail of the gateway's log:"
    tail -n 20 "$work/gateway.log"
fi
exit $rc
