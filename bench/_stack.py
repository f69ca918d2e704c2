"""Shared pieces of the loop-cost, reaction and footprint benchmarks.

`BenchStack` is a Prometheus of the benchmark's own (a throwaway data dir, a free loopback
port) scraping `bench._exporter` in another process; both are stopped by pid. The policies
every synthetic target gets, and their grouped (`by (service)`) forms, live here so that the
daemon, the floor and the footprint run send exactly the same PromQL.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from bench._exporter import service_name

REPO = Path(__file__).resolve().parents[1]
SCRAPE_INTERVAL = 2.0  # seconds, the benchmark Prometheus' scrape and the daemon's setting
RATE_WINDOW = "1m"
THRESHOLD_FOR = "30s"
QUEUE_WINDOW = "2m"
HISTORY = 130.0  # seconds of samples the longest window (2m) needs, plus a margin

# Loopback only: never send the benchmark's traffic through a proxy from the environment.
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    os.environ[_var] = ",".join([*_hosts, *(h for h in ("127.0.0.1", "localhost")
                                            if h not in _hosts)])


# --------------------------------------------------------------------------- policies


def policies(service: str) -> list[dict[str, Any]]:
    """Three policies on one service: capacity on a rate, threshold on CPU, queue trend.

    Each keeps the `service` label (`by (service)`): one series, as without it, and the
    daemon can group them (`prometheus.group_by_label: service`).
    """
    sel = f'{{service="{service}"}}'
    return [
        {"type": "capacity", "name": "inflow",
         "query": f"sum by (service) (rate(bench_inflow_total{sel}[{RATE_WINDOW}])) * 3600",
         "per_instance": 10000, "headroom": 1.5},
        {"type": "threshold", "name": "cpu",
         "query": f"avg by (service) (bench_cpu_percent{sel})",
         "scale_up_above": 70, "for": THRESHOLD_FOR},
        {"type": "queue_trend", "name": "queue",
         "query": f"max by (service) (bench_queue_depth{sel})",
         "window": QUEUE_WINDOW, "per_instance": 10000, "drain_within": "15m"},
    ]


POLICY_WINDOWS = (0.0, 30.0, 120.0)  # seconds of history each of the three policies reads


def grouped_queries(services: int) -> list[tuple[str, float, int]]:
    """(query, window seconds, services) of the grouped queries the daemon sends with
    `group_by_label: service` for N services: each policy's query with `service=~"..."`, in
    the daemon's own chunks (autoscaler.sources.grouping)."""
    from autoscaler.sources.grouping import chunk_values, group_query, template_of

    names = [service_name(i) for i in range(services)]
    out = []
    for policy, window in zip(policies(names[0]), POLICY_WINDOWS, strict=True):
        spec = template_of(policy["query"], "service")
        assert spec is not None
        for chunk in chunk_values(spec.template, "service", names):
            out.append((group_query(spec.template, "service", chunk), window, len(chunk)))
    return out


def synthetic_target(i: int, *, service: str | None = None) -> dict[str, Any]:
    """Target `t-I` reading the series of `svc-I`; scaling `service` (default: svc-I)."""
    return {"name": f"t-{i}", "backend": "swarm", "service": service or service_name(i),
            "min_replicas": 1, "max_replicas": 50, "dry_run": True,
            "policies": policies(service_name(i))}


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 30.0) -> None:
    """SIGTERM the process we started (by its pid), SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


def prom_vector(url: str, query: str) -> list[dict[str, Any]]:
    try:
        body = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()
        return list(body["data"]["result"])
    except (requests.RequestException, KeyError, ValueError):
        return []


class BenchStack:
    """The exporter for `services` services and a Prometheus scraping it every 2 s."""

    def __init__(self, services: int) -> None:
        self.services = services
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-prom-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.exporter: subprocess.Popen[str] | None = None
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.first_sample = 0.0

    def __enter__(self) -> BenchStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.exporter = subprocess.Popen(
            [sys.executable, "-m", "bench._exporter", "--services", str(self.services)],
            cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.exporter.stdout is not None
        line = self.exporter.stdout.readline().split()
        if len(line) != 2 or line[0] != "port":
            raise RuntimeError(f"the exporter did not start (said {line!r})")
        exporter = f"127.0.0.1:{line[1]}"
        config = self.workdir / "prometheus.yml"
        config.write_text(
            f"global: {{scrape_interval: {SCRAPE_INTERVAL:g}s, "
            f"scrape_timeout: {SCRAPE_INTERVAL:g}s, evaluation_interval: 15s}}\n"
            "scrape_configs:\n"
            f"  - job_name: bench\n    static_configs: [{{targets: ['{exporter}']}}]\n")
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        self.prometheus = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ready, 60, "the benchmark's Prometheus to be ready")
        wait_until(lambda: len(prom_vector(self.url, "bench_queue_depth")) >= self.services,
                   60, f"{self.services} services scraped")
        self.first_sample = time.time()

    def _ready(self) -> bool:
        if self.prometheus is not None and self.prometheus.poll() is not None:
            raise RuntimeError("the benchmark's Prometheus exited at start")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def wait_history(self, seconds: float) -> None:
        """Until `seconds` of samples exist (the longest window's worth, for a full run)."""
        left = self.first_sample + seconds - time.time()
        if left > 0:
            print(f"waiting {left:.0f}s for {seconds:g}s of history in Prometheus", flush=True)
            time.sleep(left)

    def stop(self) -> None:
        stop_process(self.prometheus)
        stop_process(self.exporter)
        if self.exporter is not None and self.exporter.stdout is not None:
            self.exporter.stdout.close()
        self.prometheus = self.exporter = None
        shutil.rmtree(self.workdir, ignore_errors=True)


# --------------------------------------------------------------------------- measures, output


def vmrss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (VmRSS of /proc/PID/status), in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/PID/stat, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def write_json(figures: dict[str, Any]) -> None:
    """The raw figures as JSON in the file $BENCH_JSON names, when set (smoke tests)."""
    path = os.environ.get("BENCH_JSON")
    if path:
        Path(path).write_text(json.dumps(figures, indent=2))


@contextmanager
def swarm_service(docker_host: str, image: str, prefix: str) -> Iterator[str]:
    """A one-replica service (`prefix-<random>`) for a benchmark's targets to read; removed
    afterwards, whatever happened."""
    import docker
    import docker.types

    client = docker.DockerClient(base_url=docker_host, timeout=60)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    service = client.services.create(image, ["sleep", "100000"], name=name,
                                     mode=docker.types.ServiceMode("replicated", replicas=1))
    try:
        yield name
    finally:
        service.remove()
        client.close()
