"""Faults of the daemon itself, on a real `autoscaler run` process scaling a real Swarm service:
a broken config file on SIGHUP, SIGTERM in the middle of a tick, SIGKILL in the middle of a
tick followed by a restart.

"In the middle of a tick" is made reliable, not lucky: the daemon reads the shared Prometheus
through a fault proxy process (tests/support/fault_proxy.py) that holds every query for
a few seconds; a tick is in flight exactly while the proxy reports a held request
(`in_flight`), and that is when the test sends the signal. A tick reads the service before it
queries, and writes after, so the signal lands between its read and its write.

The demand comes from a tiny exporter process (tests/support/fault_exporter.py) that the
shared Prometheus scrapes through a file_sd entry of the test's own (label `cluster`).
test_reload.py covers a reload rejected for invalid values (file:line and key of each) and a
valid reload keeping state; here: a file that is not YAML and a file that is gone, then a
valid one, on the same process.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.daemon import DaemonProcess, daemon, daemon_env
from tests.support.e2e import prom_value, spec_replicas, swarm_service
from tests.support.faults import Exporter, FaultProxy, file_sd_target
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(600)

DEADLINE = 60.0  # for anything to show (generous)
HELD = 3.0  # seconds the proxy holds each query: the window in which a tick is in flight
TIMEOUT = 6.0  # prometheus.timeout, above HELD: a held query is answered within the tick
NO_DELAY = {direction: {"stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": 20, "periodSeconds": 1}]}
            for direction in ("scaleUp", "scaleDown")}


@dataclass
class Rig:
    realenv: RealEnv
    docker: Any
    workdir: Path
    exporter: Exporter
    proxy: FaultProxy
    cluster: str

    def query(self) -> str:
        return f'max(fault_load{{cluster="{self.cluster}"}})'

    def demand(self, emails_per_hour: float) -> None:
        """Set the exporter's load and wait until Prometheus answers it."""
        self.exporter.set_load(emails_per_hour)
        wait_until(f"load {emails_per_hour:g} in Prometheus",
                   lambda: prom_value(self.realenv.prometheus_url, self.query())
                 == emails_per_hour, DEADLINE)

    def config(self, service: str, name: str = "autoscaler.yaml", port: int | None = None,
               headroom: float = 1.5, **target: Any) -> tuple[Path, int]:
        port = port or free_port()
        path = self.workdir / name
        path.write_text(yaml.safe_dump({
            "evaluation_interval": "1s",
            # A fixed query offset: no start-up probe, so the first query the proxy holds is
            # the first tick's (with `auto` the probe would be held before SIGTERM is handled).
            "prometheus": {"url": self.proxy.url, "timeout": f"{TIMEOUT:g}s",
                           "scrape_interval": "1s", "query_offset": "0s"},
            "listen": f"127.0.0.1:{port}",
            "targets": [{
                "name": "smtp", "backend": "swarm", "service": service, "min_replicas": 1,
                "max_replicas": 8, "behavior": NO_DELAY,
                "cooldown": {"up": "0s", "down": "0s"},
                "policies": [{"type": "capacity", "name": "load", "query": self.query(),
                              "per_instance": 10000, "headroom": headroom}],
                **target}],
        }, sort_keys=False))
        return path, port

    def env(self) -> dict[str, str]:
        return daemon_env(DOCKER_HOST=self.realenv.docker_host)

    def held_tick(self, d: DaemonProcess, hold: float = HELD) -> int:
        """Hold queries and wait until a tick started now is waiting on one; return how many
        decisions were logged by then (a tick in flight has not logged its own)."""
        self.proxy.set("delay", hold)
        seen = int(self.proxy.status()["requests"])

        def holding() -> bool:
            status = self.proxy.status()
            return bool(status["requests"] > seen and status["in_flight"] >= 1)

        wait_until("a tick waiting on a held query", holding, DEADLINE, 0.05)
        return len(d.decisions())


