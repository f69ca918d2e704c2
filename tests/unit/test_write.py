"""The write gate, the one dry-run rule, and every write path of the engine as a table, on a
scripted in-memory actuator (milliseconds: no backend, no Prometheus).

The same paths on real components: tests/integration/test_faults_docker.py and
test_faults_kubernetes.py (conflicts, refused writes), test_lease_failover.py (lease lost).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from autoscaler.actuators.base import Actuator, ActuatorError, ConflictError, NotAllowed
from autoscaler.actuators.factory import DryRunActuator
from autoscaler.config import Settings, load_config_data
from autoscaler.logs import decision_log
from autoscaler.loop import Engine, TargetOutcome
from autoscaler.model import (
    Outcome,
    TargetState,
    TargetStatus,
)
from autoscaler.telemetry import Telemetry
from autoscaler.write import GAVE_UP, LOST_LEADERSHIP, WriteGate, is_dry_run, write_gate
from tests.support.daemon import registry_sample
from tests.support.fakes import ConstantSource

# --------------------------------------------------------------------------- the gate


@pytest.mark.parametrize(("refused", "dry_run", "paused", "leader", "gate"), [
    (None, False, False, True, WriteGate(True, "")),
    (None, False, False, False, WriteGate(False, "standby (not the leader)")),
    (None, False, True, True, WriteGate(False, "paused")),
    (None, False, True, False, WriteGate(False, "paused")),
    (None, True, False, True, WriteGate(False, "dry-run")),
    (None, True, True, False, WriteGate(False, "dry-run")),
    ("HPA mail/smtp scales it", False, False, True, WriteGate(False, "HPA mail/smtp scales it")),
    ("HPA mail/smtp scales it", True, True, False, WriteGate(False, "HPA mail/smtp scales it")),
], ids=["leader", "standby", "paused-leader", "paused-standby", "dry-run-leader",
        "dry-run-beats-paused-and-standby", "refused", "refused-beats-all"])
def test_write_gate(refused: str | None, dry_run: bool, paused: bool, leader: bool,
                    gate: WriteGate) -> None:
    assert write_gate(refused=refused, dry_run=dry_run, paused=paused, leader=leader) == gate


@pytest.mark.parametrize(("refused", "dry_run", "paused", "leader", "gate"), [
    (None, False, False, True, WriteGate(True, "", only=2)),
    (None, False, False, False, WriteGate(False, "standby (not the leader)")),
    (None, False, True, True, WriteGate(False, "paused")),  # paused wins (or N unreadable)
    (None, True, False, True, WriteGate(False, "dry-run")),
    ("HPA mail/smtp scales it", False, False, True, WriteGate(False, "HPA mail/smtp scales it")),
], ids=["leader-only-n", "standby", "paused-wins", "dry-run", "refused"])
def test_write_gate_paused_at_a_count(refused: str | None, dry_run: bool, paused: bool,
                                      leader: bool, gate: WriteGate) -> None:
    """#11 item 15: paused at a count, the leader may write that count and no other."""
    assert write_gate(refused=refused, dry_run=dry_run, paused=paused, leader=leader,
                      paused_at=2) == gate


@pytest.mark.parametrize(("override", "global_", "own", "dry"), [
    (False, False, False, False),
    (True, False, False, True),   # --dry-run, or a command that never writes (explain)
    (False, True, False, True),   # the global key
    (False, False, True, True),   # the target's own key
])
def test_dry_run_is_any_of_the_three(override: bool, global_: bool, own: bool,
                                     dry: bool) -> None:
    cfg = settings(dry_run=global_, target_dry_run=own)
    assert is_dry_run(override, cfg, cfg.targets[0]) is dry


def test_the_no_write_actuator_cannot_write_even_if_the_gate_were_wrong() -> None:
    inner = Scripted()
    dry = DryRunActuator(inner)
    dry.scale(7, TargetState(), expected_current=3)
    dry.record_event("SuccessfulRescale", "New size: 7")
    assert (inner.attempts, inner.events, inner.replicas) == (0, [], 3)
    assert [n for n, _ in dry.would_have] == [7]
    assert dry.status() == inner.status() and dry.hpa_conflict() is None  # reads go through


# --------------------------------------------------------------------------- fakes


