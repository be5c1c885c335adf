#!/usr/bin/env bash
# Builds the fuzz targets with AFL++ instrumentation and runs each for a
# bounded time; exits non-zero if any target crashed (or a seed did).
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Default: 50 s for each of jsonrpc manifest constraint jwt task_token.
# Installs cargo-afl from crates.io when it is missing (its install builds
# AFL++ from the sources the crate ships: needs only cc and make).
# Findings stay in fuzz/out/<target>/default/crashes/; see FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET="${1:-50}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(jsonrpc manifest constraint jwt task_token)
fi
AFL_VERSION=0.18.2

export CARGO_TARGET_DIR="$PWD/target"
if ! cargo afl --version >/dev/null 2>&1; then
  echo "-- installing cargo-afl $AFL_VERSION (builds AFL++)"
  cargo install cargo-afl --locked --version "$AFL_VERSION"
fi

echo "-- building the targets with AFL++ instrumentation"
# opt-level 1: the instrumented build of ~350 crates takes a third of the
# time of cargo-afl's default 3, for somewhat fewer executions per second.
AFL_OPT_LEVEL="${AFL_OPT_LEVEL:-1}" cargo afl build --release --locked

# The machine's CPU-frequency governor and core-dump handler are not ours
# to change; AFL's checks for them only matter for long campaigns.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_NO_AFFINITY=1 AFL_BENCH_UNTIL_CRASH=1
# The harnesses' scratch directories (SQLite files, JWKS) go under out/.
mkdir -p out/tmp
export TMPDIR="$PWD/out/tmp"

field() { sed -n "s/^$1 *: *//p" "$2"; }

failed=()
for t in "${TARGETS[@]}"; do
  out="out/$t"
  rm -rf "$out"
  echo "-- fuzzing $t for ${SECONDS_PER_TARGET}s"
  dict=()
  [ -f "dict/$t.dict" ] && dict=(-x "dict/$t.dict")
  # -t: per-input limit in ms; the harnesses panic first on a request
  # that hangs (10 s), so AFL's own hang detection is the backstop.
  # Most targets have more edges than AFL's default map (65536): ask the
  # target. (Setting it for a smaller map makes every seed "crash".)
  map_size=$(AFL_DUMP_MAP_SIZE=1 "target/release/$t" || true)
  map_env=()
  if [ "${map_size:-0}" -gt 65536 ]; then
    map_env=(AFL_MAP_SIZE=$(((map_size + 63) / 64 * 64)))
  fi
  if ! env "${map_env[@]}" cargo afl fuzz -V "$SECONDS_PER_TARGET" -t 30000 -m none \
      -i "corpus/$t" -o "$out" "${dict[@]}" "target/release/$t" \
      >"$out.log" 2>&1; then
    echo "!! afl-fuzz failed for $t (a seed crashes or hangs?); last lines:"
    tail -n 30 "$out.log" | sed 's/\x1b\[[0-9;]*m//g'
    failed+=("$t")
    continue
  fi
  s="$out/default/fuzzer_stats"
  echo "   $t: execs $(field execs_done "$s"), $(field execs_per_sec "$s")/s," \
    "edges $(field edges_found "$s")/$(field total_edges "$s") ($(field bitmap_cvg "$s"))," \
    "corpus $(field corpus_count "$s"), crashes $(field saved_crashes "$s")," \
    "hangs $(field saved_hangs "$s"), run $(field run_time "$s")s"
  crashes=$(find "$out/default/crashes" -type f -name 'id:*' 2>/dev/null | sort)
  if [ -n "$crashes" ]; then
    failed+=("$t")
    for c in $crashes; do
      echo "!! $t crashed on $c; replay: fuzz/target/release/$t < fuzz/$c"
      ("target/release/$t" <"$c" 2>&1 || true) | grep -A 3 'panicked' | head -n 4
    done
  fi
done
rm -rf out/tmp

if [ ${#failed[@]} -gt 0 ]; then
  echo "!! fuzzing found problems in: ${failed[*]}"
  exit 1
fi
echo "-- fuzzing: no crash in ${TARGETS[*]}"
