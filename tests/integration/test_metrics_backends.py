"""Metrics backends beyond one plain Prometheus, each the real thing started by the test:
VictoriaMetrics (Debian's package), a Prometheus under a path prefix as Thanos, Mimir and
Cortex serve the query API, and a Prometheus that requires client certificates (mTLS).

Each backend scrapes a small exporter of the test's own every second on 127.0.0.1. Deadlines
are generous: they say whether a thing happens; the one bound the issue states (a stopped
VictoriaMetrics ingestion reads stale or empty within its offset + 2 scrape intervals + 1 tick)
is measured and asserted with the scrape and tick granularity added.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from autoscaler.config import PrometheusConfig
from autoscaler.model import Signal, SignalRequest, SignalState
from autoscaler.sources.prometheus import PrometheusSource
from tests.support.loopback import exposition, served
from tests.support.processes import stop_process
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(600)

OK, EMPTY, STALE, ERROR = SignalState.OK, SignalState.EMPTY, SignalState.STALE, SignalState.ERROR
SCRAPE = 1.0  # seconds, every backend here
TICK = 1.0  # seconds between two reads in the fault case


# --------------------------------------------------------------------------- helpers


@dataclass
class Exporter:
    """A /metrics endpoint: `<name>{service="a"} 1` and `{service="b"} 2`, until stopped."""

    name: str
    address: str
    stop: Callable[[], None]


@contextmanager
def exporter() -> Iterator[Exporter]:
    name = f"eco_backend_{uuid.uuid4().hex[:8]}"
    body = (f'{name}{{service="a"}} 1\n{name}{{service="b"}} 2\n').encode()

    with served(exposition(body)) as server:
        stopped = threading.Event()

        def stop() -> None:
            if not stopped.is_set():
                stopped.set()
                server.shutdown()
                server.server_close()

        yield Exporter(name, f"127.0.0.1:{server.server_address[1]}", stop)


def scrape_config(path: Path, address: str, scheme: str = "http") -> Path:
    path.write_text("global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                    "scrape_configs:\n"
                    f"  - job_name: eco\n    scheme: {scheme}\n"
                    f"    static_configs: [{{targets: ['{address}']}}]\n")
    return path


@contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A backend process of the test's own, stopped (by its pid) on leaving."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc, 30)


def source(url: str, **extra: Any) -> PrometheusSource:
    """The source with the daemon's shipped defaults, but for the test's scrape interval."""
    return PrometheusSource(PrometheusConfig.model_validate(
        {"url": url, "scrape_interval": SCRAPE, **extra}))


def read(src: PrometheusSource, *requests_: tuple[str, str, float]) -> dict[str, Signal]:
    return src.read([SignalRequest(*r) for r in requests_], time.time(), time.monotonic() + 20)


def answers(url: str, query: str, **kwargs: Any) -> bool:
    try:
        body = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=5,
                            **kwargs).json()
    except (requests.RequestException, ValueError):
        return False
    return bool(body.get("data", {}).get("result"))


# --------------------------------------------------------------------------- VictoriaMetrics


def victoria_metrics_binary() -> str:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        pytest.fail("victoria-metrics is not installed (scripts/testenv up installs Debian's "
                    "package)")
    return binary


@contextmanager
def victoria_metrics(tmp_path: Path, scrape: Path) -> Iterator[str]:
    """Debian's VictoriaMetrics with its shipped defaults (-search.latencyOffset 30s)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [victoria_metrics_binary(), f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={tmp_path / 'vm-data'}", f"-promscrape.config={scrape}",
            "-loggerLevel=ERROR"]
    with process(argv, tmp_path / "vm.log"):
        yield url


def test_victoria_metrics_read_with_its_default_latency_offset(tmp_path: Path) -> None:
    """With VictoriaMetrics' defaults, the learned offset makes the newest samples `ok`
    (not stale) and a 10 s window full (not empty); grouping splits by the label; with the
    offset turned off (as before) the window reads empty. Then ingestion stops: stale or
    empty within offset + 2 scrape intervals + 1 tick."""
    with exporter() as exp, victoria_metrics(tmp_path, scrape_config(
            tmp_path / "scrape.yml", exp.address)) as url:
        # VictoriaMetrics shows a sample only once it is older than its latency offset.
        wait_until("VictoriaMetrics data", lambda: answers(url, f"sum({exp.name})"), 120)
        instant, window = f"sum({exp.name})", f"sum({exp.name})"
        grouped = {v: f'sum by (service) ({exp.name}{{service="{v}"}})' for v in "ab"}
        with source(url, group_by_label="service") as src:
            assert src.check_reachable(time.monotonic() + 10) is None
            offset = src.query_offset
            assert 25 <= offset <= 40, f"learned {offset}s; VictoriaMetrics' default is 30s"
            # a full window once 10 s of data are older than the offset
            signals = wait_until("full windows", lambda: full(read(
                src, ("instant", instant, 0.0), ("window", window, 10.0),
                *((v, q, 10.0) for v, q in grouped.items()))), 60)
        assert signals["instant"].latest == 3.0
        assert len(signals["window"].samples) >= 9, "a 10 s window at 1 s steps"
        assert (signals["a"].latest, signals["b"].latest) == (1.0, 2.0)

        with source(url, query_offset="0s") as unaware:
            before = read(unaware, ("window", window, 10.0))["window"]
        assert before.state is EMPTY, "without the offset a short window ends in VM's delay"

        with source(url) as src:
            assert src.check_reachable(time.monotonic() + 10) is None
            exp.stop()
            stopped = time.monotonic()
            seen: dict[str, SignalState] = {}
            while time.monotonic() - stopped < 180:
                got = read(src, ("instant", instant, 0.0), ("window", window, 10.0))
                seen = {k: s.state for k, s in got.items()}
                if all(state in (STALE, EMPTY) for state in seen.values()):
                    break
                time.sleep(TICK)
            elapsed = time.monotonic() - stopped
            bound = src.query_offset + 2 * SCRAPE + TICK
    assert all(state in (STALE, EMPTY) for state in seen.values()), seen
    print(f"\nVictoriaMetrics: learned offset {offset:g}s; ingestion stopped: {seen} after "
          f"{elapsed:.1f}s (bound {bound:g}s)")
    # + one scrape timeout (the failed scrape that notices) and one read's own duration
    assert elapsed <= bound + SCRAPE + 2.0


