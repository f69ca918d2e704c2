"""HPA-compatible behavior: table tests per rule, and property tests against a reference.

The reference (tests/support/reference_hpa.py) follows Kubernetes' controller code structure; the
property tests check that autoscaler.behavior agrees with it on random behaviors and
histories whose times sit on and around the windows' and periods' edges.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import autoscaler.behavior as module
from autoscaler.behavior import (
    Behavior,
    HPAScalingPolicy,
    HPAScalingRules,
    NormalizeSteps,
    normalize,
    normalize_explained,
    scale_down_limit,
    scale_up_limit,
    stabilize,
)
from tests.support.reference_hpa import reference_normalize, reference_normalize_explained
from tests.support.tier import examples

NOW = 1000.0

UP_DEFAULT: dict[str, Any] = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15},
        {"type": "Pods", "value": 4, "periodSeconds": 15},
    ],
}
DOWN_DEFAULT: dict[str, Any] = {
    "stabilizationWindowSeconds": 300,
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


def dumped(behavior: Behavior) -> dict[str, Any]:
    return behavior.model_dump(by_alias=True, mode="json")


def rules(select: str, *policies: tuple[str, int, int], window: int = 0) -> HPAScalingRules:
    """Scaling rules from (type, value, periodSeconds) triples."""
    return HPAScalingRules.model_validate(
        {
            "stabilizationWindowSeconds": window,
            "selectPolicy": select,
            "policies": [{"type": t, "value": v, "periodSeconds": p} for t, v, p in policies],
        }
    )


def windows(up: int, down: int) -> Behavior:
    return Behavior.model_validate(
        {
            "scaleUp": {"stabilizationWindowSeconds": up},
            "scaleDown": {"stabilizationWindowSeconds": down},
        }
    )


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        pytest.param({}, {"scaleUp": UP_DEFAULT, "scaleDown": DOWN_DEFAULT}, id="empty-block"),
        pytest.param(None, {"scaleUp": UP_DEFAULT, "scaleDown": DOWN_DEFAULT}, id="null-block"),
        pytest.param(
            {"scaleUp": None, "scaleDown": {}},
            {"scaleUp": UP_DEFAULT, "scaleDown": DOWN_DEFAULT},
            id="null-and-empty-directions",
        ),
        pytest.param(
            {"scaleDown": {"stabilizationWindowSeconds": 60}},
            {
                "scaleUp": UP_DEFAULT,
                "scaleDown": {**DOWN_DEFAULT, "stabilizationWindowSeconds": 60},
            },
            id="down-window-only",
        ),
        pytest.param(
            {"scaleUp": {"stabilizationWindowSeconds": 120}},
            {
                "scaleUp": {**UP_DEFAULT, "stabilizationWindowSeconds": 120},
                "scaleDown": DOWN_DEFAULT,
            },
            id="up-window-only",
        ),
        pytest.param(
            {"scaleUp": {"selectPolicy": "Disabled"}},
            {"scaleUp": {**UP_DEFAULT, "selectPolicy": "Disabled"}, "scaleDown": DOWN_DEFAULT},
            id="up-select-only-keeps-up-policies",
        ),
        pytest.param(
            {"scaleDown": {"selectPolicy": "Min"}},
            {"scaleUp": UP_DEFAULT, "scaleDown": {**DOWN_DEFAULT, "selectPolicy": "Min"}},
            id="down-select-only-keeps-down-policies",
        ),
        pytest.param(
            {"scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}},
            {
                "scaleUp": {
                    **UP_DEFAULT,
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                },
                "scaleDown": DOWN_DEFAULT,
            },
            id="up-policies-only-keeps-window-0",
        ),
        pytest.param(
            {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}]}},
            {
                "scaleUp": UP_DEFAULT,
                "scaleDown": {
                    **DOWN_DEFAULT,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}],
                },
            },
            id="down-policies-only-keeps-window-300",
        ),
        pytest.param(
            {"scaleDown": {"stabilizationWindowSeconds": None, "selectPolicy": "Min"}},
            {"scaleUp": UP_DEFAULT, "scaleDown": {**DOWN_DEFAULT, "selectPolicy": "Min"}},
            id="null-field-gets-default",
        ),
    ],
)
def test_defaults_filled_per_direction_and_field(
    given_: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    assert dumped(Behavior.model_validate(given_)) == expected


def test_hpa_default_and_no_argument_constructor() -> None:
    assert Behavior.hpa_default() == Behavior.model_validate({}) == Behavior()
    assert dumped(Behavior.hpa_default()) == {"scaleUp": UP_DEFAULT, "scaleDown": DOWN_DEFAULT}


CAMEL = {
    "scaleUp": {
        "stabilizationWindowSeconds": 30,
        "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 3, "periodSeconds": 45}],
    },
    "scaleDown": {"policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]},
}
SNAKE = {
    "scale_up": {
        "stabilization_window_seconds": 30,
        "select_policy": "Min",
        "policies": [{"type": "Pods", "value": 3, "period_seconds": 45}],
    },
    "scale_down": {"policies": [{"type": "Percent", "value": 10, "period_seconds": 60}]},
}
MIXED = {
    "scaleUp": {
        "stabilization_window_seconds": 30,
        "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 3, "periodSeconds": 45}],
    },
    "scale_down": {"policies": [{"type": "Percent", "value": 10, "period_seconds": 60}]},
}


@pytest.mark.parametrize("given_", [CAMEL, SNAKE, MIXED], ids=["camelCase", "snake_case", "mixed"])
def test_camel_and_snake_case_accepted(given_: dict[str, Any]) -> None:
    behavior = Behavior.model_validate(given_)
    assert behavior.scale_up.stabilization_window_seconds == 30
    assert behavior.scale_up.select_policy == "Min"
    assert behavior.scale_up.policies == (HPAScalingPolicy(type="Pods", value=3, periodSeconds=45),)
    assert behavior.scale_down.stabilization_window_seconds == 300
    assert behavior.scale_down.select_policy == "Max"
    assert behavior.scale_down.policies[0].period_seconds == 60
    assert behavior == Behavior.model_validate(CAMEL)


def _pod(**overrides: Any) -> dict[str, Any]:
    return {
        "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 15, **overrides}]}
    }


@pytest.mark.parametrize(
    "given_",
    [
        pytest.param({"scaleSideways": {}}, id="unknown-top-key"),
        pytest.param({"scaleUp": {"tolerence": "0.1"}}, id="unknown-rules-key"),
        pytest.param(_pod(periodSecond=15), id="unknown-policy-key"),
        pytest.param({"scaleUp": {}, "scale_up": {}}, id="both-spellings-of-a-direction"),
        pytest.param(_pod(type="Replicas"), id="policy-type-unknown"),
        pytest.param(_pod(type="pods"), id="policy-type-wrong-case"),
        pytest.param(_pod(value=0), id="value-zero"),
        pytest.param(_pod(value=-1), id="value-negative"),
        pytest.param(_pod(value=1.5), id="value-float"),
        pytest.param(_pod(value="4"), id="value-string"),
        pytest.param(_pod(value=True), id="value-bool"),
        pytest.param(_pod(periodSeconds=0), id="period-zero"),
        pytest.param(_pod(periodSeconds=1801), id="period-over-1800"),
        pytest.param(_pod(periodSeconds="15s"), id="period-duration-string"),
        pytest.param(
            {"scaleUp": {"policies": [{"type": "Pods", "value": 1}]}}, id="period-missing"
        ),
        pytest.param(
            {"scaleUp": {"policies": [{"value": 1, "periodSeconds": 1}]}}, id="type-missing"
        ),
        pytest.param({"scaleUp": {"policies": []}}, id="policies-empty"),
        pytest.param({"scaleDown": {"stabilizationWindowSeconds": -1}}, id="window-negative"),
        pytest.param({"scaleDown": {"stabilizationWindowSeconds": 3601}}, id="window-over-3600"),
        pytest.param({"scaleDown": {"selectPolicy": "Average"}}, id="select-policy-unknown"),
        pytest.param({"scaleDown": {"selectPolicy": "max"}}, id="select-policy-wrong-case"),
        pytest.param({"scaleDown": [1]}, id="direction-not-a-mapping"),
        pytest.param([1], id="block-not-a-mapping"),
    ],
)
def test_invalid_behavior_rejected(given_: Any) -> None:
    with pytest.raises(ValidationError):
        Behavior.model_validate(given_)


@pytest.mark.parametrize(
    "given_",
    [
        pytest.param(_pod(periodSeconds=1), id="period-1"),
        pytest.param(_pod(periodSeconds=1800), id="period-1800"),
        pytest.param({"scaleDown": {"stabilizationWindowSeconds": 0}}, id="window-0"),
        pytest.param({"scaleDown": {"stabilizationWindowSeconds": 3600}}, id="window-3600"),
        pytest.param(_pod(type="Percent", value=1000), id="percent-over-100"),
    ],
)
def test_extreme_valid_values_accepted(given_: dict[str, Any]) -> None:
    Behavior.model_validate(given_)


def test_json_schema_lets_a_config_omit_any_field_of_a_direction() -> None:
    schema = Behavior.model_json_schema()
    assert "required" not in schema
    assert "required" not in schema["$defs"]["HPAScalingRules"]
    assert schema["$defs"]["HPAScalingPolicy"]["required"] == ["type", "value", "periodSeconds"]


def test_models_are_frozen_and_hashable() -> None:
    behavior = Behavior.hpa_default()
    with pytest.raises(ValidationError):
        behavior.scale_up = behavior.scale_down
    with pytest.raises(ValidationError):
        behavior.scale_up.policies[0].value = 7
    assert hash(behavior) == hash(Behavior.model_validate({}))


@pytest.mark.parametrize(
    ("given_", "window", "period"),
    [
        pytest.param({}, 300, 15, id="defaults"),
        pytest.param(
            {
                "scaleUp": {
                    "stabilizationWindowSeconds": 600,
                    "policies": [
                        {"type": "Pods", "value": 1, "periodSeconds": 60},
                        {"type": "Pods", "value": 9, "periodSeconds": 900},
                    ],
                }
            },
            600,
            900,
            id="up-longest",
        ),
        pytest.param(
            {
                "scaleDown": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 10, "periodSeconds": 1800}],
                }
            },
            0,
            1800,
            id="down-longest",
        ),
    ],
)
def test_history_horizons(given_: dict[str, Any], window: int, period: int) -> None:
    behavior = Behavior.model_validate(given_)
    assert behavior.max_window_seconds() == window
    assert behavior.max_period_seconds() == period


def test_normalize_signature_is_the_contract() -> None:
    parameters = inspect.signature(normalize).parameters
    assert list(parameters) == [
        "current",
        "recommended",
        "now",
        "behavior",
        "min_replicas",
        "max_replicas",
        "recommendations",
        "events",
    ]
    kinds = [p.kind for p in parameters.values()]
    assert kinds[:3] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 3
    assert kinds[3:] == [inspect.Parameter.KEYWORD_ONLY] * 5
    assert inspect.signature(normalize_explained).parameters == parameters


# --------------------------------------------------------------------------- step 1


W = (60, 300)  # (up, down) stabilization windows of most rows; NOW = 1000


@pytest.mark.parametrize(
    ("windows_", "current", "recommended", "history", "expected"),
    [
        pytest.param(W, 3, 5, [], 5, id="no-history-up-to-recommended"),
        pytest.param(W, 5, 2, [], 2, id="no-history-down-to-recommended"),
        pytest.param(W, 3, 6, [(950.0, 4)], 4, id="up-only-to-lowest-in-up-window"),
        pytest.param(W, 3, 6, [(950.0, 2)], 3, id="up-window-lower-than-current-holds"),
        pytest.param(W, 3, 6, [(950.0, 9)], 6, id="up-window-higher-does-not-raise"),
        pytest.param(W, 6, 2, [(800.0, 4)], 4, id="down-only-to-highest-in-down-window"),
        pytest.param(W, 6, 2, [(800.0, 7)], 6, id="down-window-higher-than-current-holds"),
        pytest.param(W, 6, 2, [(800.0, 1)], 2, id="down-window-lower-does-not-lower"),
        pytest.param(W, 3, 6, [(940.0, 4)], 6, id="up-edge-exactly-now-minus-window-is-out"),
        pytest.param(W, 3, 6, [(940.5, 4)], 4, id="up-edge-just-after-is-in"),
        pytest.param(W, 3, 6, [(math.nextafter(940.0, 941.0), 4)], 4, id="up-edge-next-float-in"),
        pytest.param(W, 6, 2, [(700.0, 4)], 2, id="down-edge-exactly-now-minus-window-is-out"),
        pytest.param(W, 6, 2, [(700.001, 4)], 4, id="down-edge-just-after-is-in"),
        pytest.param((0, 300), 3, 6, [(999.999, 3)], 6, id="zero-up-window-holds-none"),
        pytest.param((0, 300), 3, 6, [(1000.0, 3)], 6, id="zero-up-window-ignores-record-at-now"),
        pytest.param((0, 300), 3, 6, [(1005.0, 3)], 6, id="zero-up-window-ignores-future-record"),
        pytest.param((60, 0), 6, 2, [(999.999, 9)], 2, id="zero-down-window-holds-none"),
        pytest.param(W, 3, 6, [(100.0, 1)], 6, id="record-older-than-both-windows-ignored"),
        pytest.param(W, 5, 5, [(990.0, 8), (990.0, 2)], 5, id="recommended-equal-current-stays"),
        pytest.param(W, 4, 9, [(990.0, 6), (950.0, 7), (500.0, 5)], 6, id="lowest-of-several"),
        pytest.param(W, 8, 2, [(990.0, 1), (900.0, 5), (800.0, 3)], 5, id="highest-of-several"),
        pytest.param(W, 6, 2, [(990.0, 1)], 2, id="low-record-in-up-window-does-not-block-down"),
    ],
)
def test_stabilize(
    windows_: tuple[int, int],
    current: int,
    recommended: int,
    history: list[tuple[float, int]],
    expected: int,
) -> None:
    behavior = windows(*windows_)
    got = stabilize(current, recommended, NOW, behavior=behavior, recommendations=history)
    assert got == expected


# --------------------------------------------------------------------------- step 2

PODS4_15 = ("Pods", 4, 15)
PCT100_15 = ("Percent", 100, 15)


@pytest.mark.parametrize(
    ("scaling", "current", "events", "expected"),
    [
        pytest.param(rules("Max", ("Pods", 4, 60)), 5, [], 9, id="pods"),
        pytest.param(rules("Max", ("Percent", 100, 60)), 5, [], 10, id="percent-100"),
        pytest.param(rules("Max", ("Percent", 50, 60)), 5, [], 8, id="percent-rounds-up"),
        pytest.param(rules("Max", ("Percent", 1, 60)), 1, [], 2, id="percent-always-adds-one"),
        pytest.param(
            rules("Max", ("Percent", 12, 60)), 25, [], 29, id="percent-float64-as-kubernetes"
        ),
        pytest.param(rules("Max", ("Percent", 100, 60)), 0, [], 0, id="percent-of-zero"),
        pytest.param(rules("Max", ("Pods", 4, 60)), 5, [(970.0, 3)], 6, id="start-before-scale-up"),
        pytest.param(
            rules("Max", ("Pods", 4, 60)),
            6,
            [(970.0, 3), (980.0, -2)],
            9,
            id="start-counts-both-directions",
        ),
        pytest.param(
            rules("Max", ("Pods", 4, 60)),
            6,
            [(900.0, -4), (980.0, 4)],
            6,
            id="start-after-recovery-ignores-old-removal",
        ),
        pytest.param(
            rules("Max", ("Pods", 4, 60)), 6, [(940.0, 3)], 10, id="event-at-period-start-out"
        ),
        pytest.param(
            rules("Max", ("Pods", 4, 60)), 6, [(940.25, 3)], 7, id="event-just-inside-period-in"
        ),
        pytest.param(rules("Max", ("Pods", 4, 60)), 6, [(100.0, 3)], 10, id="old-event-ignored"),
        pytest.param(
            rules("Max", ("Pods", 2, 60)),
            8,
            [(990.0, 5)],
            8,
            id="period-used-up-never-below-current",
        ),
        pytest.param(rules("Max", PODS4_15, PCT100_15), 2, [], 6, id="max-picks-pods-when-small"),
        pytest.param(
            rules("Max", PODS4_15, PCT100_15), 10, [], 20, id="max-picks-percent-when-big"
        ),
        pytest.param(
            rules("Min", PODS4_15, PCT100_15), 2, [], 4, id="min-picks-percent-when-small"
        ),
        pytest.param(rules("Min", PODS4_15, PCT100_15), 10, [], 14, id="min-picks-pods-when-big"),
        pytest.param(rules("Disabled", PODS4_15, PCT100_15), 10, [], 10, id="disabled-no-change"),
        pytest.param(
            rules("Max", ("Pods", 4, 15), ("Pods", 6, 120)),
            10,
            [(950.0, 4)],
            14,
            id="periods-differ-max",
        ),
        pytest.param(
            rules("Min", ("Pods", 4, 15), ("Pods", 6, 120)),
            10,
            [(950.0, 4)],
            12,
            id="periods-differ-min",
        ),
    ],
)
def test_scale_up_limit(
    scaling: HPAScalingRules, current: int, events: list[tuple[float, int]], expected: int
) -> None:
    assert scale_up_limit(current, NOW, rules=scaling, events=events) == expected


@pytest.mark.parametrize(
    ("scaling", "current", "events", "expected"),
    [
        pytest.param(rules("Max", ("Pods", 2, 60)), 10, [], 8, id="pods"),
        pytest.param(rules("Max", ("Percent", 50, 60)), 5, [], 2, id="percent-truncates"),
        pytest.param(rules("Max", ("Percent", 100, 60)), 7, [], 0, id="percent-100-to-zero"),
        pytest.param(
            rules("Max", ("Percent", 80, 60)), 10, [], 1, id="percent-float64-as-kubernetes"
        ),
        pytest.param(
            rules("Max", ("Pods", 4, 60)), 8, [(970.0, -3)], 7, id="start-before-scale-down"
        ),
        pytest.param(
            rules("Max", ("Pods", 4, 60)),
            8,
            [(970.0, -3), (980.0, 1)],
            6,
            id="start-counts-both-directions",
        ),
        pytest.param(
            rules("Max", ("Pods", 2, 60)), 8, [(940.0, -2)], 6, id="event-at-period-start-out"
        ),
        pytest.param(rules("Max", ("Pods", 2, 60)), 8, [(990.0, -2)], 8, id="period-used-up-stops"),
        pytest.param(
            rules("Max", ("Pods", 1, 60)), 10, [(990.0, -5)], 10, id="never-above-current"
        ),
        pytest.param(
            rules("Max", ("Pods", 1, 60), ("Percent", 50, 60)), 10, [], 5, id="max-largest-change"
        ),
        pytest.param(
            rules("Min", ("Pods", 1, 60), ("Percent", 50, 60)), 10, [], 9, id="min-smallest-change"
        ),
        pytest.param(
            rules("Disabled", ("Pods", 1, 60), ("Percent", 50, 60)), 10, [], 10, id="disabled"
        ),
        pytest.param(
            rules("Max", ("Pods", 1, 15), ("Pods", 3, 300)),
            10,
            [(900.0, -4)],
            9,
            id="periods-differ-max",
        ),
        pytest.param(
            rules("Min", ("Pods", 1, 15), ("Pods", 3, 300)),
            10,
            [(900.0, -4)],
            10,
            id="periods-differ-min-capped-at-current",
        ),
    ],
)
def test_scale_down_limit(
    scaling: HPAScalingRules, current: int, events: list[tuple[float, int]], expected: int
) -> None:
    assert scale_down_limit(current, NOW, rules=scaling, events=events) == expected


# --------------------------------------------------------------------------- steps 1-3

DEFAULT = Behavior.hpa_default()
DOWN_PODS_2 = Behavior.model_validate(
    {
        "scaleDown": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
        }
    }
)
UP_DISABLED = Behavior.model_validate({"scaleUp": {"selectPolicy": "Disabled"}})
UP_WINDOW_60 = windows(60, 300)


S = NormalizeSteps
History = list[tuple[float, int]]


def _case(
    name: str,
    behavior: Behavior,
    move: tuple[int, int],
    bounds: tuple[int, int],
    expected: NormalizeSteps,
    *,
    history: History | None = None,
    events: History | None = None,
) -> Any:
    """One row: ``move`` is (current, recommended), ``bounds`` is (min, max)."""
    return pytest.param(behavior, move, bounds, (history or [], events or []), expected, id=name)


@pytest.mark.parametrize(
    ("behavior", "move", "bounds", "past", "expected"),
    [
        _case("up-rate-limited", DEFAULT, (2, 20), (1, 100), S(20, 6, 6, "rate_limit")),
        _case("up-max-bound", DEFAULT, (2, 20), (1, 5), S(20, 6, 5, "bounds")),
        _case("up-limit-equal-max-is-bounds", DEFAULT, (2, 20), (1, 6), S(20, 6, 6, "bounds")),
        _case("up-within-limits", DEFAULT, (2, 5), (1, 10), S(5, 6, 5, None)),
        _case("up-to-max-exactly", DEFAULT, (5, 9), (1, 9), S(9, 10, 9, None)),
        _case(
            "up-after-recent-scale-up",
            DEFAULT,
            (6, 30),
            (1, 100),
            S(30, 8, 8, "rate_limit"),
            events=[(995.0, 2)],
        ),
        _case("down-rate-limited", DOWN_PODS_2, (10, 1), (1, 20), S(1, 8, 8, "rate_limit")),
        _case("down-min-bound", DOWN_PODS_2, (10, 1), (9, 20), S(1, 8, 9, "bounds")),
        _case(
            "down-limit-equal-min-is-bounds", DOWN_PODS_2, (10, 1), (8, 20), S(1, 8, 8, "bounds")
        ),
        _case("down-within-limits", DOWN_PODS_2, (10, 9), (1, 20), S(9, 8, 9, None)),
        _case("down-default-to-min-bound", DEFAULT, (10, 1), (3, 20), S(1, 0, 3, "bounds")),
        _case(
            "down-held-up-by-window",
            DEFAULT,
            (10, 2),
            (1, 20),
            S(6, 0, 6, None),
            history=[(900.0, 6)],
        ),
        _case(
            "up-held-by-window",
            UP_WINDOW_60,
            (5, 8),
            (1, 20),
            S(5, None, 5, None),
            history=[(990.0, 5)],
        ),
        _case("up-disabled", UP_DISABLED, (4, 9), (1, 20), S(9, 4, 4, "rate_limit")),
        _case("no-change", DEFAULT, (4, 4), (1, 20), S(4, None, 4, None)),
    ],
)
def test_normalize_explained(
    behavior: Behavior,
    move: tuple[int, int],
    bounds: tuple[int, int],
    past: tuple[History, History],
    expected: NormalizeSteps,
) -> None:
    (current, recommended), (low, high), (history, events) = move, bounds, past
    kwargs: dict[str, Any] = {
        "behavior": behavior,
        "min_replicas": low,
        "max_replicas": high,
        "recommendations": history,
        "events": events,
    }
    assert normalize_explained(current, recommended, NOW, **kwargs) == expected
    assert normalize(current, recommended, NOW, **kwargs) == expected.bounded


def test_normalize_is_one_implementation(monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = NormalizeSteps(1, None, 42, None)
    monkeypatch.setattr(module, "normalize_explained", lambda *a, **k: sentinel)
    got = module.normalize(
        1, 1, NOW, behavior=DEFAULT, min_replicas=1, max_replicas=1, recommendations=[], events=[]
    )
    assert got == 42


# --------------------------------------------------------------------------- properties

# Compact encodings (one integer draw per field or policy) keep 3000 examples fast.
WINDOWS = (0, 1, 14, 15, 16, 59, 60, 61, 120, 299, 300, 301, 600, 3599, 3600)
PERIODS = (1, 2, 14, 15, 16, 30, 59, 60, 61, 120, 300, 1799, 1800)
VALUES = (1, 2, 3, 4, 5, 9, 10, 12, 20, 25, 33, 50, 80, 99, 100, 101, 150, 1000)
TYPES = ("Pods", "Percent")
POLICY = st.integers(0, len(TYPES) * len(VALUES) * len(PERIODS) - 1).map(
    lambda k: {
        "type": TYPES[k % 2],
        "value": VALUES[k // 2 % len(VALUES)],
        "periodSeconds": PERIODS[k // 2 // len(VALUES)],
    }
)


@st.composite
def scaling_rules(draw: st.DrawFn) -> dict[str, Any] | None:
    """One direction as written by a user: omitted (None), or any subset of its fields."""
    present = draw(st.integers(0, 8))  # bit 0 window, bit 1 selectPolicy, bit 2 policies
    if present == 8:
        return None
    written: dict[str, Any] = {}
    if present & 1:
        written["stabilizationWindowSeconds"] = draw(st.sampled_from(WINDOWS))
    if present & 2:
        written["selectPolicy"] = draw(st.sampled_from(["Max", "Min", "Disabled"]))
    if present & 4:
        written["policies"] = draw(st.lists(POLICY, min_size=1, max_size=4))
    return written


@st.composite
def behaviors(draw: st.DrawFn) -> dict[str, Any]:
    """A ``spec.behavior`` dict; an omitted direction is left out, not written as null."""
    written = {"scaleUp": draw(scaling_rules()), "scaleDown": draw(scaling_rules())}
    return {key: rules for key, rules in written.items() if rules is not None}


BEHAVIOR = behaviors()
NOWS = st.one_of(
    st.sampled_from([0.0, 1000.0, 86_400.25, 1_700_000_000.123]),
    st.floats(0, 2_000_000_000, allow_nan=False, allow_infinity=False),
)


def _window_edges(behavior: Behavior) -> list[int]:
    """The ages at which a recommendation enters or leaves a stabilization window."""
    up, down = behavior.scale_up, behavior.scale_down
    return sorted({0, up.stabilization_window_seconds, down.stabilization_window_seconds})


def _period_edges(behavior: Behavior) -> list[int]:
    """The ages at which a scale event enters or leaves a policy's period."""
    policies = (*behavior.scale_up.policies, *behavior.scale_down.policies)
    return sorted({p.period_seconds for p in policies})


