#!/usr/bin/env bash
# Runs the whole comparison in one go: installs PostgreSQL and Redis from Debian's packages if
# missing, starts them on 127.0.0.1 with temp data directories, runs the load harness (tools/load) against
# vevee, both PostgreSQL variants, both Redis variants and the do-nothing endpoint, then the
# in-process actors bench (the journal-off ceiling), stops everything and writes the results.
#
#   benches/baselines/run-all.sh [RESULTS_DIR] [-- extra arguments for `load suite`]
#
# Environment: SECS (5) seconds per cell, MEM_USERS (200000), USERS (100000), PERF=1 records a
# perf profile of vevee during its closed-loop uniform cell, ACTORS=0 skips the actors bench.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
OUT=${1:-$REPO/target/bench-results}
shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SECS=${SECS:-5}
MEM_USERS=${MEM_USERS:-200000}
USERS=${USERS:-100000}

PGBIN=$(benches/baselines/install-postgres.sh)
benches/baselines/install-redis.sh

echo "== building vevee and the load harness" >&2
cargo build --release --bin vevee
cargo build --release -p load
LOAD=target/release/load
if [ "${ACTORS:-1}" = 1 ]; then cargo bench --bench actors --no-run; fi

TMP=$(mktemp -d /tmp/vevee-baselines.XXXXXX)
chmod 755 "$TMP"
PGDATA=$TMP/pg
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RA_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cleanup() {
  set +e
  if [ -f "$PGDATA/postmaster.pid" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  for f in "$TMP"/redis-*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  rm -rf "$TMP"
}
trap cleanup EXIT

echo "== starting PostgreSQL on 127.0.0.1:$PGPORT (synchronous_commit = on)" >&2
mkdir -p "$PGDATA"
chown postgres: "$PGDATA"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -w -t 60 start -o \
  "-c listen_addresses=127.0.0.1 -c port=$PGPORT -c unix_socket_directories=$PGDATA \
   -c synchronous_commit=on -c fsync=on -c full_page_writes=on -c max_connections=400 \
   -c shared_buffers=512MB -c max_wal_size=4GB -c checkpoint_timeout=30min" >/dev/null

echo "== starting Redis on 127.0.0.1:$RA_PORT (appendfsync always) and :$RE_PORT (everysec)" >&2
for spec in "always:$RA_PORT" "everysec:$RE_PORT"; do
  mode=${spec%%:*}; port=${spec##*:}
  mkdir -p "$TMP/redis-$mode"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$TMP/redis-$mode" --daemonize yes \
    --pidfile "$TMP/redis-$mode.pid" --logfile "$TMP/redis-$mode/log" --save "" \
    --appendonly yes --appendfsync "$mode" --protected-mode yes
done
for i in $(seq 50); do
  [ -f "$TMP/redis-always.pid" ] && [ -f "$TMP/redis-everysec.pid" ] && break
  sleep 0.1
done

echo "== load suite (results in $OUT)" >&2
PERF_ARGS=()
if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then PERF_ARGS=(--perf-out "$OUT/vevee.perf.data"); fi
timeout 1800 "$LOAD" suite \
  --vevee-bin target/release/vevee \
  --pg "host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres" \
  --pg-pid-file "$PGDATA/postmaster.pid" \
  --redis-always "127.0.0.1:$RA_PORT" --redis-always-pid-file "$TMP/redis-always.pid" \
  --redis-everysec "127.0.0.1:$RE_PORT" --redis-everysec-pid-file "$TMP/redis-everysec.pid" \
  --work-dir "$TMP" --secs "$SECS" --users "$USERS" --mem-users "$MEM_USERS" \
  --out-json "$OUT/rows.jsonl" --out-md "$OUT/table.md" "${PERF_ARGS[@]}" "$@" \
  | tee "$OUT/load.txt"

if [ "${ACTORS:-1}" = 1 ]; then
  echo "== in-process ceiling: benches/actors.rs (durable, journal off, hot user)" >&2
  VEVEE_BENCH_SECS=$SECS VEVEE_BENCH_ROWS=durable,off,hot,hot-off timeout 900 \
    cargo bench --bench actors 2>&1 | tee "$OUT/actors.txt"
fi
echo "== done: $OUT/table.md, $OUT/load.txt, $OUT/actors.txt" >&2
