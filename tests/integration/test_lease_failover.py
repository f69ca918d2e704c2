"""Lease leader election on the real kube-apiserver: LeaseLeader objects, then two real
`autoscaler run` daemons failing over when the leader is frozen with SIGSTOP.

Short timings (lease 3 s, renew deadline 2 s, retry 0.5 s, one tick a second) keep the tests
quick; every wait is a generous deadline, never an assertion on how fast anything happened.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from autoscaler.kube import kubernetes_api_client
from autoscaler.leader import LeaseLeader
from tests.support.daemon import DaemonProcess, daemon_env
from tests.support.e2e import FAST_BEHAVIOR
from tests.support.kube import fresh_namespace
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(300)

LEASE, RENEW, RETRY = 3.0, 2.0, 0.5
INTERVAL = 1.0  # evaluation_interval of the daemons
DEADLINE = 60.0  # for anything to happen: generous, many times the expected time
STANDBY = "standby (not the leader)"
ANNOTATION = "autoscaler.stalwart.io/"
WANTED = 3  # what the policy asks for: ceil(30000 / 10000 x 1)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def ns(kube_api: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted for real afterwards (no namespace controller runs here)."""
    with fresh_namespace(kube_api, "lease") as name:
        yield name


def read_lease(api: kubernetes.client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    leases: Any = kubernetes.client.CoordinationV1Api(api)  # raw JSON: the API's own words
    raw = leases.read_namespaced_lease(name, ns, _preload_content=False).data
    spec: dict[str, Any] = json.loads(raw)["spec"]
    return spec


@contextmanager
def lease_leaders(realenv: RealEnv, ns: str, name: str, *identities: str
                  ) -> Iterator[list[LeaseLeader]]:
    """Started LeaseLeaders, each on its own client; closed (released) on the way out."""
    with ExitStack() as stack:
        leaders = []
        for identity in identities:
            client = stack.enter_context(kubernetes_api_client(str(realenv.kubeconfig)))
            leader = LeaseLeader(name=name, namespace=ns, identity=identity,
                                 lease_duration=LEASE, renew_deadline=RENEW,
                                 retry_period=RETRY, api_client=client)
            stack.callback(leader.close)
            leaders.append(leader.start())
        yield leaders


# --------------------------------------------------------------------------- LeaseLeader


def test_exactly_one_of_two_leads_and_a_release_hands_over(
        realenv: RealEnv, kube_api: kubernetes.client.ApiClient, ns: str) -> None:
    with lease_leaders(realenv, ns, "lease", "one", "two") as leaders:
        seen: list[list[str]] = []
        until = time.monotonic() + 10.0
        while time.monotonic() < until:
            seen.append([x.identity for x in leaders if x.is_leader()])
            time.sleep(0.1)
        assert all(len(now) == 1 for now in seen), [s for s in seen if len(s) != 1][:5]
        holders = {now[0] for now in seen}
        assert len(holders) == 1, holders  # no flapping while the holder renews
        holder = next(x for x in leaders if x.identity in holders)
        other = next(x for x in leaders if x is not holder)
        assert other.role == f"standby (lease held by {holder.identity})"
        before = read_lease(kube_api, ns, "lease")
        assert before["holderIdentity"] == holder.identity
        assert before["leaseDurationSeconds"] == LEASE

        holder.close()
        wait_until("the standby leading after the release", other.is_leader, DEADLINE)
        after = read_lease(kube_api, ns, "lease")
        assert after["holderIdentity"] == other.identity
        assert after["leaseTransitions"] > before["leaseTransitions"]
        assert not holder.is_leader() and holder.role == "standby (stopped)"


def test_a_released_lease_is_taken_at_once_and_an_expired_one_only_after_its_duration(
        realenv: RealEnv, kube_api: kubernetes.client.ApiClient, ns: str) -> None:
    with lease_leaders(realenv, ns, "lease", "first") as [first]:
        assert first.is_leader()  # the Lease did not exist: created in start()'s round
    released = read_lease(kube_api, ns, "lease")
    assert released["holderIdentity"] == ""
    with kubernetes_api_client(str(realenv.kubeconfig)) as client:
        # One round and no thread: a holder that dies without releasing its lease.
        crashed = LeaseLeader(name="lease", namespace=ns, identity="crashed",
                              lease_duration=LEASE, renew_deadline=RENEW, retry_period=RETRY,
                              api_client=client)
        assert crashed.try_acquire_or_renew() and crashed.is_leader()  # released: at once
        held = read_lease(kube_api, ns, "lease")
        assert held["holderIdentity"] == "crashed"
        assert held["leaseTransitions"] == released["leaseTransitions"] + 1
        with lease_leaders(realenv, ns, "lease", "third") as [third]:
            assert not third.is_leader()  # its first round: another's lease, still valid
            wait_until("the expired lease taken over", third.is_leader, DEADLINE)
            assert not crashed.is_leader()  # its renew deadline passed before the takeover
            assert read_lease(kube_api, ns, "lease")["holderIdentity"] == "third"
            assert not crashed.try_acquire_or_renew()  # back again: the lease is not its own
            assert crashed.role == "standby (lease held by third)"


# --------------------------------------------------------------------------- two daemons


def create_deployment(api: kubernetes.client.ApiClient, ns: str, name: str,
                      replicas: int) -> None:
    kubernetes.client.AppsV1Api(api).create_namespaced_deployment(
        ns, kubernetes.client.V1Deployment.model_validate({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "stalwart",
                                                       "image": "busybox:local"}]}}}}))


