"""HTTP(S) servers on free 127.0.0.1 ports that answer what a test tells them to.

They play a Prometheus (or an exporter) that is slow, broken, picky about auth, on TLS, or
counting how many queries reach it at once.
"""

from __future__ import annotations

import signal
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Loopback", "Respond", "Seen", "Server", "answer", "exposition", "serve_until_sigterm",
    "served", "servers",
]

@dataclass
class Seen:
    """What a loopback server saw: each request's path, query and headers; peak concurrency."""

    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


Respond = Callable[[str, dict[str, list[str]], dict[str, str]], tuple[int, str, bytes]]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many workers connect at once


@dataclass
class Loopback:
    url: str
    seen: Seen
    release: threading.Event  # set at teardown: sleeping handlers stop sleeping


def answer(handler: BaseHTTPRequestHandler, status: int, kind: str, body: bytes) -> None:
    """Send one whole response; to a client that gave up (timeout), nothing."""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        pass


@contextmanager
def served(handler: type[BaseHTTPRequestHandler],
           server_class: type[ThreadingHTTPServer] = Server,
           tls: ssl.SSLContext | None = None) -> Iterator[ThreadingHTTPServer]:
    """`handler` served by a `server_class` on a free 127.0.0.1 port from a thread, over TLS
    with `tls`; stopped on leaving (stopping it earlier, with shutdown() and server_close(),
    is fine)."""
    server = server_class(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def exposition(body: bytes) -> type[BaseHTTPRequestHandler]:
    """A handler that answers every GET with `body` as a Prometheus text exposition."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer(self, 200, "text/plain; version=0.0.4", body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def serve_until_sigterm(server: ThreadingHTTPServer) -> int:
    """A helper process's main loop: say "serving" (the parent waits for it), serve until
    SIGTERM, exit 0."""
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("serving", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


@contextmanager
def servers() -> Iterator[Callable[..., Loopback]]:
    """Start HTTP(S) servers on free 127.0.0.1 ports answering with `respond(path, query,
    headers) -> (status, content type, body)`; all are stopped on leaving."""
    def start(respond: Respond, tls: ssl.SSLContext | None = None) -> Loopback:
        seen, release = Seen(), threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with seen.lock:
                    seen.requests.append((parts.path, query, headers))
                    seen.in_flight += 1
                    seen.peak = max(seen.peak, seen.in_flight)
                try:
                    status, kind, body = respond(parts.path, query, headers)
                finally:
                    with seen.lock:
                        seen.in_flight -= 1
                answer(self, status, kind, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = stack.enter_context(served(Handler, Server, tls))
        stack.callback(release.set)  # before the server stops: sleeping handlers wake
        scheme = "https" if tls else "http"
        return Loopback(f"{scheme}://127.0.0.1:{server.server_address[1]}", seen, release)

    with ExitStack() as stack:
        yield start
