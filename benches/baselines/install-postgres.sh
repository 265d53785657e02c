#!/usr/bin/env bash
# Installs Debian's PostgreSQL server if it is missing. Prints the directory of its binaries.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
# The Debian package may have started its own cluster; leave it alone (we use our own port).
dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"
