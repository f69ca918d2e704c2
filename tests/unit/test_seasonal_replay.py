"""`simulate` feeds `seasonal` the plant's own scraped history, as the live source hands it
over (a Signal with `history` arrays at 60 s), never ahead of the simulated clock; on a trace
with an hourly job the policy learns the job and scales up before it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from autoscaler.config import load_config_data
from autoscaler.model import Decision, Sample, Signal, SignalState
from autoscaler.replay.evaluations import ReplayTarget
from autoscaler.replay.plant import HistoryFeed
from autoscaler.replay.simulate import RunResult, run_simulation
from autoscaler.trace import load_trace, resolve_trace

SMTP: dict[str, Any] = {
    "name": "smtp", "backend": "swarm", "service": "stalwart_smtp", "preset": "stalwart-smtp",
    "min_replicas": 2, "max_replicas": 20, "cooldown": {"up": "60s", "down": "0s"},
    "behavior": {"scaleUp": {"stabilizationWindowSeconds": 30},
                 "scaleDown": {"stabilizationWindowSeconds": 600}},
}


def run(trace: str, seasonal: str = "active",
        decisions: list[Decision] | None = None) -> RunResult:
    """The preset as a user who configures nothing gets it (seasonal on the inflow), or
    with `preset_options.seasonal` set; every decision appended to `decisions` if given."""
    target = copy.deepcopy(SMTP)
    target["preset_options"] = {"seasonal": seasonal}
    settings = load_config_data({"evaluation_interval": "15s", "targets": [target]},
                                environ={})
    if decisions is None:
        [result] = run_simulation(settings, settings.targets[0], load_trace(resolve_trace(trace)))
        return result
    original = ReplayTarget.evaluate

    def recording(self: ReplayTarget, *args: Any) -> Decision:
        decision = original(self, *args)
        decisions.append(decision)
        return decision

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ReplayTarget, "evaluate", recording)
        [result] = run_simulation(settings, settings.targets[0], load_trace(resolve_trace(trace)))
    return result


@pytest.fixture(scope="module")
def learned() -> RunResult:
    return run("hourly-job")


def test_it_learns_the_hourly_job_and_scales_up_before_it(learned: RunResult) -> None:
    ahead = [e for e in learned.events
             if e["winner"] == "inflow_seasonal" and e["to"] > e["from"]]
    assert ahead, "seasonal never raised the count"
    assert all(e["reason"].startswith("period 1h ") for e in ahead)
    first = [e for e in ahead if "first repeat" in e["reason"]]
    proven = [e for e in ahead if "first repeat" not in e["reason"]]
    # The second job, at its first repeat: once, its jitter unknown, so at most
    # phase_window (5 min) + lead (150 s) + a minute of timing slack before :20.
    assert len(first) == 1 and 3600 < first[0]["t"] < 2 * 3600, first
    assert 20 * 60 - (300 + 150 + 60) <= first[0]["t"] % 3600 < 20 * 60, first
    # Proven from then on: just before the job (lead 150 s + a minute of slack: from :17).
    minutes = sorted({int(e["t"] % 3600 // 60) for e in proven})
    assert set(minutes) <= {16, 17, 18, 19}, minutes
    assert min(e["t"] for e in proven) > 2 * 3600


def test_learning_lowers_overload_at_little_cost(learned: RunResult) -> None:
    reactive = run("hourly-job", seasonal="off")
    # measured: 7200 s -> 150 s of overload (the first job only: nothing to learn from
    # yet), 194 -> 148 replica-hours (ready at the job, the reactive overshoot held at
    # seasonal's count while it runs, down at its predicted end)
    assert learned.summary["overload_seconds"] <= 150
    assert learned.summary["replica_hours"] < reactive.summary["replica_hours"] * 0.8


@pytest.mark.parametrize("trace", ["noisy-flat", "slow-ramp"])
def test_no_opinion_on_every_tick_without_a_recurring_burst(trace: str) -> None:
    """Noise and a trend are no pattern: seasonal, in the preset by default, never asks."""
    decisions: list[Decision] = []
    with_it = run(trace, decisions=decisions)
    seen = [p for d in decisions for p in d.policies if p.name == "inflow_seasonal"]
    assert len(seen) == len(decisions) > 100
    assert all(p.replicas is None for p in seen)
    # every tick but the first (nothing scraped yet: not reported) says why it has none
    assert all("no opinion" in p.reason for p in seen[1:]), {p.reason for p in seen[1:]}
    assert with_it.summary == run(trace, seasonal="off").summary | {
        "not_simulated": with_it.summary["not_simulated"]}


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
