"""Per-direction tolerance (Kubernetes 1.33, KEP-4951): behavior.scaleUp/scaleDown.tolerance,
a Quantity or a number, applied to the target-value rule as the HPA applies it; a policy's own
tolerance wins for that policy."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from autoscaler.behavior import Behavior, parse_quantity
from autoscaler.config import load_config_data
from autoscaler.evaluate import evaluate
from autoscaler.model import PolicyContext, Sample, Signal, TargetStatus
from policies.target_value import TargetValuePolicy, hpa_replicas, within_tolerances


@pytest.mark.parametrize(("given", "expected"), [
    pytest.param("50m", 0.05, id="milli"), pytest.param("0.05", 0.05, id="decimal-string"),
    pytest.param("1e-1", 0.1, id="exponent"), pytest.param("1E-1", 0.1, id="exponent-upper"),
    pytest.param(".5", 0.5, id="leading-dot"), pytest.param("0", 0.0, id="zero"),
    pytest.param("2", 2.0, id="integer-string"), pytest.param(0.2, 0.2, id="float"),
    pytest.param(1, 1.0, id="int"), pytest.param("1k", 1000.0, id="kilo"),
    pytest.param("1Ki", 1024.0, id="binary"),
])
def test_quantity_parses(given: Any, expected: float) -> None:
    assert parse_quantity(given) == pytest.approx(expected)


@pytest.mark.parametrize("given", [
    pytest.param("5%", id="percent"), pytest.param("abc", id="text"),
    pytest.param("50 m", id="space-inside"), pytest.param("1mm", id="two-suffixes"),
    pytest.param("", id="empty"), pytest.param(True, id="bool"), pytest.param([1], id="list"),
    pytest.param(float("inf"), id="inf"),
])
def test_quantity_rejects(given: Any) -> None:
    with pytest.raises(ValueError):
        parse_quantity(given)


@pytest.mark.parametrize(("block", "expected"), [
    pytest.param({}, (0.1, 0.1), id="unset-is-hpa-default"),
    pytest.param({"scaleUp": {"tolerance": "50m"}}, (0.05, 0.1), id="up-only"),
    pytest.param({"scaleDown": {"tolerance": 0.2}}, (0.1, 0.2), id="down-only"),
    pytest.param({"scale_up": {"tolerance": "0"}, "scale_down": {"tolerance": "1"}}, (0.0, 1.0),
                 id="snake-case-both"),
])
def test_behavior_tolerances(block: dict[str, Any], expected: tuple[float, float]) -> None:
    assert Behavior.model_validate(block).tolerances() == pytest.approx(expected)


@pytest.mark.parametrize("block", [
    pytest.param({"scaleUp": {"tolerance": "-50m"}}, id="negative-quantity"),
    pytest.param({"scaleDown": {"tolerance": -0.1}}, id="negative-number"),
    pytest.param({"scaleDown": {"tolerance": "ten"}}, id="not-a-quantity"),
])
def test_behavior_tolerance_rejected(block: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Behavior.model_validate(block)


def test_unset_tolerance_is_not_dumped_and_a_set_one_round_trips() -> None:
    assert "tolerance" not in Behavior.hpa_default().model_dump(by_alias=True)["scaleUp"]
    dumped = Behavior.model_validate({"scaleUp": {"tolerance": "50m"}}).model_dump(by_alias=True)
    assert dumped["scaleUp"]["tolerance"] == pytest.approx(0.05)
    assert Behavior.model_validate(dumped).tolerances() == pytest.approx((0.05, 0.1))


@pytest.mark.parametrize(("ratio", "up", "down", "within"), [
    pytest.param(1.10, 0.1, 0.1, True, id="at-upper-edge"),
    pytest.param(0.90, 0.1, 0.1, True, id="at-lower-edge"),
    pytest.param(1.06, 0.05, 0.5, False, id="tight-up-acts"),
    pytest.param(0.60, 0.05, 0.5, True, id="loose-down-holds"),
    pytest.param(0.49, 0.05, 0.5, False, id="past-loose-down-acts"),
    pytest.param(1.0, 0.0, 0.0, True, id="zero-tolerance-exact"),
])
def test_within_tolerances(ratio: float, up: float, down: float, within: bool) -> None:
    assert within_tolerances(ratio, up, down) is within


# (value, target, current, ready, up, down) -> replicas, as the HPA's replica calculator.
@pytest.mark.parametrize(("value", "current", "ready", "up", "down", "expected"), [
    pytest.param(75, 10, 10, 0.05, 0.1, 11, id="7pct-over-tight-up-scales-up"),
    pytest.param(75, 10, 10, 0.1, 0.05, 10, id="7pct-over-default-up-holds"),
    pytest.param(63, 10, 10, 0.1, 0.05, 9, id="10pct-under-tight-down-scales-down"),
    pytest.param(63, 10, 10, 0.05, 0.15, 10, id="10pct-under-loose-down-holds"),
    # starting instances count as idle going up: 4 of 8 ready at 150 % -> 75 % over all 8,
    # below target, hold even with a zero up tolerance
    pytest.param(105, 8, 4, 0.0, 0.5, 8, id="unready-idle-holds"),
    pytest.param(154, 8, 4, 0.05, 0.5, 9, id="unready-over-tight-up"),
    pytest.param(154, 8, 4, 0.15, 0.5, 8, id="unready-within-loose-up"),
])
def test_hpa_replicas_per_direction(value: float, current: int, ready: int, up: float,
                                    down: float, expected: int) -> None:
    assert hpa_replicas(value, 70, current, ready, up, down)[0] == expected


def _recommend(policy: TargetValuePolicy, value: float, up: float, down: float) -> int | None:
    ctx = PolicyContext(current=10, ready=10, tolerance_up=up, tolerance_down=down)
    return policy.recommend(Signal.ok((Sample(0, value),)), ctx).replicas


@pytest.mark.parametrize(("own", "value", "up", "down", "expected"), [
    pytest.param(None, 75, 0.05, 0.1, 11, id="no-own-uses-behavior-up"),
    pytest.param(None, 63, 0.1, 0.05, 9, id="no-own-uses-behavior-down"),
    pytest.param(0.2, 75, 0.05, 0.05, 10, id="own-wins-up"),
    pytest.param(0.2, 63, 0.05, 0.05, 10, id="own-wins-down"),
    pytest.param(0.0, 71, 0.5, 0.5, 11, id="own-zero-wins"),
])
def test_policy_own_tolerance_wins(own: float | None, value: float, up: float, down: float,
                                   expected: int) -> None:
    policy = TargetValuePolicy(type="target_value", query="q", target=70, tolerance=own)
    assert _recommend(policy, value, up, down) == expected


def _target(behavior: dict[str, Any], policy: dict[str, Any]) -> Any:
    settings = load_config_data({"targets": [{
        "name": "web", "backend": "swarm", "service": "web", "min_replicas": 1,
        "max_replicas": 20, "behavior": behavior,
        "policies": [{"type": "target_value", "query": "cpu", "target": 70, **policy}],
    }]}, environ={})
    return settings.targets[0]


@pytest.mark.parametrize(("behavior", "policy", "value", "expected"), [
    pytest.param({}, {}, 75, 10, id="default-holds-at-7pct"),
    pytest.param({"scaleUp": {"tolerance": "50m"}}, {}, 75, 11, id="config-quantity-up"),
    pytest.param({"scaleUp": {"tolerance": "50m"}}, {"tolerance": 0.1}, 75, 10,
                 id="config-policy-wins"),
    pytest.param({"scaleDown": {"tolerance": "0.05"}, "scaleUp": {"tolerance": 0.5}}, {}, 63, 9,
                 id="config-down"),
])
def test_config_tolerance_reaches_the_decision(behavior: dict[str, Any], policy: dict[str, Any],
                                               value: float, expected: int) -> None:
    target = _target(behavior, policy)
    decision = evaluate(
        target="web", now=1000.0, status=TargetStatus(current=10, ready=10),
        policies=target.effective_policies(),
        policy_signals={"target_value": Signal.ok((Sample(990.0, value),))},
        guards=[], guard_signals={}, rules=target.rules(),
    )
    assert decision.policies[0].replicas == expected
