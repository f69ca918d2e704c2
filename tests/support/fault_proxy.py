"""A fault-injecting HTTP proxy the tests run as a process of their own, in front of a real
Prometheus.

`python -m tests.support.fault_proxy --upstream URL --port P` forwards every request to
URL, unchanged, until told otherwise. `POST /__fault__ {"mode": M, "delay": S}` sets what it
does to the query API (`/api/...`; `/-/ready` and the rest always pass):

| mode          | answer                                                            |
|---------------|-------------------------------------------------------------------|
| `pass`        | the upstream's own                                                |
| `delay`       | the upstream's own, after holding the request `delay` seconds     |
| `not_json`    | 200, an HTML page                                                 |
| `truncated`   | 200, the first half of the upstream's JSON (a complete response)  |
| `cut`         | the upstream's headers, half its body, then the connection closes |
| `wrong_shape` | 200, JSON with `status: success` whose `result` is not a list     |
| `http_500`    | 500 with a Prometheus-style error body                            |
| `http_503`    | 503, plain text (an overloaded front end)                         |

`GET /__fault__` tells the mode, how many query requests it has seen and how many it is
holding right now (`in_flight`: a tick is waiting on Prometheus). Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.support.loopback import serve_until_sigterm

MODES = ("pass", "delay", "not_json", "truncated", "cut", "wrong_shape", "http_500", "http_503")
# Not forwarded; without accept-encoding the upstream answers uncompressed, so a cut body is
# cut JSON, not cut gzip.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "accept-encoding"}


class Control:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = "pass"
        self.delay = 0.0
        self.requests = 0
        self.in_flight = 0

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"mode": self.mode, "delay": self.delay, "requests": self.requests,
                    "in_flight": self.in_flight}


def forward(upstream: str, method: str, path: str, headers: dict[str, str],
            body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
    parts = urlsplit(upstream)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                      timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def serve(port: int, upstream: str, control: Control) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, code: int, body: bytes, kind: str,
                  extra: Sequence[tuple[str, str]] = (), length: int | None = None) -> None:
            self.send_response(code)
            for key, value in extra:
                if key.lower() not in HOP_HEADERS and key.lower() != "content-type":
                    self.send_header(key, value)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def _control(self) -> None:
            if self.command == "POST":
                try:
                    change = json.loads(self._body() or b"{}")
                    mode = change.get("mode", "pass")
                    if mode not in MODES:
                        raise ValueError(f"unknown mode {mode!r}")
                    with control.lock:
                        control.mode = mode
                        control.delay = float(change.get("delay", 0.0))
                except (ValueError, TypeError, AttributeError) as exc:
                    self._send(400, f"{exc}\n".encode(), "text/plain")
                    return
            self._send(200, json.dumps(control.snapshot()).encode(), "application/json")

        def _proxy(self) -> None:
            path = self.path
            if path.startswith("/__fault__"):
                self._control()
                return
            body = self._body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            query_api = path.startswith("/api/")
            with control.lock:
                mode, delay = (control.mode, control.delay) if query_api else ("pass", 0.0)
                if query_api:
                    control.requests += 1
                    control.in_flight += 1
            try:
                self._answer(mode, delay, path, headers, body)
            except OSError:
                pass  # the client gave up first (its timeout): nothing left to answer
            finally:
                if query_api:
                    with control.lock:
                        control.in_flight -= 1

        def _answer(self, mode: str, delay: float, path: str, headers: dict[str, str],
                    body: bytes | None) -> None:
            if mode == "not_json":
                self._send(200, b"<html><body>502 Bad Gateway</body></html>\n", "text/html")
                return
            if mode == "wrong_shape":
                shape = {"status": "success",
                         "data": {"resultType": "vector", "result": {"value": "oops"}}}
                self._send(200, json.dumps(shape).encode(), "application/json")
                return
            if mode == "http_500":
                error = {"status": "error", "errorType": "internal",
                         "error": "injected fault: internal server error"}
                self._send(500, json.dumps(error).encode(), "application/json")
                return
            if mode == "http_503":
                self._send(503, b"Service Unavailable (injected fault)\n", "text/plain",
                           [("Retry-After", "1")])
                return
            if mode == "delay":
                time.sleep(delay)
            try:
                status, upstream_headers, payload = forward(upstream, self.command, path,
                                                            headers, body)
            except OSError as exc:
                self._send(502, f"upstream: {exc}\n".encode(), "text/plain")
                return
            kind = next((v for k, v in upstream_headers if k.lower() == "content-type"),
                        "application/octet-stream")
            if mode == "truncated":
                self._send(status, payload[: len(payload) // 2], kind)
            elif mode == "cut":
                self._send(status, payload[: len(payload) // 2], kind, length=len(payload))
                self.close_connection = True
            else:
                self._send(status, payload, kind, upstream_headers)

        def do_GET(self) -> None:
            self._proxy()

        def do_POST(self) -> None:
            self._proxy()

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    return serve_until_sigterm(serve(args.port, args.upstream.rstrip("/"), Control()))


if __name__ == "__main__":
    sys.exit(main())
