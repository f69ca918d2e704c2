"""Shared pieces of the end-to-end tests: a Swarm service, the emulator registered in
Prometheus, a dedicated Prometheus process, and an engine ticking in the background."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from autoscaler.config import Settings, load_config_data
from autoscaler.loop import Engine
from autoscaler.scheduler import run_forever
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until
from tools.emulator import Cluster, Emulator


@contextmanager
def swarm_service(docker_client: Any, image: str, replicas: int = 1,
                  labels: dict[str, str] | None = None) -> Iterator[Any]:
    import docker.types

    name = f"e2e-{uuid.uuid4().hex[:8]}"
    service = docker_client.services.create(
        image, ["sleep", "100000"], name=name, labels=labels or {},
        mode=docker.types.ServiceMode("replicated", replicas=replicas))
    try:
        yield service
    finally:
        service.remove()


def spec_replicas(docker_client: Any, name: str) -> int:
    attrs = docker_client.api.inspect_service(name)
    return int(attrs["Spec"]["Mode"]["Replicated"]["Replicas"])


@contextmanager
def registered(realenv: RealEnv, emulator: Emulator | Cluster) -> Iterator[str]:
    """The emulator as two file_sd targets of the shared Prometheus; yields the value of
    the `cluster` label that tells its series apart from other tests' emulators."""
    cluster = uuid.uuid4().hex[:8]
    path = realenv.prometheus_file_sd_dir / f"e2e-{cluster}.json"
    target = [emulator.address]
    path.write_text(json.dumps([
        {"targets": target, "labels": {"job": "stalwart", "cluster": cluster,
                                       "__metrics_path__": "/metrics/prometheus"}},
        {"targets": target, "labels": {"job": "cadvisor", "cluster": cluster,
                                       "__metrics_path__": "/metrics"}},
    ]))
    try:
        yield cluster
    finally:
        path.unlink(missing_ok=True)


def prom_result(url: str, query: str) -> list[dict[str, Any]]:
    """`data.result` of an instant query (a list of series); [] when there is none yet, or
    when Prometheus cannot be asked (the callers wait for a result)."""
    try:
        body = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()
        result = body["data"]["result"]
    except (requests.RequestException, KeyError, TypeError, ValueError):
        return []
    return result if isinstance(result, list) else []


def prom_value(url: str, query: str) -> float | None:
    """The value of a one-series instant result; None without one."""
    try:
        result = prom_result(url, query)
        return float(result[0]["value"][1]) if result else None
    except (KeyError, ValueError, IndexError):
        return None


class OwnPrometheus:
    """A Prometheus process of the test's own, to stop and restart without disturbing
    the shared one."""

    def __init__(self, workdir: Path, emulator_address: str = "", *,
                 config_text: str | None = None, extra_args: Sequence[str] = ()) -> None:
        """Scrapes the emulator at `emulator_address`, or runs `config_text` as written;
        `extra_args` go on its command line (e.g. a retention longer than backfilled data)."""
        self.workdir = workdir
        self.extra_args = tuple(extra_args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.config.write_text(config_text if config_text is not None else (
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: stalwart\n    metrics_path: /metrics/prometheus\n"
            f"    static_configs: [{{targets: ['{emulator_address}']}}]\n"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config}",
             f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("own prometheus ready", self._ready, 30)

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


def settings_for(prometheus_url: str, target: dict[str, Any], *, interval: str = "1s",
                 dry_run: bool = False) -> Settings:
    return load_config_data({
        "evaluation_interval": interval,
        "dry_run": dry_run,
        "prometheus": {"url": prometheus_url, "timeout": "3s", "scrape_interval": "1s"},
        "targets": [target],
    }, environ={})


def inflow_capacity(cluster: str = "", window: str = "10s") -> dict[str, Any]:
    """The capacity policy on Stalwart's inflow counters, with a short rate window so the
    test reacts within seconds (the smtp preset uses `forecast` on a 1m rate read over 2m).

    No `or vector(0)`: the emulator exports both counters on every node, so an absent series
    is a missed scrape, and must read `empty` (hold) rather than 0 (a scale-down 3 s after a
    missed scrape under a 10 s window was seen); the preset's `while_scraped` gate does the
    same for a real cluster."""
    sel = f'{{cluster="{cluster}"}}' if cluster else ""
    query = (f"sum(rate(queue_queue_message{sel}[{window}])) + "
             f"sum(rate(queue_queue_message_authenticated{sel}[{window}]))")
    return {"type": "capacity", "name": "inflow", "query": f"({query}) * 3600",
            "per_instance": 10000, "headroom": 1.5}


FAST_BEHAVIOR = {
    "scaleUp": {"stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 20, "periodSeconds": 1}]},
    "scaleDown": {"stabilizationWindowSeconds": 10,
                  "policies": [{"type": "Pods", "value": 20, "periodSeconds": 1}]},
}


@contextmanager
def running(engine: Engine, interval: float) -> Iterator[Engine]:
    """The engine ticking on APScheduler in a background thread, as `autoscaler run` does."""
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(engine, interval, stop), daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        stop.set()
        thread.join(timeout=60)
        engine.close()
