"""A fault-injecting HTTPS proxy in front of a real kube-apiserver, run as a process of the
test's own.

`python -m tests.support.kube_fault_proxy --upstream https://127.0.0.1:P --ca CA
--cert CRT --key KEY --port P1 --control-port P2` serves TLS on 127.0.0.1:P1 with the API
server's own certificate (so a kubeconfig only changes its port) and forwards every request,
unchanged, headers and body, to the upstream, checked against CA. Until told otherwise it
only forwards. On 127.0.0.1:P2 (plain HTTP, loopback):

- `POST /fault {"status": 429, "method": "PATCH", "path": "REGEX", "retry_after": 1}`: from
  now on, requests whose method is `method` (any when empty) and whose path matches `path`
  (any when empty) are answered `status` with a Kubernetes `Status` body (and `Retry-After`
  when given) without reaching the upstream; `{"status": 0}` ends the fault. With
  `"skip": N`, the first N matching requests are still forwarded (e.g. the second of two
  writes to one path fails, the first lands).
- `GET /fault` tells the fault, how many requests were forwarded and how many faulted.

Standard library only; the client's credentials pass through and are never logged.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "proxy-connection", "upgrade"}
REASONS = {403: "Forbidden", 404: "NotFound", 409: "Conflict", 429: "TooManyRequests",
           500: "InternalError", 503: "ServiceUnavailable"}


class Fault:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status = 0
        self.method = ""
        self.path: re.Pattern[str] | None = None
        self.retry_after: int | None = None
        self.skip = 0
        self.forwarded = 0
        self.faulted = 0

    def set(self, spec: dict[str, Any]) -> None:
        with self.lock:
            self.status = int(spec.get("status") or 0)
            self.method = str(spec.get("method") or "").upper()
            self.path = re.compile(spec["path"]) if spec.get("path") else None
            retry = spec.get("retry_after")
            self.retry_after = None if retry is None else int(retry)
            self.skip = int(spec.get("skip") or 0)

    def answer_for(self, method: str, path: str) -> tuple[int, int | None] | None:
        """(status, Retry-After) when this request is to fail; counts it either way."""
        with self.lock:
            hit = (self.status != 0 and (not self.method or self.method == method)
                   and (self.path is None or self.path.search(path) is not None))
            if hit and self.skip > 0:
                self.skip -= 1
                hit = False
            if hit:
                self.faulted += 1
                return self.status, self.retry_after
            self.forwarded += 1
            return None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"status": self.status, "method": self.method,
                    "path": self.path.pattern if self.path else "",
                    "retry_after": self.retry_after, "skip": self.skip,
                    "forwarded": self.forwarded,
                    "faulted": self.faulted}


def status_body(code: int, method: str, path: str) -> bytes:
    reason = REASONS.get(code, "InternalError")
    return json.dumps({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"injected by the test's proxy: {code} for {method} {path}",
        "reason": reason, "code": code}).encode()


def make_proxy(fault: Fault, upstream: str, upstream_tls: ssl.SSLContext
               ) -> type[BaseHTTPRequestHandler]:
    parts = urlsplit(upstream)

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            injected = fault.answer_for(self.command, self.path.split("?", 1)[0])
            if injected is not None:
                code, retry_after = injected
                payload = status_body(code, self.command, self.path.split("?", 1)[0])
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            conn = http.client.HTTPSConnection(parts.hostname or "127.0.0.1", parts.port or 443,
                                               context=upstream_tls, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the upstream is gone: as a front end would, a bare 502
                payload = status_body(502, self.command, self.path)
                self.send_response(502)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            finally:
                conn.close()

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_PATCH(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

    return Proxy


def make_control(fault: Fault) -> type[BaseHTTPRequestHandler]:
    class Control(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, code: int, doc: dict[str, Any]) -> None:
            payload = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._reply(200, fault.snapshot())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                fault.set(json.loads(self.rfile.read(length) or b"{}"))
            except (ValueError, TypeError, KeyError, re.error) as exc:
                self._reply(400, {"error": str(exc)})
                return
            self._reply(200, fault.snapshot())

    return Control


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    args = parser.parse_args(argv)

    upstream_tls = ssl.create_default_context(cafile=args.ca)
    serving_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving_tls.load_cert_chain(args.cert, args.key)
    fault = Fault()
    proxy = ThreadingHTTPServer(("127.0.0.1", args.port),
                                make_proxy(fault, args.upstream, upstream_tls))
    proxy.daemon_threads = True
    proxy.socket = serving_tls.wrap_socket(proxy.socket, server_side=True)
    control = ThreadingHTTPServer(("127.0.0.1", args.control_port), make_control(fault))
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=proxy.shutdown).start())
    print(f"ready {args.port} {args.control_port}", flush=True)
    try:
        proxy.serve_forever()
    finally:
        control.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
