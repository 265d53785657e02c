#!/usr/bin/env bash
# The TypeScript SDK (sdk/typescript): installs its dev dependencies, builds it, and runs its tests
# against the real vevee binary with Node's own test runner.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

# The tests start target/debug/vevee; after `cargo test` this is a no-op.
(cd "$root" && cargo build --quiet)

cd "$root/sdk/typescript"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
npm run --silent build
VEVEE_BIN="$root/target/debug/vevee" npm test --silent
