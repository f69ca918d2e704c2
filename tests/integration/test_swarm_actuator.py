"""The Swarm actuator against the real dockerd in swarm mode (`scripts/testenv up`).

Every service has a unique name and is removed in teardown. Deadlines are generous: they say
whether tasks come up, not how fast.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from autoscaler.actuators.base import ActuatorError, ConflictError, NotAllowed, TargetMissing
from autoscaler.actuators.swarm import SwarmActuator, swarm_client
from autoscaler.model import TargetState
from autoscaler.state import SWARM_PREFIX, encode_state
from tests.support.realenv import RealEnv
from tests.support.swarm import STACK_LABELS, STATE, TASK_DEADLINE, ServiceFactory, spec_of
from tests.support.wait import wait_until


def without_scale_and_state(spec: dict[str, Any]) -> str:
    """The spec minus what scale() may change, as canonical JSON."""
    spec = copy.deepcopy(spec)
    spec["Mode"]["Replicated"].pop("Replicas", None)
    labels = spec.get("Labels") or {}
    spec["Labels"] = {k: v for k, v in labels.items() if not k.startswith(SWARM_PREFIX)}
    return json.dumps(spec, sort_keys=True)



# --- reading ------------------------------------------------------------------------------------


def test_status_of_a_fresh_service(docker_client: docker.DockerClient,
                                   make_service: ServiceFactory) -> None:
    name = make_service(replicas=2)
    actuator = SwarmActuator(docker_client, name)
    assert actuator.description == f"swarm service {name}"

    first = actuator.status()
    assert first.current == 2
    assert first.ready is not None and 0 <= first.ready <= 2
    assert first.state == TargetState()
    assert first.paused is False
    wait_until("2 running tasks", lambda: actuator.status().ready == 2, TASK_DEADLINE)


@pytest.mark.parametrize(("label", "paused"), [
    ("true", True),
    ("TRUE", True),
    ("false", False),
])
def test_paused_label(docker_client: docker.DockerClient, make_service: ServiceFactory,
                      label: str, paused: bool) -> None:
    name = make_service(replicas=0, labels={SWARM_PREFIX + "paused": label})
    actuator = SwarmActuator(docker_client, name)
    assert actuator.status().paused is paused


def test_a_paused_service_is_never_written(docker_client: docker.DockerClient,
                                           make_service: ServiceFactory) -> None:
    name = make_service(replicas=0, labels={SWARM_PREFIX + "paused": "true"})
    actuator = SwarmActuator(docker_client, name)
    before = spec_of(docker_client, name)
    actuator.status()
    with pytest.raises(NotAllowed, match="paused"):
        actuator.scale(1, STATE, expected_current=0)
    assert spec_of(docker_client, name) == before


def test_garbage_state_labels_are_dropped_and_logged(
        docker_client: docker.DockerClient, make_service: ServiceFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    name = make_service(replicas=0, labels={SWARM_PREFIX + "events": "[[not json",
                                            SWARM_PREFIX + "last-replicas": "4"})
    caplog.set_level(logging.WARNING, logger="autoscaler.actuators.swarm")
    status = SwarmActuator(docker_client, name).status()
    assert status.state == TargetState(last_written=4)
    assert status.current == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(name in w and SWARM_PREFIX + "events" in w for w in warnings), warnings


def test_deeply_nested_garbage_does_not_stop_status(
        docker_client: docker.DockerClient, make_service: ServiceFactory) -> None:
    # Once a RecursionError that escaped decode_state; status() must never fail on labels.
    name = make_service(replicas=0, labels={SWARM_PREFIX + "events": "[" * 100_000,
                                            SWARM_PREFIX + "paused": "true"})
    status = SwarmActuator(docker_client, name).status()
    assert status.state == TargetState()
    assert status.paused is True


def test_missing_service(docker_client: docker.DockerClient) -> None:
    name = f"as-missing-{uuid.uuid4().hex[:12]}"
    actuator = SwarmActuator(docker_client, name)
    with pytest.raises(TargetMissing, match=name):
        actuator.status()
    with pytest.raises(TargetMissing, match=name):
        actuator.scale(2, STATE, expected_current=1)


def test_service_removed_between_read_and_write(docker_client: docker.DockerClient,
                                                make_service: ServiceFactory) -> None:
    name = make_service(replicas=0)
    actuator = SwarmActuator(docker_client, name)
    actuator.status()
    docker_client.api.remove_service(name)
    with pytest.raises(TargetMissing, match=name):
        actuator.scale(1, STATE, expected_current=0)


@pytest.mark.parametrize("mode", ["global", "replicated-job", "global-job"])
def test_only_replicated_services(docker_client: docker.DockerClient,
                                  make_service: ServiceFactory, mode: str) -> None:
    name = make_service(replicas=0, mode=mode)
    with pytest.raises(NotAllowed, match="only replicated services can be scaled"):
        SwarmActuator(docker_client, name).status()


def test_unreachable_engine_is_an_actuator_error(tmp_path: Path) -> None:
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/nothing.sock", version="1.41",
                                 timeout=5)
    with pytest.raises(ActuatorError, match="inspect service mail: cannot reach docker"):
        SwarmActuator(client, "mail").status()


def test_swarm_client_connects_like_the_cli(realenv: RealEnv, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_API_VERSION", raising=False)
    monkeypatch.setenv("DOCKER_HOST", realenv.docker_host)
    client = swarm_client(timeout=30)
    try:
        assert client.info()["Swarm"]["ControlAvailable"] is True
    finally:
        client.close()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(ActuatorError, match="connect to docker at unix://"):
        swarm_client(timeout=5)


# --- writing ------------------------------------------------------------------------------------


def test_scale_writes_replicas_and_state_and_nothing_else(
        docker_client: docker.DockerClient, make_service: ServiceFactory) -> None:
    name = make_service(replicas=2)
    actuator = SwarmActuator(docker_client, name)
    version_before = docker_client.api.inspect_service(name)["Version"]["Index"]
    before = spec_of(docker_client, name)

    assert actuator.status().current == 2
    actuator.scale(3, STATE, expected_current=2)

    inspected = docker_client.api.inspect_service(name)
    after = inspected["Spec"]
    assert inspected["Version"]["Index"] > version_before
    assert after["Mode"]["Replicated"]["Replicas"] == 3
    assert after["Labels"] == {**STACK_LABELS, **encode_state(STATE, SWARM_PREFIX)}
    assert without_scale_and_state(after) == without_scale_and_state(before)

    again = actuator.status()
    assert again.current == 3
    assert again.state == STATE
    assert again.paused is False
    wait_until("3 running tasks", lambda: actuator.status().ready == 3, TASK_DEADLINE)


def test_scale_replaces_only_our_labels(docker_client: docker.DockerClient,
                                        make_service: ServiceFactory) -> None:
    old = TargetState(last_written=1, events=((5.0, 1),))
    name = make_service(replicas=0, labels={**encode_state(old, SWARM_PREFIX),
                                            SWARM_PREFIX + "note": "kept"})
    actuator = SwarmActuator(docker_client, name)
    assert actuator.status().state == old
    actuator.scale(1, STATE, expected_current=0)
    labels = spec_of(docker_client, name)["Labels"]
    assert labels == {**STACK_LABELS, SWARM_PREFIX + "note": "kept",
                      **encode_state(STATE, SWARM_PREFIX)}
    assert actuator.status().state == STATE


def test_scale_without_a_prior_status_reads_first(docker_client: docker.DockerClient,
                                                  make_service: ServiceFactory) -> None:
    name = make_service(replicas=0)
    SwarmActuator(docker_client, name).scale(1, STATE, expected_current=0)
    assert spec_of(docker_client, name)["Mode"]["Replicated"]["Replicas"] == 1


def _other_client_scales_to_2(client: docker.DockerClient, name: str) -> None:
    client.services.get(name).scale(2)


def _nobody(client: docker.DockerClient, name: str) -> None:
    pass


@pytest.mark.parametrize(("meanwhile", "expected_current", "left"), [
    # another client scaled after our read: swarm refuses our stale version
    (_other_client_scales_to_2, 1, 2),
    # the spec count we read is not the one the decision was made for
    (_nobody, 2, 1),
], ids=["version-conflict", "count-mismatch"])
def test_conflict(docker_client: docker.DockerClient, make_service: ServiceFactory,
                  meanwhile: Callable[[docker.DockerClient, str], None],
                  expected_current: int, left: int) -> None:
    name = make_service(replicas=1)
    actuator = SwarmActuator(docker_client, name)
    assert actuator.status().current == 1
    meanwhile(docker_client, name)
    written = spec_of(docker_client, name)

    with pytest.raises(ConflictError, match=name):
        actuator.scale(3, STATE, expected_current=expected_current)
    assert spec_of(docker_client, name) == written
    assert written["Mode"]["Replicated"]["Replicas"] == left

    # The loop's answer: re-read, decide again, write.
    assert actuator.status().current == left
    actuator.scale(3, STATE, expected_current=left)
    assert spec_of(docker_client, name)["Mode"]["Replicated"]["Replicas"] == 3


def test_a_version_is_spent_by_a_write(docker_client: docker.DockerClient,
                                       make_service: ServiceFactory) -> None:
    name = make_service(replicas=0)
    actuator = SwarmActuator(docker_client, name)
    actuator.status()
    actuator.scale(1, STATE, expected_current=0)
    # A second write without a new status() re-reads: it sees 1 and refuses a stale decision.
    with pytest.raises(ConflictError):
        actuator.scale(2, STATE, expected_current=0)
    assert spec_of(docker_client, name)["Mode"]["Replicated"]["Replicas"] == 1


# --- an engine that is not a swarm manager -------------------------------------------------------


@pytest.fixture(scope="module")
def plain_dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[docker.DockerClient]:
    """A throwaway dockerd NOT in swarm mode (killed by its pid at the end)."""
    root = tmp_path_factory.mktemp("dk")  # short: unix socket paths are limited to 108 bytes
    sock = root / "docker.sock"
    exec_root = root / "exec"
    log_file = (root / "dockerd.log").open("wb")
    proc = subprocess.Popen(
        ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
         "--storage-driver=vfs", "--data-root", str(root / "data"), "--exec-root",
         str(exec_root), "--pidfile", str(root / "dockerd.pid"), "--host", f"unix://{sock}"],
        stdout=log_file, stderr=subprocess.STDOUT)
    client: docker.DockerClient | None = None
    try:
        def connect() -> docker.DockerClient | None:
            if proc.poll() is not None:
                pytest.fail(f"dockerd exited with {proc.returncode}: "
                            f"{(root / 'dockerd.log').read_text()[-2000:]}")
            try:
                return docker.DockerClient(base_url=f"unix://{sock}", version="auto", timeout=30)
            except docker.errors.DockerException:
                return None

        client = wait_until("the second dockerd to answer", connect, 120)
        yield client
    finally:
        if client is not None:
            client.close()
        containerd_pid = _read_pid(exec_root / "containerd" / "containerd.pid")
        _stop(proc.pid, lambda: proc.poll() is not None)
        if containerd_pid is not None:  # dockerd stops its containerd; make sure of it
            _stop(containerd_pid, lambda: not _alive(containerd_pid))
        log_file.close()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return ""


def _stop(pid: int, gone: Callable[[], bool]) -> None:
    """SIGTERM, then SIGKILL after a while: only this pid, which this test started."""
    for sig, grace in ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
        if gone():
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.2)


def test_not_a_manager(plain_dockerd: docker.DockerClient) -> None:
    assert plain_dockerd.info()["Swarm"]["LocalNodeState"] == "inactive"
    actuator = SwarmActuator(plain_dockerd, "mail")
    with pytest.raises(ActuatorError, match=r"inspect service mail: .*swarm manager") as info:
        actuator.status()
    assert not isinstance(info.value, TargetMissing)
    with pytest.raises(NotAllowed, match="not a swarm manager"):
        actuator.scale(2, STATE, expected_current=1)
