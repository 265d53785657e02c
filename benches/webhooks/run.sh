#!/usr/bin/env bash
# The HTTP load harness (tools/load, target vevee) twice: without a webhook endpoint, and with
# one subscribed to every event that points at a slow receiver (each answer after
# VEVEE_SLOW_RECEIVER_MS, default 500 ms), so the deliverer is busy during the measured cells.
# Fewer users than the full run (--users 5000): their grants are the events, and 5,000 of them
# stay under the outbox bound of 10,000 pending deliveries per endpoint. Tables go to
# target/webhooks-bench/{without,with}.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/target/webhooks-bench"
mkdir -p "$out"
delay_ms="${VEVEE_SLOW_RECEIVER_MS:-500}"
args=(suite --targets vevee --users 5000 --mem-users 0 --secs "${VEVEE_BENCH_SECS:-5}")

cd "$root"
cargo build --release --quiet --bin vevee

port_file="$(mktemp)"
python3 - "$delay_ms" "$port_file" <<'PY' &
import http.server, sys, time
delay = int(sys.argv[1]) / 1000
class Slow(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        time.sleep(delay)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
open(sys.argv[2], "w").write(str(server.server_address[1]))
server.serve_forever()
PY
receiver=$!
trap 'kill $receiver 2>/dev/null || true; rm -f "$port_file"' EXIT
while [ ! -s "$port_file" ]; do sleep 0.1; done
url="http://127.0.0.1:$(cat "$port_file")/hook"

echo "== without a webhook endpoint"
cargo run --release --quiet -p load -- "${args[@]}" --out-md "$out/without.md"
echo "== with an endpoint subscribed to * at $url (${delay_ms} ms per answer)"
VEVEE_BENCH_WEBHOOK_URL="$url" cargo run --release --quiet -p load -- "${args[@]}" --out-md "$out/with.md"
