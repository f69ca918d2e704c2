"""A tiny metrics exporter the fault tests run as a process of their own, to stop, freeze
and restart it like a real one.

`python -m tests.support.fault_exporter --port P [--load V] [--rate R]` serves, on any
GET path, in the Prometheus text format:

- `fault_up 1`: always there while the process runs (as Stalwart's `smtp_active_connections`);
- `fault_load V`: a gauge; `NaN`, `+Inf` and `-Inf` are published as such, `none` drops it;
- `fault_messages_total`: a counter growing by R per hour from 0 at process start, so a
  restart resets it as a restarted Stalwart node resets its own.

`POST /control` with a JSON object (`{"load": 23000}`, `{"load": "NaN"}`, `{"load": null}`)
changes the gauge. Standard library only: it starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.loopback import answer, serve_until_sigterm

SPECIAL = {"nan": "NaN", "+inf": "+Inf", "inf": "+Inf", "-inf": "-Inf"}


def published(value: Any) -> str | None:
    """The gauge's text in the exposition format, None for no series."""
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    if isinstance(value, str):
        if value.lower() in SPECIAL:
            return SPECIAL[value.lower()]
        return repr(float(value))
    return repr(float(value))


class State:
    def __init__(self, load: str | None, rate_per_hour: float) -> None:
        self.lock = threading.Lock()
        self.load = published(load)
        self.rate = rate_per_hour / 3600.0
        self.started = time.time()

    def text(self) -> str:
        with self.lock:
            load = self.load
            count = self.rate * (time.time() - self.started)
        lines = ["# TYPE fault_up gauge", "fault_up 1"]
        if load is not None:
            lines += ["# TYPE fault_load gauge", f"fault_load {load}"]
        lines += ["# TYPE fault_messages_total counter", f"fault_messages_total {count:.6f}"]
        return "\n".join(lines) + "\n"


def serve(port: int, state: State) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            answer(self, 200, "text/plain; version=0.0.4", state.text().encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                change = json.loads(self.rfile.read(length) or b"{}")
                if "load" in change:
                    text = published(change["load"])
                    with state.lock:
                        state.load = text
            except (ValueError, TypeError) as exc:
                answer(self, 400, "text/plain", f"{exc}\n".encode())
                return
            answer(self, 200, "text/plain", b"ok\n")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--load", default="none")
    parser.add_argument("--rate", type=float, default=0.0, help="counter growth, per hour")
    args = parser.parse_args(argv)
    return serve_until_sigterm(serve(args.port, State(args.load, args.rate)))


if __name__ == "__main__":
    sys.exit(main())
