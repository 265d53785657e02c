"""vevee's outgoing webhooks, verified with the Standard Webhooks reference library.

Starts the vevee binary ($VEVEE_BIN) with a config of its own, runs a receiver on 127.0.0.1,
subscribes it to every event type, makes changes that fire events, and verifies every delivery
with `standardwebhooks.Webhook(secret).verify(body, headers)`. During a secret rotation each
delivery must carry two signatures and verify with the old secret alone and the new one alone.
Exits 1 on the first failure, with what was received.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

KEY = "sk_test_webhooks_3a9c"
WAIT_S = 60.0

received: list[dict] = []
lock = threading.Lock()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with lock:
            received.append({"headers": headers, "body": body})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def fail(message: str) -> None:
    print(f"45-webhooks: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def call(base: str, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as e:
        fail(f"{method} {path} answered {e.code}: {e.read().decode()}")
        raise


def wait_for(event_id: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with lock:
            for d in received:
                if d["headers"].get("webhook-id") == event_id:
                    return d
        time.sleep(0.05)
    fail(f"no delivery of {event_id} within {WAIT_S} s; received {len(received)}")
    raise AssertionError


def verify(secret: str, delivery: dict) -> dict:
    try:
        return Webhook(secret).verify(delivery["body"], delivery["headers"])
    except WebhookVerificationError as e:
        fail(f"standardwebhooks refused a delivery: {e}: {delivery}")
        raise


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    work = tempfile.mkdtemp(prefix="vevee-webhooks-")
    address_file = os.path.join(work, "address")
    config = os.path.join(work, "config.toml")
    with open(config, "w") as f:
        f.write(
            f"""[server]
listen = "127.0.0.1:0"
address_file = "{address_file}"

[storage]
data_dir = "{work}/data"
snapshot_dir = "{work}/snapshots"

[[apps]]
id = "pixelforge"
secret_key_test = "{KEY}"
seed_demo_catalog = true
webhook_retry_seconds = [1, 1, 1]
"""
        )
    log = open(os.path.join(work, "server.log"), "w")
    server_process = subprocess.Popen(
        [os.environ["VEVEE_BIN"], "serve", "--config", config], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(address_file):
            if time.monotonic() > deadline or server_process.poll() is not None:
                fail("vevee did not start; see " + log.name)
            time.sleep(0.05)
        with open(address_file) as f:
            base = "http://" + f.read().strip()
        run(base, hook_url)
    finally:
        server_process.terminate()
        server_process.wait(timeout=30)
        server.shutdown()
    print(f"45-webhooks: ok ({len(received)} deliveries verified with standardwebhooks)")


def newest_event(base: str, kind: str) -> dict:
    page = call(base, "GET", f"/v1/events?type={kind}&limit=1")
    if not page["data"]:
        fail(f"no {kind} event in GET /v1/events")
    return page["data"][0]


def run(base: str, hook_url: str) -> None:
    endpoint = call(base, "POST", "/v1/webhook-endpoints", {"url": hook_url, "events": ["*"]})
    secret = endpoint["secret"]
    call(
        base,
        "POST",
        "/v1/credit-packs",
        {
            "id": "cpk_low",
            "name": "Low",
            "price": {"amount": 100, "currency": "usd"},
            "expiresInDays": None,
            "items": [
                {
                    "id": "g",
                    "match": "image.dall-e-3",
                    "amount": 3,
                    "unit": "count",
                    "lowBalanceThreshold": 1,
                }
            ],
        },
    )
    call(
        base,
        "POST",
        "/v1/credits/grants",
        {"userId": "ana", "packId": "cpk_low", "externalRef": "cs_1", "source": "purchase"},
    )
    for _ in range(3):
        call(base, "POST", "/v1/consume", {"userId": "ana", "model": "image.dall-e-3", "amount": 1})
    call(base, "PUT", "/v1/users/ana/subscription", {"planId": "free"})

    for kind in ["credits.granted", "credits.low", "credits.depleted", "subscription.updated"]:
        event = newest_event(base, kind)
        delivery = wait_for(event["id"])
        payload = verify(secret, delivery)
        if payload != event:
            fail(f"the verified payload {payload} is not the event {event}")
        if payload["type"] != kind or payload["mode"] != "test":
            fail(f"unexpected event {payload}")
        print(f"  {kind}: {event['id']} verified")

    # A rotation: both secrets sign, and each one alone verifies.
    rotated = call(base, "POST", f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", {})
    new_secret = rotated["secret"]
    if new_secret == secret:
        fail("rotate-secret kept the secret")
    call(base, "DELETE", "/v1/users/ana/subscription")
    event = newest_event(base, "subscription.canceled")
    delivery = wait_for(event["id"])
    signatures = delivery["headers"]["webhook-signature"].split(" ")
    if len(signatures) != 2:
        fail(f"expected two signatures during a rotation, got {signatures}")
    verify(secret, delivery)
    verify(new_secret, delivery)
    try:
        Webhook("whsec_" + "A" * 43 + "=").verify(delivery["body"], delivery["headers"])
        fail("a delivery verified with an unrelated secret")
    except WebhookVerificationError:
        pass
    print(f"  subscription.canceled during a rotation: {event['id']} verified with both secrets")


if __name__ == "__main__":
    main()
