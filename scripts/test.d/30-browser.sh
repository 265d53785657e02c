#!/usr/bin/env bash
# The dashboard in a real browser: installs Debian's Chromium if it is missing and playwright-core
# from tests/browser/package-lock.json, starts the real `vevee serve` on a port the system picks with a
# temporary config and data directory, and runs tests/browser with Node's test runner.
# Screenshots of every page go to tests/browser/artifacts/.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

cargo build --quiet --bin vevee
bin="${CARGO_TARGET_DIR:-$root/target}/debug/vevee"

work="$(mktemp -d)"
password="browser-$(node -e "console.log(require('crypto').randomBytes(8).toString('hex'))")"
cat >"$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:0"
address_file = "$work/address"
[storage]
data_dir = "$work/data"
snapshot_dir = "$work/snapshots"
[[apps]]
id = "pixelforge"
secret_key_test = "sk_test_browser"
secret_key_live = "sk_live_browser"
dashboard_password = "$password"
seed_demo_catalog = false
TOML

"$bin" serve --config "$work/config.toml" >"$work/server.log" 2>&1 &
server=$!
stop() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT

for _ in $(seq 1 100); do
  if [ -f "$work/address" ] && curl -fsS "http://$(cat "$work/address")/readyz" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/server.log"; exit 1; fi
  sleep 0.1
done

artifacts="$root/tests/browser/artifacts"
rm -rf "$artifacts"
mkdir -p "$artifacts"
status=0
(
  cd tests/browser
  VEVEE_URL="http://$(cat "$work/address")" VEVEE_APP=pixelforge VEVEE_PASSWORD="$password" \
    VEVEE_SECRET_KEY_TEST=sk_test_browser VEVEE_ARTIFACTS="$artifacts" \
    node --test --test-concurrency=1
) || status=$?
if [ "$status" -ne 0 ]; then
  echo "== server log"
  tail -n 50 "$work/server.log"
fi
echo "screenshots: $artifacts"
exit "$status"