# Where a record's time falls relative to one edge (now − window or now − period): on it,
# on the next float either side, or a little either side; or anywhere in the last 4000 s.
# Encoded in one integer draw each, which keeps 3000 examples fast.
JITTERS = ("on", "next-after", "next-before", 0.5, -0.5, 1.0, -1.0)
PLACES = st.one_of(
    st.integers(0, 16 * len(JITTERS) - 1).map(
        lambda k: (k // len(JITTERS), JITTERS[k % len(JITTERS)], 0.0)
    ),
    st.integers(0, 4_000_000).map(lambda ms: (None, "on", ms / 1000)),
)
CHANGES = st.sampled_from([*range(-12, 0), *range(1, 13)])


def _time(now: float, edges: list[int], place: tuple[int | None, str | float, float]) -> float:
    """A time no later than ``now``, mostly on, just inside or just outside an edge."""
    edge, jitter, age = place
    if edge is None:
        return now - age
    cutoff = now - edges[edge % len(edges)]
    if jitter == "on":
        t = cutoff
    elif jitter == "next-after":
        t = math.nextafter(cutoff, math.inf)
    elif jitter == "next-before":
        t = math.nextafter(cutoff, -math.inf)
    else:
        t = cutoff + float(jitter)
    return min(t, now)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    raw = draw(BEHAVIOR)
    behavior = Behavior.model_validate(raw)
    now = draw(NOWS)
    low = draw(st.integers(0, 10))
    high = draw(st.integers(low, low + 40))
    recs = draw(st.lists(st.tuples(PLACES, st.integers(0, 80)), max_size=6))
    events = draw(st.lists(st.tuples(PLACES, CHANGES), max_size=6))
    return {
        "raw": raw,
        "behavior": behavior,
        "now": now,
        "current": draw(st.integers(low, high)),
        "recommended": draw(st.integers(0, high + 10)),
        "min_replicas": low,
        "max_replicas": high,
        "recommendations": [(_time(now, _window_edges(behavior), p), v) for p, v in recs],
        "events": [(_time(now, _period_edges(behavior), p), c) for p, c in events],
    }


def _ours(s: dict[str, Any], **override: Any) -> NormalizeSteps:
    args = {**s, **override}
    return normalize_explained(
        args["current"],
        args["recommended"],
        args["now"],
        behavior=args["behavior"],
        min_replicas=args["min_replicas"],
        max_replicas=args["max_replicas"],
        recommendations=args["recommendations"],
        events=args["events"],
    )


def _theirs(s: dict[str, Any]) -> tuple[int, int, str]:
    return reference_normalize_explained(
        s["current"],
        s["recommended"],
        s["now"],
        behavior=s["raw"],
        min_replicas=s["min_replicas"],
        max_replicas=s["max_replicas"],
        recommendations=s["recommendations"],
        events=s["events"],
    )


@settings(max_examples=examples(3000), deadline=None)
@given(scenarios())
def test_normalize_agrees_with_reference(s: dict[str, Any]) -> None:
    ours = normalize(
        s["current"],
        s["recommended"],
        s["now"],
        behavior=s["behavior"],
        min_replicas=s["min_replicas"],
        max_replicas=s["max_replicas"],
        recommendations=s["recommendations"],
        events=s["events"],
    )
    theirs = reference_normalize(
        s["current"],
        s["recommended"],
        s["now"],
        behavior=s["raw"],
        min_replicas=s["min_replicas"],
        max_replicas=s["max_replicas"],
        recommendations=s["recommendations"],
        events=s["events"],
    )
    assert ours == theirs


REASON_TO_LIMITED_BY = {
    "DesiredWithinRange": None,
    "ScaleUpLimit": "rate_limit",
    "ScaleDownLimit": "rate_limit",
    "TooManyReplicas": "bounds",
    "TooFewReplicas": "bounds",
}


@settings(max_examples=examples(500), deadline=None)
@given(scenarios())
def test_explained_steps_agree_with_reference_conditions(s: dict[str, Any]) -> None:
    steps = _ours(s)
    stabilized, desired, reason = _theirs(s)
    assert steps.stabilized == stabilized
    assert steps.bounded == desired
    assert steps.limited_by == REASON_TO_LIMITED_BY[reason]
    assert (steps.limit is None) == (stabilized == s["current"])


@settings(max_examples=examples(300), deadline=None)
@given(scenarios())
def test_result_within_bounds_and_between_current_and_recommended(s: dict[str, Any]) -> None:
    steps = _ours(s)
    current, recommended = s["current"], s["recommended"]
    assert s["min_replicas"] <= steps.bounded <= s["max_replicas"]
    assert min(current, recommended) <= steps.stabilized <= max(current, recommended)
    assert min(current, steps.stabilized) <= steps.bounded <= max(current, steps.stabilized)


@settings(max_examples=examples(300), deadline=None)
@given(scenarios(), st.integers(0, 120), st.integers(0, 120))
def test_monotonic_in_recommended(s: dict[str, Any], a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert _ours(s, recommended=low).bounded <= _ours(s, recommended=high).bounded


@settings(max_examples=examples(200), deadline=None)
@given(scenarios())
def test_zero_windows_and_no_limits_follow_recommendation_within_bounds(s: dict[str, Any]) -> None:
    unlimited = Behavior.model_validate(
        {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 1_000_000, "periodSeconds": 1800}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1800}],
            },
        }
    )
    got = _ours(s, behavior=unlimited)
    assert got.bounded == min(max(s["recommended"], s["min_replicas"]), s["max_replicas"])
    assert got.limited_by != "rate_limit"


