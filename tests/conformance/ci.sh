#!/usr/bin/env bash
# Both suite versions, directly against the conformance upstream (so a
# failure is placed on the right side) and through Tollgate. Any run that
# strays from its baseline fails the whole.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
cargo build -q -p tollgate -p tollgate-conformance-upstream
upstream=${CARGO_TARGET_DIR:-$root/target}/debug/tollgate-conformance-upstream
out=$(mktemp)
"$upstream" --listen 127.0.0.1:0 >"$out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 50); do
    grep -q '^listening on ' "$out" && break
    sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$out")
rc=0
for suite in 0.1.12 latest; do
    echo "-- directly, suite $suite"
    "$here/run.sh" "$url" --suite "$suite" || rc=1
    echo "-- through Tollgate, suite $suite"
    "$here/through-tollgate.sh" --suite "$suite" || rc=1
done
exit $rc
