"""kube_fault_proxy.py as a process of a test's own, in front of the test environment's
kube-apiserver (or a second one), serving the API server's own certificate."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

__all__ = ["FaultProxy", "proxy_in_front"]


class FaultProxy:
    """kube_fault_proxy.py as a process of the test's own, in front of `upstream`."""

    def __init__(self, realenv: RealEnv, upstream: str, workdir: Path) -> None:
        pki = realenv.kube_ca_file.parent
        self.port, self.control_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.control = f"http://127.0.0.1:{self.control_port}/fault"
        self._log = (workdir / "kube-fault-proxy.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.kube_fault_proxy", "--upstream", upstream,
             "--ca", str(realenv.kube_ca_file), "--cert", str(pki / "apiserver.crt"),
             "--key", str(pki / "apiserver.key"), "--port", str(self.port),
             "--control-port", str(self.control_port)],
            cwd=Path(__file__).resolve().parents[2], stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=self._log)
        wait_until("the fault proxy", self._answers, 30)

    def _answers(self) -> bool:
        assert self.proc.poll() is None, "the fault proxy exited"
        try:
            return self.state() is not None
        except requests.RequestException:
            return False

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        return session

    def state(self) -> dict[str, Any]:
        with self._session() as s:
            doc: dict[str, Any] = s.get(self.control, timeout=5).json()
            return doc

    def fault(self, status: int, method: str = "", path: str = "",
              retry_after: int | None = None, skip: int = 0) -> None:
        with self._session() as s:
            s.post(self.control, json={"status": status, "method": method, "path": path,
                                       "retry_after": retry_after, "skip": skip},
                   timeout=5).raise_for_status()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self._log.close()


def proxy_in_front(realenv: RealEnv, workdir: Path) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the test environment's API server, closed afterwards: a
    fixture yields from it."""
    proxy = FaultProxy(realenv, realenv.kube_api_url, workdir)
    try:
        yield proxy
    finally:
        proxy.close()