def deployment(api: kubernetes.client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    apps: Any = kubernetes.client.AppsV1Api(api)
    raw = apps.read_namespaced_deployment(name, ns, _preload_content=False).data
    body: dict[str, Any] = json.loads(raw)
    return body


def replicas(api: kubernetes.client.ApiClient, ns: str, name: str) -> int:
    return int(deployment(api, ns, name)["spec"]["replicas"])


def scale_by_hand(api: kubernetes.client.ApiClient, ns: str, name: str, count: int) -> None:
    kubernetes.client.AppsV1Api(api).patch_namespaced_deployment(
        name, ns, {"spec": {"replicas": count}}, _content_type="application/merge-patch+json")


def write_config(path: Path, *, port: int, ns: str, lease: str,
                 prometheus_url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "evaluation_interval": INTERVAL,
        "prometheus": {"url": prometheus_url, "timeout": "3s", "scrape_interval": "1s"},
        "listen": f"127.0.0.1:{port}",
        "leader_election": {"mode": "kubernetes", "lease_name": lease, "lease_namespace": ns,
                            "lease_duration": LEASE, "renew_deadline": RENEW,
                            "retry_period": RETRY},
        "targets": [{
            "name": "smtp", "backend": "kubernetes", "namespace": ns, "deployment": "smtp",
            "min_replicas": 1, "max_replicas": 8, "cooldown": {"up": "0s", "down": "0s"},
            "behavior": FAST_BEHAVIOR,
            "policies": [{"type": "capacity", "name": "fixed", "query": "vector(30000)",
                          "per_instance": 10000, "headroom": 1}],
        }],
    }, sort_keys=False))
    return path


class Daemon(DaemonProcess):
    """A daemon with KUBECONFIG, no POD_NAME (identity = host and pid) and no proxy."""

    def __init__(self, label: str, config: Path, port: int, realenv: RealEnv,
                 workdir: Path) -> None:
        env = daemon_env(drop=("POD_NAME",), KUBECONFIG=str(realenv.kubeconfig))
        super().__init__(config, env, workdir, port=port, label=label)
        self.identity = f"{socket.gethostname()}_{self.proc.pid}"

    def leader_metric(self) -> float | None:
        return self.metric("autoscaler_leader")

    def role(self) -> str | None:
        response = self.get("/readyz")
        return None if response is None else str(response.json().get("role"))


def wanted_but_not_written(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["desired"] != r["current"] and not r["written"]]