# Every query reads 50000: the capacity policy below asks for 5 replicas.
INFLOW = ConstantSource(50000.0)


@dataclass
class Scripted(Actuator):
    """A workload at 3 replicas whose writes follow `script` ("conflict", "forbidden",
    "oserror"; then they succeed); `reread_fails` fails every read after the first;
    `hpa` is what each HPA check answers in turn (the last one repeats)."""

    script: list[str] = field(default_factory=list)
    paused: bool = False
    paused_replicas: int | None = None  # the operator's paused-replicas N
    pause_problem: str = ""  # an unreadable N (then `paused` too, as the actuators read it)
    reread_fails: bool = False
    hpa: list[str | None] = field(default_factory=lambda: [None])
    replicas: int = 3
    state: TargetState = field(default_factory=TargetState)
    reads: int = 0
    attempts: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def description(self) -> str:
        return "scripted"

    def status(self) -> TargetStatus:
        self.reads += 1
        if self.reread_fails and self.reads > 1:
            raise ActuatorError("inspect: connection refused")
        return TargetStatus(self.replicas, self.replicas, self.state, paused=self.paused,
                            paused_replicas=self.paused_replicas,
                            pause_problem=self.pause_problem)

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        self.attempts += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "conflict":
            raise ConflictError("update out of sequence")
        if step == "forbidden":
            raise NotAllowed("patch deployments: forbidden")
        if step == "oserror":
            raise OSError("connection reset by peer")
        self.replicas, self.state = replicas, state

    def record_event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.events.append((reason, type_))

    def hpa_conflict(self) -> str | None:
        return self.hpa.pop(0) if len(self.hpa) > 1 else self.hpa[0]


