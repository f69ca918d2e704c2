"""The Lease election's pure logic, as tables; LeaseLeader's deadline on a
fake Lease API with a hand-driven clock (the real API server: tests/integration)."""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from autoscaler.config import LeaderElectionConfig
from autoscaler.leader import (
    LeaseAction,
    LeaseLeader,
    LeaseRecord,
    NoElection,
    NotACandidate,
    default_identity,
    default_namespace,
    lease_action,
    lease_spec,
    next_lease,
    parse_lease,
    released_lease,
)

ME, OTHER = "me_1", "other_2"
T0 = 1_700_000_000.0


def test_no_election_leads_and_a_non_candidate_never_does() -> None:
    assert NoElection().is_leader() and NoElection().role == "leader"
    bystander = NotACandidate("dry-run")
    assert not bystander.is_leader() and bystander.role == "standby (dry-run)"


# --------------------------------------------------------------------------- lease_action


def held(holder: str = OTHER, renewed: float | None = T0, duration: float = 15.0,
         acquired: float | None = T0 - 100) -> LeaseRecord:
    return LeaseRecord(holder, duration, acquire_time=acquired, renew_time=renewed,
                       transitions=3)


@pytest.mark.parametrize(("lease", "now", "unchanged_for", "action"), [
    (None, T0, 0.0, LeaseAction.CREATE),
    (held(ME), T0 + 1, 0.0, LeaseAction.RENEW),
    (held(ME), T0 + 999, 999.0, LeaseAction.RENEW),  # ours, even expired: nobody took it
    (held(""), T0 + 1, 0.0, LeaseAction.ACQUIRE),  # released: at once, no waiting
    (held(OTHER), T0 + 1, 1.0, LeaseAction.WAIT),
    (held(OTHER), T0 + 15, 16.0, LeaseAction.WAIT),  # renewTime + duration == now: not yet
    (held(OTHER), T0 + 15.5, 16.0, LeaseAction.ACQUIRE),
    (held(OTHER), T0 + 15.5, 15.0, LeaseAction.WAIT),  # expired by its clock, not by ours
    (held(OTHER), T0 + 999, 0.0, LeaseAction.WAIT),  # just seen: our clock may be ahead
    (held(OTHER), T0 + 5, 999.0, LeaseAction.WAIT),  # valid by its times
    (held(OTHER, renewed=None), T0 - 84, 16.0, LeaseAction.ACQUIRE),  # acquireTime counts
    (held(OTHER, renewed=None), T0 - 86, 16.0, LeaseAction.WAIT),
    (held(OTHER, renewed=None, acquired=None), T0, 16.0, LeaseAction.ACQUIRE),
    (held(OTHER, renewed=None, acquired=None), T0, 1.0, LeaseAction.WAIT),
    (held(OTHER, duration=3.0), T0 + 3.5, 3.5, LeaseAction.ACQUIRE),  # its own duration
], ids=["none-create", "ours-renew", "ours-expired-renew", "released-acquire", "valid-wait",
        "boundary-wait", "expired-acquire", "unchanged-too-short-wait",
        "expired-but-new-to-us-wait", "valid-long-watched-wait", "acquire-time-expired",
        "acquire-time-valid", "no-times-watched-acquire", "no-times-new-wait",
        "short-lease-acquire"])
def test_lease_action(lease: LeaseRecord | None, now: float, unchanged_for: float,
                      action: LeaseAction) -> None:
    assert lease_action(lease, ME, now, unchanged_for) is action


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize(("lease", "expected"), [
    (None, LeaseRecord(ME, 15.0, T0, T0, 0)),
    (held(OTHER), LeaseRecord(ME, 15.0, T0, T0, 4)),  # takeover: a transition
    (held(""), LeaseRecord(ME, 15.0, T0, T0, 4)),  # after a release too, as client-go
    (held(ME, renewed=T0 - 2, duration=3.0), LeaseRecord(ME, 15.0, T0 - 100, T0, 3)),  # renew
], ids=["create", "takeover", "after-release", "renew-keeps-acquire-time"])
def test_next_lease(lease: LeaseRecord | None, expected: LeaseRecord) -> None:
    assert next_lease(lease, ME, T0, 15.0) == expected


def test_released_lease_has_no_holder_and_keeps_the_transitions() -> None:
    assert released_lease(held(ME), T0) == LeaseRecord("", 1.0, T0, T0, 3)