# One scenario, step by step, read top to bottom: clearer as one function.
def test_two_daemons_only_the_leader_writes_and_a_frozen_leader_is_replaced(  # noqa: PLR0915
        realenv: RealEnv, kube_api: kubernetes.client.ApiClient, ns: str,
        tmp_path: Path) -> None:
    create_deployment(kube_api, ns, "smtp", replicas=1)
    with ExitStack() as stack:
        daemons = []
        for label in ("a", "b"):
            port = free_port()
            config = write_config(tmp_path / f"{label}.yaml", port=port, ns=ns, lease="as",
                                  prometheus_url=realenv.prometheus_url)
            d = Daemon(label, config, port, realenv, tmp_path)
            stack.callback(d.close)
            daemons.append(d)

        # 1. One leader, one standby; only the leader scales the Deployment. (/readyz shows
        # the role from the end of a tick on: wait for two ticks of each.)
        wait_until("two ticks of each daemon",
                   lambda: all(len(d.decisions()) >= 2 for d in daemons), DEADLINE)
        def one_leader() -> list[float | None] | None:
            metrics = [d.leader_metric() for d in daemons]
            return metrics if sorted(m or 0.0 for m in metrics) == [0, 1] \
                and None not in metrics else None

        metrics = wait_until("one daemon leading, one standing by", one_leader, DEADLINE)
        leader, standby = daemons if metrics[0] == 1 else daemons[::-1]
        wait_until("the leader scaling the Deployment",
                   lambda: replicas(kube_api, ns, "smtp") == WANTED, DEADLINE)
        lease = read_lease(kube_api, ns, "as")
        assert lease["holderIdentity"] == leader.identity
        assert leader.role() == "leader"
        assert standby.role() == f"standby (lease held by {leader.identity})"
        wait_until("standby decisions", lambda: len(standby.decisions()) >= 3, DEADLINE)
        assert [r for r in standby.decisions() if r["written"]] == []

        # 2. Freeze the leader between two of its ticks, then change the size by hand: the
        # standby wants the change back but may not write until the lease has expired.
        ticks = len(leader.decisions())
        wait_until("a leader tick", lambda: len(leader.decisions()) > ticks, DEADLINE)
        leader.signal(signal.SIGSTOP)
        frozen_at = time.time()
        scale_by_hand(kube_api, ns, "smtp", 1)
        wait_until("the standby taking over and restoring the size",
                   lambda: replicas(kube_api, ns, "smtp") == WANTED, DEADLINE)
        assert standby.leader_metric() == 1
        assert standby.role() == "leader"
        taken = read_lease(kube_api, ns, "as")
        assert taken["holderIdentity"] == standby.identity
        assert taken["leaseTransitions"] > lease["leaseTransitions"]
        held_back = [r for r in wanted_but_not_written(standby.decisions())
                     if r["time"] > frozen_at]
        assert held_back, "the standby never saw the hand change before it took over"
        assert all(r["skipped"] == STANDBY and r["current"] == 1 for r in held_back)

        # 3. Thaw the old leader: it sees the lease is gone and never writes again.
        leader.signal(signal.SIGCONT)
        resumed_at = time.time()
        wait_until("the thawed daemon standing by", lambda: leader.leader_metric() == 0
                 and leader.role() == f"standby (lease held by {standby.identity})", DEADLINE)
        seen = len(leader.decisions())
        scale_by_hand(kube_api, ns, "smtp", 2)
        wait_until("the new leader undoing the second hand change",
                   lambda: replicas(kube_api, ns, "smtp") == WANTED, DEADLINE)
        wait_until("three more ticks of the old leader",
                   lambda: len(leader.decisions()) >= seen + 3, DEADLINE)
        late = [r for r in leader.decisions() if r["time"] > resumed_at]
        assert late and [r for r in late if r["written"]] == []
        assert standby.leader_metric() == 1

        # 4. Audit every write: one writer at a time, never two within one tick.
        records = {d.label: d.decisions() for d in daemons}
        for label, lines in records.items():
            assert all(r["written"] or r["skipped"] == STANDBY
                       for r in lines if r["desired"] != r["current"]), label
        writes = sorted((r["time"], label) for label, lines in records.items()
                        for r in lines if r["written"])
        old = [t for t, label in writes if label == leader.label]
        new = [t for t, label in writes if label == standby.label]
        assert old and len(new) >= 2, writes
        assert max(old) < frozen_at < min(new), writes
        assert min(new) - max(old) >= INTERVAL, writes
        assert [label for _, label in writes] == \
            [leader.label] * len(old) + [standby.label] * len(new)
        annotations = deployment(kube_api, ns, "smtp")["metadata"]["annotations"]
        assert annotations[ANNOTATION + "last-replicas"] == str(WANTED)
        assert float(annotations[ANNOTATION + "last-scale-time"]) == \
            pytest.approx(max(new), abs=0.002)

        # 5. A clean stop releases the lease: the thawed daemon takes over without waiting.
        assert standby.stop() == 0
        assert read_lease(kube_api, ns, "as")["holderIdentity"] in ("", leader.identity)
        wait_until("the remaining daemon leading after the clean stop",
                   lambda: leader.leader_metric() == 1, DEADLINE)
        assert leader.stop() == 0
        assert read_lease(kube_api, ns, "as")["holderIdentity"] == ""
        text = leader.log_text() + standby.log_text()
        assert "Traceback" not in text
        for secret in (realenv.kube_admin_token,):
            assert secret not in text
