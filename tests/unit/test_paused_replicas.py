"""#11 item 15: pause at a count, as KEDA's paused-replicas. The pure rules as tables: reading
the switches, what count to write, the state it leaves (no operator's scale, no cooldown),
and `decide` on top of them. The engine's write paths: test_write.py; the real backends:
tests/integration/test_paused_replicas_e2e.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoscaler.decide import TargetRules, decide, detect_manual_change, pause_at_count
from autoscaler.model import (
    ClipKind,
    Outcome,
    PolicyResult,
    SignalState,
    TargetState,
    TargetStatus,
)
from autoscaler.state import (
    KUBERNETES_PREFIX,
    SWARM_PREFIX,
    Pause,
    decode_state,
    encode_state,
    merge_states,
    read_pause,
)

K = KUBERNETES_PREFIX
UNREADABLE = "is not a replica count (a whole number >= 0): paused, nothing is written"


# --------------------------------------------------------------------------- the switches


@pytest.mark.parametrize(("labels", "pause"), [
    ({}, Pause()),
    ({K + "paused-replicas": "3"}, Pause(False, 3)),
    ({K + "paused-replicas": " 0 "}, Pause(False, 0)),
    ({K + "paused": "true"}, Pause(True)),
    ({K + "paused": "true", K + "paused-replicas": "3"}, Pause(True)),  # paused wins
    ({K + "paused": "false", K + "paused-replicas": "3"}, Pause(False, 3)),
    ({K + "paused-replicas": "-1"}, Pause(True, None, f"{K}paused-replicas='-1' {UNREADABLE}")),
    ({K + "paused-replicas": ""}, Pause(True, None, f"{K}paused-replicas='' {UNREADABLE}")),
    ({K + "paused-replicas": "2.5"}, Pause(True, None, f"{K}paused-replicas='2.5' {UNREADABLE}")),
    ({K + "paused-replicas": "two"}, Pause(True, None, f"{K}paused-replicas='two' {UNREADABLE}")),
    ({K + "paused-replicas": "\u0663"}, Pause(True, None,  # a non-ASCII digit
                                              f"{K}paused-replicas='\u0663' {UNREADABLE}")),
    # unreadable with `paused` set: paused either way, the warning still says why
    ({K + "paused": "true", K + "paused-replicas": "x"},
     Pause(True, None, f"{K}paused-replicas='x' {UNREADABLE}")),
], ids=["none", "n", "zero-spaces", "paused", "paused-wins", "paused-false", "negative",
        "empty", "fraction", "word", "non-ascii-digit", "paused-and-unreadable"])
def test_read_pause(labels: dict[str, str], pause: Pause) -> None:
    assert read_pause(labels, K) == pause
    assert decode_state(labels, K).paused is pause.paused


def test_swarm_label_uses_its_own_prefix() -> None:
    assert read_pause({"autoscaler.paused-replicas": "4"}, SWARM_PREFIX) == Pause(False, 4)
    assert read_pause({K + "paused-replicas": "4"}, SWARM_PREFIX) == Pause()


def test_pause_applied_is_kept_on_the_target_and_never_the_operators_switch() -> None:
    labels = encode_state(TargetState(last_written=2, pause_applied=2), K)
    assert labels[K + "pause-applied"] == "2"
    assert K + "paused-replicas" not in labels and K + "paused" not in labels
    assert decode_state(labels, K).state == TargetState(last_written=2, pause_applied=2)
    assert encode_state(TargetState(), K)[K + "pause-applied"] == ""  # a later write clears it
    bad = decode_state({K + "pause-applied": "-2"}, K)
    assert bad.state.pause_applied is None and bad.problems


@pytest.mark.parametrize(("target", "memory", "applied"), [
    (TargetState(pause_applied=2), None, 2),
    (TargetState(pause_applied=2), TargetState(), 2),  # the leader applied it: not again
    (TargetState(), TargetState(pause_applied=3), 3),
    (TargetState(pause_applied=2), TargetState(pause_applied=3), 3),
], ids=["target-only", "target-applied", "memory-applied", "memory-wins"])
def test_merge_keeps_an_applied_pause(target: TargetState, memory: TargetState | None,
                                      applied: int) -> None:
    assert merge_states(target, memory).pause_applied == applied


# --------------------------------------------------------------------------- the count


@pytest.mark.parametrize(("current", "requested", "applied", "desired", "reason"), [
    (5, 2, None, 2, "paused at 2: scaling 5 -> 2 once, then held"),
    (1, 4, None, 4, "paused at 4: scaling 1 -> 4 once, then held"),
    (2, 2, None, 2, "paused at 2: held"),  # already there: nothing to write
    (2, 2, 2, 2, "paused at 2: held"),
    (6, 2, 2, 6, "paused at 2: applied; held at 6 (scaled by hand since)"),
    (6, 3, 2, 3, "paused at 3: scaling 6 -> 3 once, then held"),  # another N: once more
    (5, 50, None, 10,
     "paused at 10 (paused-replicas 50 is outside the bounds [1, 10]: clamped): "
     "scaling 5 -> 10 once, then held"),
    (5, 0, None, 1,
     "paused at 1 (paused-replicas 0 is outside the bounds [1, 10]: clamped): "
     "scaling 5 -> 1 once, then held"),
    (10, 50, 50, 10,
     "paused at 10 (paused-replicas 50 is outside the bounds [1, 10]: clamped): held"),
], ids=["down", "up", "in-place", "applied", "applied-then-scaled-by-hand", "new-n",
        "clamped-to-max", "clamped-to-min", "clamped-applied"])
def test_pause_at_count(current: int, requested: int, applied: int | None, desired: int,
                        reason: str) -> None:
    paused = pause_at_count(current, requested, applied, 1, 10)
    assert (paused.desired, paused.reason) == (desired, reason)


# --------------------------------------------------------------------------- decide

RULES = TargetRules(min_replicas=1, max_replicas=10, cooldown_up=600.0, cooldown_down=600.0)
WANTS_8 = (PolicyResult("inflow", "capacity", SignalState.OK, 80.0, 8, "needs 8"),)
BEFORE = TargetState(last_scale_time=900.0, last_scale_direction=1, last_written=5,
                     events=((900.0, 2),))


def run(status: TargetStatus, now: float = 1000.0) -> tuple[int, Outcome, str,
                                                             TargetState, TargetState]:
    d = decide(target="smtp", now=now, status=status, policies=WANTS_8, rules=RULES)
    why = next((c.reason for c in d.clips if c.kind is ClipKind.PAUSED), "")
    return d.desired, d.outcome, why, d.state, d.held_state


@pytest.mark.parametrize(("status", "desired", "why"), [
    (TargetStatus(5, 5, BEFORE, paused_replicas=2), 2,
     "paused at 2: scaling 5 -> 2 once, then held"),
    (TargetStatus(5, 5, BEFORE, paused=True), 5, "target is paused"),
    (TargetStatus(5, 5, BEFORE, paused=True, paused_replicas=2), 5, "target is paused"),
    (TargetStatus(5, 5, BEFORE, paused=True, pause_problem="N='x' is unreadable"), 5,
     "N='x' is unreadable"),
    (TargetStatus(5, 5, BEFORE, paused_replicas=99), 10,
     "paused at 10 (paused-replicas 99 is outside the bounds [1, 10]: clamped): "
     "scaling 5 -> 10 once, then held"),
], ids=["paused-at-2", "paused", "paused-wins", "unreadable-n-means-paused", "clamped"])
def test_decide_paused(status: TargetStatus, desired: int, why: str) -> None:
    got_desired, outcome, got_why, _, _ = run(status)
    assert (got_desired, outcome, got_why) == (desired, Outcome.PAUSED, why)


def test_our_write_to_n_is_no_operators_scale_and_starts_no_cooldown() -> None:
    _, _, _, written, held = run(TargetStatus(5, 5, BEFORE, paused_replicas=2))
    # no cooldown, no rate-limit event: the last scale is still ours of t=900
    assert (written.last_scale_time, written.last_scale_direction, written.events) == \
        (BEFORE.last_scale_time, BEFORE.last_scale_direction, BEFORE.events)
    assert (written.last_written, written.pause_applied) == (2, 2)
    assert (written.manual_time, written.manual_direction) == (None, 0)
    assert written.recommendations[-1] == (1000.0, 8)  # stabilization keeps counting
    # not written (dry-run, standby, failed): nothing applied, it is tried again
    assert (held.last_written, held.pause_applied) == (5, None)
    # next tick: the count read is our write, not an operator's scale
    after = detect_manual_change(TargetStatus(2, 2, written), 1010.0)
    assert (after.manual_time, after.manual_direction) == (None, 0)
    # held from now on, even though the load asks for 8
    desired, _, why, again, _ = run(TargetStatus(2, 2, written, paused_replicas=2), 1010.0)
    assert (desired, why, again.manual_time) == (2, "paused at 2: held", None)


def test_resume_scales_with_the_normal_rules_and_forgets_the_pause() -> None:
    _, _, _, written, _ = run(TargetStatus(5, 5, BEFORE, paused_replicas=2))
    # removed 10 s after our write: only the t=900 scale's cooldown counts (up: 600 s)
    desired, outcome, why, state, _ = run(TargetStatus(2, 2, written), 1010.0)
    assert (desired, outcome, why) == (2, Outcome.HOLD, "")
    assert state.pause_applied is None
    # after that cooldown it scales up at once (the write to 2 started none of its own),
    # at the default scale-up rate (2 -> max(2 x 2, 2 + 4) = 6 per 15 s)
    later = replace(written, last_scale_time=400.0)
    desired, outcome, _, state, _ = run(TargetStatus(2, 2, later), 1010.0)
    assert (desired, outcome, state.pause_applied, state.last_scale_time) == \
        (6, Outcome.SCALE_UP, None, 1010.0)