@pytest.mark.parametrize(("spec", "expected"), [
    ({"holderIdentity": ME, "leaseDurationSeconds": 3,
      "acquireTime": "2023-11-14T22:13:20.000000Z", "renewTime": "2023-11-14T22:13:21.250000Z",
      "leaseTransitions": 2}, LeaseRecord(ME, 3.0, T0, T0 + 1.25, 2)),
    ({"holderIdentity": None, "renewTime": "2023-11-14T22:13:20Z"},
     LeaseRecord("", 9.0, None, T0, 0)),
    ({"leaseDurationSeconds": "x", "renewTime": "yesterday", "leaseTransitions": "many"},
     LeaseRecord("", 9.0, None, None, 0)),
    ({}, LeaseRecord("", 9.0, None, None, 0)),
], ids=["full", "sparse", "unreadable", "empty"])
def test_parse_lease(spec: dict[str, Any], expected: LeaseRecord) -> None:
    assert parse_lease({"spec": spec}, default_duration=9.0) == expected


def test_lease_spec_round_trips_with_microseconds() -> None:
    record = LeaseRecord(ME, 2.5, T0 + 0.123456, T0 + 7.5, 5)
    spec = lease_spec(record)
    assert spec["renewTime"] == "2023-11-14T22:13:27.500000Z"
    assert spec["leaseDurationSeconds"] == 3  # whole seconds, rounded up: never shorter
    back = parse_lease({"spec": json.loads(json.dumps(spec))}, default_duration=0.0)
    assert back.holder == ME and back.transitions == 5 and back.duration == 3.0
    assert back.renew_time == pytest.approx(T0 + 7.5, abs=1e-6)
    assert back.acquire_time == pytest.approx(T0 + 0.123456, abs=1e-6)


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(("environ", "expected"), [
    ({"POD_NAME": "autoscaler-7d9f-abcde"}, "autoscaler-7d9f-abcde"),
    ({}, None),
    ({"POD_NAME": ""}, None),
], ids=["pod-name", "host-pid", "empty-pod-name"])
def test_default_identity(environ: dict[str, str], expected: str | None) -> None:
    import os

    want = expected or f"{socket.gethostname()}_{os.getpid()}"
    assert default_identity(environ) == want


@pytest.mark.parametrize(("content", "expected"), [
    ("mail\n", "mail"), ("", "default"), (None, "default"),
], ids=["service-account", "empty-file", "no-file"])
def test_default_namespace(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "namespace"
    if content is not None:
        path.write_text(content)
    assert default_namespace(path) == expected


def test_from_config_takes_the_pod_namespace_unless_one_is_set(tmp_path: Path) -> None:
    path = tmp_path / "namespace"
    path.write_text("mail")
    config = LeaderElectionConfig(mode="kubernetes", lease_duration=3, renew_deadline=2,
                                  retry_period=0.5)
    leader = LeaseLeader.from_config(config, object(), environ={"POD_NAME": "p"},
                                     namespace_file=path)
    assert (leader.lease, leader.identity) == ("mail/stalwart-autoscaler", "p")
    config = config.model_copy(update={"lease_namespace": "ops", "lease_name": "x"})
    assert LeaseLeader.from_config(config, object(), namespace_file=path).lease == "ops/x"


@pytest.mark.parametrize(("duration", "deadline", "retry"), [
    (15, 15, 2), (15, 10, 10), (15, 10, 0), (10, 15, 2),
], ids=["deadline-equals-duration", "retry-equals-deadline", "zero-retry", "inverted"])
def test_lease_leader_refuses_timings_client_go_refuses(duration: float, deadline: float,
                                                        retry: float) -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaseLeader(name="l", namespace="n", identity=ME, lease_duration=duration,
                    renew_deadline=deadline, retry_period=retry, api_client=object())


# --------------------------------------------------------------------------- LeaseLeader


@dataclass
class _Response:
    data: bytes


@dataclass
class FakeLeases:
    """CoordinationV1Api's three Lease calls on one in-memory object, with resourceVersions."""

    lease: dict[str, Any] | None = None
    version: int = 0
    down: bool = False
    writes: list[dict[str, Any]] = field(default_factory=list)

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("connection refused")

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> _Response:
        self._check()
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        return _Response(json.dumps(self.lease).encode())

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any],
                                **_: Any) -> _Response:
        self._check()
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any],
                                 **_: Any) -> _Response:
        self._check()
        assert self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> _Response:
        self.version += 1
        self.lease = {**body, "metadata": {**body["metadata"], "resourceVersion":
                                           str(self.version)}}
        self.writes.append(self.lease["spec"])
        return _Response(json.dumps(self.lease).encode())