class Leader:
    """Answers `is_leader` from `answers` in turn (the last one repeats)."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)
        self.role = "leader"

    def is_leader(self) -> bool:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def close(self) -> None:
        return None


def settings(*, dry_run: bool = False, target_dry_run: bool = False,
             cooldown: str = "0s") -> Settings:
    target = {"name": "smtp", "backend": "swarm", "service": "smtp", "min_replicas": 1,
              "max_replicas": 10, "dry_run": target_dry_run,
              "cooldown": {"up": cooldown, "down": cooldown},
              "policies": [{"type": "capacity", "name": "inflow", "query": "inflow",
                            "per_instance": 10000, "headroom": 1.0}]}
    return load_config_data({"evaluation_interval": "1s", "dry_run": dry_run,
                             "prometheus": {"url": "http://127.0.0.1:9", "timeout": "1s"},
                             "targets": [target]}, environ={})


def ticks(actuator: Scripted, leader: Leader, n: int = 1,
          **cfg: Any) -> tuple[list[TargetOutcome], TargetState | None]:
    """`n` ticks; their outcomes and what the engine remembers of the target after them."""
    engine = Engine(settings(**cfg), source=INFLOW, actuator_factory=lambda _: actuator,
                    telemetry=Telemetry(), leadership=leader)
    try:
        return [engine.tick()[0] for _ in range(n)], engine.runtimes[0].state
    finally:
        engine.close()


# --------------------------------------------------------------------------- write paths


@dataclass(frozen=True)
class Row:
    actuator: Scripted
    leader: tuple[bool, ...] = (True,)
    cfg: dict[str, Any] = field(default_factory=dict)
    # expected
    replicas: int = 5  # on the workload after the tick
    written: bool = False
    skipped: str = ""
    error: str = ""  # prefix
    attempts: int = 0  # scale calls that reached the actuator
    reads: int = 1
    events: tuple[tuple[str, str], ...] = ()
    scale_remembered: bool = False  # the engine's memory holds this tick's scale
    recommendation_remembered: bool = True  # ... and its recommendation
    recorded: bool = True  # a decision record (the outcome's decision)


HPA = "HorizontalPodAutoscaler mail/smtp-hpa also scales it"
ROWS = {
    "written": Row(Scripted(), written=True, attempts=1,
                   events=(("SuccessfulRescale", "Normal"),), scale_remembered=True),
    "conflict-once": Row(Scripted(["conflict"]), written=True, attempts=2, reads=2,
                         events=(("SuccessfulRescale", "Normal"),), scale_remembered=True),
    # after the last conflict no decision of this tick stands: nothing of it is remembered
    "conflict-always": Row(Scripted(["conflict"] * 3), replicas=3, skipped=GAVE_UP,
                           attempts=3, reads=4, recommendation_remembered=False),
    "not-allowed": Row(Scripted(["forbidden"]), replicas=3,
                       error="writing 5 replicas: patch deployments: forbidden", attempts=1,
                       events=(("FailedRescale", "Warning"),)),
    "backend-gone": Row(Scripted(["oserror"]), replicas=3,
                        error="writing 5 replicas: connection reset by peer", attempts=1,
                        events=(("FailedRescale", "Warning"),)),
    "reread-fails-after-conflict": Row(Scripted(["conflict"], reread_fails=True), replicas=3,
                                       error="re-reading after a conflict: inspect:",
                                       attempts=1, reads=2, recorded=False),
    "lease-lost-mid-tick": Row(Scripted(), leader=(True, False), replicas=3,
                               skipped=LOST_LEADERSHIP),
    "standby": Row(Scripted(), leader=(False,), replicas=3, skipped="standby (not the leader)"),
    "dry-run": Row(Scripted(), cfg={"dry_run": True}, replicas=3, skipped="dry-run"),
    "target-dry-run": Row(Scripted(), cfg={"target_dry_run": True}, replicas=3,
                          skipped="dry-run"),
    "paused": Row(Scripted(paused=True), replicas=3),  # decide holds: nothing to write
    # #11 item 15, paused at a count: written once (its record says so), no scale event
    # remembered (no cooldown, no rate limit); the gate's other answers still stand
    "paused-replicas": Row(Scripted(paused_replicas=2), replicas=2, written=True, attempts=1,
                           events=(("SuccessfulRescale", "Normal"),)),
    "paused-replicas-clamped": Row(Scripted(paused_replicas=50), replicas=10, written=True,
                                   attempts=1, events=(("SuccessfulRescale", "Normal"),)),
    "paused-replicas-in-place": Row(Scripted(paused_replicas=3), replicas=3),
    "paused-replicas-applied": Row(Scripted(paused_replicas=2,
                                            state=TargetState(last_written=3,
                                                              pause_applied=2)),
                                   replicas=3),  # held: scaled by hand since, not rewritten
    "paused-wins": Row(Scripted(paused=True, paused_replicas=2), replicas=3),
    "paused-replicas-unreadable": Row(Scripted(paused=True, pause_problem="N is unreadable"),
                                      replicas=3, events=(("InvalidPausedReplicas", "Warning"),)),
    "paused-replicas-standby": Row(Scripted(paused_replicas=2), leader=(False,), replicas=3,
                                   skipped="standby (not the leader)"),
    "paused-replicas-dry-run": Row(Scripted(paused_replicas=2), cfg={"dry_run": True},
                                   replicas=3, skipped="dry-run"),
    "paused-replicas-conflict-once": Row(Scripted(["conflict"], paused_replicas=2), replicas=2,
                                         written=True, attempts=2, reads=2,
                                         events=(("SuccessfulRescale", "Normal"),)),
    "refused-hpa": Row(Scripted(hpa=[HPA]), replicas=3, skipped=HPA,
                       events=(("HPAConflict", "Warning"),)),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_write_paths(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=decision_log.name)
    [outcome], state = ticks(row.actuator, Leader(*row.leader), **row.cfg)
    a = row.actuator
    assert (a.replicas, outcome.written, outcome.skipped) == (row.replicas, row.written,
                                                              row.skipped)
    assert (outcome.error or "").startswith(row.error) and bool(outcome.error) is bool(row.error)
    assert (a.attempts, a.reads, tuple(a.events)) == (row.attempts, row.reads, row.events)
    decision = outcome.decision
    assert decision is not None and decision.recommended == 5
    if row.actuator.paused or row.actuator.paused_replicas is not None:
        assert decision.outcome is Outcome.PAUSED
    assert (state is not None and bool(state.events)) is row.scale_remembered
    assert (state is not None and (decision.time, 5) in state.recommendations) \
        is row.recommendation_remembered
    records = [r for r in caplog.records if r.name == decision_log.name
               and '"event": "decision"' in r.getMessage()]
    assert len(records) == (1 if row.recorded else 0)


def test_an_hpa_is_checked_every_tick_writes_stop_while_it_exists_and_resume() -> None:
    """#11 item 4: an HPA that appears after the start stops the writes at the next tick
    (a Warning event once, the target named in /statusz's problems, the metric at 1); writes
    resume at the first tick after it is gone."""
    actuator = Scripted(hpa=[None, HPA, HPA, None])
    engine = Engine(settings(), source=INFLOW, actuator_factory=lambda _: actuator,
                    telemetry=Telemetry(), leadership=Leader(True))

    def conflict_metric() -> float | None:
        return next((float(s.value) for m in engine.telemetry.registry.collect()
                     for s in m.samples if s.name == "autoscaler_target_hpa_conflict"
                     and s.labels.get("target") == "smtp"), None)

    try:
        assert engine.tick()[0].written and conflict_metric() == 0
        for _ in range(2):
            actuator.replicas = 3  # an operator scales back: the engine wants 5 again
            outcome = engine.tick()[0]
            assert (outcome.written, outcome.skipped, actuator.replicas) == (False, HPA, 3)
            assert engine.health.problems == {"smtp": HPA} and conflict_metric() == 1
        assert [e for e in actuator.events if e[0] == "HPAConflict"] == [("HPAConflict",
                                                                           "Warning")]
        outcome = engine.tick()[0]
        assert (outcome.written, actuator.replicas) == (True, 5)
        assert engine.health.problems == {} and conflict_metric() == 0
        assert actuator.events[-2:] == [("HPAConflictResolved", "Normal"),
                                        ("SuccessfulRescale", "Normal")]
    finally:
        engine.close()


def test_paused_replicas_is_written_once_held_and_then_scaling_resumes_without_cooldown(
        ) -> None:
    """#11 item 15 over several ticks (load asks for 5, cooldowns 600 s): paused at 2, the
    target is scaled to 2 once; the next tick does not take that write for an operator's
    scale and does not write again; an operator's scale while paused is held, not undone;
    with the annotation removed scaling resumes at once (our write started no cooldown)."""
    now = [1000.0]
    actuator = Scripted(paused_replicas=2)
    engine = Engine(settings(cooldown="600s"), source=INFLOW,
                    actuator_factory=lambda _: actuator, telemetry=Telemetry(),
                    leadership=Leader(True), clock=lambda: now[0])

    def tick() -> tuple[TargetOutcome, str, TargetState]:
        now[0] += 10
        outcome = engine.tick()[0]
        assert outcome.decision is not None and engine.runtimes[0].state is not None
        reasons = [c.reason for c in outcome.decision.clips if c.kind == "paused"]
        return outcome, (reasons or [""])[0], engine.runtimes[0].state

    try:
        outcome, why, state = tick()
        assert (outcome.written, actuator.replicas) == (True, 2)
        assert why == "paused at 2: scaling 3 -> 2 once, then held"
        assert engine.health.status()[1]["paused"] == {"smtp": why}
        assert registry_sample(engine.telemetry.registry, "autoscaler_target_paused",
                               target="smtp") == 1
        assert (state.last_written, state.pause_applied) == (2, 2)
        assert (state.last_scale_time, state.events, state.manual_time) == (None, (), None)
        assert actuator.state.pause_applied == 2  # on the target: survives a restart

        outcome, why, state = tick()
        assert (outcome.written, actuator.replicas, actuator.attempts) == (False, 2, 1)
        assert why == "paused at 2: held" and state.manual_time is None  # not a manual scale

        actuator.replicas = 4  # an operator scales while it is paused: held, not undone
        outcome, why, state = tick()
        assert (outcome.written, actuator.replicas, actuator.attempts) == (False, 4, 1)
        assert why == "paused at 2: applied; held at 4 (scaled by hand since)"
        assert state.manual_direction == 1  # that one is the operator's

        actuator.paused_replicas = None  # resumed: no cooldown from our write to 2
        outcome, why, state = tick()
        assert outcome.decision is not None and outcome.decision.outcome is Outcome.SCALE_UP
        assert (outcome.written, actuator.replicas, why) == (True, 5, "")
        assert state.pause_applied is None and engine.health.status()[1]["paused"] == {}
        assert registry_sample(engine.telemetry.registry, "autoscaler_target_paused",
                               target="smtp") == 0
        assert actuator.state.pause_applied is None
    finally:
        engine.close()
