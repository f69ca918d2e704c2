"""A synthetic exporter for the loop-cost and footprint benchmarks: N services, three series each.

    python -m bench._exporter --services 1000 [--port 0]

Serves `/metrics` on 127.0.0.1 with, per service `svc-I`: a counter `bench_inflow_total`
(emails, growing at a fixed per-service rate), a gauge `bench_cpu_percent` and a gauge
`bench_queue_depth`, each moving slowly so range queries see real, varying samples.
Prints `port N` on its first line once it listens; runs until SIGTERM. It runs in a process of
its own so that serving scrapes never counts in the CPU time a benchmark measures.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

SERVICE = "svc-{}"


def service_name(i: int) -> str:
    return SERVICE.format(i)


def inflow_per_hour(i: int) -> float:
    """Each service's constant arrival rate: 2,000 to 21,600 emails/hour."""
    return 2000.0 + (i % 50) * 400.0


def render(services: int, t0: float, now: float) -> str:
    elapsed = now - t0
    inflow, cpu, queue = [], [], []
    for i in range(services):
        label = f'{{service="{service_name(i)}"}}'
        inflow.append(f"bench_inflow_total{label} {inflow_per_hour(i) / 3600.0 * elapsed:.3f}")
        cpu.append(f"bench_cpu_percent{label} "
                   f"{30.0 + (i % 7) * 5.0 + 5.0 * math.sin(now / 60.0 + i):.3f}")
        queue.append(f"bench_queue_depth{label} "
                     f"{100.0 + (i % 13) * 10.0 + 20.0 * math.sin(now / 90.0 + i):.3f}")
    return "".join([
        "# HELP bench_inflow_total Emails queued.\n# TYPE bench_inflow_total counter\n",
        *(line + "\n" for line in inflow),
        "# HELP bench_cpu_percent CPU of one instance, %.\n# TYPE bench_cpu_percent gauge\n",
        *(line + "\n" for line in cpu),
        "# HELP bench_queue_depth Messages in the queue.\n# TYPE bench_queue_depth gauge\n",
        *(line + "\n" for line in queue),
    ])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    services = 0
    t0 = 0.0


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        body = render(self.server.services, self.server.t0, time.time()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = _Server(("127.0.0.1", args.port), _Handler)
    server.services, server.t0 = args.services, time.time()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