class Clocks:
    def __init__(self) -> None:
        self.wall, self.mono = T0, 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def leader_on(fake: FakeLeases, clocks: Clocks, identity: str = ME) -> LeaseLeader:
    leader = LeaseLeader(name="l", namespace="n", identity=identity, lease_duration=3,
                         renew_deadline=2, retry_period=0.5, api_client=object(),
                         clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    leader._coordination = fake  # the API without a server: the deadline logic alone
    return leader


def test_leadership_lapses_at_renew_deadline_without_a_renewal() -> None:
    fake, clocks = FakeLeases(), Clocks()
    leader = leader_on(fake, clocks)
    assert leader.try_acquire_or_renew() and leader.is_leader()
    assert fake.writes[-1]["holderIdentity"] == ME and fake.writes[-1]["leaseTransitions"] == 0
    fake.down = True  # cut off from the API server (or frozen: nothing renews)
    clocks.advance(1.9)
    assert not leader.try_acquire_or_renew()
    assert leader.is_leader() and leader.role == "leader"  # within renew_deadline
    clocks.advance(0.2)
    assert not leader.is_leader()
    assert leader.role.startswith(
        "standby (renewal overdue: get leases.coordination.k8s.io n/l: cannot reach")
    fake.down = False
    assert leader.try_acquire_or_renew() and leader.is_leader()  # nobody took it: ours again


def test_standby_takes_over_only_after_the_lease_expires_and_counts_a_transition() -> None:
    fake, clocks = FakeLeases(), Clocks()
    first, second = leader_on(fake, clocks, "first"), leader_on(fake, clocks, "second")
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    assert second.role == "standby (lease held by first)"
    clocks.advance(3.0)  # the first stops renewing; its lease is not yet expired
    assert not second.try_acquire_or_renew()
    clocks.advance(0.5)
    assert second.try_acquire_or_renew() and second.is_leader()
    assert fake.writes[-1]["holderIdentity"] == "second"
    assert fake.writes[-1]["leaseTransitions"] == 1
    assert not first.is_leader()
    assert not first.try_acquire_or_renew()  # it comes back: the lease is someone else's
    assert first.role == "standby (lease held by second)"


def test_a_stale_write_loses_the_race() -> None:
    fake, clocks = FakeLeases(), Clocks()
    leader = leader_on(fake, clocks)
    assert leader.try_acquire_or_renew()
    real_read = fake.read_namespaced_lease

    def read_then_someone_writes(name: str, namespace: str, **kw: Any) -> _Response:
        response = real_read(name, namespace, **kw)
        assert fake.lease is not None
        fake._store({**fake.lease, "spec": {**fake.lease["spec"], "holderIdentity": OTHER}})
        return response

    fake.read_namespaced_lease = read_then_someone_writes  # type: ignore[method-assign]
    assert not leader.try_acquire_or_renew()
    assert not leader.is_leader()
    assert leader.role == "standby (another copy won the race for the lease)"


def test_close_releases_only_a_lease_it_holds() -> None:
    fake, clocks = FakeLeases(), Clocks()
    leader = leader_on(fake, clocks)
    leader.start()
    leader.close()
    assert fake.lease is not None and fake.lease["spec"]["holderIdentity"] == ""
    assert fake.lease["spec"]["leaseTransitions"] == 0
    assert not leader.is_leader() and leader.role == "standby (stopped)"
    writes = len(fake.writes)
    leader.close()  # idempotent
    other = leader_on(fake, clocks, OTHER)
    assert other.try_acquire_or_renew()  # a released lease is taken at once
    assert fake.writes[-1]["leaseTransitions"] == 1
    standby = leader_on(fake, clocks, "third")
    standby.start()
    standby.close()
    assert len(fake.writes) == writes + 1  # the standby released nothing
    assert fake.lease["spec"]["holderIdentity"] == OTHER


def test_is_leader_only_reads_and_the_round_logs_each_change_of_role(
        caplog: pytest.LogCaptureFixture) -> None:
    """Before: is_leader() logged (and remembered) each change itself, on the caller's thread."""
    fake, clocks = FakeLeases(), Clocks()
    leader = leader_on(fake, clocks)
    with caplog.at_level(logging.INFO, logger="autoscaler.leader"):
        leader._round()  # as start() does
        assert [r.getMessage() for r in caplog.records][-1] == "leader: holding lease n/l as me_1"
        caplog.clear()
        assert [leader.is_leader() for _ in range(3)] == [True] * 3
        fake.down = True
        clocks.advance(2.5)  # past renew_deadline: leadership lapsed, nobody has said so yet
        assert [leader.is_leader() for _ in range(3)] == [False] * 3
        assert leader.role.startswith("standby (renewal overdue")
        assert caplog.records == [], "is_leader() and role are free of side effects"
        leader._round()  # the election thread's round notices and says it, once
        leader._round()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "standby:" in r.getMessage()]
    assert len(said) == 1 and said[0][0] == logging.WARNING, said
    assert "renewal overdue" in said[0][1]
