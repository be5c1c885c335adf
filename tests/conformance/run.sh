#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios
# (npm package @modelcontextprotocol/conformance) against URL and compares
# the outcome with a baseline of known failures.
#
#   tests/conformance/run.sh URL [--suite 0.1.12|latest] [--out DIR]
#
#   0.1.12  the suite pinned for Node 20 (the machines' node), the stateful
#           2025 protocol (initialize handshake, sessions).
#   latest  the newest published suite, pinned below: it needs Node >= 22,
#           which npx takes from the npm registry's `node` package, and runs
#           the scenarios of spec version 2026-07-28 (stateless).
#
# Baselines: tests/conformance/baseline-<suite>.txt, one scenario a line,
# `name  # reason`. Exit 0 only when every scenario outside the baseline
# passes and every baseline entry still fails; 1 otherwise (unexpected
# failures and stale entries are listed); 2 when the suite could not run.
set -euo pipefail

# The "latest" suite. 0.1.16 is npm's `latest` tag but knows no spec
# version past 2025-11-25; 0.2.0-alpha.12 is the newest release and the
# first line that runs `--spec-version 2026-07-28`.
LATEST_VERSION=0.2.0-alpha.12
LATEST_SPEC=2026-07-28
NODE_FOR_LATEST=node@22
# A bound on the whole run (seconds): a server that stops answering must not
# hang CI. Both suites take a few seconds against a healthy server.
TIMEOUT=${CONFORMANCE_TIMEOUT:-600}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() {
    echo "usage: $0 URL [--suite 0.1.12|latest] [--out DIR] [--baseline FILE]" >&2
    exit 2
}

url=
suite=0.1.12
out=
baseline=
while [ $# -gt 0 ]; do
    case "$1" in
    --suite) suite=${2:-}; shift 2 || usage ;;
    --suite=*) suite=${1#--suite=}; shift ;;
    --out) out=${2:-}; shift 2 || usage ;;
    --out=*) out=${1#--out=}; shift ;;
    --baseline) baseline=${2:-}; shift 2 || usage ;;
    -h | --help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) [ -z "$url" ] || usage; url=$1; shift ;;
    esac
done
[ -n "$url" ] || usage

case "$suite" in
0.1.12)
    cmd=(npx -y @modelcontextprotocol/conformance@0.1.12 server --url "$url" --suite all)
    ;;
latest)
    cmd=(npx -y -p "$NODE_FOR_LATEST" -p "@modelcontextprotocol/conformance@$LATEST_VERSION"
        conformance server --url "$url" --suite all --spec-version "$LATEST_SPEC")
    ;;
*) echo "unknown suite: $suite (0.1.12 or latest)" >&2; exit 2 ;;
esac

baseline=${baseline:-$here/baseline-$suite.txt}
[ -f "$baseline" ] || { echo "missing baseline $baseline" >&2; exit 2; }
out=${out:-$root/target/conformance/$suite}
rm -rf "$out"
mkdir -p "$out/checks"

echo "conformance: suite $suite ($([ "$suite" = latest ] && echo "$LATEST_VERSION, spec $LATEST_SPEC" || echo 0.1.12)) against $url"
echo "conformance: results in $out"
start=$(date +%s)
set +e
timeout "$TIMEOUT" "${cmd[@]}" -o "$out/checks" >"$out/suite.log" 2>&1
suite_rc=$?
set -e
elapsed=$(($(date +%s) - start))

# The scenarios the suite ran, in order.
mapfile -t scenarios < <(sed -n 's/^=== Running scenario: \(.*\) ===$/\1/p' "$out/suite.log")
if [ ${#scenarios[@]} -eq 0 ]; then
    echo "conformance: the suite ran no scenario (exit $suite_rc); tail of $out/suite.log:" >&2
    tail -n 30 "$out/suite.log" >&2
    exit 2
fi

# A scenario passes when its checks.json exists and has no FAILURE check
# (WARNING and INFO do not fail it, as in the suite's own verdict).
results="$out/results.txt"
: >"$results"
for s in "${scenarios[@]}"; do
    # <out>/checks/server-<scenario>-<ISO timestamp>/checks.json
    f=$(ls -d "$out/checks/server-$s-"[0-9][0-9][0-9][0-9]-*/checks.json 2>/dev/null | head -n 1 || true)
    if [ -z "$f" ]; then
        verdict=FAIL
        why="no checks.json (the scenario crashed or timed out)"
    else
        failed=$(grep -c '"status": "FAILURE"' "$f" || true)
        if [ "$failed" -eq 0 ]; then
            verdict=PASS
            why=
        else
            verdict=FAIL
            why=$(node -e '
                const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
                console.log(c.filter(x => x.status === "FAILURE")
                    .map(x => x.id + (x.errorMessage ? ": " + x.errorMessage : "")).join("; ").replace(/\s+/g, " ").slice(0, 300));
            ' "$f" 2>/dev/null || echo "$failed failing checks")
        fi
    fi
    printf '%s %s%s\n' "$verdict" "$s" "${why:+  # $why}" >>"$results"
done

# The baseline: `name  # reason`; blank lines and comment lines ignored.
declare -A expected=()
while IFS= read -r line; do
    name=${line%%#*}
    name=$(echo "$name" | tr -d '[:space:]')
    [ -n "$name" ] && expected[$name]=1
done <"$baseline"

passed=0
failed=0
unexpected=()
stale=()
declare -A ran=()
while read -r verdict name rest; do
    ran[$name]=1
    if [ "$verdict" = PASS ]; then
        passed=$((passed + 1))
        [ -z "${expected[$name]:-}" ] || stale+=("$name")
    else
        failed=$((failed + 1))
        [ -n "${expected[$name]:-}" ] || unexpected+=("$name ${rest}")
    fi
done <"$results"
unknown=()
for name in "${!expected[@]}"; do
    [ -n "${ran[$name]:-}" ] || unknown+=("$name")
done

cat "$results"
echo "conformance: suite $suite: $passed passed, $failed failed of ${#scenarios[@]} scenarios in ${elapsed}s (suite exit $suite_rc)"
rc=0
if [ "$suite_rc" -eq 124 ]; then
    echo "conformance: TIMED OUT after ${TIMEOUT}s (CONFORMANCE_TIMEOUT); scenarios not reached are missing above"
    rc=1
fi
if [ ${#unexpected[@]} -gt 0 ]; then
    echo "conformance: UNEXPECTED FAILURES (not in $(basename "$baseline")):"
    printf '  %s\n' "${unexpected[@]}"
    rc=1
fi
if [ ${#stale[@]} -gt 0 ]; then
    echo "conformance: STALE BASELINE ENTRIES (these pass now; remove them from $(basename "$baseline")):"
    printf '  %s\n' "${stale[@]}"
    rc=1
fi
if [ ${#unknown[@]} -gt 0 ]; then
    echo "conformance: BASELINE ENTRIES FOR SCENARIOS THE SUITE DID NOT RUN:"
    printf '  %s\n' "${unknown[@]}"
    rc=1
fi
[ $rc -ne 0 ] || echo "conformance: OK (every failure is in the baseline)"
exit $rc
