"""`simulate` feeds `seasonal` the plant's own scraped history, as the live source hands it
over (a Signal with `history` arrays at 60 s), never ahead of the simulated clock; on a trace
with an hourly job the policy learns the job and scales up before it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from autoscaler.config import load_config_data
from autoscaler.model import Sample, Signal, SignalState
from autoscaler.replay.plant import HistoryFeed
from autoscaler.replay.simulate import RunResult, run_simulation
from autoscaler.trace import load_trace, resolve_trace

SMTP: dict[str, Any] = {
    "name": "smtp", "backend": "swarm", "service": "stalwart_smtp", "preset": "stalwart-smtp",
    "min_replicas": 2, "max_replicas": 20, "cooldown": {"up": "60s", "down": "0s"},
    "behavior": {"scaleUp": {"stabilizationWindowSeconds": 30},
                 "scaleDown": {"stabilizationWindowSeconds": 600}},
}
SEASONAL = {"type": "seasonal", "name": "seasonal", "query": "inflow",
            "simulate_as": "arrival_rate_1m", "lead": "150s"}


def run(with_seasonal: bool) -> RunResult:
    target = copy.deepcopy(SMTP)
    if with_seasonal:
        target["policies"] = [SEASONAL]
    settings = load_config_data({"evaluation_interval": "15s", "targets": [target]},
                                environ={})
    [result] = run_simulation(settings, settings.targets[0],
                              load_trace(resolve_trace("hourly-job")))
    return result


@pytest.fixture(scope="module")
def learned() -> RunResult:
    return run(with_seasonal=True)


def test_it_learns_the_hourly_job_and_scales_up_before_it(learned: RunResult) -> None:
    ahead = [e for e in learned.events if e["winner"] == "seasonal" and e["to"] > e["from"]]
    assert ahead, "seasonal never raised the count"
    assert all(e["reason"].startswith("period 1h ") for e in ahead)
    # Before the job at :20 (lead 150 s, and a 5-minute phase bin each side for jitter:
    # up to ~10 minutes early), never in the first hours: it has to learn first.
    minutes = sorted({int(e["t"] % 3600 // 60) for e in ahead})
    assert set(minutes) <= set(range(8, 21)), minutes
    assert min(e["t"] for e in ahead) > 2 * 3600


def test_learning_lowers_overload_at_little_cost(learned: RunResult) -> None:
    reactive = run(with_seasonal=False)
    # measured: 7200 s -> 450 s of overload, 194 -> 215 replica-hours
    assert learned.summary["overload_seconds"] < reactive.summary["overload_seconds"] / 4
    assert learned.summary["replica_hours"] <= reactive.summary["replica_hours"] * 1.15


@pytest.mark.parametrize(("scraped", "now", "expected_t"), [
    pytest.param([0, 15, 30, 45, 60, 75, 120], 60.0, [0, 60], id="60s-step-up-to-now"),
    pytest.param([0, 15, 30, 45, 60, 75, 120], 130.0, [0, 60, 120], id="extended-later"),
    pytest.param([0, 200], 100.0, [0], id="never-past-now"),
])
def test_history_feed(scraped: list[float], now: float, expected_t: list[float]) -> None:
    samples = [Sample(t, t * 10) for t in scraped]
    live = Signal.ok((Sample(now, 1.0),))
    feed = HistoryFeed(60.0)
    if now > 100:
        feed.signal(live, samples, 60.0)  # an earlier evaluation: only new points get added
    signal = feed.signal(live, samples, now)
    assert signal.history is not None
    assert list(signal.history.t) == expected_t
    assert list(signal.history.v) == [t * 10 for t in expected_t]


def test_history_feed_passes_a_bad_live_read_through() -> None:
    bad = Signal.bad(SignalState.STALE, "old")
    assert HistoryFeed(60.0).signal(bad, [Sample(0.0, 1.0)], 10.0) is bad
