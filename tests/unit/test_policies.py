"""Each policy's math, as tables of signal -> recommendation."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from autoscaler.model import PolicyContext, Sample, Signal
from autoscaler.registry import policy_types
from policies.capacity import CapacityPolicy, replicas_for_rate
from policies.forecast import ForecastPolicy, forecast_rate, sized_with_hysteresis
from policies.queue_trend import QueueTrendPolicy, backlog_from_growth, slope_per_hour
from policies.target_value import TargetValuePolicy, hpa_replicas
from policies.threshold import ThresholdPolicy, covers_window


def series(*values: float, step: float = 15.0) -> Signal:
    return Signal.ok(tuple(Sample(i * step, v) for i, v in enumerate(values)))


def threshold(**kw: object) -> ThresholdPolicy:
    return ThresholdPolicy.model_validate({"type": "threshold", "query": "cpu", **kw})


BAND = {"scale_up_above": 70, "scale_down_below": 30}


# `alone`: the vote while no other policy sizes the target (the guide's rule, unchanged);
# `beside`: the vote beside policies that do — the fewest instances that keep the highest
# value of the window under 70 x 0.9 = 63 with the load spread evenly, never above current.
@pytest.mark.parametrize(("params", "values", "current", "alone", "beside"), [
    pytest.param(BAND, (80,), 4, 5, 5, id="above-up"),
    pytest.param(BAND, (20,), 4, 3, 2, id="below-down"),           # ceil(4 x 20 / 63) = 2
    pytest.param(BAND, (50,), 4, 4, 4, id="band-holds"),           # ceil(4 x 50 / 63) = 4
    pytest.param(BAND, (40,), 10, 10, 7, id="band-idle-big-cluster"),  # ceil(400 / 63) = 7
    pytest.param(BAND, (70,), 4, 4, 4, id="at-bound-holds"),       # 4.4 -> never above current
    pytest.param({**BAND, "step": 3}, (90,), 4, 7, 7, id="step"),
    pytest.param({**BAND, "for": "45s"}, (80, 80, 80, 80), 4, 5, 5, id="for-held"),
    pytest.param({**BAND, "for": "45s"}, (80, 60, 80, 80), 4, 4, 4, id="for-interrupted-holds"),
    pytest.param({**BAND, "for": "45s"}, (40, 30, 20, 20), 6, 6, 4,
                 id="beside-sizes-for-the-window-peak"),  # ceil(6 x 40 / 63) = 4
    pytest.param({**BAND, "for": "5m"}, (80, 80), 4, 4, 4, id="for-not-yet-covered-holds"),
    pytest.param({"scale_up_above": 70}, (50,), 4, None, None, id="up-only-no-opinion-below"),
    pytest.param({"scale_up_above": 70}, (80,), 4, 5, 5, id="up-only-up"),
    pytest.param({"scale_down_below": 30}, (50,), 4, None, None,
                 id="down-only-no-opinion-above"),
    pytest.param({"scale_down_below": 30}, (20,), 4, 3, None,
                 id="down-only-below-steps-alone-only"),
    pytest.param({**BAND}, (20,), 0, 0, 0, id="never-negative"),
    pytest.param({**BAND, "tolerance": 0.1}, (75,), 4, 4, 4, id="tolerance-widens-band"),
    pytest.param({**BAND, "margin": 0.0}, (40,), 10, 10, 6, id="margin-0-sizes-on-the-bound"),
    pytest.param({**BAND, "spreads": False}, (40,), 10, 10, 10, id="spreads-false-holds"),
    pytest.param({**BAND, "spreads": False}, (20,), 10, 9, 9, id="spreads-false-steps"),
])
def test_threshold(params: dict[str, object], values: tuple[float, ...], current: int,
                   alone: int | None, beside: int | None) -> None:
    rec = threshold(**params).recommend(series(*values), PolicyContext(current, current))
    assert (rec.alone if rec.alone is not None else rec.replicas) == alone
    assert rec.replicas == beside
    assert rec.reason


def test_threshold_spreads_the_load_of_the_ready_instances_only() -> None:
    # 6 asked, 4 serving at 40 %: the load is 4 x 40, so ceil(160 / 63) = 3.
    rec = threshold(**BAND).recommend(series(40), PolicyContext(6, 4))
    assert (rec.replicas, rec.alone) == (3, 6)


@pytest.mark.parametrize(("times", "window", "expected"), [
    pytest.param((0.0,), 0.0, True, id="no-window"),
    pytest.param((0.0,), 60.0, False, id="one-sample"),
    pytest.param((0.0, 15.0, 30.0, 45.0), 60.0, True, id="covered-to-one-spacing"),
    pytest.param((15.0, 30.0, 45.0), 60.0, False, id="short"),
])
def test_covers_window(times: tuple[float, ...], window: float, expected: bool) -> None:
    assert covers_window(times, window) is expected


@pytest.mark.parametrize(("params", "error"), [
    pytest.param({"scale_up_above": 30, "scale_down_below": 70}, "must be below", id="inverted"),
    pytest.param({}, "set scale_up_above", id="no-bound"),
])
def test_threshold_cross_field_rules(params: dict[str, object], error: str) -> None:
    errors = threshold(**params).cross_field_errors()
    assert errors and error in errors[0][1]


@pytest.mark.parametrize(("rate", "per", "headroom", "expected"), [
    pytest.param(50000, 10000, 1.5, 8, id="guide-example"),
    pytest.param(20000, 10000, 1.5, 3, id="exact-no-float-noise"),
    pytest.param(0, 10000, 1.5, 0, id="idle"),
    pytest.param(1, 10000, 1.5, 1, id="tiny"),
    pytest.param(70000, 10000, 1.0, 7, id="no-headroom"),
])
def test_replicas_for_rate(rate: float, per: float, headroom: float, expected: int) -> None:
    assert replicas_for_rate(rate, per, headroom) == expected


@pytest.mark.parametrize(("rate", "current", "tolerance", "expected"), [
    pytest.param(50000, 4, 0.0, 8, id="formula"),
    pytest.param(-5, 4, 0.0, None, id="negative-rate-no-opinion"),
    pytest.param(50000, 8, 0.0, 8, id="already-right"),
    pytest.param(52000, 8, 0.2, 8, id="within-tolerance-holds"),
])
def test_capacity(rate: float, current: int, tolerance: float, expected: int | None) -> None:
    policy = CapacityPolicy(type="capacity", query="q", tolerance=tolerance)
    assert policy.recommend(series(rate), PolicyContext(current, current)).replicas == expected


@pytest.mark.parametrize(("value", "target", "current", "ready", "tol", "expected"), [
    pytest.param(140, 70, 4, 4, 0.1, 8, id="double-load-doubles"),
    pytest.param(35, 70, 4, 4, 0.1, 2, id="half-load-halves"),
    pytest.param(75, 70, 4, 4, 0.1, 4, id="within-tolerance"),
    pytest.param(140, 70, 4, None, 0.1, 8, id="no-readiness-uses-current"),
    pytest.param(140, 70, 4, 2, 0.1, 4, id="starting-count-as-idle-hold"),
    pytest.param(210, 70, 4, 2, 0.1, 6, id="starting-count-as-idle-up"),
    pytest.param(35, 70, 4, 2, 0.1, 1, id="down-over-ready-only"),
    pytest.param(35, 70, 4, 0, 0.1, 4, id="no-ready-holds"),
    pytest.param(71, 70, 100, 100, 0.0, 102, id="ceil"),
])
def test_hpa_replicas(value: float, target: float, current: int, ready: int | None,
                      tol: float, expected: int) -> None:
    assert hpa_replicas(value, target, current, ready, tol)[0] == expected


def test_target_value_ignores_negative_values() -> None:
    policy = TargetValuePolicy(type="target_value", query="q", target=70)
    assert policy.recommend(series(-1), PolicyContext(4, 4)).replicas is None


@pytest.mark.parametrize(("values", "expected"), [
    pytest.param((0, 100, 200, 300), 100 / 15 * 3600, id="linear"),
    pytest.param((5, 5, 5), 0.0, id="flat"),
    pytest.param((7,), None, id="one-sample"),
])
def test_slope_per_hour(values: tuple[float, ...], expected: float | None) -> None:
    got = slope_per_hour(series(*values).samples)
    assert got == (None if expected is None else pytest.approx(expected))


def test_backlog_from_growth_integrates_positive_growth() -> None:
    # 3600 msgs/h for 60 s is 60 messages.
    assert backlog_from_growth(series(3600, 3600, 3600, 3600, 3600, step=15).samples) == \
        pytest.approx(60)
    assert backlog_from_growth(series(-3600, -3600).samples) == 0.0


@pytest.mark.parametrize(("params", "values", "current", "expected"), [
    # +24,000 msgs/h growth, depth 3,900: ceil((24000 + 3900/0.25)/10000) = 4
    pytest.param({}, tuple(i * 100.0 for i in range(40)), 4, 8, id="growing-depth"),
    # A flat backlog drains within drain_within too (it was "no opinion": nothing drained a
    # standing 50,000): ceil(50000/0.25 / 10000) = 20 more.
    pytest.param({}, (50_000.0,) * 40, 4, 24, id="flat-large-backlog-drains"),
    pytest.param({}, (500.0,) * 40, 4, 5, id="flat-500-needs-2000-per-hour"),
    pytest.param({}, (250.0,) * 40, 4, None, id="flat-250-needs-1000-per-hour-at-tolerance"),
    pytest.param({}, (251.0,) * 40, 4, 5, id="flat-251-just-above-tolerance"),
    # Slightly shrinking (within tolerance) still counts as flat: its growth is subtracted.
    pytest.param({}, tuple(50_000 - i * 0.1 for i in range(40)), 4, 24,
                 id="flat-within-tolerance"),
    pytest.param({}, tuple(4000 - i * 100.0 for i in range(40)), 4, None,
                 id="shrinking-no-opinion"),
    pytest.param({}, (0.0, 10.0, 0.0, 10.0), 4, None, id="noise-below-tolerance"),
    # 20,000/h for 300 s is a backlog of 1,667: ceil((20000 + 1667/0.25)/10000) = 3
    pytest.param({"signal": "growth"}, (20000.0,) * 21, 4, 7, id="growth-signal"),
    pytest.param({"signal": "growth"}, (-500.0,) * 21, 4, None, id="growth-negative"),
    # The window's mean still says growing, but the queue drains now (newest -2,000/h is
    # beyond -tolerance x per_instance = -1,000/h): no opinion, as for a shrinking depth.
    pytest.param({"signal": "growth"}, (20000.0,) * 20 + (-2000.0,), 4, None,
                 id="growth-shrinking-at-the-newest-sample"),
    pytest.param({"signal": "growth"}, (20000.0,) * 20 + (-500.0,), 4, 7,
                 id="growth-newest-within-tolerance-still-counts"),
    pytest.param({}, (100.0,), 4, None, id="one-sample"),
])
def test_queue_trend(params: dict[str, object], values: tuple[float, ...], current: int,
                     expected: int | None) -> None:
    policy = QueueTrendPolicy.model_validate({"type": "queue_trend", "query": "q", **params})
    assert policy.recommend(series(*values), PolicyContext(current, current)).replicas == \
        expected


@pytest.mark.parametrize("name", ["threshold", "queue_trend", "capacity", "target_value",
                                  "forecast"])
def test_builtin_policies_are_registered(name: str) -> None:
    cls = policy_types()[name]
    assert cls.model_fields["type"].default == name


@pytest.mark.parametrize(("cls", "params"), [
    pytest.param(CapacityPolicy, {"per_instance": 0}, id="capacity-zero-per-instance"),
    pytest.param(CapacityPolicy, {"headroom": 0.5}, id="capacity-headroom-below-1"),
    pytest.param(TargetValuePolicy, {"target": 0}, id="target-zero"),
    pytest.param(QueueTrendPolicy, {"window": "0s"}, id="queue-zero-window"),
    pytest.param(ThresholdPolicy, {"step": 0}, id="threshold-zero-step"),
    pytest.param(CapacityPolicy, {"colour": "red"}, id="unknown-key"),
    pytest.param(ForecastPolicy, {"headroom": 0.9}, id="forecast-headroom-below-1"),
    pytest.param(ForecastPolicy, {"window": "0s"}, id="forecast-zero-window"),
    pytest.param(ForecastPolicy, {"lead": "-1s"}, id="forecast-negative-lead"),
    pytest.param(ForecastPolicy, {"hysteresis": -0.1}, id="forecast-negative-hysteresis"),
])
def test_invalid_parameters_are_rejected(cls: type[BaseModel], params: dict[str, object]) -> None:
    base = {"query": "q", "target": 1} if cls is TargetValuePolicy else {"query": "q"}
    with pytest.raises(ValidationError):
        cls.model_validate({**base, **params})


@pytest.mark.parametrize(("latest", "slope", "lead", "expected"), [
    pytest.param(20000, 240000, 90, 26000, id="rising-extrapolated"),
    pytest.param(20000, -240000, 90, 20000, id="falling-not-extrapolated"),
    pytest.param(20000, None, 90, 20000, id="no-trend"),
    pytest.param(20000, 240000, 0, 20000, id="no-lead"),
])
def test_forecast_rate(latest: float, slope: float | None, lead: float, expected: float) -> None:
    assert forecast_rate(latest, slope, lead) == pytest.approx(expected)


@pytest.mark.parametrize(("rate", "current", "hysteresis", "expected"), [
    pytest.param(25000, 2, 0.2, 3, id="up-at-once"),
    pytest.param(20000, 2, 0.2, 2, id="exact-fit-holds"),
    pytest.param(19000, 3, 0.2, 3, id="down-would-leave-too-little-spare-holds"),
    pytest.param(17000, 3, 0.2, 2, id="down-with-spare"),
    pytest.param(19000, 3, 0.0, 2, id="no-hysteresis-down"),
    pytest.param(5000, 6, 0.2, 1, id="down-several-at-once"),
])
def test_sized_with_hysteresis(rate: float, current: int, hysteresis: float,
                               expected: int) -> None:
    assert sized_with_hysteresis(rate, current, 10000, 1.0, hysteresis) == expected


@pytest.mark.parametrize(("params", "values", "current", "expected"), [
    pytest.param({}, (20000, 20000, 20000), 2, 3, id="flat-with-default-headroom"),
    pytest.param({"headroom": 1.0}, (20000, 20000, 20000), 2, 2, id="flat-exact"),
    pytest.param({"headroom": 1.0}, (18000, 19000, 20000), 2, 3, id="rising-sized-ahead"),
    pytest.param({"headroom": 1.0, "lead": 0}, (18000, 19000, 20000), 2, 2,
                 id="no-lead-is-capacity"),
    pytest.param({"headroom": 1.0}, (30000, 25000, 19500), 3, 3, id="falling-boundary-holds"),
    pytest.param({"headroom": 1.0}, (30000, 25000, 17000), 3, 2, id="falling-down"),
    pytest.param({"headroom": 1.0, "window": "30s"}, (0, 20000, 20000, 20000), 2, 2,
                 id="rise-before-window-ignored"),
    pytest.param({"headroom": 1.0}, (20000,), 2, 2, id="one-sample-no-trend"),
    pytest.param({}, (20000, -5), 2, None, id="negative-rate-no-opinion"),
    pytest.param({"headroom": 1.0, "tolerance": 0.5}, (30000, 30000), 2, 2,
                 id="within-tolerance-holds"),
])
def test_forecast(params: dict[str, object], values: tuple[float, ...], current: int,
                  expected: int | None) -> None:
    policy = ForecastPolicy.model_validate({"type": "forecast", "query": "q", **params})
    rec = policy.recommend(series(*values), PolicyContext(current=current, ready=current))
    assert rec.replicas == expected, rec.reason
