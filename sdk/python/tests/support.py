"""Starts the real vevee binary (built by `cargo build`) on a free port with a fresh data directory,
and a TCP proxy that can drop an answer on the way back."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SECRET_KEY = "sk_test_py_suite"
PUBLISHABLE_KEY = "pk_test_py_suite"
LIVE_KEY = "sk_live_py_suite"
GEMINI = "image.gemini-3-1-flash-image-preview"
DALLE = "image.dall-e-3"

_REPO = Path(__file__).resolve().parents[3]
READY_TIMEOUT_S = 20.0


def binary_path() -> Path:
    """`target/debug/vevee` of this repository, or `$VEVEE_BIN`."""
    return Path(os.environ.get("VEVEE_BIN") or _REPO / "target" / "debug" / "vevee")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningServer:
    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    directory: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server(server_config: Sequence[str] = ()) -> RunningServer:
    """The real server with the demo catalog (plans free and pro, packs cpk_gemini_topup and
    cpk_creator_bundle), on a free port; `server_config` adds lines to its `[server]` table."""
    binary = binary_path()
    if not binary.exists():
        raise RuntimeError(f"no vevee binary at {binary}: run `cargo build` at the repository root")
    directory = tempfile.mkdtemp(prefix="vevee-py-")
    for _ in range(4):
        port = free_port()
        config = Path(directory, "config.toml")
        config.write_text(
            "\n".join(
                [
                    "[server]",
                    f'listen = "127.0.0.1:{port}"',
                    *server_config,
                    "[storage]",
                    f'data_dir = "{directory}/data"',
                    f'snapshot_dir = "{directory}/snapshots"',
                    "[[apps]]",
                    'id = "pixelforge"',
                    f'secret_key_test = "{SECRET_KEY}"',
                    f'publishable_key_test = "{PUBLISHABLE_KEY}"',
                    f'secret_key_live = "{LIVE_KEY}"',
                    'stripe_webhook_secret_test = "whsec_py_suite"',
                    # The walkthrough's plans and packs; off by default since issue 13.
                    "seed_demo_catalog = true",
                    "",
                ]
            )
        )
        log_path = Path(directory, "server.log")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(binary), "serve", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        server = RunningServer(f"http://127.0.0.1:{port}", port, process, directory, log_path)
        if _wait_ready(server):
            return server
        # Another process may have taken the port between the probe and the bind: try another.
        output = server.output()
        if process.poll() is None:
            process.kill()
        process.wait()
    shutil.rmtree(directory, ignore_errors=True)
    raise RuntimeError(f"vevee did not become ready:\n{output}")


def _wait_ready(server: RunningServer) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.05)
    return False


_REQUEST_LINE = re.compile(rb"^(GET|POST|PUT|DELETE) (\S+) HTTP/1\.1\r\n")
_KEY = re.compile(rb"\r\nidempotency-key: *([^\r\n]*)", re.IGNORECASE)


@dataclass
class SeenRequest:
    method: str
    path: str
    key: str | None


@dataclass
class DroppingProxy:
    """Forwards to the server, but for the next `count` POSTs to a path lets the server answer
    (so the work is done) and cuts the client's connection instead of passing the answer on."""

    upstream_port: int
    base_url: str = ""
    requests: list[SeenRequest] = field(default_factory=list)
    dropped: int = 0
    _rules: list[list[object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None
    _closed: bool = False

    def drop_next(self, path: str, count: int = 1) -> None:
        with self._lock:
            self._rules.append([path, count])

    def start(self) -> DroppingProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener = listener
        self.base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"cutting": False}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(client, upstream, state), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, state: dict[str, bool]) -> None:
        while True:
            try:
                chunk = client.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                _shut(upstream)
                return
            line = _REQUEST_LINE.match(chunk)
            if line:
                method, path = line.group(1).decode(), line.group(2).decode()
                key = _KEY.search(chunk)
                with self._lock:
                    self.requests.append(
                        SeenRequest(method, path, key.group(1).decode() if key else None)
                    )
                    for rule in self._rules:
                        if method == "POST" and rule[0] == path and int(str(rule[1])) > 0:
                            rule[1] = int(str(rule[1])) - 1
                            state["cutting"] = True
                            break
            try:
                upstream.sendall(chunk)
            except OSError:
                return

    def _down(self, client: socket.socket, upstream: socket.socket, state: dict[str, bool]) -> None:
        while True:
            try:
                chunk = upstream.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                _shut(client)
                return
            if state["cutting"]:
                # The server has answered, so it has done the work; the client never hears of it.
                with self._lock:
                    self.dropped += 1
                _close(client)
                _close(upstream)
                return
            try:
                client.sendall(chunk)
            except OSError:
                return


def _shut(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_WR)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
