"""A metrics backend's `warnings` on an ok answer reach the decision record, and never change
the decision: Thanos and Mimir say there when a store or an ingester was missing."""

from __future__ import annotations

import pytest

from autoscaler.config import GuardConfig
from autoscaler.decide import TargetRules
from autoscaler.evaluate import evaluate
from autoscaler.model import Sample, Signal, SignalState, TargetStatus
from policies.capacity import CapacityPolicy

WARNED = "http://thanos/api/v1/query warned: store gateway b unreachable"


@pytest.mark.parametrize(("signal", "record_warnings"), [
    pytest.param(Signal(SignalState.OK, (Sample(1000.0, 50_000.0),), WARNED), WARNED,
                 id="ok-with-warnings: recorded"),
    pytest.param(Signal.ok((Sample(1000.0, 50_000.0),)), None, id="ok-without: no key"),
    pytest.param(Signal.bad(SignalState.ERROR, "HTTP 503"), None,
                 id="not-ok: the detail is the reason, not a warning"),
])
def test_backend_warnings_in_the_decision_record(signal: Signal,
                                                 record_warnings: str | None) -> None:
    policy = CapacityPolicy(type="capacity", query="sum(rate(x[5m])) * 3600")
    guard = GuardConfig(query="sum(active)", above=20)
    decision = evaluate(
        target="smtp", now=1000.0, status=TargetStatus(current=3, ready=None),
        policies=[policy], policy_signals={policy.label: signal},
        guards=[guard], guard_signals={guard.label: signal},
        rules=TargetRules(min_replicas=1, max_replicas=20))
    record = decision.to_dict()
    assert record["policies"][0].get("warnings") == record_warnings
    assert record["guards"][0].get("warnings") == record_warnings
    same_without = evaluate(
        target="smtp", now=1000.0, status=TargetStatus(current=3, ready=None),
        policies=[policy], policy_signals={policy.label: Signal(signal.state, signal.samples,
                                                                "" if signal.samples else
                                                                signal.detail)},
        guards=[guard], guard_signals={guard.label: signal},
        rules=TargetRules(min_replicas=1, max_replicas=20))
    assert same_without.desired == decision.desired
