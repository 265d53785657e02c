#!/usr/bin/env bash
# The Python client (sdk/python): makes its own venv (sdk/python/.venv), installs the pinned dev
# tools and the package itself (a real wheel build, so py.typed and the package layout are what a
# user gets), then runs ruff, mypy --strict and pytest against the real target/debug/vevee.
# Every step runs; the exit status is pytest's, or the first lint or type failure's.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

# The tests start target/debug/vevee; after `cargo test` this is a no-op.
(cd "$root" && cargo build --quiet --bin vevee)
bin="${CARGO_TARGET_DIR:-$root/target}/debug/vevee"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
  echo "40-python: no $python on this machine" >&2
  exit 1
fi
# Debian splits venv (and the ensurepip it needs) into python3-venv: install it only when missing.
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "installing Debian's python3-venv"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null ||
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "python$version-venv" >/dev/null
fi

cd "$root/sdk/python"
venv=".venv"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps .

status=0
# Runs a check and keeps the first failure's status, so that every check still runs.
check() {
  local s=0
  "$@" || s=$?
  if [ "$status" -eq 0 ]; then status=$s; fi
}
echo "== ruff"
check "$venv/bin/ruff" check .
check "$venv/bin/ruff" format --check .
echo "== mypy --strict"
check "$venv/bin/mypy" --strict
echo "== pytest"
# The src/ layout keeps src/ off sys.path: the tests import the installed package.
pytest_status=0
VEVEE_BIN="$bin" "$venv/bin/python" -m pytest -p no:cacheprovider tests || pytest_status=$?
if [ "$pytest_status" -ne 0 ]; then
  exit "$pytest_status"
fi
exit "$status"
