#!/usr/bin/env bash
# Issue 17: durable consumes in batches of N over HTTP against Redis pipelining the same Lua consume
# N deep (`redis-benchmark -P N`, `appendfsync always`). Installs Redis from Debian's packages if
# missing, starts it on 127.0.0.1 with a temp directory, runs `load batch`, stops it.
#
#   benches/baselines/run-batch.sh [RESULTS_DIR] [-- extra arguments for `load batch`]
#
# Environment: SECS (5) seconds per cell, DEPTHS (1,10,100,1000), CONNS (64), USERS (1000),
# BUILD=0 skips the cargo builds (measure binaries already built), VEVEE_BIN another vevee build to
# measure (default target/release/vevee), BENCH_TMP (/tmp) where the data go (/dev/shm takes the
# disk out).
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
LOAD=target/release/load

. benches/baselines/start-redis-always.sh vevee-batch

timeout 1800 "$LOAD" batch --vevee-bin "${VEVEE_BIN:-target/release/vevee}" --work-dir "$TMP" \
  --secs "${SECS:-5}" --depths "${DEPTHS:-1,10,100,1000}" --conns "${CONNS:-64}" \
  --users "${USERS:-1000}" --redis-always "127.0.0.1:$PORT" --redis-always-pid-file "$TMP/redis.pid" \
  --out-md "$OUT/batch.md" "$@" | tee "$OUT/batch.txt"
echo "== done: $OUT/batch.md" >&2
