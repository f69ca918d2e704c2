"""Pinned outcomes of whole simulations: a speed-up of the replay engine must not change them.

The profile is spelled out (what the `stalwart-smtp` preset expanded to when these were
pinned), so tuning the preset does not move these figures; changing the engine, a policy's
math or the plant model does, on purpose. If such a change is intended, re-pin the digest
and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from autoscaler.config import load_config_data
from autoscaler.replay.simulate import run_simulation
from autoscaler.trace import load_trace, resolve_trace

PROFILE: dict[str, Any] = {
    "name": "smtp", "backend": "swarm", "service": "stalwart_smtp",
    "min_replicas": 2, "max_replicas": 20, "cooldown": {"up": "60s", "down": "5m"},
    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600,
                               "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}},
    "policies": [
        {"type": "capacity", "name": "inflow", "query": "inflow", "simulate_as": "arrival_rate",
         "per_instance": 10000, "headroom": 1.5},
        {"type": "queue_trend", "name": "queue", "query": "net inflow",
         "simulate_as": "net_inflow", "signal": "growth", "window": "5m",
         "per_instance": 10000, "drain_within": "15m"},
        {"type": "threshold", "name": "cpu", "query": "cpu", "simulate_as": "cpu",
         "scale_up_above": 70, "for": "1m"},
    ],
    "guards": [{"name": "active_deliveries", "query": "deliveries", "block": "scale_down",
                "above": 20, "simulate_as": "active_deliveries"}],
}


def digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize(("baseline", "summary", "run_digest"), [
    pytest.param(None, {"overload_seconds": 405.0, "peak_queue": 1496.9,
                        "worst_queue_delay_seconds": 117.7,
                        # 31.05 -> 27.67 (38 -> 33 events, peak 16 -> 14) when queue_trend
                        # stopped adding instances to a queue draining at its newest sample
                        "replica_hours": 27.67, "scale_events": 33, "peak_replicas": 14,
                        # settling: the run's first minutes have no scraped history yet,
                        # so the 5m queue window holds scale-down until it has filled
                        # (counted from the first ok answer after that gap)
                        "clips": {"cooldown": 215, "rate_limit": 276, "settling": 15,
                                  "stabilization": 296}},
                 "5c118bb728d9b4c8", id="profile"),
    pytest.param("hpa-cpu", {"overload_seconds": 345.0, "peak_queue": 1487.8,
                             "worst_queue_delay_seconds": 155.4, "replica_hours": 21.2,
                             "scale_events": 27, "peak_replicas": 19,
                             "clips": {"stabilization": 173}},
                 "c60180e85e784b74", id="hpa-cpu"),
    pytest.param("static", {"overload_seconds": 0.0, "replica_hours": 65.95,
                            "scale_events": 0, "peak_replicas": 11, "clips": {}},
                 "7554ccbe3f7b5b74", id="static"),
])
def test_newsletter_burst_outcome_is_pinned(baseline: str | None, summary: dict[str, Any],
                                            run_digest: str) -> None:
    settings = load_config_data({"evaluation_interval": "15s", "targets": [PROFILE]},
                                environ={})
    trace = load_trace(resolve_trace("newsletter-burst"))
    [run] = run_simulation(settings, settings.targets[0], trace,
                           baseline=baseline)  # type: ignore[arg-type]
    record = None if run.last_decision is None else run.last_decision.to_dict()
    assert {k: run.summary[k] for k in summary} == summary
    assert digest([run.timeline, run.events, run.summary, record]) == run_digest
