"""A real page in headless Chromium talks to the server over WebSocket.

The page comes from a tiny ``http.server`` on 127.0.0.1; the WebSocket server is
the test application with ``--origin`` set to the page's origin (so the
browser's ``Origin`` header is checked too), 2 workers.  The page sends text and
binary, gets the echoes, subscribes to a topic and gets a publish made on
another of its connections, closes with a code and a reason, and POSTs what it
saw back to the http server, which the test waits for (bounded).

Chromium is run as ``tests/docs/browser.py`` runs it (``/usr/bin/chromium``,
headless, no sandbox, a throw-away profile, its whole process group killed on
the way out).  Without it the test is skipped, unless ``RAWEPOLL_REQUIRE_CHROMIUM=1``
(``.ci/run`` sets it): then it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import stop_cleanly
from .helpers import APP, BOUND, HOST, serve

pytestmark = pytest.mark.timeout(180)
CHROMIUM = Path("/usr/bin/chromium")
REQUIRE = "RAWEPOLL_REQUIRE_CHROMIUM"
REPORT_BOUND = 90.0  # seconds for the page to report (Chromium's start included)

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>rawepoll WebSocket</title>
<script>
"use strict";
const base = "ws://127.0.0.1:WS_PORT";
const report = (what) => fetch("/report", {method: "POST", body: JSON.stringify(what)});

function connect(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path);
    ws.binaryType = "arraybuffer";
    const queue = [], waiters = [];
    ws.onmessage = (event) => {
      const waiter = waiters.shift();
      if (waiter) waiter(event.data); else queue.push(event.data);
    };
    ws.next = () => new Promise((res) => {
      if (queue.length) res(queue.shift()); else waiters.push(res);
    });
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("WebSocket error on " + path));
  });
}

async function main() {
  const seen = {origin: location.origin};
  const ws = await connect("/echo");
  ws.send("héllo from chromium 😀");
  seen.text = await ws.next();
  ws.send(new Uint8Array([0, 1, 2, 255]));
  seen.bytes = Array.from(new Uint8Array(await ws.next()));
  const large = new Uint8Array(300000);
  for (let i = 0; i < large.length; i += 65536) {
    crypto.getRandomValues(large.subarray(i, i + 65536));
  }
  ws.send(large);
  const back = new Uint8Array(await ws.next());
  seen.large = back.length === large.length && back.every((value, i) => value === large[i]);
  const subscriber = await connect("/topic/news");
  ws.send("!publish news published for the browser");
  seen.published = await subscriber.next();
  seen.close = await new Promise((resolve) => {
    ws.onclose = (event) => resolve({code: event.code, clean: event.wasClean});
    ws.close(4000, "the browser says bye");
  });
  subscriber.close(1000);
  await report(seen);
}

main().catch((error) => report({error: String(error)}));
</script>
"""


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{CHROMIUM} is missing and {REQUIRE}=1 requires it")
    pytest.skip(f"{CHROMIUM} is not installed; set {REQUIRE}=1 to make this a failure")


class _Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, page: bytes) -> None:
        super().__init__((HOST, 0), _Handler)
        self.page = page
        self.reports: queue.Queue[dict[str, Any]] = queue.Queue()


class _Handler(BaseHTTPRequestHandler):
    server: _Site

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.server.page)))
        self.end_headers()
        self.wfile.write(self.server.page)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.reports.put(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def site() -> Iterator[_Site]:
    """The http server, in a thread, until the block ends."""
    server = _Site(b"")
    thread = threading.Thread(target=server.serve_forever, name="page", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(BOUND)


@contextlib.contextmanager
def chromium(url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Headless Chromium on ``url``, in a session and a profile of its own, killed at the end."""
    with tempfile.TemporaryDirectory(
        prefix="rawepoll-ws-chromium-", ignore_cleanup_errors=True
    ) as profile:
        command = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            url,
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.kill()
            process.communicate()


def test_a_page_in_chromium_echoes_and_gets_a_publish() -> None:
    require_chromium()
    with site() as http:
        origin = f"http://{HOST}:{http.server_address[1]}"
        with serve(f"--origin={origin}", workers=2, app=APP) as server:
            http.page = PAGE.replace("WS_PORT", str(server.port)).encode()
            with chromium(origin + "/") as browser:
                try:
                    seen = http.reports.get(timeout=REPORT_BOUND)
                except queue.Empty:
                    pytest.fail(f"the page did not report; chromium exited {browser.poll()}")
            assert "error" not in seen, seen
            assert seen["origin"] == origin
            assert seen["text"] == "héllo from chromium 😀"
            assert seen["bytes"] == [0, 1, 2, 255]
            assert seen["large"] is True
            assert seen["published"] == "published for the browser"
            assert seen["close"] == {"code": 4000, "clean": True}
            stop_cleanly(server)
