"""The loop on fakes: a workload deleted and recreated under the same name is adopted as it
is, while the same object scaled by an operator keeps what the loop remembers of it.

The same on real components: tests/integration/test_faults_docker.py and
test_faults_kubernetes.py (the "deleted and recreated" rows of docs/reliability.md).
"""

from __future__ import annotations

import pytest

from autoscaler.actuators.base import Actuator
from autoscaler.config import load_config_data
from autoscaler.loop import Engine
from autoscaler.model import TargetState, TargetStatus
from tests.support.fakes import ConstantSource


class Workload(Actuator):
    """One object in memory: its uid, spec replicas and the state written with them."""

    def __init__(self, uid: str, replicas: int) -> None:
        self.uid, self.replicas, self.state = uid, replicas, TargetState()
        self.writes: list[int] = []

    @property
    def description(self) -> str:
        return f"fake {self.uid}"

    def status(self) -> TargetStatus:
        return TargetStatus(self.replicas, None, self.state, uid=self.uid)

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        assert expected_current == self.replicas
        self.replicas, self.state = replicas, state
        self.writes.append(replicas)


class Backend(Actuator):
    """What the actuator reads: the workload currently under the target's name."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload

    @property
    def description(self) -> str:
        return "fake"

    def status(self) -> TargetStatus:
        return self.workload.status()

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        self.workload.scale(replicas, state, expected_current=expected_current)


@pytest.mark.parametrize(("next_uid", "written", "why"), [
    # another object (deleted, recreated): nothing of the old one applies, it is scaled
    pytest.param("second", True, None, id="recreated-adopted-as-it-is"),
    # the same object scaled down by an operator: respected, and the cooldown still runs
    pytest.param("first", False, "up cooldown", id="same-object-keeps-its-cooldown"),
])
def test_a_recreated_workload_is_adopted_as_it_is(next_uid: str, written: bool,
                                                   why: str | None) -> None:
    settings = load_config_data({
        "evaluation_interval": "1s",
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "1s"},
        "targets": [{"name": "mail", "backend": "swarm", "service": "mail",
                     "min_replicas": 1, "max_replicas": 5,
                     "cooldown": {"up": "10m", "down": "10m"},
                     "policies": [{"type": "capacity", "name": "fixed", "query": "q",
                                   "per_instance": 10000, "headroom": 1}]}],
    }, environ={})
    backend = Backend(Workload("first", 1))
    engine = Engine(settings, source=ConstantSource(30000.0),  # the capacity policy wants 3
                    actuator_factory=lambda _: backend)
    try:
        [first] = engine.tick()
        assert first.written and backend.workload.replicas == 3

        if next_uid == "first":  # an operator's scale-down of the same object
            backend.workload.replicas = 1
        else:  # deleted and created again under the same name
            backend.workload = Workload(next_uid, 1)
        [second] = engine.tick()
    finally:
        engine.close()
    assert second.error is None
    assert second.written is written
    assert second.decision is not None and second.decision.current == 1
    reasons = " ".join(c.reason for c in second.decision.clips)
    assert (why in reasons) if why else reasons == "", reasons
