#!/usr/bin/env bash
# Issue 12: durable `POST /v1/consume` over HTTP side by side with Redis running the same Lua
# consume (`appendfsync always`) and the do-nothing axum endpoint, in one run: the ratios are what
# to read on a shared machine. Installs Redis from Debian's packages if missing, starts it on
# 127.0.0.1 with a temp directory, runs `load suite --workloads consume`, stops it.
#
#   benches/baselines/run-consume.sh [RESULTS_DIR] [-- extra arguments for `load suite`]
#
# Environment: SECS (5) seconds per cell, USERS (1000), CONNS (64), TARGETS (vevee,redis-always,noop), RATE (0: no open-loop cell;
# 20000 adds the open loop at that rate), PERF=1 records a perf profile of vevee's closed-loop cell
# (vevee.perf.data), BUILD=0 skips the cargo builds (measure binaries already built), VEVEE_BIN
# another vevee build to measure (default target/release/vevee), BENCH_TMP (/tmp) where Redis's and
# vevee's data go (/dev/shm takes the disk out: what is left is CPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
OUT=${1:-$REPO/target/bench-results}
shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

benches/baselines/install-redis.sh

if [ "${BUILD:-1}" = 1 ]; then
  echo "== building vevee and the load harness" >&2
  cargo build --release --bin vevee
  cargo build --release -p load
fi

. benches/baselines/start-redis-always.sh vevee-consume

PERF_ARGS=()
if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then PERF_ARGS=(--perf-out "$OUT/vevee.perf.data"); fi
timeout 1800 target/release/load suite --vevee-bin "${VEVEE_BIN:-target/release/vevee}" --work-dir "$TMP" \
  --targets "${TARGETS:-vevee,redis-always,noop}" --workloads consume --users "${USERS:-1000}" \
  --conns "${CONNS:-64}" --wide-conns 0 --rate "${RATE:-0}" --low-rate 0 --mem-users 0 \
  --secs "${SECS:-5}" --redis-always "127.0.0.1:$PORT" --redis-always-pid-file "$TMP/redis.pid" \
  --out-md "$OUT/consume.md" --out-json "$OUT/consume.jsonl" "${PERF_ARGS[@]}" "$@" \
  | tee "$OUT/consume.txt"
echo "== done: $OUT/consume.md" >&2
