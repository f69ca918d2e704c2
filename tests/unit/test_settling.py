"""After a gap in a policy's data, its answer may not lower the count until its lookback has
passed: a `rate()` whose window spans a scrape gap reads low while Prometheus calls it fine."""

from __future__ import annotations

import pytest

from autoscaler.decide import TargetRules, hold_while_settling, is_settling
from autoscaler.evaluate import Unreported, evaluate, note_unreported
from autoscaler.model import (
    ClipKind,
    Decision,
    PolicyResult,
    Sample,
    Signal,
    SignalState,
    TargetStatus,
)
from autoscaler.units import promql_lookback
from policies.capacity import CapacityPolicy
from policies.threshold import ThresholdPolicy
from tests.support.configs import FREE  # no stabilization, no rate limit

OK = SignalState.OK


@pytest.mark.parametrize(("query", "seconds"), [
    pytest.param("avg(cpu_percent)", 0, id="plain-selector"),
    pytest.param("sum(rate(queue_queue_message[5m])) * 3600", 300, id="rate-5m"),
    pytest.param("rate(a[1m]) + rate(b[10m])", 600, id="longest-range"),
    pytest.param("rate(a[1h30m])", 5400, id="compound-duration"),
    pytest.param("max_over_time(rate(a[1m])[30m:1m])", 1800, id="subquery-range"),
    pytest.param("rate(a[5m] offset 10m)", 900, id="range-plus-offset"),
    pytest.param("avg(a offset 1d)", 86400, id="offset-only"),
    pytest.param("rate(a[500ms])", 0.5, id="milliseconds"),
    pytest.param("sum(rate(a[2w]))", 1209600, id="weeks"),
])
def test_promql_lookback(query: str, seconds: float) -> None:
    assert promql_lookback(query) == pytest.approx(seconds)


@pytest.mark.parametrize(("policy", "seconds"), [
    pytest.param(CapacityPolicy(type="capacity", query="sum(rate(x[5m])) * 3600"), 300,
                 id="capacity-on-a-5m-rate"),
    pytest.param(ThresholdPolicy.model_validate({
        "type": "threshold", "query": "avg(rate(cpu[1m]))", "scale_up_above": 70,
        "scale_down_below": 30, "for": "2m"}),
                 180, id="threshold-window-plus-rate"),
    pytest.param(ThresholdPolicy(type="threshold", query="avg(cpu)", scale_up_above=70),
                 0, id="instant-latest-sample"),
])
def test_settle_seconds_is_window_plus_query_lookback(policy: object, seconds: float) -> None:
    assert policy.settle_seconds() == seconds  # type: ignore[attr-defined]


@pytest.mark.parametrize(("last_unreported", "now", "settle", "expected"), [
    pytest.param(None, 1000, 300, False, id="never-unreported"),
    pytest.param(900, 1000, 300, True, id="inside-lookback"),
    pytest.param(700, 1000, 300, False, id="lookback-exactly-over"),
    pytest.param(100, 1000, 300, False, id="long-ago"),
    pytest.param(1000, 1000, 0, False, id="no-lookback-latest-sample-only"),
])
def test_is_settling(last_unreported: float | None, now: float, settle: float,
                     expected: bool) -> None:
    assert is_settling(last_unreported, now, settle) is expected


def settled(name: str) -> PolicyResult:
    return PolicyResult(name, "test", OK, 1.0, 2, "test", settling=True)


@pytest.mark.parametrize(("recommended", "current", "settling", "expected", "clip"), [
    pytest.param(2, 5, [], 2, None, id="nothing-settling-down-allowed"),
    pytest.param(2, 5, [settled("rate")], 5, ClipKind.SETTLING, id="settling-blocks-down"),
    pytest.param(8, 5, [settled("rate")], 8, None, id="settling-allows-up"),
    pytest.param(5, 5, [settled("rate")], 5, None, id="settling-hold-is-hold"),
])
def test_hold_while_settling(recommended: int, current: int, settling: list[PolicyResult],
                             expected: int, clip: ClipKind | None) -> None:
    got, got_clip = hold_while_settling(recommended, current, settling)
    assert got == expected
    assert (got_clip.kind if got_clip else None) == clip
    if got_clip:
        assert "rate" in got_clip.reason


