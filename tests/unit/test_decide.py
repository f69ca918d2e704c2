"""Every rule of the decision engine, as a table; then the invariants, as properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.behavior import Behavior
from autoscaler.decide import (
    TargetRules,
    clamp_to_bounds,
    combine_recommendations,
    cooldown_remaining,
    decide,
    detect_manual_change,
    guard_is_active,
    guard_vetoes,
    hold_on_missing_data,
    manual_override_remaining,
    next_state,
    prune_history,
)
from autoscaler.model import (
    ClipKind,
    GuardBlock,
    GuardResult,
    Outcome,
    PolicyResult,
    SignalState,
    TargetState,
    TargetStatus,
)
from tests.support.configs import FREE
from tests.support.tier import examples

OK, EMPTY, ERROR, NAN, STALE = (SignalState.OK, SignalState.EMPTY, SignalState.ERROR,
                                SignalState.NAN, SignalState.STALE)


def pol(name: str, replicas: int | None, state: SignalState = OK) -> PolicyResult:
    return PolicyResult(name, "test", state, None if state is not OK else 1.0,
                        replicas if state is OK else None, "test")


def band(name: str, replicas: int | None, *, alone: int) -> PolicyResult:
    return PolicyResult(name, "threshold", OK, 50.0, replicas, "test", alone=alone)


def guard(block: GuardBlock, active: bool, name: str = "g") -> GuardResult:
    return GuardResult(name, block, OK, 1.0, active, "test")


def rules(lo: int = 1, hi: int = 10, **kw: Any) -> TargetRules:
    return TargetRules(min_replicas=lo, max_replicas=hi, behavior=kw.pop("behavior", FREE),
                       **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("policies", "current", "expected"), [
    pytest.param([pol("a", 3), pol("b", 5)], 4, (5, "b"), id="highest-wins"),
    pytest.param([pol("a", 5), pol("b", 5)], 4, (5, "a"), id="tie-first-named"),
    pytest.param([pol("a", None), pol("b", 2)], 4, (2, "b"), id="no-opinion-ignored"),
    pytest.param([pol("a", None)], 4, (4, None), id="nobody-has-an-opinion-holds"),
    pytest.param([pol("a", 9, ERROR), pol("b", 2)], 4, (2, "b"), id="unreported-ignored"),
    pytest.param([], 4, (4, None), id="no-policies-holds"),
    # A band keeper (two-sided threshold) votes `alone` only while nobody else sizes.
    pytest.param([band("cpu", 2, alone=4)], 4, (4, "cpu"), id="band-alone-holds"),
    pytest.param([band("cpu", 2, alone=3)], 4, (3, "cpu"), id="band-alone-steps-down"),
    pytest.param([band("cpu", 2, alone=4), pol("a", None)], 4, (4, "cpu"),
                 id="band-beside-no-opinion-holds"),
    pytest.param([band("cpu", 2, alone=4), band("mem", 3, alone=4)], 4, (4, "cpu"),
                 id="two-bands-alone-hold"),
    pytest.param([band("cpu", 2, alone=4), pol("a", 1)], 4, (2, "cpu"),
                 id="band-beside-a-sizer-blocks-only-its-need"),
    pytest.param([band("cpu", 2, alone=4), pol("a", 3)], 4, (3, "a"),
                 id="sizer-above-the-need-wins"),
    pytest.param([band("cpu", None, alone=3), pol("a", 1)], 4, (1, "a"),
                 id="down-only-band-beside-a-sizer-no-opinion"),
    pytest.param([band("cpu", 2, alone=4), pol("a", 1, ERROR)], 4, (4, "cpu"),
                 id="unreported-sizer-does-not-count"),
])
def test_combine_recommendations(policies: list[PolicyResult], current: int,
                                 expected: tuple[int, str | None]) -> None:
    assert combine_recommendations(policies, current) == expected


@pytest.mark.parametrize(("recommended", "current", "missing", "mode", "fallback", "expected",
                          "clip"), [
    pytest.param(2, 4, [], "hold", None, 2, None, id="all-reported-down-allowed"),
    pytest.param(2, 4, [pol("x", None, EMPTY)], "hold", None, 4, ClipKind.METRIC_ERROR,
                 id="empty-blocks-down"),
    pytest.param(2, 4, [pol("x", None, NAN)], "hold", None, 4, ClipKind.METRIC_ERROR,
                 id="nan-blocks-down"),
    pytest.param(2, 4, [pol("x", None, STALE)], "hold", None, 4, ClipKind.METRIC_ERROR,
                 id="stale-blocks-down"),
    pytest.param(2, 4, [pol("x", None, ERROR)], "hold", None, 4, ClipKind.METRIC_ERROR,
                 id="error-blocks-down"),
    pytest.param(6, 4, [pol("x", None, ERROR)], "hold", None, 6, None, id="up-still-allowed"),
    pytest.param(2, 4, [pol("x", None, ERROR)], "fallback", 7, 7, ClipKind.FALLBACK,
                 id="fallback-raises"),
    pytest.param(2, 4, [pol("x", None, ERROR)], "fallback", 3, 4, ClipKind.FALLBACK,
                 id="fallback-never-lowers"),
    pytest.param(9, 4, [pol("x", None, ERROR)], "fallback", 7, 9, None,
                 id="fallback-below-proposal-keeps-proposal"),
])
def test_hold_on_missing_data(recommended: int, current: int, missing: list[PolicyResult],
                              mode: str, fallback: int | None, expected: int,
                              clip: ClipKind | None) -> None:
    got, got_clip = hold_on_missing_data(recommended, current, missing, mode,  # type: ignore[arg-type]
                                         fallback)
    assert got == expected
    assert (got_clip.kind if got_clip else None) == clip


@pytest.mark.parametrize(("value", "lo", "hi", "expected"), [
    pytest.param(0, 1, 10, 1, id="below-min"),
    pytest.param(1, 1, 10, 1, id="at-min"),
    pytest.param(5, 1, 10, 5, id="inside"),
    pytest.param(10, 1, 10, 10, id="at-max"),
    pytest.param(11, 1, 10, 10, id="above-max"),
    pytest.param(-3, 2, 2, 2, id="min-equals-max"),
])
def test_clamp_to_bounds(value: int, lo: int, hi: int, expected: int) -> None:
    assert clamp_to_bounds(value, lo, hi) == expected


@pytest.mark.parametrize(("direction", "now", "last", "expected"), [
    pytest.param(1, 100.0, None, 0.0, id="never-scaled"),
    pytest.param(0, 100.0, 90.0, 0.0, id="no-change-no-cooldown"),
    pytest.param(1, 100.0, 90.0, 50.0, id="up-inside"),
    pytest.param(1, 160.0, 90.0, 0.0, id="up-expired"),
    pytest.param(-1, 100.0, 90.0, 290.0, id="down-inside"),
    pytest.param(-1, 390.0, 90.0, 0.0, id="down-expired-exactly"),
])
def test_cooldown_remaining(direction: int, now: float, last: float | None,
                            expected: float) -> None:
    state = TargetState(last_scale_time=last, last_scale_direction=1 if last else 0)
    assert cooldown_remaining(direction, now, state, 60.0, 300.0) == pytest.approx(expected)


@pytest.mark.parametrize(("direction", "manual_direction", "now", "expected"), [
    pytest.param(-1, 1, 100.0, 300.0, id="manual-up-blocks-down-for-cooldown-down"),
    pytest.param(1, 1, 100.0, 0.0, id="manual-up-allows-up"),
    pytest.param(1, -1, 100.0, 60.0, id="manual-down-blocks-up-for-cooldown-up"),
    pytest.param(-1, -1, 100.0, 0.0, id="manual-down-allows-down"),
    pytest.param(-1, 1, 400.0, 0.0, id="manual-block-expired"),
    pytest.param(-1, 0, 100.0, 0.0, id="no-manual-scale"),
])
def test_manual_override_remaining(direction: int, manual_direction: int, now: float,
                                   expected: float) -> None:
    state = TargetState(manual_time=100.0 if manual_direction else None,
                        manual_direction=manual_direction)
    got = manual_override_remaining(direction, now, state, 60.0, 300.0)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(("block", "state", "value", "above", "below", "expected"), [
    pytest.param(GuardBlock.SCALE_DOWN, OK, 25.0, 20.0, None, True, id="above-vetoes"),
    pytest.param(GuardBlock.SCALE_DOWN, OK, 15.0, 20.0, None, False, id="below-above-bound"),
    pytest.param(GuardBlock.SCALE_DOWN, OK, 20.0, 20.0, None, False, id="equal-is-not-above"),
    pytest.param(GuardBlock.SCALE_UP, OK, 1.0, None, 2.0, True, id="below-bound-vetoes-up"),
    pytest.param(GuardBlock.SCALE_DOWN, EMPTY, None, 20.0, None, True,
                 id="no-data-vetoes-down"),
    pytest.param(GuardBlock.SCALE_DOWN, ERROR, None, 20.0, None, True,
                 id="error-vetoes-down"),
    pytest.param(GuardBlock.SCALE_UP, ERROR, None, 20.0, None, False,
                 id="no-data-never-vetoes-up"),
    pytest.param(GuardBlock.SCALE_DOWN, OK, float("nan"), 20.0, None, True,
                 id="nan-vetoes-down"),
])
def test_guard_is_active(block: GuardBlock, state: SignalState, value: float | None,
                         above: float | None, below: float | None, expected: bool) -> None:
    assert guard_is_active(block, state, value, above, below) is expected


@pytest.mark.parametrize(("direction", "guards", "vetoed"), [
    pytest.param(-1, [guard(GuardBlock.SCALE_DOWN, True)], ["g"], id="down-vetoed"),
    pytest.param(1, [guard(GuardBlock.SCALE_DOWN, True)], [], id="down-guard-ignores-up"),
    pytest.param(1, [guard(GuardBlock.SCALE_UP, True)], ["g"], id="up-vetoed"),
    pytest.param(-1, [guard(GuardBlock.SCALE_DOWN, False)], [], id="inactive"),
    pytest.param(0, [guard(GuardBlock.SCALE_DOWN, True)], [], id="no-change"),
])
def test_guard_vetoes(direction: int, guards: list[GuardResult], vetoed: list[str]) -> None:
    assert [g.name for g in guard_vetoes(direction, guards)] == vetoed


@pytest.mark.parametrize(("last_written", "current", "expected"), [
    pytest.param(None, 4, TargetState(last_written=4), id="adopted-as-is"),
    pytest.param(4, 4, TargetState(last_written=4), id="unchanged"),
    pytest.param(4, 6, TargetState(last_written=6, manual_time=50.0, manual_direction=1),
                 id="manual-up"),
    pytest.param(4, 2, TargetState(last_written=2, manual_time=50.0, manual_direction=-1),
                 id="manual-down"),
])
def test_detect_manual_change(last_written: int | None, current: int,
                              expected: TargetState) -> None:
    status = TargetStatus(current=current, ready=None, state=TargetState(last_written=last_written))
    assert detect_manual_change(status, 50.0) == expected


def test_prune_history_keeps_only_what_a_window_sees() -> None:
    history = [(10.0, 1), (50.0, 2), (50.5, 3), (99.0, 4)]
    assert prune_history(history, 100.0, 50.0) == ((50.5, 3), (99.0, 4))
    assert prune_history(history, 100.0, 0.0) == ()


@pytest.mark.parametrize(("written", "desired", "events", "last_written"), [
    pytest.param(True, 6, ((100.0, 2),), 6, id="written-scale-recorded"),
    pytest.param(False, 6, (), None, id="dry-run-records-only-recommendation"),
    pytest.param(True, 4, (), None, id="no-change-no-event"),
])
def test_next_state(written: bool, desired: int, events: tuple[tuple[float, int], ...],
                    last_written: int | None) -> None:
    state = next_state(TargetState(), 100.0, 6, 4, desired, Behavior.hpa_default(), written)
    assert state.recommendations == ((100.0, 6),)
    assert state.events == events
    assert state.last_written == last_written


# ------------------------------------------------------------------ decide, end to end


def run(current: int, policies: list[PolicyResult], *, now: float = 1000.0,
        state: TargetState | None = None, paused: bool = False,
        guards: list[GuardResult] | None = None, dry_run: bool = False,
        **rule_kw: Any):  # type: ignore[no-untyped-def]
    status = TargetStatus(current=current, ready=current,
                          state=state or TargetState(last_written=current), paused=paused)
    return decide(target="t", now=now, status=status, policies=policies, rules=rules(**rule_kw),
                  guards=guards or [], dry_run=dry_run)


@pytest.mark.parametrize(("case", "kwargs", "desired", "outcome", "clip"), [
    ("scale-up", dict(current=3, policies=[pol("a", 5)]), 5, Outcome.SCALE_UP, None),
    ("scale-down", dict(current=5, policies=[pol("a", 3)]), 3, Outcome.SCALE_DOWN, None),
    ("hold", dict(current=4, policies=[pol("a", 4)]), 4, Outcome.HOLD, None),
    ("above-max-clipped", dict(current=8, policies=[pol("a", 50)]), 10, Outcome.SCALE_UP,
     ClipKind.BOUNDS),
    ("below-min-clipped", dict(current=3, policies=[pol("a", 0)]), 1, Outcome.SCALE_DOWN,
     ClipKind.BOUNDS),
    ("current-above-max-brought-down", dict(current=14, policies=[pol("a", 14)]), 10,
     Outcome.SCALE_DOWN, ClipKind.BOUNDS),
    ("current-below-min-brought-up", dict(current=1, policies=[pol("a", 1)], lo=2), 2,
     Outcome.SCALE_UP, ClipKind.BOUNDS),
    ("missing-data-no-down", dict(current=5, policies=[pol("a", 2), pol("b", None, ERROR)]),
     5, Outcome.HOLD, ClipKind.METRIC_ERROR),
    ("missing-data-up-allowed", dict(current=5, policies=[pol("a", 7), pol("b", None, EMPTY)]),
     7, Outcome.SCALE_UP, None),
    ("paused", dict(current=5, policies=[pol("a", 9)], paused=True), 5, Outcome.PAUSED,
     ClipKind.PAUSED),
    ("up-cooldown", dict(current=4, policies=[pol("a", 6)], cooldown_up=60.0,
                         state=TargetState(last_scale_time=970.0, last_written=4)),
     4, Outcome.HOLD, ClipKind.COOLDOWN),
    ("down-cooldown", dict(current=4, policies=[pol("a", 2)], cooldown_down=300.0,
                           state=TargetState(last_scale_time=800.0, last_written=4)),
     4, Outcome.HOLD, ClipKind.COOLDOWN),
    ("cooldown-expired", dict(current=4, policies=[pol("a", 2)], cooldown_down=300.0,
                              state=TargetState(last_scale_time=600.0, last_written=4)),
     2, Outcome.SCALE_DOWN, None),
    ("manual-up-blocks-down", dict(current=6, policies=[pol("a", 2)], cooldown_down=300.0,
                                   state=TargetState(last_written=4)),
     6, Outcome.HOLD, ClipKind.MANUAL_OVERRIDE),
    ("manual-up-allows-more-up", dict(current=6, policies=[pol("a", 8)], cooldown_down=300.0,
                                      state=TargetState(last_written=4)),
     8, Outcome.SCALE_UP, None),
    ("guard-vetoes-down", dict(current=5, policies=[pol("a", 2)],
                               guards=[guard(GuardBlock.SCALE_DOWN, True)]),
     5, Outcome.HOLD, ClipKind.GUARD),
    ("guard-lets-up", dict(current=5, policies=[pol("a", 7)],
                           guards=[guard(GuardBlock.SCALE_DOWN, True)]),
     7, Outcome.SCALE_UP, None),
    ("rate-limited", dict(current=2, policies=[pol("a", 9)], behavior=Behavior.hpa_default()),
     6, Outcome.SCALE_UP, ClipKind.RATE_LIMIT),
    ("stabilized-down", dict(current=6, policies=[pol("a", 2)], behavior=Behavior.hpa_default(),
                             state=TargetState(last_written=6,
                                               recommendations=((900.0, 6),))),
     6, Outcome.HOLD, ClipKind.STABILIZATION),
])
def test_decide(case: str, kwargs: dict[str, object], desired: int, outcome: Outcome,
                clip: ClipKind | None) -> None:
    d = run(**kwargs)  # type: ignore[arg-type]
    assert (d.desired, d.outcome) == (desired, outcome), case
    kinds = [c.kind for c in d.clips]
    if clip is None:
        assert ClipKind.COOLDOWN not in kinds and ClipKind.GUARD not in kinds
    else:
        assert clip in kinds


def test_decision_record_names_policies_winner_and_clips() -> None:
    d = run(8, [pol("cpu", 9), pol("queue", 50)])
    record = d.to_dict()
    assert record["winner"] == "queue"
    assert [p["name"] for p in record["policies"]] == ["cpu", "queue"]
    assert record["clips"] == [{"kind": "bounds", "before": 50, "after": 10,
                                "reason": "bounds [1, 10]"}]


def test_dry_run_decides_the_same_but_records_no_scale() -> None:
    live, dry = run(3, [pol("a", 5)]), run(3, [pol("a", 5)], dry_run=True)
    assert live.desired == dry.desired == 5
    assert dry.dry_run and live.state == dry.state and live.held_state == dry.held_state


@pytest.mark.parametrize(("current", "asked", "scale_kept_if_written"), [
    (3, 5, True),  # a change: written -> the scale is remembered; not -> the recommendation only
    (3, 3, False),  # nothing to write: one state
])
def test_decide_gives_the_state_to_keep_both_ways(current: int, asked: int,
                                                  scale_kept_if_written: bool) -> None:
    d = run(current, [pol("a", asked)])
    assert d.state_after(True) is d.state and d.state_after(False) is d.held_state
    assert bool(d.state.events) is scale_kept_if_written
    assert not d.held_state.events and d.held_state.last_written == current
    assert d.held_state.recommendations == d.state.recommendations  # always remembered
    if not scale_kept_if_written:
        assert d.state is d.held_state


def test_a_written_scale_starts_the_cooldown_for_the_next_tick() -> None:
    first = run(3, [pol("a", 5)], cooldown_up=60.0)
    second = decide(target="t", now=1030.0,
                    status=TargetStatus(current=5, ready=5, state=first.state),
                    policies=[pol("a", 8)], rules=rules(cooldown_up=60.0))
    assert second.desired == 5 and second.clips[-1].kind is ClipKind.COOLDOWN


# ------------------------------------------------------------------ invariants

PROPERTY_EXAMPLES = examples(300, "AUTOSCALER_PROPERTY_EXAMPLES")
replica = st.integers(min_value=0, max_value=60)
states = st.sampled_from(list(SignalState))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    lo = draw(st.integers(1, 20))
    hi = draw(st.integers(lo, 40))
    policies = draw(st.lists(
        st.builds(pol, st.sampled_from(["a", "b", "c"]), st.none() | replica, states),
        min_size=1, max_size=4))
    last = draw(st.none() | st.floats(0, 2000))
    state = TargetState(
        last_scale_time=last, last_written=draw(st.none() | replica),
        recommendations=tuple(draw(st.lists(st.tuples(st.floats(0, 2000), replica),
                                            max_size=6))),
        events=tuple(draw(st.lists(st.tuples(st.floats(0, 2000),
                                             st.integers(-10, 10)), max_size=4))),
    )
    return dict(
        current=draw(replica), policies=policies, state=state, lo=lo, hi=hi,
        now=2000.0, cooldown_up=draw(st.floats(0, 600)), cooldown_down=draw(st.floats(0, 900)),
        behavior=draw(st.sampled_from([FREE, Behavior.hpa_default()])),
        guards=draw(st.lists(st.builds(guard, st.sampled_from(list(GuardBlock)), st.booleans()),
                             max_size=2)),
        on_metric_error=draw(st.sampled_from(["hold", "fallback"])),
        fallback_replicas=lo,
    )


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None)
@given(scenarios())
def test_result_is_always_within_bounds(s: dict[str, object]) -> None:
    d = run(**s)  # type: ignore[arg-type]
    assert s["lo"] <= d.desired <= s["hi"]  # type: ignore[operator]


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None)
@given(scenarios())
def test_no_scale_down_while_a_policy_lacks_data(s: dict[str, object]) -> None:
    d = run(**s)  # type: ignore[arg-type]
    lacking = any(p.state is not OK for p in s["policies"])  # type: ignore[attr-defined]
    current = s["current"]
    if lacking and s["lo"] <= current <= s["hi"]:  # type: ignore[operator]
        assert d.desired >= current  # type: ignore[operator]


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None)
@given(scenarios())
def test_no_change_inside_a_cooldown(s: dict[str, object]) -> None:
    d = run(**s)  # type: ignore[arg-type]
    state = s["state"]
    current = s["current"]
    assert isinstance(state, TargetState) and isinstance(current, int)
    if state.last_scale_time is None or not s["lo"] <= current <= s["hi"]:  # type: ignore[operator]
        return
    since = 2000.0 - state.last_scale_time
    if d.desired > current:
        assert since >= s["cooldown_up"]  # type: ignore[operator]
    if d.desired < current:
        assert since >= s["cooldown_down"]  # type: ignore[operator]


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None)
@given(scenarios())
def test_paused_target_is_never_changed(s: dict[str, object]) -> None:
    d = run(paused=True, **s)  # type: ignore[arg-type]
    assert d.desired == s["current"] and d.outcome is Outcome.PAUSED
