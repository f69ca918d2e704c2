"""Docker Swarm faults on real processes: the engine stopped mid-tick and restarted, the
service deleted and recreated, an update conflict, and the leader's node demoted.

The swarm is the test's own (swarm_cluster.py: three dockerds in network namespaces), so
its engines can be frozen, stopped and demoted without touching the shared dockerd.
Prometheus is the shared one, asked only for `vector(30000)`: a fixed wish of 3 replicas,
so whatever the daemon writes is explained by the fault alone. Every wait is a generous
deadline; how long a recovery took is printed and recorded as a test property, never
asserted (docs/reliability.md, "Fault matrix: Docker Swarm", has the figures).
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import pytest
import requests
import yaml

from autoscaler.actuators.swarm import SwarmActuator
from autoscaler.config import load_config_data
from autoscaler.loop import Engine
from autoscaler.model import TargetStatus
from autoscaler.sources.prometheus import PrometheusSource
from autoscaler.telemetry import Telemetry
from tests.support.daemon import (
    DaemonProcess,
    daemon,
    daemon_env,
    errors_after,
    readyz,
    registry_sample,
    statusz,
    writes,
)
from tests.support.e2e import FAST_BEHAVIOR
from tests.support.realenv import RealEnv
from tests.support.swarm_cluster import Manager, SwarmCluster, swarm_cluster
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(600)

INTERVAL = 1.0  # evaluation_interval of every daemon here
DEADLINE = 90.0  # for anything to happen: generous, many times the expected time
MIN, MAX = 1, 5
WANTED = 3  # what the policy asks for: ceil(30000 / 10000 x 1)
LABEL = "autoscaler."
ERRORS = "autoscaler_actuation_errors_total"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(realenv: RealEnv, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[SwarmCluster]:
    logs = tmp_path_factory.mktemp("swarm-faults")
    with swarm_cluster(logs, realenv.docker_host, realenv.busybox_image) as c:
        yield c


def engine_of(cluster: SwarmCluster, *, avoid: Manager | None = None) -> Manager:
    """A running manager other than `avoid` whose engine answers."""
    for m in cluster.running():
        if m is avoid:
            continue
        try:
            with m.engine(timeout=5) as c:
                if c.info()["Swarm"].get("ControlAvailable"):
                    return m
        except (docker.errors.DockerException, requests.RequestException, OSError):
            continue
    raise AssertionError("no manager answers")


def retried(call: Callable[[docker.DockerClient], Any], via: Callable[[], Manager]) -> Any:
    """`call(client)` on a manager, retried while the swarm cannot take it (an election)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            with via().engine(timeout=10) as c:
                return call(c)
        except (docker.errors.DockerException, requests.RequestException, OSError,
                AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def create_service(cluster: SwarmCluster, name: str, replicas: int) -> str:
    def create(c: docker.DockerClient) -> str:
        return str(c.services.create(
            cluster.image, ["sleep", "100000"], name=name,
            mode=docker.types.ServiceMode("replicated", replicas=replicas),
            stop_grace_period=1_000_000_000).id)
    return str(retried(create, lambda: engine_of(cluster)))


def inspect(cluster: SwarmCluster, name: str) -> dict[str, Any] | None:
    """The service as a live manager sees it; None when it does not exist."""
    def read(c: docker.DockerClient) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = c.api.inspect_service(name)
            return attrs
        except docker.errors.NotFound:
            return None
    result: dict[str, Any] | None = retried(read, lambda: engine_of(cluster))
    return result


def replicas(cluster: SwarmCluster, name: str) -> int | None:
    attrs = inspect(cluster, name)
    return None if attrs is None else int(attrs["Spec"]["Mode"]["Replicated"]["Replicas"])


def scale_by_hand(cluster: SwarmCluster, name: str, count: int,
                  avoid: Manager | None = None) -> None:
    retried(lambda c: c.services.get(name).scale(count), lambda: engine_of(cluster, avoid=avoid))


def remove_service(cluster: SwarmCluster, name: str) -> None:
    def remove(c: docker.DockerClient) -> None:
        with suppress(docker.errors.NotFound):
            c.api.remove_service(name)
    retried(remove, lambda: engine_of(cluster))


def target(name: str, *, cooldown: str = "0s") -> dict[str, Any]:
    return {"name": name, "backend": "swarm", "service": name,
            "min_replicas": MIN, "max_replicas": MAX,
            "cooldown": {"up": cooldown, "down": cooldown}, "behavior": FAST_BEHAVIOR,
            "policies": [{"type": "capacity", "name": "fixed", "query": "vector(30000)",
                          "per_instance": 10000, "headroom": 1}]}


def start_daemon(stack: ExitStack, workdir: Path, manager: Manager, prometheus_url: str,
                 service: str, *, mode: str = "none", cooldown: str = "0s",
                 label: str | None = None) -> DaemonProcess:
    """`autoscaler run` against `manager`'s engine only."""
    port = free_port()
    label = label or f"{service}-{manager.name}"
    config = workdir / f"{label}.yaml"
    config.write_text(yaml.safe_dump({
        "evaluation_interval": INTERVAL,
        "prometheus": {"url": prometheus_url, "timeout": "3s", "scrape_interval": "1s"},
        "listen": f"127.0.0.1:{port}",
        "leader_election": {"mode": mode},
        "targets": [target(service, cooldown=cooldown)],
    }, sort_keys=False))
    env = daemon_env(drop=("DOCKER_",), DOCKER_HOST=manager.docker_host)
    return stack.enter_context(daemon(config, env, workdir, port=port, label=label))


def assert_never_outside_bounds_nor_down_on_error(d: DaemonProcess) -> None:
    for r in d.decisions():
        assert MIN <= r["desired"] <= MAX, r
        if r["written"]:  # the only wish here is 3: nothing is ever written below it
            assert r["desired"] == WANTED, r
    assert "Traceback" not in d.log_text()


def record_figures(title: str, figures: dict[str, float],
                   record_property: Callable[[str, object], None]) -> None:
    print(f"\n{title}, seconds:")
    for what, value in figures.items():
        print(f"  {what:<60} {value:6.2f}")
        record_property(what, round(value, 3))


# --------------------------------------------------------------------------- 1. dockerd


# One scenario, step by step, read top to bottom: clearer as one function.
def test_dockerd_frozen_mid_tick_then_stopped_and_restarted(  # noqa: PLR0915
        cluster: SwarmCluster, realenv: RealEnv, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    """The daemon's engine (a follower manager) is frozen while the daemon's read waits on
    it, stopped, and started again: the daemon keeps running and holds the size, says why in
    its log, metrics and /statusz, and restores the count once the engine is back."""
    name = f"fd-{uuid.uuid4().hex[:6]}"
    create_service(cluster, name, replicas=1)
    raft_leader = wait_until("a Raft leader", cluster.leader, DEADLINE)
    engine = next(m for m in cluster.managers if m is not raft_leader)  # no election needed
    with ExitStack() as stack:
        stack.callback(remove_service, cluster, name)
        d = start_daemon(stack, tmp_path, engine, realenv.prometheus_url, name)
        wait_until("the first scale", lambda: replicas(cluster, name) == WANTED, DEADLINE)
        wait_until("the daemon ready", lambda: (statusz(d) or (0,))[0] == 200, DEADLINE)
        errors_before = d.metric(ERRORS, target=name, verb="status") or 0.0

        # Frozen: the next tick's read hangs inside the engine's socket, mid-tick.
        engine.send(signal.SIGSTOP)
        frozen_at = time.time()
        try:
            wait_until("the hung read reported as the target's error",
                       lambda: errors_after(d, frozen_at), DEADLINE)
        finally:
            # Stopped while the daemon's calls are still in flight.
            engine.send(signal.SIGTERM)
            engine.send(signal.SIGCONT)
        assert engine.stop(timeout=DEADLINE) == 0
        stopped_at = time.time()

        # Down: an operator scales the service down through another manager. The daemon
        # cannot read it, so it must not act on it; it keeps ticking and says why.
        scale_by_hand(cluster, name, 2, avoid=engine)
        wait_until("three ticks reporting the engine down",
                   lambda: len(errors_after(d, stopped_at)) >= 3, DEADLINE)
        assert d.alive()
        health = d.get("/healthz")
        assert health is not None and health.status_code == 200  # the loop runs
        ready = statusz(d)
        assert ready is not None and ready[0] == 503, ready
        assert "docker" in ready[1]["problems"][name], ready
        assert (d.metric(ERRORS, target=name, verb="status") or 0.0) >= errors_before + 3
        messages = errors_after(d, frozen_at)
        assert all("reading swarm target" in m and "holding its size" in m
                   for m in messages), messages
        assert any("cannot reach docker" in m for m in messages), messages
        assert writes(d, since=frozen_at) == []
        assert replicas(cluster, name) == 2  # held: whatever the daemon wanted

        # Back: the same engine, data and node; it rejoins the swarm as a manager.
        restarted_at = time.time()
        engine.start()
        engine.wait_up()
        back_at = time.time()

        def manager_again() -> bool:
            with engine.engine(timeout=5) as c:
                swarm = c.info()["Swarm"]
            return swarm["LocalNodeState"] == "active" and bool(swarm["ControlAvailable"])
        wait_until("the engine a manager again", lambda: _quiet(manager_again), DEADLINE)
        manager_at = time.time()
        wait_until("the daemon restoring the count", lambda: replicas(cluster, name) == WANTED,
                   DEADLINE)
        first_ok = min(wait_until("a decision after the engine came back",
                                  lambda: [r["time"] for r in d.decisions()
                                         if r["time"] > back_at], DEADLINE))
        # Its tick may have begun while the engine was still starting: look from the stop.
        wait_until("the restoring write's decision record", lambda: writes(d, since=stopped_at),
                   DEADLINE)
        attrs = inspect(cluster, name)
        assert attrs is not None
        committed = swarm_time(attrs["UpdatedAt"])  # when swarm took the restoring write
        wait_until("ready again", lambda: (statusz(d) or (0,))[0] == 200, DEADLINE)
        assert d.alive()
        assert_never_outside_bounds_nor_down_on_error(d)
        assert d.stop() == 0

    record_figures("dockerd stopped and restarted", {
        "the engine answering again, after its start": back_at - restarted_at,
        "a swarm manager again, after answering": manager_at - back_at,
        "first decision, after the engine answered": first_ok - back_at,
        "the restoring write committed, after the engine answered": committed - back_at,
        "evaluation interval": INTERVAL,
    }, record_property)


def swarm_time(text: str) -> float:
    """Swarm's RFC 3339 times have nanoseconds; Python parses microseconds."""
    from datetime import datetime

    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


def _quiet(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False


# --------------------------------------------------------------------------- 2. recreated


def test_service_deleted_then_recreated_is_an_error_then_adopted_as_it_is(
        cluster: SwarmCluster, realenv: RealEnv, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    """A deleted service is an error of that target (never a scale); a new service under the
    same name is adopted as it is: nothing the daemon remembers of the old one (its last
    scale, which would start a 10-minute cooldown; its last count, which would make the new
    service's size look like an operator's change) is applied to it."""
    name = f"fr-{uuid.uuid4().hex[:6]}"
    old_id = create_service(cluster, name, replicas=1)
    via = engine_of(cluster)
    with ExitStack() as stack:
        stack.callback(remove_service, cluster, name)
        d = start_daemon(stack, tmp_path, via, realenv.prometheus_url, name, cooldown="10m")
        wait_until("the first scale", lambda: replicas(cluster, name) == WANTED, DEADLINE)
        wait_until("the first write's record", lambda: writes(d), DEADLINE)

        remove_service(cluster, name)
        deleted_at = time.time()
        wait_until("three ticks reporting the service missing",
                   lambda: len(errors_after(d, deleted_at)) >= 3, DEADLINE)
        messages = errors_after(d, deleted_at)
        assert all("not found" in m for m in messages), messages
        assert (d.metric(ERRORS, target=name, verb="status") or 0.0) >= 3
        ready = statusz(d)
        assert ready is not None and ready[0] == 503 and "not found" in \
            ready[1]["problems"][name], ready
        assert writes(d, since=deleted_at) == []
        assert inspect(cluster, name) is None  # nothing recreated it

        new_id = create_service(cluster, name, replicas=1)
        recreated_at = time.time()
        assert new_id != old_id
        wait_until("the new service scaled as a fresh one (no old cooldown, no "
                      "'manual scale respected')", lambda: replicas(cluster, name) == WANTED,
                   DEADLINE)
        adopted = wait_until("the write's decision record", lambda: writes(d, since=recreated_at),
                             DEADLINE)[0]
        first = next(r for r in d.decisions() if r["time"] > recreated_at)
        assert first["current"] == 1  # the new service's own count
        attrs = inspect(cluster, name)
        assert attrs is not None and attrs["ID"] == new_id
        labels = attrs["Spec"]["Labels"]
        assert labels[LABEL + "last-replicas"] == str(WANTED)
        assert float(labels[LABEL + "last-scale-time"]) == pytest.approx(adopted["time"],
                                                                         abs=0.002)
        events = json.loads(labels[LABEL + "events"])
        assert [t for t, _ in events if t < recreated_at] == [], events  # none of the old
        assert labels.get(LABEL + "manual-time", "") == ""
        assert_never_outside_bounds_nor_down_on_error(d)
        assert d.stop() == 0

    record_figures("service deleted and recreated", {
        "the adopting write's tick, after the new service was created":
            adopted["time"] - recreated_at,
        "evaluation interval": INTERVAL,
    }, record_property)


# --------------------------------------------------------------------------- 3. conflict


class RacingActuator(SwarmActuator):
    """The real actuator; after each of its first `races` reads, an operator changes the
    service through another manager, so the write that follows carries a stale version."""

    def __init__(self, client: docker.DockerClient, service: str,
                 race: Callable[[int], None], races: int) -> None:
        super().__init__(client, service)
        self.race, self.races, self.reads = race, races, 0

    def status(self) -> TargetStatus:
        status = super().status()
        self.reads += 1
        if self.reads <= self.races:
            self.race(self.reads)
        return status


@pytest.mark.parametrize(("hand", "races", "written", "final", "skipped", "decided_from"), [
    # re-read sees 2: decided again from 2 and written on the new version
    ([2], 1, True, WANTED, None, 2),
    # re-read sees what the policy wants: decided again, nothing left to write
    ([WANTED], 1, False, WANTED, None, WANTED),
    # changed before every write: the tick gives up, the operator's last count stays
    ([2, 4, 2], 3, False, 2, "gave up after repeated conflicts", 4),
], ids=["redecided-and-written", "redecided-no-write", "gives-up"])
def test_update_conflict_is_refused_by_swarm_then_reread_and_redecided(
        cluster: SwarmCluster, realenv: RealEnv, hand: list[int], races: int,
        written: bool, final: int, skipped: str | None, decided_from: int,
        caplog: pytest.LogCaptureFixture) -> None:
    name = f"fc-{uuid.uuid4().hex[:6]}"
    create_service(cluster, name, replicas=1)
    writer = engine_of(cluster)
    other = engine_of(cluster, avoid=writer)
    versions: list[int] = []
    specs: list[dict[str, Any]] = []

    def race(n: int) -> None:
        scale_by_hand(cluster, name, hand[n - 1], avoid=writer)
        attrs = inspect(cluster, name)
        assert attrs is not None
        versions.append(int(attrs["Version"]["Index"]))
        specs.append(attrs["Spec"])

    settings = load_config_data({
        "evaluation_interval": INTERVAL,
        "prometheus": {"url": realenv.prometheus_url, "timeout": "3s",
                       "scrape_interval": "1s"},
        "targets": [target(name)],
    }, environ={})
    telemetry = Telemetry()
    with ExitStack() as stack:
        stack.callback(remove_service, cluster, name)
        client = stack.enter_context(writer.engine(timeout=10))
        actuator = RacingActuator(client, name, race, races)
        engine = Engine(settings, source=PrometheusSource(settings.prometheus),
                        actuator_factory=lambda _: actuator, telemetry=telemetry)
        try:
            [outcome] = engine.tick()
        finally:
            engine.close()
        assert other is not writer
        assert outcome.error is None, outcome.error
        assert outcome.written is written
        assert (outcome.skipped or None) == skipped
        assert actuator.reads == races + 1  # the first read and one after each conflict
        conflicts = registry_sample(telemetry.registry, ERRORS, target=name, verb="scale")
        assert conflicts == races  # each refused write is counted
        warnings = [r.getMessage() for r in caplog.records if r.name == "autoscaler.loop"
                    and r.levelname == "WARNING"]
        assert len(warnings) == races, warnings  # and logged, naming the stale version
        assert all("it changed since it was read (version" in w for w in warnings), warnings
        attrs = inspect(cluster, name)
        assert attrs is not None
        assert int(attrs["Spec"]["Mode"]["Replicated"]["Replicas"]) == final
        labels = attrs["Spec"]["Labels"] or {}
        if written:  # our write landed after the operator's, on the version it re-read
            assert int(attrs["Version"]["Index"]) > versions[-1]
            assert labels[LABEL + "last-replicas"] == str(WANTED)
        else:  # nothing of ours landed: the spec is the operator's last, as it wrote it
            assert attrs["Spec"] == specs[-1]
            assert LABEL + "last-replicas" not in labels
        decision = outcome.decision
        assert decision is not None and MIN <= decision.desired <= MAX
        assert decision.current == decided_from  # the last decision: made from a re-read


# --------------------------------------------------------------------------- 4. demotion


def test_leader_demoted_stops_writing_and_the_new_leaders_daemon_takes_over(
        cluster: SwarmCluster, realenv: RealEnv, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    """One daemon per manager, leader_election swarm. The Raft leader's node is demoted to
    a worker: its daemon stands by (not a manager) and never writes again; the daemon of the
    manager elected next undoes a hand change made after the demotion."""
    name = f"fl-{uuid.uuid4().hex[:6]}"
    create_service(cluster, name, replicas=1)
    with ExitStack() as stack:
        stack.callback(remove_service, cluster, name)
        daemons = {m.name: start_daemon(stack, tmp_path, m, realenv.prometheus_url, name,
                                        mode="swarm", label=f"{name}-{m.name}")
                   for m in cluster.managers}
        raft_leader: Manager = wait_until("a Raft leader", cluster.leader, DEADLINE)
        wait_until("the leader's daemon scaling", lambda: replicas(cluster, name) == WANTED,
                   DEADLINE)
        leader = daemons[raft_leader.name]
        wait_until("one daemon leading, two standing by",
                   lambda: {n: d.metric("autoscaler_leader") for n, d in daemons.items()}
                 == {m.name: float(m is raft_leader) for m in cluster.managers}, DEADLINE)
        wait_until("the leader's write record", lambda: writes(leader), DEADLINE)

        def demote(c: docker.DockerClient) -> None:
            node = c.nodes.get(raft_leader.node_id)
            spec = dict(node.attrs["Spec"])
            spec["Role"] = "worker"
            node.update(spec)
        retried(demote, lambda: engine_of(cluster, avoid=raft_leader))
        demoted_at = time.time()
        others = [m for m in cluster.managers if m is not raft_leader]

        def new_leader() -> Manager | None:
            views = [m.is_leader() for m in others]
            return others[views.index(True)] if views.count(True) == 1 else None
        successor: Manager = wait_until("a new Raft leader", new_leader, DEADLINE)
        elected_at = time.time()
        wait_until("the demoted node's daemon standing by",
                   lambda: leader.metric("autoscaler_leader") == 0.0, DEADLINE)
        wait_until("its role in /readyz", lambda: (readyz(leader) or (0, {}))[1].get("role")
                 == "standby (not a manager)", DEADLINE)
        taker = daemons[successor.name]
        wait_until("the new leader's daemon leading",
                   lambda: taker.metric("autoscaler_leader") == 1.0, DEADLINE)

        scale_by_hand(cluster, name, 1, avoid=raft_leader)
        changed_at = time.time()
        wait_until("the new leader's daemon undoing the hand change",
                   lambda: replicas(cluster, name) == WANTED, DEADLINE)
        takeover = min(wait_until("its write's record",
                                  lambda: [r["time"] for r in writes(taker, since=changed_at)],
                                  DEADLINE))
        # Enough ticks of the demoted daemon after the change to have acted if it could.
        wait_until("three ticks of the demoted node's daemon",
                   lambda: len(errors_after(leader, changed_at))
                 + len([r for r in leader.decisions() if r["time"] > changed_at]) >= 3, DEADLINE)

        # The audit: nobody but the leader of the moment wrote.
        assert writes(leader, since=demoted_at) == []
        third = next(d for n, d in daemons.items()
                     if n not in (raft_leader.name, successor.name))
        assert writes(third) == []
        assert writes(taker, until=demoted_at) == []
        for d in daemons.values():
            assert d.alive()
            assert_never_outside_bounds_nor_down_on_error(d)

        # Promoted back: the cluster has three managers again for whatever runs next.
        def promote(c: docker.DockerClient) -> None:
            node = c.nodes.get(raft_leader.node_id)
            spec = dict(node.attrs["Spec"])
            spec["Role"] = "manager"
            node.update(spec)
        retried(promote, lambda: engine_of(cluster, avoid=raft_leader))
        for d in daemons.values():
            assert d.stop() == 0

    record_figures("leader demoted", {
        "a new Raft leader seen, after the demotion": elected_at - demoted_at,
        "the takeover write's tick, after the hand change": takeover - changed_at,
        "evaluation interval": INTERVAL,
    }, record_property)
