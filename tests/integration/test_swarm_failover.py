"""Swarm leader election on a real three-manager swarm: one `autoscaler run` per manager,
only the Raft leader's daemon writes, and when the leader's dockerd stops another manager is
elected and its daemon takes over. The Kubernetes twin is test_lease_failover.py.

The swarm is the test's own (swarm_cluster.py: three dockerds in network namespaces on
10.213.77.0/24), never the shared environment's; Prometheus is the shared one, asked only for
`vector(30000)`: a fixed answer of 3 replicas. To have a change pending when the leader's node
is lost, the leader's daemon is frozen (SIGSTOP) while the service is scaled to 1 by hand,
then its dockerd is stopped: nobody may write until the surviving managers have elected a
new leader, whose daemon must then restore the count. The old leader's engine then comes back
as a follower, and its daemon, which kept running throughout, stays a standby.

Every wait is a generous deadline. How long the takeover took (from the election, as the new
leader's dockerd logs it, to the write swarm committed) is printed and recorded as a test
property, never asserted: Raft's own election takes 10-25 s here and varies.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
import yaml

from tests.support.daemon import DaemonProcess, daemon_env
from tests.support.e2e import FAST_BEHAVIOR
from tests.support.realenv import RealEnv
from tests.support.swarm_cluster import (
    HOST_ADDRESS,
    SUBNET,
    SWARM_PORT,
    Manager,
    SwarmCluster,
    swarm_cluster,
)
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(600)

INTERVAL = 1.0  # evaluation_interval of the daemons
DEADLINE = 90.0  # for anything to happen: generous, many times the expected time
SERVICE = "mail"
WANTED = 3  # what the policy asks for: ceil(30000 / 10000 x 1)
HAND_SCALES = 3  # hand changes the leader undoes while every daemon runs
STANDBY = "standby (not the leader)"
UNREACHABLE = "standby (docker unreachable)"
LABEL = "autoscaler."


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(realenv: RealEnv, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[SwarmCluster]:
    """Three managers and a replicated `mail` service at 1; everything removed afterwards,
    also when a test fails (swarm_cluster checks nothing of it is left)."""
    logs = tmp_path_factory.mktemp("swarm-failover")
    with swarm_cluster(logs, realenv.docker_host, realenv.busybox_image) as c:
        c.create_service(SERVICE, replicas=1)
        yield c


def service(cluster: SwarmCluster) -> dict[str, Any] | None:
    """The service as the first live manager able to answer sees it."""
    for m in cluster.running():
        try:
            with m.engine(timeout=5) as c:
                attrs: dict[str, Any] = c.api.inspect_service(SERVICE)
                return attrs
        except (docker.errors.DockerException, requests.RequestException, OSError):
            continue
    return None


def spec_replicas(cluster: SwarmCluster) -> int | None:
    attrs = service(cluster)
    return None if attrs is None else int(attrs["Spec"]["Mode"]["Replicated"]["Replicas"])


def scale_by_hand(via: Manager, replicas: int) -> float:
    """`docker service scale` through `via`, retried while the swarm cannot take writes;
    returns when it was accepted."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            with via.engine(timeout=10) as c:
                c.services.get(SERVICE).scale(replicas)
            return time.time()
        except (docker.errors.DockerException, requests.RequestException, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def swarm_time(text: str) -> float:
    """Swarm's RFC 3339 times have nanoseconds; Python parses microseconds."""
    from datetime import datetime

    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


# --------------------------------------------------------------------------- daemons


def write_config(path: Path, *, port: int, prometheus_url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "evaluation_interval": INTERVAL,
        "prometheus": {"url": prometheus_url, "timeout": "3s", "scrape_interval": "1s"},
        "listen": f"127.0.0.1:{port}",
        "leader_election": {"mode": "swarm"},
        "targets": [{
            "name": SERVICE, "backend": "swarm", "service": SERVICE,
            "min_replicas": 1, "max_replicas": 5, "cooldown": {"up": "0s", "down": "0s"},
            "behavior": FAST_BEHAVIOR,
            "policies": [{"type": "capacity", "name": "fixed", "query": "vector(30000)",
                          "per_instance": 10000, "headroom": 1}],
        }],
    }, sort_keys=False))
    return path