@pytest.fixture(scope="module")
def rig(realenv: RealEnv, docker_client: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("faults-daemon")
    cluster = uuid.uuid4().hex[:8]
    exporter = Exporter(20000.0, 0.0)
    exporter.start()
    sd = file_sd_target(realenv.prometheus_file_sd_dir, exporter.address, cluster)
    proxy = FaultProxy(realenv.prometheus_url)
    try:
        proxy.start()
        rig = Rig(realenv, docker_client, workdir, exporter, proxy, cluster)
        rig.demand(20000.0)
        yield rig
    finally:
        sd.unlink(missing_ok=True)
        proxy.stop()
        exporter.stop()


@pytest.fixture(autouse=True)
def passing(rig: Rig) -> Iterator[None]:
    rig.proxy.set("pass")
    yield
    rig.proxy.set("pass")


def labels_of(docker: Any, service: str) -> tuple[dict[str, str], dict[str, Any]]:
    """(current labels, previous spec) of a service: Swarm keeps the spec before the last
    update, so one write of replicas + labels leaves a previous spec with neither."""
    attrs = docker.api.inspect_service(service)
    return dict(attrs["Spec"].get("Labels") or {}), attrs.get("PreviousSpec") or {}


def replicas_of(spec: dict[str, Any]) -> int:
    return int(spec["Mode"]["Replicated"]["Replicas"])


def own(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith("autoscaler.")}


def no_traceback(d: DaemonProcess) -> None:
    assert "Traceback" not in d.log_text(), d.log_text()[-3000:]


# --------------------------------------------------------------------------- SIGHUP


def test_a_broken_config_on_sighup_keeps_the_old_one_then_a_valid_one_applies(
        rig: Rig) -> None:
    """Not YAML, then no file at all: each rejected, logged with the file (and line), counted;
    the old config keeps deciding; a valid file then applies on the same process."""
    rig.demand(20000.0)  # headroom 1.5 -> 3: the service's size, nothing to write
    with swarm_service(rig.docker, rig.realenv.busybox_image, replicas=3) as service:
        config, port = rig.config(service.name, "reload.yaml")
        good = config.read_text()
        with daemon(config, rig.env(), rig.workdir, port=port, label="reload") as d:
            wait_until("a first decision", lambda: d.decisions("smtp"), DEADLINE)

            def failures() -> float:
                return d.metric("autoscaler_config_reload_failures_total") or 0.0

            assert failures() == 0
            broken: list[tuple[str, Callable[[], object], str]] = [
                ("not YAML", lambda: config.write_text(good.replace("targets:", "targets: [")),
                 f"{config}:"),
                ("gone", config.unlink, f"{config}: (top level): cannot read"),
            ]
            for count, (what, breaks, named) in enumerate(broken, start=1):
                breaks()
                mark = len(d.records())
                d.signal(signal.SIGHUP)
                wait_until(f"reload failure {count} ({what}) counted",
                           lambda c=count: failures() == c, DEADLINE)
                logged = [str(r.get("message", "")) for r in d.records()[mark:]]
                assert any(m.startswith("config reload rejected: ") and named in m
                           for m in logged), (what, logged)
                assert any("the running config stays" in m for m in logged), logged
                later = wait_until(f"decisions after the rejected reload ({what})",
                                   lambda m=mark: len(
                    [r for r in d.records()[m:] if r.get("event") == "decision"]) >= 2 and
                    [r for r in d.records()[m:] if r.get("event") == "decision"], DEADLINE)
                assert all(r["recommended"] == 3 for r in later), later  # the old policy
                assert d.alive()
            # the same policy with headroom 3.0: 20,000/h -> 6
            config.write_text(good.replace("headroom: 1.5", "headroom: 3.0"))
            mark = len(d.records())
            d.signal(signal.SIGHUP)
            wait_until("the valid reload applied (6 replicas)",
                       lambda: spec_replicas(rig.docker, service.name) == 6, DEADLINE)
            assert any("config reloaded from" in str(r.get("message", ""))
                       for r in d.records()[mark:])
            assert failures() == 2
            assert d.stop() == 0
        no_traceback(d)


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_mid_tick_finishes_the_tick_and_writes_once(rig: Rig) -> None:
    """SIGTERM while a tick waits on Prometheus: the tick finishes, its write (replicas and
    state labels) is one update, the process exits 0."""
    rig.demand(40000.0)  # -> 6
    with swarm_service(rig.docker, rig.realenv.busybox_image, replicas=2) as service:
        config, port = rig.config(service.name, "sigterm.yaml")
        rig.proxy.set("delay", HELD)  # from the first tick on
        with daemon(config, rig.env(), rig.workdir, port=port, label="sigterm") as d:
            logged = rig.held_tick(d)
            assert logged == 0  # the first tick is the one in flight
            assert spec_replicas(rig.docker, service.name) == 2
            signalled = time.monotonic()
            d.signal(signal.SIGTERM)
            assert d.proc.wait(timeout=DEADLINE) == 0
            print(f"\n[sigterm] exited 0 {time.monotonic() - signalled:.1f}s after the signal")
        [record] = d.decisions("smtp")  # the tick in flight finished; no other started
        assert (record["current"], record["desired"], record["written"]) == (2, 6, True), record
        labels, previous = labels_of(rig.docker, service.name)
        assert spec_replicas(rig.docker, service.name) == 6
        assert own(labels)["autoscaler.last-replicas"] == "6"
        assert own(labels)["autoscaler.last-scale-direction"] == "up"
        # one update: the spec before it had the old count and none of our labels
        assert replicas_of(previous) == 2
        assert not own(dict(previous.get("Labels") or {}))
        assert any(r.get("message") == "stopped" for r in d.records())
        no_traceback(d)


def test_sigterm_while_prometheus_hangs_abandons_the_tick_at_its_deadline(rig: Rig) -> None:
    """SIGTERM while a query hangs past `prometheus.timeout`: the tick does not wait for it
    beyond its deadline, decides on the `error` signals (hold, no write) and the process
    exits 0."""
    rig.demand(40000.0)  # -> 6, were it read
    with swarm_service(rig.docker, rig.realenv.busybox_image, replicas=2) as service:
        config, port = rig.config(service.name, "sigterm-hung.yaml")
        rig.proxy.set("delay", 10 * TIMEOUT)  # far past the timeout and the tick's deadline
        with daemon(config, rig.env(), rig.workdir, port=port, label="sigterm-hung") as d:
            rig.held_tick(d, 10 * TIMEOUT)
            d.signal(signal.SIGTERM)
            assert d.proc.wait(timeout=DEADLINE) == 0
        [record] = d.decisions("smtp")
        assert (record["current"], record["desired"], record["written"]) == (2, 2, False)
        [policy] = record["policies"]
        assert policy["state"] == "error" and "timed out" in policy["reason"], policy
        assert spec_replicas(rig.docker, service.name) == 2
        labels, _ = labels_of(rig.docker, service.name)
        assert not own(labels)
        no_traceback(d)


# --------------------------------------------------------------------------- SIGKILL


def test_sigkill_mid_tick_leaves_consistent_state_that_a_restart_adopts(rig: Rig) -> None:
    """A daemon scales 2 -> 6 (state labels written with it), then is SIGKILLed while a tick
    that would scale to 8 waits on Prometheus. The service and its labels agree (6 and 6: the
    killed tick wrote nothing), and the update that made them changed replicas and labels
    together. A restarted daemon, asked for 3, takes the count as its own write (no manual
    change) and holds it: the down cooldown runs from the scale-up the labels record, not
    from its own start, which knows nothing of it."""
    rig.demand(40000.0)  # -> 6
    with swarm_service(rig.docker, rig.realenv.busybox_image, replicas=2) as service:
        config, port = rig.config(service.name, "sigkill.yaml",
                                  cooldown={"up": "0s", "down": "300s"})
        with daemon(config, rig.env(), rig.workdir, port=port, label="killed") as first:
            wait_until("the first daemon's scale-up to 6",
                       lambda: spec_replicas(rig.docker, service.name) == 6, DEADLINE)
            rig.held_tick(first)  # a tick evaluated before the demand moves: it holds 6
            rig.demand(60000.0)  # -> 9, clamped to 8
            rig.held_tick(first)  # a tick evaluated after: it would write 8
            first.signal(signal.SIGKILL)
            assert first.proc.wait(timeout=DEADLINE) == -signal.SIGKILL
        written = [r["desired"] for r in first.decisions("smtp") if r["written"]]
        labels, previous = labels_of(rig.docker, service.name)
        now = spec_replicas(rig.docker, service.name)
        assert now == written[-1] and written[0] == 6, (now, written)
        assert own(labels)["autoscaler.last-replicas"] == str(now), own(labels)
        # the last update changed both: before it, the count and labels of the write before
        before = dict(previous.get("Labels") or {})
        if written == [6]:
            assert replicas_of(previous) == 2 and not own(before)
        else:  # a tick released before the kill had read 60000 already (a slow scrape)
            assert written == [6, 8], written
            assert replicas_of(previous) == 6 and own(before)["autoscaler.last-replicas"] == "6"
        scaled_at = float(own(labels)["autoscaler.last-scale-time"])

        rig.proxy.set("pass")
        rig.demand(20000.0)  # -> 3: a scale-down the cooldown must hold back
        with daemon(config, rig.env(), rig.workdir, port=port, label="restarted") as second:
            held = wait_until("three decisions of the restarted daemon",
                              lambda: len(second.decisions("smtp")) >= 3
                            and second.decisions("smtp"), DEADLINE)
            for r in held:
                kinds = {c["kind"] for c in r["clips"]}
                assert (r["current"], r["recommended"], r["desired"]) == (now, 3, now), r
                assert "cooldown" in kinds and "manual_override" not in kinds, r
                assert r["written"] is False
            assert second.metric("autoscaler_clips_total", target="smtp", kind="cooldown")
            assert second.metric("autoscaler_clips_total", target="smtp",
                                 kind="manual_override") is None
            assert not any("manual" in str(r.get("message", "")) for r in second.records())
            assert spec_replicas(rig.docker, service.name) == now
            after, _ = labels_of(rig.docker, service.name)
            assert float(own(after)["autoscaler.last-scale-time"]) == scaled_at  # unchanged
            assert second.stop() == 0
        no_traceback(first)
        no_traceback(second)
