"""`seasonal`: the forecaster and the policy as tables over synthetic histories (60 s points).

Each case builds days of history from a demand shape, then asks the policy at a moment just
before (or after) where the pattern says a burst comes.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable

import pytest

from autoscaler.model import PolicyContext, Sample, Signal, SignalState
from policies.seasonal import (
    DAY,
    HOUR,
    WEEK,
    SeasonalPolicy,
    history_of,
    is_burst,
    phase_forecast,
)

BASE, PEAK = 10_000.0, 60_000.0
Shape = Callable[[float], float]


def daily_burst(at: float = 8 * HOUR, length: float = 1800.0) -> Shape:
    return lambda t: PEAK if at <= t % DAY < at + length else BASE


def hourly_job(t: float) -> float:
    return PEAK if 20 * 60 <= t % HOUR < 30 * 60 else BASE


def weekly_campaign(t: float) -> float:
    # t = 0 is a Thursday; Monday 10:00 is 4 days later.
    return PEAK if 4 * DAY + 10 * HOUR <= t % WEEK < 4 * DAY + 11 * HOUR else BASE


def jittered_daily(t: float) -> float:
    """08:00 give or take up to 4 minutes, a different offset each day."""
    day = int(t // DAY)
    offset = random.Random(day).uniform(-240, 240)
    return PEAK if 8 * HOUR + offset <= t % DAY < 8 * HOUR + offset + 1800 else BASE


def without_day(shape: Shape, day: int) -> Shape:
    """The pattern with one whole day missing from the data (NaN: dropped)."""
    return lambda t: math.nan if int(t // DAY) == day else shape(t)


def quiet_day(shape: Shape, day: int) -> Shape:
    """The pattern, but one day (a holiday) without its burst."""
    return lambda t: BASE if int(t // DAY) == day else shape(t)


def with_gaps(shape: Shape) -> Shape:
    """Every fifth point missing and a 2 h scrape outage each day at 14:00."""
    return lambda t: (math.nan if int(t // 60) % 5 == 0 or 14 * HOUR <= t % DAY < 16 * HOUR
                      else shape(t))


def with_resets(shape: Shape) -> Shape:
    """A rate over a counter reset reads a dip to 0 (or below) for a few points each day."""
    return lambda t: -5000.0 if 8 * HOUR + 600 <= t % DAY < 8 * HOUR + 720 else shape(t)


def one_off(at: float, length: float = 1800.0) -> Shape:
    """One burst, never again."""
    return lambda t: PEAK if at <= t < at + length else BASE


def stops_after(shape: Shape, day: int) -> Shape:
    return lambda t: shape(t) if t < day * DAY else BASE


def noisy_flat(t: float) -> float:
    return 20_000.0 * (1 + random.Random(int(t)).uniform(-0.3, 0.3))


def slow_ramp(t: float) -> float:
    return 5_000.0 + t / HOUR * 400.0


def smooth_day(t: float) -> float:
    """A day curve (morning peak 4x the night) with no jump: reactive policies follow it."""
    hour = t % DAY / HOUR
    return BASE + 30_000.0 * math.exp(-((hour - 10.0) ** 2) / (2 * 1.5**2))


def asked(shape: Shape, history_days: float, now: float, *, current: int = 2,
          **params: object) -> tuple[int | None, str]:
    points = [(float(t), shape(t)) for t in range(0, int(history_days * DAY), 60)]
    points = [(t, v) for t, v in points if not math.isnan(v) and t <= now]
    policy = SeasonalPolicy.model_validate({"query": "q", **params})
    live = shape(now)
    signal = Signal(SignalState.OK, (Sample(now, 1.0 if math.isnan(live) else live),), "",
                    history_of(points))
    rec = policy.recommend(signal, PolicyContext(current))
    return rec.replicas, rec.reason


BURST_NEED = math.ceil(PEAK / 10_000 * 1.1)  # 7


@pytest.mark.parametrize(("shape", "days", "now", "expected", "period"), [
    # each period, asked 2 minutes before the burst (lead 90 s lands inside it)
    pytest.param(daily_burst(), 8, 7 * DAY + 8 * HOUR - 60, BURST_NEED, "1d", id="daily"),
    pytest.param(hourly_job, 2, DAY + 5 * HOUR + 19 * 60, BURST_NEED, "1h", id="hourly"),
    # jitter: in time for the earliest onset seen (day 1, 07:57:04: its first point at
    # 07:58), not before: lead 90 s + a step of timing slack ahead of it
    pytest.param(jittered_daily, 8, 7 * DAY + 8 * HOUR - 270, BURST_NEED, "1d",
                 id="jitter-earliest-onset"),
    pytest.param(jittered_daily, 8, 7 * DAY + 8 * HOUR - 420, None, "1d",
                 id="jitter-not-due-yet"),
    pytest.param(without_day(daily_burst(), 5), 8, 7 * DAY + 8 * HOUR - 60, BURST_NEED, "1d",
                 id="a-missing-day"),
    pytest.param(quiet_day(daily_burst(), 6), 8, 7 * DAY + 8 * HOUR - 60, BURST_NEED, "1d",
                 id="a-quiet-day"),
    pytest.param(with_gaps(daily_burst()), 8, 7 * DAY + 8 * HOUR - 60, BURST_NEED, "1d",
                 id="gaps"),
    pytest.param(with_resets(daily_burst()), 8, 7 * DAY + 8 * HOUR - 60, BURST_NEED, "1d",
                 id="counter-resets"),
    # after the burst, outside it, or with too little history: no opinion
    pytest.param(daily_burst(), 8, 7 * DAY + 12 * HOUR, None, "1d", id="between-bursts"),
    pytest.param(daily_burst(), 8, 7 * DAY + 8 * HOUR + 1800 + 400, None, "1d",
                 id="burst-over"),
    # a burst's first repeat: the daily period saw it once, and never since its history
    # began missed a burst or forecast one that did not come (unblemished), so it acts;
    # its jitter unknown, from up to phase_window (300 s) before the onset it saw
    pytest.param(daily_burst(), 1.5, DAY + 8 * HOUR - 60, BURST_NEED, "1d", id="first-repeat"),
    pytest.param(daily_burst(), 1.5, DAY + 8 * HOUR - 90 - 290, BURST_NEED, "1d",
                 id="first-repeat-allows-the-jitter-tolerated"),
    pytest.param(daily_burst(), 1.5, DAY + 8 * HOUR - 90 - 360, None, None,
                 id="first-repeat-not-earlier-than-that"),
    pytest.param(daily_burst(length=180), 1.5, DAY + 8 * HOUR - 60, None, "1d",
                 id="first-repeat-of-a-spike-waits-for-the-bar"),
    pytest.param(one_off(DAY + 8 * HOUR), 2.5, 2 * DAY + 8 * HOUR - 60, None, None,
                 id="a-one-off-after-history-began-is-a-miss"),
    pytest.param(daily_burst(), 0.9, 8 * HOUR - 60, None, None, id="too-little-history"),
    # a pattern that stops: the daily period's false alarm on day 3 ends it there; the
    # weekly period, whose history begins on day 7, sees day 0's burst once (known cost:
    # one first repeat), and its false alarm then ends it too
    pytest.param(stops_after(daily_burst(), 3), 8, 7 * DAY + 8 * HOUR - 60, BURST_NEED, "1w",
                 id="a-pattern-that-stops-one-weekly-first-repeat"),
    pytest.param(stops_after(daily_burst(), 3), 9, 8 * DAY + 8 * HOUR - 60, None, None,
                 id="a-pattern-that-stops"),
    pytest.param(noisy_flat, 8, 7 * DAY + 8 * HOUR, None, None, id="noise-is-no-pattern"),
    pytest.param(smooth_day, 8, 7 * DAY + 8 * HOUR, None, None, id="a-smooth-day-is-no-jump"),
    pytest.param(daily_burst(), 8, 7 * DAY + 8 * HOUR + 300, None, "1d",
                 id="inside-the-burst-reactive-policies-see-it"),
    pytest.param(slow_ramp, 3, 2.5 * DAY, None, None, id="a-trend-is-no-pattern"),
])
def test_forecaster(shape: Shape, days: float, now: float, expected: int | None,
                    period: str | None) -> None:
    replicas, reason = asked(shape, days, now)
    assert replicas == expected, reason
    if period is not None:
        assert reason.startswith(f"period {period} "), reason


@pytest.mark.parametrize(("weeks", "standing"), [
    # the second Monday: the weekly period saw one campaign, and nothing since its history
    # began (day 7) went wrong; the daily and hourly ones missed the first campaign
    pytest.param(1, "first repeat", id="at-its-first-repeat"),
    pytest.param(2, "score 1.00", id="scored"),
])
def test_a_weekly_campaign(weeks: int, standing: str) -> None:
    monday_10 = weeks * WEEK + 4 * DAY + 10 * HOUR  # t = 0 is a Thursday
    replicas, reason = asked(weekly_campaign, 19, monday_10 - 60)
    assert replicas == BURST_NEED, reason
    assert reason.startswith(f"period 1w {standing}"), reason
    # the first Monday: nothing seen before it, no opinion
    assert asked(weekly_campaign, 19, 4 * DAY + 10 * HOUR - 60)[0] is None


def test_observe_mode_computes_and_counts_for_nothing() -> None:
    replicas, reason = asked(daily_burst(), 8, 7 * DAY + 8 * HOUR - 60, mode="observe")
    assert replicas is None
    assert reason.startswith("observe: period 1d ") and f"= {BURST_NEED}," in reason


def test_history_loading_is_no_opinion_with_an_ok_signal() -> None:
    policy = SeasonalPolicy(query="q")
    rec = policy.recommend(Signal.ok((Sample(100.0, 5.0),)), PolicyContext(4))
    assert rec.replicas is None and "history loading" in rec.reason


def test_the_reason_shows_period_score_forecast_and_lead() -> None:
    _, reason = asked(daily_burst(), 8, 7 * DAY + 8 * HOUR - 60)
    assert re.match(r"period 1d score (0\.[6-9]\d|1\.00): forecast", reason), reason
    assert "forecast 60000/h in 90s" in reason and "ceil(60000 / 10000 x 1.1) = 7" in reason


def test_points_after_now_are_never_read() -> None:
    """The history may hold more than `now` (replay's arrays grow ahead): not read."""
    points = [(float(t), daily_burst()(t)) for t in range(0, int(8 * DAY), 60)]
    policy = SeasonalPolicy(query="q")
    now = 6 * DAY + 12 * HOUR
    signal = Signal(SignalState.OK, (Sample(now, 1.0),), "", history_of(points))
    policy.recommend(signal, PolicyContext(2))
    assert policy._learned.read == sum(1 for t, _ in points if t <= now)


def test_learning_is_incremental_and_equals_learning_at_once() -> None:
    points = [(float(t), daily_burst()(t)) for t in range(0, int(8 * DAY), 60)]
    history = history_of(points)
    at_once, step_by_step = SeasonalPolicy(query="q"), SeasonalPolicy(query="q")
    now = 7 * DAY + 8 * HOUR - 60
    for t in range(int(7 * DAY), int(now) + 1, 900):
        step_by_step.recommend(Signal(SignalState.OK, (Sample(float(t), 1.0),), "", history),
                               PolicyContext(2))
    final = Signal(SignalState.OK, (Sample(now, 1.0),), "", history)
    assert (at_once.recommend(final, PolicyContext(2))
            == step_by_step.recommend(final, PolicyContext(2)))


@pytest.mark.parametrize(("bins", "target", "expected"), [
    pytest.param({10: 5.0, 20: 7.0, 30: 9.0}, 40, (7.0, 3), id="median-of-periods"),
    pytest.param({9: 5.0, 21: 7.0, 30: 9.0}, 40, (7.0, 3), id="neighbour-bins-count"),
    pytest.param({10: 5.0, 30: 9.0}, 40, (7.0, 2), id="a-missing-period-skipped"),
    pytest.param({30: 9.0}, 40, None, id="too-few-periods"),
    pytest.param({10: 1.0, 20: 100.0, 30: 2.0}, 40, (2.0, 3), id="one-spike-ignored"),
])
def test_phase_forecast(bins: dict[int, float], target: int,
                        expected: tuple[float, int] | None) -> None:
    assert phase_forecast(bins, target, 10, 14, 2) == expected


@pytest.mark.parametrize(("value", "level", "expected"), [
    (15_000.0, 10_000.0, True), (14_000.0, 10_000.0, False),   # 1.5x the level
    (1_500.0, 1_000.0, False),                                  # but half an instance over it
    (6_000.0, 0.0, True),
])
def test_is_burst(value: float, level: float, expected: bool) -> None:
    assert is_burst(value, level, 1.5, 10_000.0) is expected


@pytest.mark.parametrize(("params", "fragment"), [
    ({"periods": ["5m"]}, "over twice phase_window"),
    ({"periods": ["1h"], "lead": "2h"}, "over lead"),
])
def test_periods_against_phase_window_and_lead(params: dict[str, object],
                                               fragment: str) -> None:
    """A rule of several keys: the policy's cross-field rule (check-config names it)."""
    (error,) = SeasonalPolicy.model_validate({"query": "q", **params}).cross_field_errors()
    assert error[0] == "periods" and fragment in error[1]


def test_invalid_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        SeasonalPolicy.model_validate({"query": "q", "mode": "maybe"})


def test_history_length_follows_the_longest_period() -> None:
    assert SeasonalPolicy(query="q").history_seconds() == 15 * DAY
    assert SeasonalPolicy.model_validate(
        {"query": "q", "periods": ["1h", "1d"]}).history_seconds() == 8 * DAY


def test_a_raise_says_when_the_burst_is_over() -> None:
    """The 30-minute burst from 08:00: over at 08:30 (within a step of timing slack)."""
    points = [(float(t), daily_burst()(t)) for t in range(0, int(8 * DAY), 60)]
    now = 7 * DAY + 8 * HOUR - 60
    rec = SeasonalPolicy(query="q").recommend(
        Signal(SignalState.OK, (Sample(now, BASE),), "", history_of(points)), PolicyContext(2))
    assert rec.replicas == BURST_NEED and rec.until is not None
    assert 7 * DAY + 8 * HOUR + 1800 <= rec.until <= 7 * DAY + 8 * HOUR + 1800 + 120
    assert "burst over in" in rec.reason


def test_a_quiet_day_under_a_day_curve_history_is_no_jump() -> None:
    """A weekend under weekday history: today is far below the curve the past days drew, but
    the past days themselves rose smoothly at this phase: no jump in the pattern, no raise."""
    def weekend(t: float) -> float:
        return smooth_day(t) if t < 7 * DAY else BASE

    replicas, reason = asked(weekend, 8, 7 * DAY + 8 * HOUR)
    assert replicas is None and "no jump in the past periods" in reason, reason


@pytest.mark.parametrize("mode", ["active", "observe"])
def test_the_forecast_is_handed_over_in_every_mode(mode: str) -> None:
    """For the record and `autoscaler_policy_forecast`: what it expects `lead` from now."""
    points = [(float(t), daily_burst()(t)) for t in range(0, int(8 * DAY), 60)]
    now = 7 * DAY + 8 * HOUR - 60
    policy = SeasonalPolicy.model_validate({"query": "q", "mode": mode})
    rec = policy.recommend(Signal(SignalState.OK, (Sample(now, BASE),), "", history_of(points)),
                           PolicyContext(2))
    assert rec.forecast == PEAK
    loading = policy.recommend(Signal.ok((Sample(now, BASE),)), PolicyContext(2))
    assert loading.forecast is None and "history loading" in loading.reason
