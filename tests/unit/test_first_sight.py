"""#11 item 5: a target's first tick in a process starts its stabilization history with (now,
current), as the HPA does; a process that already has history (a warm standby) keeps it and
adds nothing. The real restart: tests/integration/test_restart_window_e2e.py."""

from __future__ import annotations

import pytest

from autoscaler.actuators.base import Actuator
from autoscaler.config import load_config_data
from autoscaler.loop import Engine
from autoscaler.model import TargetState, TargetStatus
from autoscaler.state import first_sight
from autoscaler.telemetry import Telemetry
from tests.support.fakes import ConstantSource


@pytest.mark.parametrize(("on_target", "now", "current", "recommendations"), [
    pytest.param(TargetState(), 100.0, 3, ((100.0, 3),), id="no-state"),
    pytest.param(TargetState(recommendations=((40.0, 5),), last_written=5), 100.0, 4,
                 ((40.0, 5), (100.0, 4)), id="stored-history-kept"),
])
def test_first_sight(on_target: TargetState, now: float, current: int,
                     recommendations: tuple[tuple[float, int], ...]) -> None:
    seen = first_sight(on_target, now, current)
    assert seen.recommendations == recommendations
    assert seen.last_written == on_target.last_written  # only the history changes


# Every query reads 10000: the capacity policy below asks for 1 replica.
LOW = ConstantSource(10000.0)


class Workload(Actuator):
    def __init__(self, uid: str = "u1") -> None:
        self.replicas, self.state, self.uid = 3, TargetState(), uid

    @property
    def description(self) -> str:
        return "workload"

    def status(self) -> TargetStatus:
        return TargetStatus(self.replicas, self.replicas, self.state, uid=self.uid)

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        self.replicas, self.state = replicas, state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def engine(workload: Workload, clock: Clock) -> Engine:
    settings = load_config_data({"prometheus": {"url": "http://127.0.0.1:9"}, "targets": [{
        "name": "smtp", "backend": "swarm", "service": "smtp", "max_replicas": 5,
        "cooldown": {"up": "0s", "down": "0s"},
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
        "policies": [{"type": "capacity", "query": "x", "per_instance": 10000,
                      "headroom": 1}]}]}, environ={})
    return Engine(settings, source=LOW, actuator_factory=lambda _: workload,
                  telemetry=Telemetry(), clock=clock)


@pytest.mark.parametrize(("restart_at", "recreate_at", "down_at"), [
    pytest.param(None, None, 1060.0, id="first-tick-holds-one-window"),
    pytest.param(1030.0, None, 1090.0, id="restart-mid-window-delays-never-shortens"),
    pytest.param(None, 1030.0, 1090.0, id="recreated-object-seen-anew"),
])
def test_a_scale_down_waits_a_window_after_first_sight(
        restart_at: float | None, recreate_at: float | None, down_at: float) -> None:
    """Ticks every 10 s from t=1000 asking 1 of a workload at 3, window 60 s: the first
    tick's (now, 3) holds it until t=1060; a restart (a new engine, memory lost) or a
    re-created object (a new uid) at t=1030 starts a new window; a warm engine that ticks
    on keeps its history and adds no new first sight."""
    workload, clock = Workload(), Clock()
    current = engine(workload, clock)
    try:
        while workload.replicas == 3 and clock.now <= 1200:
            if clock.now == restart_at:
                current.close()
                current = engine(workload, clock)
            if clock.now == recreate_at:
                workload.uid = "u2"
            current.tick()
            if workload.replicas == 3:
                history = current.runtimes[0].state
                assert history is not None
                # one first sight in this engine's history, not one per tick
                assert [r for r in history.recommendations if r[1] == 3] == [
                    (max(t for t in (1000.0, restart_at, recreate_at)
                         if t is not None and t <= clock.now), 3)]
                clock.now += 10
        assert (workload.replicas, clock.now) == (1, down_at)
    finally:
        current.close()
