"""Processes the fault tests own and fault: the tiny exporter and the fault-injecting proxy
(each a subprocess, signalled only by its own pid), and reading a daemon's decisions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.daemon import daemon_env
from tests.support.wait import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
START = 30.0  # deadline for a helper process to serve (generous)


def _session_get(url: str, timeout: float = 5) -> requests.Response | None:
    with requests.Session() as session:
        session.trust_env = False
        try:
            return session.get(url, timeout=timeout)
        except requests.RequestException:
            return None


def _session_post(url: str, body: dict[str, Any]) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.post(url, json=body, timeout=10)


class HelperProcess:
    """`python -m MODULE ARGS` from the repository root; stopped, frozen or killed by pid."""

    def __init__(self, module: str, *args: str) -> None:
        self.module, self.args = module, args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port), *self.args],
            cwd=REPO, env=daemon_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_until(f"{self.module} serving", self._serving, START, 0.05)

    def _serving(self) -> bool:
        response = _session_get(self._probe_url(), timeout=1)
        return response is not None and response.status_code == 200

    def _probe_url(self) -> str:
        return f"{self.url}/"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signum)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None


class Exporter(HelperProcess):
    """tests/support/fault_exporter.py: `fault_up`, `fault_load`, `fault_messages_total`."""

    def __init__(self, load: float, rate_per_hour: float) -> None:
        super().__init__("tests.support.fault_exporter", "--load", repr(load),
                         "--rate", repr(rate_per_hour))
        self.load: Any = load

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_load(self, value: Any) -> None:
        """A number, "NaN", "+Inf", or None for no series; kept across restarts."""
        self.load = value
        _session_post(f"{self.url}/control", {"load": value}).raise_for_status()

    def start(self) -> None:
        super().start()
        if self.load != float(self.args[1]):
            self.set_load(self.load)


class FaultProxy(HelperProcess):
    """tests/support/fault_proxy.py in front of `upstream`."""

    def __init__(self, upstream: str) -> None:
        super().__init__("tests.support.fault_proxy", "--upstream", upstream)

    def _probe_url(self) -> str:
        return f"{self.url}/__fault__"

    def set(self, mode: str, delay: float = 0.0) -> None:
        _session_post(f"{self.url}/__fault__",
                      {"mode": mode, "delay": delay}).raise_for_status()

    def status(self) -> dict[str, Any]:
        response = _session_get(f"{self.url}/__fault__")
        assert response is not None and response.status_code == 200
        body: dict[str, Any] = response.json()
        return body


def file_sd_target(directory: Path, address: str, cluster: str) -> Path:
    """`address` as a target of the shared Prometheus (job `fault`, label `cluster`)."""
    path = directory / f"fault-{cluster}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [address],
                                "labels": {"job": "fault", "cluster": cluster}}]))
    tmp.rename(path)  # Prometheus never reads half a file
    return path


def all_ok(record: dict[str, Any]) -> bool:
    return bool(record["policies"]) and all(p["state"] == "ok" for p in record["policies"])


def states(record: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["state"] for p in record["policies"]}


def since(records: list[dict[str, Any]], t: float) -> list[dict[str, Any]]:
    """Decisions of ticks that started at or after epoch time `t`."""
    return [r for r in records if float(r["time"]) >= t]


def now() -> float:
    return time.time()