@settings(max_examples=examples(100), deadline=None)
@given(scenarios())
def test_disabled_both_ways_never_moves(s: dict[str, Any]) -> None:
    frozen = Behavior.model_validate(
        {"scaleUp": {"selectPolicy": "Disabled"}, "scaleDown": {"selectPolicy": "Disabled"}}
    )
    assert _ours(s, behavior=frozen).bounded == s["current"]


@settings(max_examples=examples(300), deadline=None)
@given(scenarios(), st.data())
def test_history_older_than_horizons_is_irrelevant(s: dict[str, Any], data: st.DataObject) -> None:
    behavior: Behavior = s["behavior"]
    now: float = s["now"]
    old = st.floats(0, 10_000, allow_nan=False, allow_infinity=False)
    old_recs = data.draw(
        st.lists(
            st.tuples(
                old.map(lambda x: now - behavior.max_window_seconds() - x), st.integers(0, 80)
            ),
            max_size=4,
        )
    )
    old_events = data.draw(
        st.lists(
            st.tuples(
                old.map(lambda x: now - behavior.max_period_seconds() - x),
                CHANGES,
            ),
            max_size=4,
        )
    )
    padded = _ours(
        s,
        recommendations=[*old_recs, *s["recommendations"]],
        events=[*old_events, *s["events"]],
    )
    assert padded == _ours(s)


@settings(max_examples=examples(300), deadline=None)
@given(scenarios())
def test_up_limit_never_below_and_down_limit_never_above_current(s: dict[str, Any]) -> None:
    behavior: Behavior = s["behavior"]
    now, current, events = s["now"], s["current"], s["events"]
    assert scale_up_limit(current, now, rules=behavior.scale_up, events=events) >= current
    assert scale_down_limit(current, now, rules=behavior.scale_down, events=events) <= current
