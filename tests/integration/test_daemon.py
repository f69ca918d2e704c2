"""`autoscaler run` and `autoscaler explain` as real processes, on real components.

Each test starts the CLI with `python -m autoscaler.cli` (DOCKER_HOST and KUBECONFIG from the
test environment), against real Swarm services or a real Deployment, and a Stalwart emulator
registered in the shared Prometheus; queries select the emulator by its `cluster` label.
Deadlines are generous; how fast anything happens is the benchmarks' business.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.telemetry import IDENTITY
from tests.support.daemon import DaemonProcess, daemon, http_get
from tests.support.e2e import (
    FAST_BEHAVIOR,
    inflow_capacity,
    prom_value,
    registered,
    spec_replicas,
    swarm_service,
)
from tests.support.kube import namespace_with_deployment
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until
from tools.emulator import Emulator, FixedInstances, SwarmTasks

pytestmark = pytest.mark.timeout(300)

DEMAND = 40000.0  # emails/hour: the capacity policy asks for ceil(4 x 1.5) = 6 instances
START = 60.0  # deadline for a subprocess to be up and to have ticked (generous)
CLI_TIMEOUT = 120.0  # deadline for a one-shot command


# --------------------------------------------------------------------------- helpers


def steady_policy() -> dict[str, Any]:
    """A threshold policy whose value sits inside its band: it votes to keep the size."""
    return {"type": "threshold", "name": "steady", "query": "vector(50)",
            "scale_up_above": 70, "scale_down_below": 35}


POLICY_NAMES = {"inflow", "steady"}


def swarm_target(name: str, service: str, cluster: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "backend": "swarm", "service": service, "min_replicas": 1,
            "max_replicas": 8, "cooldown": {"up": "0s", "down": "0s"},
            "behavior": FAST_BEHAVIOR,
            "policies": [inflow_capacity(cluster), steady_policy()], **extra}


def write_config(path: Path, targets: list[dict[str, Any]], prometheus_url: str,
                 timeout: str = "10s", **extra: Any) -> Path:
    """A config ticking every second; the default query timeout is long so a loaded machine
    cannot push a one-shot tick past its deadline (the deadline follows the timeout)."""
    path.write_text(yaml.safe_dump({
        "evaluation_interval": "1s",
        "prometheus": {"url": prometheus_url, "timeout": timeout, "scrape_interval": "1s"},
        "targets": targets, **extra,
    }, sort_keys=False))
    return path


def cli_env(realenv: RealEnv, kubeconfig: Path | None = None) -> dict[str, str]:
    """The caller's environment without AUTOSCALER_* overrides, pointed at the test
    environment; loopback traffic never goes through a proxy."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    env["DOCKER_HOST"] = realenv.docker_host
    env["KUBECONFIG"] = str(kubeconfig or realenv.kubeconfig)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)
    return env


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autoscaler.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def decisions(text: str, target: str | None = None) -> list[dict[str, Any]]:
    return [r for r in json_lines(text)
            if r.get("event") == "decision" and target in (None, r.get("target"))]


def target_errors(text: str, target: str) -> list[dict[str, Any]]:
    return [r for r in json_lines(text)
            if r.get("event") == "target_error" and r.get("target") == target]


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


def service_snapshot(docker_client: Any, name: str) -> tuple[str, int]:
    attrs = docker_client.api.inspect_service(name)
    return json.dumps(attrs["Spec"], sort_keys=True), int(attrs["Version"]["Index"])


def metric_samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = http_get(f"{base}/metrics")
    if response is None or response.status_code != 200:
        return {}
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in IDENTITY))):
            s.value for f in text_string_to_metric_families(response.text) for s in f.samples}


def ticks(base: str) -> float:
    return metric_samples(base).get(("autoscaler_ticks_total", ()), 0.0)


def wait_ticks(base: str, more_than: float, what: str = "ticks") -> float:
    return float(wait_until(f"{what}: autoscaler_ticks_total > {more_than:g}",
                            lambda: ticks(base) > more_than and ticks(base), START))


