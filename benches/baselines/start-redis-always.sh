# Sourced by run-consume.sh and run-batch.sh: starts Redis with `appendonly yes` and
# `appendfsync always` on a free 127.0.0.1 port with a fresh temp directory, and stops it and
# removes the directory on exit. Sets TMP (the directory, under BENCH_TMP or /tmp) and PORT. $1:
# the directory's prefix.
TMP=$(mktemp -d "${BENCH_TMP:-/tmp}/$1.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  set +e
  [ -f "$TMP/redis.pid" ] && kill "$(cat "$TMP/redis.pid")" 2>/dev/null
  sleep 1
  rm -rf "$TMP"
}
trap cleanup EXIT

echo "== starting Redis on 127.0.0.1:$PORT (appendfsync always)" >&2
redis-server --bind 127.0.0.1 --port "$PORT" --dir "$TMP" --daemonize yes \
  --pidfile "$TMP/redis.pid" --logfile "$TMP/redis.log" --save "" \
  --appendonly yes --appendfsync always --protected-mode yes
for _ in $(seq 50); do [ -f "$TMP/redis.pid" ] && break; sleep 0.1; done