class Daemon(DaemonProcess):
    """`autoscaler run` on one manager's engine only (no DOCKER_* from outside)."""

    def __init__(self, manager: Manager, prometheus_url: str, workdir: Path) -> None:
        self.manager = manager
        port = free_port()
        config = write_config(workdir / f"{manager.name}.yaml", port=port,
                              prometheus_url=prometheus_url)
        env = daemon_env(drop=("DOCKER_",), DOCKER_HOST=manager.docker_host)
        super().__init__(config, env, workdir, port=port, label=manager.name)

    def writes(self) -> list[float]:
        return [r["time"] for r in self.decisions() if r["written"]]

    def leader_metric(self) -> float | None:
        return self.metric("autoscaler_leader")

    def readyz(self) -> tuple[int, str] | None:
        """(HTTP status, role) of /statusz (503 while degraded; /readyz stays 200)."""
        response = self.get("/statusz")
        return None if response is None else (response.status_code,
                                              str(response.json().get("role")))

    def ticks_after(self, since: float, n: int) -> bool:
        return len([r for r in self.decisions() if r["time"] > since]) >= n


# --------------------------------------------------------------------------- the swarm


def test_three_reachable_managers_on_the_tests_own_subnet_and_one_raft_leader(
        cluster: SwarmCluster) -> None:
    first = cluster.managers[0]
    with first.engine() as c:
        nodes = {n["ID"]: n for n in c.api.nodes(filters={"role": "manager"})}
        info = c.info()["Swarm"]
    assert info["Managers"] == 3 and info["LocalNodeState"] == "active"
    assert [n["ManagerStatus"].get("Leader", False) for n in nodes.values()].count(True) == 1
    for m in cluster.managers:  # a row per manager: its node, its address, its namespace
        status = nodes[m.node_id]["ManagerStatus"]
        assert status["Addr"] == f"{m.address}:{SWARM_PORT}", m.name
        assert status["Reachability"] == "reachable", m.name
        assert m.is_leader() is status.get("Leader", False), m.name
        routes = subprocess.run(["ip", "-n", m.name, "-4", "route", "show"], check=True,
                                capture_output=True, text=True).stdout
        assert routes.split("\n")[0].startswith(f"{SUBNET}.0/24 dev eth0"), (m.name, routes)
        assert "default" not in routes, (m.name, routes)  # nothing can leave the /24
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "asfo-br0"], check=True,
                           capture_output=True, text=True).stdout
    assert f"{HOST_ADDRESS}/24" in addrs
    leader = cluster.leader()
    assert leader is not None and nodes[leader.node_id]["ManagerStatus"]["Leader"]
    wait_until("the mail service", lambda: spec_replicas(cluster) == 1, DEADLINE)


# --------------------------------------------------------------------------- three daemons


