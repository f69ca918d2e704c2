"""Prompt come-down after a predicted burst: once the end a policy predicted (`until`, e.g.
`seasonal`) has passed, the asks made during the burst stop holding the scale-down window
(and while it runs, asks over the count asked for it do);
`normalize` (the HPA's rules) is unchanged and reads a shorter history. Asks made after the
end are held as always, and missing or settling data still never scales down."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoscaler.behavior import Behavior
from autoscaler.decide import (
    TargetRules,
    decide,
    forget_predicted,
    next_state,
    note_predicted,
)
from autoscaler.model import PolicyResult, SignalState, TargetState, TargetStatus

OK, ERROR = SignalState.OK, SignalState.ERROR
WINDOW = 600  # the scale-down window sized for surprises


def pol(name: str, replicas: int | None, until: float | None = None,
        state: SignalState = OK, settling: bool = False) -> PolicyResult:
    return PolicyResult(name, "test", state, 1.0 if state is OK else None,
                        replicas if state is OK else None, "test", settling=settling,
                        until=until)


@pytest.mark.parametrize(("predicted", "now", "policies", "expected"), [
    pytest.param((), 100.0, [pol("s", 6, until=900.0)], ((100.0, 900.0, 6),), id="starts"),
    pytest.param(((100.0, 900.0, 6),), 200.0, [pol("s", 7, until=950.0)],
                 ((100.0, 950.0, 7),), id="extends-the-one-in-progress"),
    pytest.param(((100.0, 900.0, 6),), 200.0, [pol("s", 5, until=800.0)],
                 ((100.0, 900.0, 6),), id="never-shortens-or-shrinks-it"),
    pytest.param(((100.0, 900.0, 6),), 4000.0, [pol("s", 6, until=4900.0)],
                 ((100.0, 900.0, 6), (4000.0, 4900.0, 6)), id="a-new-one-after-the-last-is-over"),
    pytest.param((), 100.0, [pol("s", None, until=900.0)], (), id="no-ask-no-burst"),
    pytest.param((), 100.0, [pol("s", 6, until=900.0, state=ERROR)], (), id="not-ok"),
    pytest.param((), 100.0, [pol("s", 6, until=50.0)], (), id="an-end-already-past"),
    pytest.param((), 100.0, [pol("inflow", 6)], (), id="no-until"),
])
def test_note_predicted(predicted: tuple[tuple[float, float, int], ...], now: float,
                        policies: list[PolicyResult],
                        expected: tuple[tuple[float, float, int], ...]) -> None:
    assert note_predicted(predicted, now, policies) == expected


RECS = ((100.0, 6), (400.0, 8), (700.0, 8), (950.0, 3))


@pytest.mark.parametrize(("predicted", "now", "recommended", "kept", "dropped"), [
    pytest.param((), 1000.0, 2, RECS, (), id="nothing-predicted"),
    pytest.param(((100.0, 1200.0, 8),), 1000.0, 2, RECS, (),
                 id="running-asks-up-to-its-count-held"),
    pytest.param(((100.0, 1200.0, 6),), 1000.0, 2, ((100.0, 6), (400.0, 6), (700.0, 6),
                                                     (950.0, 3)),
                 ((400.0, 8), (700.0, 8)), id="running-overshoot-held-at-its-count"),
    pytest.param(((100.0, 1200.0, 6),), 1000.0, 7, ((100.0, 6), (950.0, 3)),
                 ((400.0, 8), (700.0, 8)), id="running-overshoot-over-the-ask-now-let-go"),
    pytest.param(((100.0, 1200.0, 6),), 1000.0, 8, RECS, (),
                 id="running-a-bigger-burst-is-held-by-the-asks-now"),
    pytest.param(((100.0, 900.0, 6),), 1000.0, 2, ((950.0, 3),),
                 ((100.0, 6), (400.0, 8), (700.0, 8)), id="over-its-asks-let-go"),
    pytest.param(((100.0, 500.0, 6),), 1000.0, 2, ((700.0, 8), (950.0, 3)),
                 ((100.0, 6), (400.0, 8)), id="asks-after-the-end-still-held"),
    pytest.param(((100.0, 900.0, 6),), 1000.0, 8, RECS, (),
                 id="asks-not-above-the-recommendation-kept"),
])
def test_forget_predicted(predicted: tuple[tuple[float, float, int], ...], now: float,
                          recommended: int, kept: tuple[tuple[float, int], ...],
                          dropped: tuple[tuple[float, int], ...]) -> None:
    window, gone = forget_predicted(RECS, predicted, now, recommended)
    assert tuple(window) == kept and gone == dropped


RULES = TargetRules(min_replicas=2, max_replicas=20, behavior=Behavior.model_validate(
    {"scaleDown": {"stabilizationWindowSeconds": WINDOW}}))


def after_burst(predicted: tuple[tuple[float, float, int], ...]) -> TargetState:
    """8 replicas asked through a burst from 100 s to 900 s, now over."""
    return TargetState(recommendations=tuple((float(t), 8) for t in range(100, 900, 15)),
                       predicted=predicted)


@pytest.mark.parametrize(("predicted", "policies", "desired", "released"), [
    pytest.param(((100.0, 900.0, 8),), [pol("inflow", 2)], 2, "over 100s ago",
                 id="predicted-burst-over-comes-down-at-once"),
    pytest.param((), [pol("inflow", 2)], 8, "", id="a-surprise-is-held-by-the-window"),
    pytest.param(((100.0, 1200.0, 8),), [pol("inflow", 2)], 8, "", id="not-over-yet-held"),
    pytest.param(((100.0, 1200.0, 6),), [pol("inflow", 5)], 6, "in progress",
                 id="in-progress-the-overshoot-goes-its-count-stays"),
    pytest.param(((100.0, 900.0, 8),), [pol("inflow", 2), pol("cpu", None, state=ERROR)], 8,
                 "", id="missing-data-never-scales-down"),
    pytest.param(((100.0, 900.0, 8),), [pol("inflow", 2, settling=True)], 8, "",
                 id="settling-data-never-scales-down"),
])
def test_decide_after_a_predicted_burst(predicted: tuple[tuple[float, float, int], ...],
                                        policies: list[PolicyResult], desired: int,
                                        released: str) -> None:
    d = decide(target="smtp", now=1000.0, policies=policies, rules=RULES,
               status=TargetStatus(current=8, ready=8, state=after_burst(predicted)))
    assert d.desired == desired
    assert bool(d.released) is bool(released), d.released
    if released:
        assert released in d.to_dict()["released"]


def test_the_policy_end_is_recorded_and_pruned_after_every_window() -> None:
    state = TargetState()
    d = decide(target="smtp", now=100.0, policies=[pol("seasonal", 6, until=900.0)],
               rules=RULES, status=TargetStatus(current=2, ready=2, state=state))
    assert d.state.predicted == d.held_state.predicted == ((100.0, 900.0, 6),)
    kept = next_state(d.state, 1400.0, 2, 2, 2, RULES.behavior, False)
    assert kept.predicted == ((100.0, 900.0, 6),)  # its asks may still be in a window
    gone = next_state(d.state, 1600.0, 2, 2, 2, RULES.behavior, False)
    assert gone.predicted == ()


def test_a_burst_that_runs_longer_than_predicted_is_held_by_its_later_asks() -> None:
    state = replace(after_burst(((100.0, 900.0, 8),)),
                    recommendations=(*after_burst(()).recommendations, (960.0, 8)))
    d = decide(target="smtp", now=1000.0, policies=[pol("inflow", 2)], rules=RULES,
               status=TargetStatus(current=8, ready=8, state=state))
    assert d.desired == 8
