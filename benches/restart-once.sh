#!/usr/bin/env bash
# Time from spawn to `/readyz` 200 of one start on an existing data directory (one kept by
# `cargo bench --bench soak -- restart --keep --work-dir D`), then kill -9, so it can run again on
# the same directory. Prints the time and the recovery's `ms` and `records` from the server's log.
#
#   benches/restart-once.sh VEVEE_BIN DIR [PERF_DATA]   # DIR holds config.toml; PERF_DATA records a profile
set -euo pipefail
BIN=$1 DIR=$2 PERF=${3:-}
PORT=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$DIR/config.toml")
LOG=$(mktemp)
start=$(date +%s.%N)
if [ -n "$PERF" ]; then
  perf record -F 999 --call-graph dwarf,16384 -o "$PERF" -- "$BIN" serve --config "$DIR/config.toml" >"$LOG" 2>&1 &
else
  "$BIN" serve --config "$DIR/config.toml" >"$LOG" 2>&1 &
fi
PID=$!
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.02; done
end=$(date +%s.%N)
echo "ready in $(echo "$end - $start" | bc) s; $(grep -o '"ms":[0-9]*' "$LOG" | tail -1) $(grep -o '"records":[0-9]*' "$LOG" | tail -1)"
# The server itself, or perf's child when profiling (perf then writes its data and exits).
if [ -n "$PERF" ]; then pkill -9 -P "$PID" || true; else kill -9 "$PID" || true; fi
wait || true
rm -f "$LOG"