def status_json(base: str, path: str) -> tuple[int, dict[str, Any]] | None:
    response = http_get(f"{base}{path}")
    if response is None:
        return None
    return response.status_code, response.json()


class SilentServer:
    """A loopback TCP server that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)

    @property
    def accepted(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for conn in self._held:
            conn.close()
        self._sock.close()


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "slow",
        "clusters": [{"name": "slow", "cluster": {"server": server}}],
        "users": [{"name": "nobody", "user": {}}],
        "contexts": [{"name": "slow", "context": {"cluster": "slow", "user": "nobody"}}],
    }))
    return path


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    return free_port()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def busy(realenv: RealEnv) -> Iterator[str]:
    """An emulator at DEMAND emails/hour in the shared Prometheus; yields its cluster label
    once the inflow the capacity policy reads is there."""
    with Emulator(FixedInstances(1), demand=DEMAND, startup_delay=1, poll=0.5) as emulator, \
            registered(realenv, emulator) as cluster:
        query = inflow_capacity(cluster)["query"]
        wait_until("the emulator's inflow in Prometheus",
                   lambda: (prom_value(realenv.prometheus_url, query) or 0) >= DEMAND * 0.75, 90)
        yield cluster


@pytest.fixture
def env(realenv: RealEnv) -> dict[str, str]:
    return cli_env(realenv)


# --------------------------------------------------------------------------- run --once


def test_run_once_decides_and_scales_every_target(
        realenv: RealEnv, docker_client: Any, env: dict[str, str], tmp_path: Path) -> None:
    with swarm_service(docker_client, realenv.busybox_image) as smtp, \
            swarm_service(docker_client, realenv.busybox_image) as imap, \
            Emulator(SwarmTasks(smtp.name, client=docker_client), demand=DEMAND,
                     startup_delay=1, poll=0.5) as emulator, \
            registered(realenv, emulator) as cluster:
        query = inflow_capacity(cluster)["query"]
        wait_until("the emulator's inflow in Prometheus",
                   lambda: (prom_value(realenv.prometheus_url, query) or 0) >= DEMAND * 0.75, 90)
        config = write_config(tmp_path / "autoscaler.yaml", [
            swarm_target("smtp", smtp.name, cluster),
            swarm_target("imap", imap.name, cluster),
        ], realenv.prometheus_url)
        done = cli(["run", "--config", str(config), "--once"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        no_traceback(done.stdout, done.stderr)
        for target, service in (("smtp", smtp.name), ("imap", imap.name)):
            lines = decisions(done.stderr, target)
            assert len(lines) == 1, done.stderr
            record = lines[0]
            assert {p["name"] for p in record["policies"]} == POLICY_NAMES
            for p in record["policies"]:
                assert p["state"] == "ok", p
                assert isinstance(p["value"], int | float), p
                assert p["reason"], p
            assert record["current"] == 1
            assert record["outcome"] == "scale_up" and record["desired"] > 1, record
            assert record["written"] is True
            assert spec_replicas(docker_client, service) == record["desired"]


def test_run_dry_run_once_leaves_the_service_byte_for_byte_unchanged(
        realenv: RealEnv, docker_client: Any, env: dict[str, str], busy: str,
        tmp_path: Path) -> None:
    with swarm_service(docker_client, realenv.busybox_image,
                       labels={"com.docker.stack.namespace": "mail"}) as service:
        before = service_snapshot(docker_client, service.name)
        config = write_config(tmp_path / "autoscaler.yaml",
                              [swarm_target("smtp", service.name, busy)],
                              realenv.prometheus_url)
        done = cli(["run", "--config", str(config), "--dry-run", "--once"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert service_snapshot(docker_client, service.name) == before
        [record] = decisions(done.stderr, "smtp")
        assert record["outcome"] == "scale_up" and record["desired"] > 1  # it would have
        assert record["dry_run"] is True
        assert record["written"] is False


def test_per_target_dry_run_writes_only_the_other_target(
        realenv: RealEnv, docker_client: Any, env: dict[str, str], busy: str,
        tmp_path: Path) -> None:
    with swarm_service(docker_client, realenv.busybox_image) as live, \
            swarm_service(docker_client, realenv.busybox_image) as dry:
        before = service_snapshot(docker_client, dry.name)
        config = write_config(tmp_path / "autoscaler.yaml", [
            swarm_target("live", live.name, busy),
            swarm_target("dry", dry.name, busy, dry_run=True),
        ], realenv.prometheus_url)
        done = cli(["run", "--config", str(config), "--once"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        [live_record] = decisions(done.stderr, "live")
        [dry_record] = decisions(done.stderr, "dry")
        assert live_record["written"] is True and live_record["dry_run"] is False
        assert spec_replicas(docker_client, live.name) == live_record["desired"] > 1
        assert dry_record["written"] is False and dry_record["dry_run"] is True
        assert dry_record["desired"] > 1  # decided, not written
        assert service_snapshot(docker_client, dry.name) == before


def test_kubernetes_dry_run_leaves_the_deployment_unchanged(
        realenv: RealEnv, kube_api: Any, env: dict[str, str], busy: str,
        tmp_path: Path) -> None:
    import kubernetes.client as k

    core, apps = k.CoreV1Api(kube_api), k.AppsV1Api(kube_api)
    with namespace_with_deployment(kube_api, "daemon", annotations={"team": "mail"}) as ns:
        def whole() -> str:
            raw = apps.read_namespaced_deployment("smtp", ns, _preload_content=False).data  # type: ignore[attr-defined]
            return json.dumps(json.loads(raw), sort_keys=True)

        before = whole()
        target = {"name": "smtp", "backend": "kubernetes", "namespace": ns,
                  "deployment": "smtp", "min_replicas": 1, "max_replicas": 8,
                  "cooldown": {"up": "0s", "down": "0s"}, "behavior": FAST_BEHAVIOR,
                  "policies": [inflow_capacity(busy), steady_policy()]}
        config = write_config(tmp_path / "autoscaler.yaml", [target], realenv.prometheus_url)
        done = cli(["run", "--config", str(config), "--dry-run", "--once"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert whole() == before
        [record] = decisions(done.stderr, "smtp")
        assert record["outcome"] == "scale_up" and record["desired"] > 1
        assert record["written"] is False and record["dry_run"] is True
        assert core.list_namespaced_event(ns).items == []  # events are writes too


# --------------------------------------------------------------------------- long-running


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_daemon_serves_health_and_metrics_and_stops_on_signal(
        realenv: RealEnv, docker_client: Any, env: dict[str, str], busy: str, tmp_path: Path,
        signum: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with swarm_service(docker_client, realenv.busybox_image) as service:
        config = write_config(tmp_path / "autoscaler.yaml",
                              [swarm_target("smtp", service.name, busy)],
                              realenv.prometheus_url, listen=f"127.0.0.1:{port}")
        with daemon(config, env, tmp_path) as d:
            healthz = wait_until("/healthz 200",
                                 lambda: (s := status_json(base, "/healthz")) and s[0] == 200
                               and s, START)
            assert healthz[1]["status"] == "ok"
            first = wait_ticks(base, 0)  # Prometheus and the backend have been asked
            readyz = wait_until("/readyz 200",
                                lambda: (s := status_json(base, "/readyz")) and s[0] == 200
                              and s, START)
            assert readyz[1]["problems"] == {} and readyz[1]["config_loaded"] is True
            text = http_get(f"{base}/metrics")
            assert text is not None and text.status_code == 200
            assert re.search(r'autoscaler_target_desired_replicas\{[^}]*target="smtp"', text.text)
            samples = metric_samples(base)
            desired = samples.get(("autoscaler_target_desired_replicas",
                                   (("target", "smtp"),)))
            assert desired is not None and desired > 1, samples
            wait_ticks(base, first, "ticks increasing")
            assert d.alive()
            code = d.stop(signum)
            assert code == 0, d.log_text()
            lines = [line for line in d.log_text().splitlines() if line.strip()]
            assert json.loads(lines[-1])["message"] == "stopped", lines[-3:]
            no_traceback(d.log_text())


def test_missing_service_next_to_a_healthy_target(
        realenv: RealEnv, docker_client: Any, env: dict[str, str], busy: str,
        tmp_path: Path) -> None:
    ghost = f"e2e-missing-{uuid.uuid4().hex[:8]}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with swarm_service(docker_client, realenv.busybox_image) as service:
        config = write_config(tmp_path / "autoscaler.yaml", [
            swarm_target("ghost", ghost, busy),
            swarm_target("smtp", service.name, busy),
        ], realenv.prometheus_url, listen=f"127.0.0.1:{port}")
        # One tick: the healthy target is decided and scaled in the tick the other fails.
        done = cli(["run", "--config", str(config), "--once"], env, tmp_path)
        assert done.returncode == 1, done.stderr  # a target failed
        no_traceback(done.stderr)
        [record] = decisions(done.stderr, "smtp")
        assert record["written"] is True and record["desired"] > 1
        assert spec_replicas(docker_client, service.name) == record["desired"]
        [error] = target_errors(done.stderr, "ghost")
        assert ghost in error["error"] and "not found" in error["error"]
        assert decisions(done.stderr, "ghost") == []
        # Running: the missing target is reported and the daemon keeps going.
        with daemon(config, env, tmp_path) as d:
            readyz = wait_until("/statusz naming the missing target",
                                lambda: (s := status_json(base, "/statusz")) and s[0] == 503
                              and "ghost" in s[1]["problems"] and s, START)
            assert "smtp" not in readyz[1]["problems"]
            assert ghost in readyz[1]["problems"]["ghost"]
            wait_ticks(base, 3)
            assert d.alive()
            log = d.log_text()
            assert len(target_errors(log, "ghost")) >= 3
            assert len(decisions(log, "smtp")) >= 3
            assert any(r.get("level") == "ERROR" and "ghost" in r.get("message", "")
                       for r in json_lines(log))
            assert d.stop() == 0


@dataclass
class SlowRun:
    daemon: DaemonProcess
    base: str
    service: str
    server: SilentServer


@pytest.fixture(scope="module")
def slow_run(realenv: RealEnv, docker_client: Any, busy: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowRun]:
    """A daemon with a Kubernetes target whose API server accepts and never answers (listed
    first) next to a healthy Swarm target on the real dockerd."""
    workdir = tmp_path_factory.mktemp("slow-backend")
    port = free_port()
    with SilentServer() as server, \
            swarm_service(docker_client, realenv.busybox_image) as service:
        kubeconfig = write_kubeconfig(workdir / "slow-kubeconfig",
                                      f"http://127.0.0.1:{server.port}")
        slow = {"name": "slow", "backend": "kubernetes", "namespace": "mail",
                "deployment": "smtp", "min_replicas": 1, "max_replicas": 8,
                "policies": [inflow_capacity(busy)]}
        config = write_config(workdir / "autoscaler.yaml",
                              [slow, swarm_target("smtp", service.name, busy)],
                              realenv.prometheus_url, timeout="3s", listen=f"127.0.0.1:{port}")
        with daemon(config, cli_env(realenv, kubeconfig), workdir) as d:
            yield SlowRun(d, f"http://127.0.0.1:{port}", service.name, server)


def test_slow_backend_times_out_while_the_healthy_target_is_scaled(
        slow_run: SlowRun, docker_client: Any) -> None:
    d, base = slow_run.daemon, slow_run.base
    written = wait_until("the healthy target scaled",
                         lambda: [r for r in decisions(d.log_text(), "smtp") if r["written"]],
                         START)
    assert written[0]["outcome"] == "scale_up" and written[0]["desired"] > 1
    assert spec_replicas(docker_client, slow_run.service) == written[-1]["desired"]
    readyz = wait_until("/statusz naming the slow target",
                        lambda: (s := status_json(base, "/statusz")) and s[0] == 503
                      and "slow" in s[1]["problems"] and s, START)
    assert "timed out" in readyz[1]["problems"]["slow"] \
        or "did not answer" in readyz[1]["problems"]["slow"], readyz
    errors = wait_until("the slow target's error in the log",
                        lambda: target_errors(d.log_text(), "slow"), START)
    assert f"127.0.0.1:{slow_run.server.port} did not answer" in errors[0]["error"]
    assert decisions(d.log_text(), "slow") == []  # never decided on a status it could not read
    wait_ticks(base, 2)
    assert d.alive()


def test_slow_backend_never_starves_the_healthy_target(slow_run: SlowRun) -> None:
    d, base = slow_run.daemon, slow_run.base
    wait_ticks(base, 5)
    status = status_json(base, "/statusz")
    assert d.alive()
    assert status is not None and set(status[1]["problems"]) == {"slow"}, status
    log = d.log_text()
    assert target_errors(log, "smtp") == []
    smtp = decisions(log, "smtp")
    assert len(smtp) >= 5
    assert all(p["state"] == "ok" for r in smtp for p in r["policies"]), smtp


def test_kubernetes_read_without_answer_is_tried_once(tmp_path: Path) -> None:
    from autoscaler.actuators.base import ActuatorError
    from autoscaler.actuators.kubernetes import KubernetesActuator
    from autoscaler.kube import kubernetes_api_client

    with SilentServer() as server:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.port}")
        client = kubernetes_api_client(str(kubeconfig))
        try:
            actuator = KubernetesActuator(client, "deployment", "mail", "smtp", timeout=1.0)
            with pytest.raises(ActuatorError, match="did not answer within 1s"):
                actuator.status()
        finally:
            client.close()
        assert server.accepted == 1


@dataclass
class SilentPrometheusRun:
    daemon: DaemonProcess
    base: str
    first_readyz: tuple[int, dict[str, Any]]
    first_statusz: tuple[int, dict[str, Any]]


@pytest.fixture(scope="module")
def silent_prometheus_run(
        realenv: RealEnv, docker_client: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[SilentPrometheusRun]:
    """A daemon whose Prometheus accepts and never answers (timeout 3 s, interval 1 s: the
    config allows a timeout above the interval), with a healthy Swarm target; records the
    first /readyz and /statusz answers it gives."""
    workdir = tmp_path_factory.mktemp("silent-prometheus")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with SilentServer() as prometheus, \
            swarm_service(docker_client, realenv.busybox_image) as service:
        config = write_config(workdir / "autoscaler.yaml",
                              [swarm_target("smtp", service.name, "nowhere")],
                              f"http://127.0.0.1:{prometheus.port}", timeout="3s",
                              listen=f"127.0.0.1:{port}")
        with daemon(config, cli_env(realenv), workdir) as d:
            first = wait_until("a first /readyz answer", lambda: status_json(base, "/readyz"),
                               START)
            first_status = wait_until("a first /statusz answer",
                                      lambda: status_json(base, "/statusz"), START)
            yield SilentPrometheusRun(d, base, first, first_status)


def test_ready_while_prometheus_never_answers_the_degradation_in_status(
        silent_prometheus_run: SilentPrometheusRun) -> None:
    """Readiness is "running with a loaded config" (a rollout must complete during a
    Prometheus outage): /readyz is 200 from the start and says `degraded`; /statusz is 503,
    first as starting, then naming Prometheus; the `degraded` metric says so too."""
    run = silent_prometheus_run
    assert run.first_readyz[0] == 200 and run.first_readyz[1]["config_loaded"] is True
    assert run.first_readyz[1]["degraded"] is True, run.first_readyz  # nothing checked yet
    assert run.first_statusz[0] == 503, run.first_statusz
    later = wait_until("/statusz naming prometheus after a tick",
                       lambda: ticks(run.base) >= 1 and (s := status_json(run.base, "/statusz"))
                       and "prometheus" in s[1]["problems"] and s, START)
    assert later[0] == 503 and later[1]["status"] == "degraded", later  # it never answers
    ready = status_json(run.base, "/readyz")
    assert ready is not None and ready[0] == 200, ready
    assert ready[1]["degraded"] is True and "prometheus" in ready[1]["problems"], ready
    assert metric_samples(run.base).get(("autoscaler_degraded", ())) == 1.0
    assert metric_samples(run.base).get(
        ("autoscaler_problem", (("component", "prometheus"),))) == 1.0


def test_healthz_stays_ok_while_prometheus_does_not_answer(
        silent_prometheus_run: SilentPrometheusRun) -> None:
    run = silent_prometheus_run
    start = ticks(run.base)
    seen: list[int] = []

    def polled_three_ticks() -> bool:
        status = status_json(run.base, "/healthz")
        seen.append(status[0] if status else 0)
        return ticks(run.base) >= start + 3

    wait_until("three more ticks", polled_three_ticks, START, 0.2)
    assert run.daemon.alive()
    assert set(seen) == {200}, seen


def test_paused_service_is_decided_but_never_written(
        realenv: RealEnv, docker_client: Any, env: dict[str, str], busy: str,
        tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with swarm_service(docker_client, realenv.busybox_image,
                       labels={"autoscaler.paused": "true"}) as service:
        before = service_snapshot(docker_client, service.name)
        config = write_config(tmp_path / "autoscaler.yaml",
                              [swarm_target("smtp", service.name, busy)],
                              realenv.prometheus_url, listen=f"127.0.0.1:{port}")
        with daemon(config, env, tmp_path) as d:
            wait_until("four decisions", lambda: len(decisions(d.log_text(), "smtp")) >= 4, START)
            paused = metric_samples(base).get(("autoscaler_target_paused", (("target", "smtp"),)))
            assert paused == 1
            assert d.stop() == 0
        records = decisions(d.log_text(), "smtp")
        assert all(r["outcome"] == "paused" for r in records), records
        assert all(r["written"] is False for r in records)
        assert all(r["recommended"] > 1 for r in records)  # demand calls for a scale-up
        assert service_snapshot(docker_client, service.name) == before


# --------------------------------------------------------------------------- explain


def two_targets(tmp_path: Path, smtp: str, imap: str, cluster: str,
                prometheus_url: str) -> Path:
    return write_config(tmp_path / "autoscaler.yaml", [
        swarm_target("smtp", smtp, cluster),
        swarm_target("imap", imap, cluster),
    ], prometheus_url)


def test_explain_prints_a_table_per_target_and_writes_nothing(
        realenv: RealEnv, docker_client: Any, env: dict[str, str], busy: str,
        tmp_path: Path) -> None:
    with swarm_service(docker_client, realenv.busybox_image) as smtp, \
            swarm_service(docker_client, realenv.busybox_image) as imap:
        before = [service_snapshot(docker_client, s.name) for s in (smtp, imap)]
        config = two_targets(tmp_path, smtp.name, imap.name, busy,
                             realenv.prometheus_url)
        done = cli(["explain", "--config", str(config)], env, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        no_traceback(done.stdout, done.stderr)
        blocks = done.stdout.strip().split("\n\n")
        assert len(blocks) == 2, done.stdout
        for name, block in zip(("smtp", "imap"), blocks, strict=True):
            head, columns, *rows = block.splitlines()
            assert head.startswith(f"target {name} (swarm): current 1"), head
            assert "desired" in head and "scale_up" in head
            assert columns.split() == ["policy", "state", "value", "replicas", "reason"]
            by_policy = {row.split()[0]: row.split() for row in rows}
            assert set(by_policy) >= POLICY_NAMES, block
            inflow, steady = by_policy["inflow"], by_policy["steady"]
            assert inflow[1] == "ok" and float(inflow[2]) > 0 and int(inflow[3]) > 1
            assert steady[1:4] == ["ok", "50", "1"]
            assert len(inflow) > 4 and len(steady) > 4  # a reason follows
        assert [service_snapshot(docker_client, s.name) for s in (smtp, imap)] == before


def test_explain_json_gives_a_decision_per_target(
        realenv: RealEnv, docker_client: Any, env: dict[str, str], busy: str,
        tmp_path: Path) -> None:
    with swarm_service(docker_client, realenv.busybox_image) as smtp, \
            swarm_service(docker_client, realenv.busybox_image) as imap:
        before = [service_snapshot(docker_client, s.name) for s in (smtp, imap)]
        config = two_targets(tmp_path, smtp.name, imap.name, busy,
                             realenv.prometheus_url)
        done = cli(["explain", "--config", str(config), "--json"], env, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        listed = json.loads(done.stdout)
        assert [entry["target"] for entry in listed] == ["smtp", "imap"]
        for entry in listed:
            assert entry["error"] is None
            d = entry["decision"]
            assert d["target"] == entry["target"] and d["current"] == 1
            assert d["desired"] > 1 and d["dry_run"] is True
            assert {p["name"] for p in d["policies"]} == POLICY_NAMES
        assert [service_snapshot(docker_client, s.name) for s in (smtp, imap)] == before


def test_explain_with_prometheus_unreachable_shows_errors_and_exits_1(
        realenv: RealEnv, docker_client: Any, env: dict[str, str], tmp_path: Path) -> None:
    with swarm_service(docker_client, realenv.busybox_image) as smtp, \
            swarm_service(docker_client, realenv.busybox_image) as imap:
        config = write_config(tmp_path / "autoscaler.yaml", [
            swarm_target("smtp", smtp.name, "nowhere"),
            swarm_target("imap", imap.name, "nowhere"),
        ], f"http://127.0.0.1:{closed_port()}", timeout="3s")
        done = cli(["explain", "--config", str(config)], env, tmp_path)
        no_traceback(done.stdout, done.stderr)
        blocks = done.stdout.strip().split("\n\n")
        assert [b.splitlines()[0].split()[1] for b in blocks] == ["smtp", "imap"], done.stdout
        for block in blocks:
            rows = {line.split()[0]: line.split() for line in block.splitlines()[2:]}
            assert set(rows) >= POLICY_NAMES, block
            assert all(rows[name][1] == "error" for name in POLICY_NAMES), block
        assert spec_replicas(docker_client, smtp.name) == 1
        assert done.returncode == 1, done.stdout + done.stderr


# --------------------------------------------------------------------------- bad input

BAD_CONFIG = """\
evaluation_interval: 5x
prometheus:
  url: http://127.0.0.1:9
  tmeout: 5s
