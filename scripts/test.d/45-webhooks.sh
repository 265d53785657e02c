#!/usr/bin/env bash
# Outgoing webhooks checked with the Standard Webhooks spec's own Python library (PyPI
# `standardwebhooks`), not with vevee's code: tests/webhooks/verify.py starts target/debug/vevee
# with a config of its own, receives its deliveries and verifies every one with
# `standardwebhooks.Webhook(secret).verify(body, headers)`, including deliveries made during a
# secret rotation (two signatures, each secret verifies alone). The venv is made here.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="1.1.0"

# The binary under test; after `cargo test` this is a no-op.
(cd "$root" && cargo build --quiet --bin vevee)
bin="${CARGO_TARGET_DIR:-$root/target}/debug/vevee"

python="${PYTHON:-python3}"
venv="${CARGO_TARGET_DIR:-$root/target}/webhooks-venv"
if ! "$venv/bin/python" -c "import standardwebhooks, importlib.metadata as m; assert m.version('standardwebhooks') == '$version'" 2>/dev/null; then
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "standardwebhooks==$version"
fi
VEVEE_BIN="$bin" "$venv/bin/python" "$root/tests/webhooks/verify.py"