def low_rate_signal(now: float) -> Signal:
    return Signal.ok((Sample(now, 10000.0),))  # 10,000/h: 2 instances at headroom 1.5


@pytest.mark.parametrize(("gaps", "desired", "clips"), [
    pytest.param({}, 2, [], id="no-gap-scales-down"),
    pytest.param({"rate": 950.0}, 6, ["settling"], id="gap-50s-ago-holds"),
    pytest.param({"rate": 600.0}, 2, [], id="gap-older-than-the-5m-window"),
    pytest.param({"other": 990.0}, 2, [], id="another-policys-gap-does-not-count"),
])
def test_evaluate_holds_a_scale_down_while_a_policy_settles(
        gaps: dict[str, float], desired: int, clips: list[str]) -> None:
    policy = CapacityPolicy(type="capacity", name="rate",
                            query="sum(rate(inflow[5m])) * 3600")
    decision = evaluate(
        target="smtp", now=1000.0, status=TargetStatus(current=6, ready=None),
        policies=[policy], policy_signals={"rate": low_rate_signal(1000.0)},
        guards=[], guard_signals={},
        rules=TargetRules(min_replicas=1, max_replicas=10, behavior=FREE),
        last_unreported=gaps)
    assert decision.desired == desired
    assert [str(c.kind) for c in decision.clips] == clips
    assert decision.policies[0].settling is bool(clips)
    assert ("settling" in decision.policies[0].to_dict()) is bool(clips)


def decision_at(now: float, rate: Signal) -> Decision:
    policy = CapacityPolicy(type="capacity", name="rate", query="rate(x[5m])")
    other = ThresholdPolicy(type="threshold", name="cpu", query="cpu", scale_up_above=70)
    return evaluate(
        target="smtp", now=now, status=TargetStatus(current=3, ready=None),
        policies=[policy, other],
        policy_signals={"rate": rate, "cpu": Signal.ok((Sample(now, 50.0),))},
        guards=[], guard_signals={}, rules=TargetRules(min_replicas=1, max_replicas=10))


FAILED = Signal.bad(SignalState.ERROR, "timeout")
ANSWERED = Signal.ok((Sample(0.0, 10000.0),))


@pytest.mark.parametrize(("ticks", "remembered"), [
    pytest.param([(42.0, FAILED, None)], {"rate": 42.0}, id="a-gap-is-noted"),
    pytest.param([(42.0, FAILED, None), (52.0, FAILED, None)], {"rate": 52.0},
                 id="a-longer-gap-moves-with-it"),
    # The clock restarts at the first ok answer, when that answer arrived: a tick that
    # started while Prometheus was frozen (at 52) is answered after the thaw (at 58).
    pytest.param([(42.0, FAILED, None), (52.0, ANSWERED, 58.0)], {"rate": 58.0},
                 id="first-ok-answer-restarts-the-clock-at-its-arrival"),
    pytest.param([(42.0, FAILED, None), (52.0, ANSWERED, None)], {"rate": 52.0},
                 id="replay-answers-at-the-decision-time"),
    pytest.param([(42.0, FAILED, None), (52.0, ANSWERED, 53.0), (62.0, ANSWERED, 63.0)],
                 {"rate": 53.0}, id="later-ok-answers-leave-it"),
    pytest.param([(42.0, ANSWERED, 43.0)], {}, id="no-gap-nothing-noted"),
])
def test_note_unreported_remembers_when_each_gap_ended(
        ticks: list[tuple[float, Signal, float | None]], remembered: dict[str, float]) -> None:
    gaps = Unreported()
    for now, rate, answered in ticks:
        note_unreported(gaps, decision_at(now, rate), answered)
    assert dict(gaps) == remembered  # "cpu" always reported: never noted


def test_a_gap_forgotten_with_its_policy() -> None:
    gaps = Unreported()
    note_unreported(gaps, decision_at(42.0, FAILED))
    gaps.forget("rate")
    note_unreported(gaps, decision_at(52.0, ANSWERED))
    assert dict(gaps) == {} and not gaps.open