targets:
  - name: smtp
    backend: swarm
    min_replicas: 5
    max_replicas: 2
    policies:
      - {type: capacity, query: 'sum(x)', per_instance: -1}
  - name: imap
    backend: kubernetes
    deployment: imap
    policies:
      - {type: threshold, query: 'avg(cpu)', scale_up_above: 30, scale_down_below: 70}
"""
# (line, key) of every problem in BAD_CONFIG
BAD_CONFIG_ISSUES = [
    (1, "evaluation_interval"),
    (4, "prometheus.tmeout"),
    (6, "targets[0].service"),
    (8, "targets[0].min_replicas"),
    (11, "targets[0].policies[0].per_instance"),
    (12, "targets[1].max_replicas"),
    (12, "targets[1].namespace"),
    (16, "targets[1].policies[0].scale_down_below"),
]


def test_run_with_an_invalid_config_lists_every_problem_and_exits_2(
        env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(BAD_CONFIG)
    done = cli(["run", "--config", str(config)], env, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    no_traceback(done.stdout, done.stderr)
    listed = [line.strip() for line in done.stderr.splitlines()]
    for line, key in BAD_CONFIG_ISSUES:
        assert any(entry.startswith(f"{config}:{line}: {key}:") for entry in listed), \
            (line, key, done.stderr)
    numbered = [entry for entry in listed if re.match(rf"{re.escape(str(config))}:\d+: ", entry)]
    assert len(numbered) >= len(BAD_CONFIG_ISSUES), done.stderr
    header = f"{config}: {len(numbered)} problem(s):"
    assert header in listed, done.stderr  # every problem listed has a file:line
