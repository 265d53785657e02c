#!/usr/bin/env bash
# Installs Debian's redis-server if it is missing.
set -euo pipefail
if ! command -v redis-server >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq redis-server >&2
fi
redis-server --version >&2