def ok_all(signals: dict[str, Signal]) -> dict[str, Signal] | None:
    return signals if all(s.state is OK for s in signals.values()) else None


def full(signals: dict[str, Signal]) -> dict[str, Signal] | None:
    """The signals once all are ok and the window holds 9 samples or more; else None (right
    after the start, the window may still end before VictoriaMetrics' first sample)."""
    if all(s.state is OK for s in signals.values()) and len(signals["window"].samples) >= 9:
        return signals
    return None


# --------------------------------------------------------------------------- prefix and tenant


@contextmanager
def prometheus(tmp_path: Path, scrape: Path, *extra: str, scheme: str = "http") -> Iterator[str]:
    port = free_port()
    argv = [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={scrape}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}", *extra]
    with process(argv, tmp_path / "prometheus.log"):
        yield f"{scheme}://127.0.0.1:{port}"


def test_thanos_or_mimir_shape_path_prefix_and_tenant_header(tmp_path: Path) -> None:
    """The query API under a path prefix (Thanos, Mimir's /prometheus, Cortex's /api/prom),
    with the tenant header: reads and the reachability probe go under the prefix."""
    with exporter() as exp, prometheus(
            tmp_path, scrape_config(tmp_path / "scrape.yml", exp.address),
            "--web.route-prefix=/prometheus",
            "--web.external-url=http://127.0.0.1/prometheus") as root:
        url = f"{root}/prometheus"
        wait_until("prefixed Prometheus", lambda: answers(url, f"sum({exp.name})"), 60)
        cfg = {"headers": {"X-Scope-OrgID": "tenant-a"}}
        with source(url, **cfg) as src:
            assert src.check_reachable(time.monotonic() + 10) is None
            assert src.query_offset == 0.0
            signals = wait_until("ok signals", lambda: ok_all(read(
                src, ("instant", f"sum({exp.name})", 0.0), ("window", f"sum({exp.name})", 10.0))),
                60)
        assert signals["instant"].latest == 3.0
        with source(root, **cfg) as wrong:  # the prefix forgotten: every answer says so
            missing = read(wrong, ("instant", f"sum({exp.name})", 0.0))["instant"]
            probe = wrong.check_reachable(time.monotonic() + 10)
        assert missing.state is ERROR and "HTTP 404" in missing.detail
        assert probe is not None and "/api/v1/query" in probe and "404" in probe


# --------------------------------------------------------------------------- mTLS


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(where: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, by openssl."""
    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)

    ca, ca_key = where / "ca.pem", where / "ca.key"
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(ca_key),
        "-out", str(ca), "-subj", "/CN=eco test CA")
    paths = {}
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        key, csr, cert = where / f"{name}.key", where / f"{name}.csr", where / f"{name}.pem"
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={name}")
        extfile = where / f"{name}.ext"
        extfile.write_text(ext + "\n")
        run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(extfile))
        key.chmod(0o600)
        paths[name] = (cert, key)
    return Pki(ca, *paths["server"], *paths["client"])


def test_mutual_tls_client_certificate(tmp_path: Path) -> None:
    """A Prometheus that requires client certificates: read and probe with cert_file and
    key_file; without them the detail names the TLS alert, and nothing is retried."""
    pki = make_pki(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n"
                   f"  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
                   "  client_auth_type: RequireAndVerifyClientCert\n"
                   f"  client_ca_file: {pki.ca}\n")
    with exporter() as exp, prometheus(
            tmp_path, scrape_config(tmp_path / "scrape.yml", exp.address),
            f"--web.config.file={web}", scheme="https") as url:
        wait_until("Prometheus with mTLS", lambda: answers(
            url, f"sum({exp.name})", verify=str(pki.ca),
            cert=(str(pki.client_cert), str(pki.client_key))), 60)
        with source(url, ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                    key_file=str(pki.client_key)) as src:
            assert src.check_reachable(time.monotonic() + 10) is None
            signal = read(src, ("k", f"sum({exp.name})", 0.0))["k"]
        assert signal.state is OK and signal.latest == 3.0
        with source(url, ca_file=str(pki.ca)) as src:
            started = time.monotonic()
            refused = read(src, ("k", f"sum({exp.name})", 0.0))["k"]
            elapsed = time.monotonic() - started
            probe = src.check_reachable(time.monotonic() + 10)
        assert refused.state is ERROR
        assert "TLS handshake failed" in refused.detail and "CERTIFICATE" in refused.detail
        assert elapsed < 10, "a refused certificate stays refused: not retried to the deadline"
        assert probe is not None and "TLS handshake failed" in probe
