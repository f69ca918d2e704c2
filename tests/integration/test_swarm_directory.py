"""Swarm targets sharing one service list per tick (`ServiceDirectory`), on the real dockerd.

What is shared must read exactly what each target's own inspect reads, with two API calls per
tick instead of two per target; and writes must still send the version that was read.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest
import requests

from autoscaler.actuators.base import ConflictError, TargetMissing
from autoscaler.actuators.swarm import ServiceDirectory, SwarmActuator
from autoscaler.model import TargetState
from autoscaler.state import SWARM_PREFIX
from tests.support.realenv import RealEnv
from tests.support.swarm import STATE, TASK_DEADLINE, ServiceFactory, spec_of
from tests.support.wait import wait_until


@pytest.fixture
def counted(realenv: RealEnv, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[docker.DockerClient, Counter[str]]]:
    """A client of its own whose service and task reads are counted."""
    client = docker.DockerClient(base_url=realenv.docker_host, timeout=60, version="auto")
    calls: Counter[str] = Counter()
    for name in ("services", "tasks", "inspect_service"):
        real = getattr(client.api, name)

        def wrapped(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(client.api, name, wrapped)
    try:
        yield client, calls
    finally:
        client.close()


def test_one_list_per_tick_reads_what_each_inspect_reads(
    docker_client: docker.DockerClient, make_service: ServiceFactory,
    counted: tuple[docker.DockerClient, Counter[str]],
) -> None:
    client, calls = counted
    names = [make_service(replicas=0),
             make_service(replicas=1, labels={SWARM_PREFIX + "last-replicas": "1"}),
             make_service(replicas=0, labels={SWARM_PREFIX + "paused": "true"})]
    wait_until("the task to run", lambda: SwarmActuator(docker_client, names[1]).status().ready
               == 1, TASK_DEADLINE)
    directory = ServiceDirectory(client)
    shared = [SwarmActuator(client, name, directory) for name in names]
    own = [SwarmActuator(docker_client, name).status() for name in names]

    directory.begin_tick()
    calls.clear()
    statuses = [a.status() for a in shared]
    assert statuses == own
    assert [(s.current, s.ready, s.paused) for s in statuses] == [
        (0, 0, False), (1, 1, False), (0, 0, True)]
    assert statuses[1].state == TargetState(last_written=1)
    assert calls == Counter({"services": 1, "tasks": 1})

    directory.begin_tick()  # the next tick lists again, once
    calls.clear()
    assert [a.status() for a in shared] == own
    assert calls == Counter({"services": 1, "tasks": 1})


def test_a_service_not_in_the_list_is_inspected_by_its_target(
    docker_client: docker.DockerClient, make_service: ServiceFactory,
    counted: tuple[docker.DockerClient, Counter[str]],
) -> None:
    client, calls = counted
    directory = ServiceDirectory(client)
    present = SwarmActuator(client, make_service(replicas=0), directory)
    missing_name = f"as-missing-{uuid.uuid4().hex[:12]}"
    missing = SwarmActuator(client, missing_name, directory)
    directory.begin_tick()
    assert present.status().current == 0
    with pytest.raises(TargetMissing, match=missing_name):
        missing.status()
    assert calls["services"] == 1
    assert calls["inspect_service"] == 1  # the missing one only


def test_one_target_alone_inspects_itself(
    make_service: ServiceFactory, counted: tuple[docker.DockerClient, Counter[str]],
) -> None:
    client, calls = counted
    directory = ServiceDirectory(client)
    actuator = SwarmActuator(client, make_service(replicas=0), directory)
    directory.begin_tick()
    assert actuator.status().current == 0
    assert calls == Counter({"inspect_service": 1, "tasks": 1})  # no list of every service


def test_a_write_sends_the_version_the_tick_listed(
    docker_client: docker.DockerClient, make_service: ServiceFactory,
    counted: tuple[docker.DockerClient, Counter[str]],
) -> None:
    client, calls = counted
    names = [make_service(replicas=0), make_service(replicas=0)]
    directory = ServiceDirectory(client)
    first, second = (SwarmActuator(client, name, directory) for name in names)
    directory.begin_tick()
    assert first.status().current == 0 and second.status().current == 0

    # Someone else changes the first service after the tick listed it.
    docker_client.services.get(names[0]).update(labels={"owner": "someone-else"})
    with pytest.raises(ConflictError):
        first.scale(1, STATE, expected_current=0)
    assert spec_of(docker_client, names[0])["Mode"]["Replicated"]["Replicas"] == 0

    # The loop re-reads after a conflict, in the same tick: that read is the service now.
    calls.clear()
    assert first.status().current == 0
    assert calls["inspect_service"] == 1 and calls["services"] == 0
    first.scale(1, STATE, expected_current=0)
    second.scale(1, STATE, expected_current=0)  # unchanged since listed: accepted
    assert [spec_of(docker_client, n)["Mode"]["Replicated"]["Replicas"] for n in names] == [1, 1]

    directory.begin_tick()
    assert [first.status().current, second.status().current] == [1, 1]


def test_a_refused_list_falls_back_to_each_targets_inspect(
    make_service: ServiceFactory, counted: tuple[docker.DockerClient, Counter[str]],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """As through the Docker API proxy of deploy/swarm, which answers 403 to a list."""
    client, calls = counted
    forbidden = requests.Response()
    forbidden.status_code = 403

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls["services"] += 1
        raise docker.errors.APIError("403 Client Error: Forbidden", response=forbidden,
                                     explanation="Request forbidden by administrative rules.")

    monkeypatch.setattr(client.api, "services", refuse)
    directory = ServiceDirectory(client)
    actuators = [SwarmActuator(client, make_service(replicas=0), directory) for _ in range(2)]
    for _ in range(2):
        directory.begin_tick()
        assert [a.status().current for a in actuators] == [0, 0]
    assert calls == Counter({"services": 1, "inspect_service": 4, "tasks": 4})
    assert sum("listing swarm services is refused" in r.getMessage()
               for r in caplog.records) == 1