# One scenario, step by step, read top to bottom: clearer as one function.
def test_only_the_raft_leaders_daemon_writes_and_a_new_leader_takes_over(  # noqa: PLR0915
        cluster: SwarmCluster, realenv: RealEnv, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    with ExitStack() as stack:
        daemons: dict[str, Daemon] = {}
        for m in cluster.managers:
            d = Daemon(m, realenv.prometheus_url, tmp_path)
            stack.callback(d.close)
            daemons[m.name] = d

        # 1. The Raft leader's daemon leads, the other two stand by; only the leader scales
        # `mail` from 1 to what the policy asks for.
        wait_until("two ticks of each daemon",
                   lambda: all(len(d.decisions()) >= 2 for d in daemons.values()), DEADLINE)
        raft_leader: Manager = wait_until("a Raft leader", cluster.leader, DEADLINE)

        def one_leader() -> dict[str, float | None] | None:
            metrics = {name: d.leader_metric() for name, d in daemons.items()}
            return metrics if sorted(v or 0.0 for v in metrics.values()) == [0, 0, 1] \
                and None not in metrics.values() else None

        metrics = wait_until("one daemon leading, two standing by", one_leader, DEADLINE)
        assert metrics == {m.name: float(m is raft_leader) for m in cluster.managers}
        leader = daemons[raft_leader.name]
        standbys = [d for d in daemons.values() if d is not leader]
        wait_until("the leader scaling the service", lambda: spec_replicas(cluster) == WANTED,
                   DEADLINE)
        expected_roles = {d.label: (200, "leader" if d is leader else "standby")
                          for d in daemons.values()}
        wait_until(f"every daemon ready, roles {expected_roles}",
                   lambda: {d.label: d.readyz() for d in daemons.values()} == expected_roles,
                   DEADLINE)

        # 2. Hand changes through a follower: the leader undoes each; the standbys, when they
        # see one, want it undone too but may not write.
        follower = next(m for m in cluster.managers if m is not raft_leader)
        for _ in range(HAND_SCALES):
            scale_by_hand(follower, 1)
            wait_until("the leader undoing a hand change", lambda: spec_replicas(cluster) == WANTED,
                       DEADLINE)
        # The decision record is logged after a write.
        wait_until("the leader's decision records of its writes",
                   lambda: len(leader.writes()) >= HAND_SCALES + 1, DEADLINE)
        assert [d.label for d in standbys if d.writes()] == []

        # 3. Freeze the leader's daemon between two of its ticks and change the size by hand:
        # nobody else writes, whatever the standbys want (a live Raft leader is the leader).
        ticks = len(leader.decisions())
        wait_until("a leader tick", lambda: len(leader.decisions()) > ticks, DEADLINE)
        leader.signal(signal.SIGSTOP)
        frozen_at = time.time()
        scale_by_hand(follower, 1)
        wait_until("two ticks of each standby seeing the hand change",
                   lambda: all(len([r for r in d.decisions()
                                  if r["time"] > frozen_at and r["current"] == 1]) >= 2
                             for d in standbys), DEADLINE)
        assert spec_replicas(cluster) == 1

        # 4. Stop the leader's dockerd (its daemon still frozen, the change still pending):
        # the two managers left elect a new leader, and its daemon restores the count.
        survivors = [m for m in cluster.managers if m is not raft_leader]
        killed_at = time.time()
        raft_leader.send(signal.SIGTERM)
        assert raft_leader.stop(timeout=DEADLINE) == 0
        engine_gone_at = time.time()
        leader.signal(signal.SIGCONT)  # the daemon lives on, its engine does not
        new_raft_leader: Manager = wait_until("a new Raft leader among the survivors",
                                              cluster.leader, DEADLINE)
        assert new_raft_leader in survivors
        wait_until("the new leader's daemon restoring the count",
                   lambda: spec_replicas(cluster) == WANTED, DEADLINE)
        restored = service(cluster)
        assert restored is not None
        new = daemons[new_raft_leader.name]
        takeover_tick = min(wait_until(
            "the new leader's daemon's record of it",
            lambda: [t for t in new.writes() if t > killed_at], DEADLINE))
        assert float(restored["Spec"]["Labels"][LABEL + "last-scale-time"]) == \
            pytest.approx(takeover_tick, abs=0.002)  # that write is the one swarm holds
        assert new.leader_metric() == 1
        assert new.readyz() == (200, "leader")
        # When Raft elected it, to the nanosecond, in the new leader's own log.
        elected = [t for t in new_raft_leader.log_times("became leader at term")
                   if t > killed_at]
        assert elected, "no election in the new leader's log"

        # 5. The daemon whose engine died keeps running, is not ready and never writes.
        def dead_engine_reported() -> tuple[int, str] | None:
            ready = leader.readyz()
            return ready if ready == (503, UNREACHABLE) else None

        wait_until("the orphaned daemon reporting its engine", dead_engine_reported, DEADLINE)
        assert leader.proc.poll() is None
        assert leader.leader_metric() == 0
        health = leader.get("/healthz")
        assert health is not None and health.status_code == 200  # its loop still runs
        problems = leader.get("/statusz")
        assert problems is not None and SERVICE in problems.json()["problems"]
        thawed_at, errors = time.time(), len(leader.records("target_error"))
        scale_by_hand(new_raft_leader, 1)
        wait_until("the new leader undoing a hand change after the failover",
                   lambda: spec_replicas(cluster) == WANTED, DEADLINE)
        wait_until("three more ticks of the new leader and of the orphan (each an error)",
                   lambda: len(leader.records("target_error")) >= errors + 3
                 and new.ticks_after(thawed_at, 3), DEADLINE)
        assert [t for t in leader.writes() if t > frozen_at] == []

        # 6. The old leader's engine comes back: it rejoins as a follower and its daemon, still
        # running, is ready again, as a standby; the new leader alone undoes a hand change
        # made through the returned manager.
        raft_leader.start()
        raft_leader.wait_up()
        wait_until("the old leader back as a follower of the new one",
                   lambda: cluster.leader() is new_raft_leader, DEADLINE)
        wait_until("the old leader's daemon ready again, as a standby",
                   lambda: leader.readyz() == (200, "standby"), DEADLINE)
        assert leader.leader_metric() == 0
        back_at = time.time()
        scale_by_hand(raft_leader, 1)
        wait_until("the new leader undoing a hand change made through the old one",
                   lambda: spec_replicas(cluster) == WANTED
                 and [t for t in new.writes() if t > back_at], DEADLINE)
        wait_until("three ticks of the old leader's daemon as a standby",
                   lambda: leader.ticks_after(back_at, 3), DEADLINE)
        assert [t for t in leader.writes() if t > frozen_at] == []

        # 7. Audit every write: one writer at a time, never two within one tick, the standby
        # that stayed a standby never wrote, and the labels name the last write.
        records = {label: d.decisions() for label, d in daemons.items()}
        for label, lines in records.items():
            assert all(r["written"] or r["skipped"].startswith("standby")
                       for r in lines if r["desired"] != r["current"]), label
        held_back = [r for d in standbys for r in d.decisions()
                     if frozen_at < r["time"] < killed_at and r["desired"] != r["current"]]
        assert held_back and all(r["skipped"] == STANDBY and r["desired"] == WANTED
                                 for r in held_back), held_back
        writes = sorted((t, label) for label, d in daemons.items() for t in d.writes())
        old = [t for t, label in writes if label == leader.label]
        after = [t for t, label in writes if label == new.label]
        bystander = [label for _, label in writes if label not in (leader.label, new.label)]
        assert bystander == [], writes
        assert old and len(after) >= 2, writes
        assert max(old) < frozen_at < killed_at < min(after), writes
        assert [label for _, label in writes] == \
            [leader.label] * len(old) + [new.label] * len(after)
        pairs = [(a, b) for a in writes for b in writes if a[1] != b[1]]
        assert all(abs(a[0] - b[0]) >= INTERVAL for a, b in pairs), writes
        labels = (service(cluster) or {})["Spec"]["Labels"]
        assert labels[LABEL + "last-replicas"] == str(WANTED)
        assert float(labels[LABEL + "last-scale-time"]) == pytest.approx(max(after), abs=0.002)

        # 8. A clean stop of each daemon, nothing unexplained in the logs.
        for d in daemons.values():
            assert d.stop() == 0, d.label
        for d in daemons.values():
            assert "Traceback" not in d.log_path.read_text(), d.label

    figures = {
        "the leader's dockerd exited, after its SIGTERM": engine_gone_at - killed_at,
        "a new Raft leader elected (its log), after the SIGTERM": elected[0] - killed_at,
        "the takeover tick began, after the election": takeover_tick - elected[0],
        "the takeover write committed (UpdatedAt), after the election":
            swarm_time(restored["UpdatedAt"]) - elected[0],
        "evaluation interval": INTERVAL,
    }
    print("\nswarm failover, seconds:")
    for what, value in figures.items():
        print(f"  {what:<62} {value:6.2f}")
        record_property(what, round(value, 3))
