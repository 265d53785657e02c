#!/usr/bin/env bash
# Fuzzes the real server against its own OpenAPI document with schemathesis: every operation, all
# checks (server errors, status codes, content types, response schemas, negative and positive
# data, auth), stateful through the document's links (create a pack → grant it, reserve → commit).
# Runs once with a secret test key and once with a publishable key. The exit status is
# schemathesis's: any failure fails the suite.
#
# VEVEE_FUZZ_EXAMPLES (default 25) bounds the cases per operation and phase; VEVEE_FUZZ_SEED pins
# the run (default: a fixed seed, so CI is repeatable; set it to "random" for a new one).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="4.32.5"
venv="$root/target/schemathesis-venv"
examples="${VEVEE_FUZZ_EXAMPLES:-25}"
seed="${VEVEE_FUZZ_SEED:-20261122}"

# The binary under test; after `cargo test` this is a no-op.
(cd "$root" && cargo build --quiet)

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
sk_test="sk_test_fuzz_4c1d9e"
pk_test="pk_test_fuzz_7a2b3f"
cat > "$work/config.toml" <<EOF
[server]
listen = "127.0.0.1:$port"

[storage]
data_dir = "$work/data"
snapshot_dir = "$work/snapshots"

[[apps]]
id = "pixelforge"
secret_key_test = "$sk_test"
publishable_key_test = "$pk_test"
stripe_webhook_secret_test = "whsec_fuzz_test_5e8d"
dashboard_password = "fuzz-dashboard-password"
EOF

"$root/target/debug/vevee" serve --config "$work/config.toml" > "$work/server.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  if curl -fsS "$base/readyz" > /dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS "$base/readyz" > /dev/null || { echo "vevee did not start"; cat "$work/server.log"; exit 1; }

seed_args=()
if [ "$seed" != "random" ]; then seed_args=(--seed "$seed"); fi

run() {
  local key="$1"
  echo "== schemathesis with ${key%%_fuzz*} key"
  # From the temp dir: schemathesis keeps its example database in ./.schemathesis.
  (cd "$work" && "$venv/bin/schemathesis" \
    --config-file "$root/scripts/schemathesis.toml" \
    run "$base/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks all \
    --max-examples "$examples" \
    --workers 1 \
    --no-color \
    "${seed_args[@]}")
}

status=0
run "$sk_test" || status=$?
run "$pk_test" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 40 lines)"
  tail -n 40 "$work/server.log"
fi
exit "$status"
