"""`autoscaler run` as a subprocess for end-to-end tests, and the Kubernetes namespace
clean-up they share: one place for what several test modules used to repeat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from signal import SIGCONT, SIGTERM
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.telemetry import IDENTITY
from tests.support.processes import stop_process

STOP_TIMEOUT = 60.0

MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def daemon_env(drop: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """The caller's environment without AUTOSCALER_* overrides, a service manager's
    variables, proxies or the prefixes in `drop`; loopback never goes through a proxy."""
    prefixes = ("AUTOSCALER_", "NOTIFY_SOCKET", "WATCHDOG_", *drop)
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(prefixes)
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def http_get(url: str) -> requests.Response | None:
    """GET `url` (a daemon's /metrics, /healthz...) past any proxy of the environment; None
    while nothing answers."""
    session = requests.Session()
    session.trust_env = False
    try:
        with session:
            return session.get(url, timeout=5)
    except requests.RequestException:
        return None


def registry_sample(registry: Any, name: str, **labels: str) -> float | None:
    """The sample of `name` in a CollectorRegistry with exactly `labels` besides the identity
    labels (namespace, workload_kind, workload, service); None when there is none."""
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name and {k: v for k, v in sample.labels.items()
                                        if k not in IDENTITY} == labels:
                return float(sample.value)
    return None

class DaemonProcess:
    """A daemon started from a config file, its stderr (the JSON log) in a file; it is
    only ever signalled by its own pid."""

    def __init__(self, config: Path, env: dict[str, str], workdir: Path, *extra: str,
                 port: int | None = None, label: str | None = None) -> None:
        self.label = label or uuid.uuid4().hex[:6]
        self.base = f"http://127.0.0.1:{port}" if port is not None else ""
        self.log_path = workdir / f"daemon-{self.label}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config), *extra],
            env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._log)

    # ------------------------------------------------------------------ the log
    def log_text(self) -> str:
        return self.log_path.read_text()

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        """JSON log records in order (of one `event` kind if given); other lines skipped."""
        out = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (event is None or record.get("event") == event):
                out.append(record)
        return out

    def decisions(self, target: str | None = None, after: int = 0) -> list[dict[str, Any]]:
        """Decision records (of one target if given) logged after record number `after`."""
        return [r for r in self.records()[after:]
                if r.get("event") == "decision" and (target is None or r.get("target") == target)]

    def index_of(self, text: str) -> int | None:
        """Number of the first log record whose message contains `text`."""
        return next((i for i, r in enumerate(self.records())
                     if text in str(r.get("message", ""))), None)

    # ------------------------------------------------------------------ HTTP
    def get(self, path: str) -> requests.Response | None:
        """GET on the daemon's own listener; None while it does not answer."""
        with requests.Session() as session:
            session.trust_env = False
            try:
                return session.get(f"{self.base}{path}", timeout=5)
            except requests.RequestException:
                return None

    def metrics(self) -> dict[MetricKey, float]:
        """Samples by (name, labels); the identity labels beside `target` (namespace, kind,
        workload, service: tests/integration/test_metric_labels.py checks them) left out."""
        response = self.get("/metrics")
        if response is None or response.status_code != 200:
            return {}
        return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items()
                                      if k not in IDENTITY))): s.value
                for f in text_string_to_metric_families(response.text) for s in f.samples}

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample of the daemon's /metrics, None when absent."""
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    # ------------------------------------------------------------------ the process
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.alive(), self.log_text()
        os.kill(self.proc.pid, signum)

    def stop(self, signum: int = SIGTERM) -> int:
        if self.alive():
            self.proc.send_signal(signum)
        return self.proc.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        """End the process whatever happened: a frozen one is thawed so it can act on SIGTERM."""
        if self.alive():
            os.kill(self.proc.pid, SIGCONT)
            stop_process(self.proc, STOP_TIMEOUT)
        self._log.close()


def writes(d: DaemonProcess, since: float = 0.0, until: float = float("inf")
           ) -> list[dict[str, Any]]:
    """The decisions that wrote, between `since` and `until`."""
    return [r for r in d.decisions() if r["written"] and since < r["time"] < until]


def errors_after(d: DaemonProcess, since: float) -> list[str]:
    """The target errors the daemon logged after `since` (its ERROR lines carry a time)."""
    return [r["message"] for r in d.records()
            if r.get("logger") == "autoscaler.loop" and r.get("level") == "ERROR"
            and float(r.get("time", 0)) > since]


def readyz(d: DaemonProcess) -> tuple[int, dict[str, Any]] | None:
    """(HTTP status, JSON body) of /readyz; None while the daemon does not answer."""
    response = d.get("/readyz")
    return None if response is None else (response.status_code, response.json())


def statusz(d: DaemonProcess) -> tuple[int, dict[str, Any]] | None:
    """(HTTP status, JSON body) of /statusz (503 while anything is degraded); None while the
    daemon does not answer."""
    response = d.get("/statusz")
    return None if response is None else (response.status_code, response.json())


def config_data(prometheus_url: str, port: int, targets: list[dict[str, Any]],
                **extra: Any) -> dict[str, Any]:
    """A daemon config ticking every second, serving on 127.0.0.1:`port`."""
    return {"evaluation_interval": "1s",
            "prometheus": {"url": prometheus_url, "timeout": "3s", "scrape_interval": "1s"},
            "listen": f"127.0.0.1:{port}", "targets": targets, **extra}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """`data` as the YAML file `path` (keys in the order given)."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextmanager
def daemon(config: Path, env: dict[str, str], workdir: Path, *extra: str,
           port: int | None = None, label: str | None = None) -> Iterator[DaemonProcess]:
    process = DaemonProcess(config, env, workdir, *extra, port=port, label=label)
    try:
        yield process
    finally:
        process.close()
