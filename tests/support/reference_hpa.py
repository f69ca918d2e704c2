"""An independent reference for autoscaler.behavior, shaped like Kubernetes' HPA controller.

Written from the published algorithm (pkg/controller/podautoscaler/horizontal.go and the
autoscaling/v2 defaulting), deliberately in its structure rather than in behavior.py's:
plain dicts for the behavior, defaults generated per direction and copied field by field,
separate scale-up and scale-down event lists holding magnitudes, int32 sentinels and a
select function. The
property tests compare the two on random inputs; a shared mistake would have to be made
twice, in two different shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_INT32 = 2**31 - 1
MIN_INT32 = -(2**31)

# pkg/apis/autoscaling/v2/defaults.go and the controller's flags, as named there.
SCALE_UP_LIMIT_PERCENT = 100
SCALE_UP_LIMIT_MINIMUM_PODS = 4
SCALE_UP_PERIOD = 15
SCALE_DOWN_LIMIT_PERCENT = 100
SCALE_DOWN_PERIOD = 15
SCALE_DOWN_STABILIZATION_WINDOW = 300  # --horizontal-pod-autoscaler-downscale-stabilization
SCALING_RULES_FIELDS = ("selectPolicy", "stabilizationWindowSeconds", "policies")


def scaling_policy(kind: str, value: int, period_seconds: int) -> dict[str, Any]:
    return {"type": kind, "value": value, "periodSeconds": period_seconds}


def hpa_scaling_rules(
    select_policy: str, stabilization_window_seconds: int, policies: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"selectPolicy": select_policy,
            "stabilizationWindowSeconds": stabilization_window_seconds, "policies": policies}


def copy_scaling_rules(source: dict[str, Any] | None, target: dict[str, Any]) -> dict[str, Any]:
    """copyHPAScalingRules: every non-nil field of source overrides the default in target."""
    if source is None:
        return target
    for field_name in SCALING_RULES_FIELDS:
        if source.get(field_name) is not None:
            target[field_name] = source[field_name]
    return target


def generate_hpa_scale_up_rules(scaling_rules: dict[str, Any] | None) -> dict[str, Any]:
    """GenerateHPAScaleUpRules."""
    default_scaling_rules = hpa_scaling_rules(
        "Max", 0, [scaling_policy("Pods", SCALE_UP_LIMIT_MINIMUM_PODS, SCALE_UP_PERIOD),
                   scaling_policy("Percent", SCALE_UP_LIMIT_PERCENT, SCALE_UP_PERIOD)])
    return copy_scaling_rules(scaling_rules, default_scaling_rules)


def generate_hpa_scale_down_rules(scaling_rules: dict[str, Any] | None) -> dict[str, Any]:
    """GenerateHPAScaleDownRules."""
    default_scaling_rules = hpa_scaling_rules(
        "Max", SCALE_DOWN_STABILIZATION_WINDOW,
        [scaling_policy("Percent", SCALE_DOWN_LIMIT_PERCENT, SCALE_DOWN_PERIOD)])
    return copy_scaling_rules(scaling_rules, default_scaling_rules)


def set_defaults(behavior: dict[str, Any] | None) -> dict[str, Any]:
    """SetDefaults_HorizontalPodAutoscalerBehavior for a camelCase behavior dict."""
    behavior = behavior or {}
    return {
        "scaleUp": generate_hpa_scale_up_rules(behavior.get("scaleUp")),
        "scaleDown": generate_hpa_scale_down_rules(behavior.get("scaleDown")),
    }


@dataclass
class TimestampedScaleEvent:
    replica_change: int  # a magnitude: positive in both lists, as in the controller
    timestamp: float


@dataclass
class NormalizationArg:
    scale_up_behavior: dict[str, Any]
    scale_down_behavior: dict[str, Any]
    min_replicas: int
    max_replicas: int
    current_replicas: int
    desired_replicas: int


def min_int(a: int, b: int) -> int:
    return a if a <= b else b


def max_int(a: int, b: int) -> int:
    return a if a >= b else b


@dataclass(frozen=True)
class Direction:
    """One direction's proposal per policy type, and its (initial result, select function)
    for the default ("Max", index False) and the "Min" (index True) select policy."""

    proposals: dict[str, Callable[[int, int], int]]
    selection: tuple[tuple[int, Callable[[int, int], int]], tuple[int, Callable[[int, int], int]]]


SCALE_UP = Direction(
    proposals={
        "Pods": lambda start, value: start + value,
        # Rounded up so that a small percentage still adds a pod.
        "Percent": lambda start, value: math.ceil(float(start) * (1 + float(value) / 100)),
    },
    selection=((MIN_INT32, max_int), (MAX_INT32, min_int)),
)
SCALE_DOWN = Direction(
    proposals={
        "Pods": lambda start, value: start - value,
        # Go's int32(float64) conversion truncates toward zero, as int() does.
        "Percent": lambda start, value: int(float(start) * (1 - float(value) / 100)),
    },
    selection=((MAX_INT32, min_int), (MIN_INT32, max_int)),
)


class ReferenceController:
    """The controller's state for one HPA: its recommendations and its two event lists."""

    def __init__(
        self,
        now: float,
        recommendations: Sequence[tuple[float, int]],
        events: Sequence[tuple[float, int]],
    ) -> None:
        self.now = now
        self.recommendations = list(recommendations)
        self.scale_up_events: list[TimestampedScaleEvent] = []
        self.scale_down_events: list[TimestampedScaleEvent] = []
        for timestamp, change in events:
            if change > 0:
                self.scale_up_events.append(TimestampedScaleEvent(change, timestamp))
            elif change < 0:
                self.scale_down_events.append(TimestampedScaleEvent(-change, timestamp))

    def stabilize_recommendation_with_behaviors(self, args: NormalizationArg) -> int:
        up_recommendation = args.desired_replicas
        up_cutoff = self.now - float(args.scale_up_behavior["stabilizationWindowSeconds"])
        down_recommendation = args.desired_replicas
        down_cutoff = self.now - float(args.scale_down_behavior["stabilizationWindowSeconds"])

        for timestamp, recommendation in self.recommendations:
            if timestamp > up_cutoff:  # rec.timestamp.After(upCutoff)
                up_recommendation = min_int(recommendation, up_recommendation)
            if timestamp > down_cutoff:
                down_recommendation = max_int(recommendation, down_recommendation)

        recommendation = args.current_replicas
        recommendation = max_int(recommendation, up_recommendation)
        recommendation = min_int(recommendation, down_recommendation)
        return recommendation

    def get_replicas_change_per_period(
        self, period_seconds: int, scale_events: list[TimestampedScaleEvent]
    ) -> int:
        cutoff = self.now - float(period_seconds)
        replicas = 0
        for event in scale_events:
            if event.timestamp > cutoff:
                replicas += event.replica_change
        return replicas

    def period_start_replicas(self, current_replicas: int, period_seconds: int) -> int:
        """currentReplicas - replicasAddedInCurrentPeriod + replicasDeletedInCurrentPeriod."""
        added = self.get_replicas_change_per_period(period_seconds, self.scale_up_events)
        deleted = self.get_replicas_change_per_period(period_seconds, self.scale_down_events)
        return current_replicas - added + deleted

    def calculate_scale_up_limit_with_scaling_rules(
        self, current_replicas: int, scaling_rules: dict[str, Any]
    ) -> int:
        return self.calculate_limit(current_replicas, scaling_rules, SCALE_UP)

    def calculate_scale_down_limit_with_behaviors(
        self, current_replicas: int, scaling_rules: dict[str, Any]
    ) -> int:
        return self.calculate_limit(current_replicas, scaling_rules, SCALE_DOWN)

    def calculate_limit(
        self, current_replicas: int, scaling_rules: dict[str, Any], direction: Direction
    ) -> int:
        """The two calculate*Limit functions of the controller, which differ only in the
        direction's proposals and in which select function "Min" means."""
        if scaling_rules["selectPolicy"] == "Disabled":
            return current_replicas
        result, select_policy_fn = direction.selection[scaling_rules["selectPolicy"] == "Min"]
        for policy in scaling_rules["policies"]:
            start = self.period_start_replicas(current_replicas, policy["periodSeconds"])
            proposed = direction.proposals[policy["type"]](start, policy["value"])
            result = select_policy_fn(result, proposed)
        return result

    def convert_desired_replicas_with_behavior_rate(
        self, args: NormalizationArg
    ) -> tuple[int, str]:
        if args.desired_replicas > args.current_replicas:
            scale_up_limit = self.calculate_scale_up_limit_with_scaling_rules(
                args.current_replicas, args.scale_up_behavior
            )
            # We shouldn't scale up further until the scale-up events are outside the period.
            scale_up_limit = max_int(scale_up_limit, args.current_replicas)
            maximum_allowed_replicas = args.max_replicas
            if maximum_allowed_replicas > scale_up_limit:
                maximum_allowed_replicas = scale_up_limit
                possible_limiting_reason = "ScaleUpLimit"
            else:
                possible_limiting_reason = "TooManyReplicas"
            if args.desired_replicas > maximum_allowed_replicas:
                return maximum_allowed_replicas, possible_limiting_reason
        elif args.desired_replicas < args.current_replicas:
            scale_down_limit = self.calculate_scale_down_limit_with_behaviors(
                args.current_replicas, args.scale_down_behavior
            )
            scale_down_limit = min_int(scale_down_limit, args.current_replicas)
            minimum_allowed_replicas = args.min_replicas
            if minimum_allowed_replicas < scale_down_limit:
                minimum_allowed_replicas = scale_down_limit
                possible_limiting_reason = "ScaleDownLimit"
            else:
                possible_limiting_reason = "TooFewReplicas"
            if args.desired_replicas < minimum_allowed_replicas:
                return minimum_allowed_replicas, possible_limiting_reason
        return args.desired_replicas, "DesiredWithinRange"

    def normalize_desired_replicas_with_behaviors(
        self,
        behavior: dict[str, Any],
        current_replicas: int,
        prenormalized_desired_replicas: int,
        min_replicas: int,
        max_replicas: int,
    ) -> tuple[int, int, str]:
        """Returns (stabilized, desired, reason), the reason as the HPA's condition names it."""
        args = NormalizationArg(
            scale_up_behavior=behavior["scaleUp"],
            scale_down_behavior=behavior["scaleDown"],
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            current_replicas=current_replicas,
            desired_replicas=prenormalized_desired_replicas,
        )
        stabilized = self.stabilize_recommendation_with_behaviors(args)
        args.desired_replicas = stabilized
        desired, reason = self.convert_desired_replicas_with_behavior_rate(args)
        return stabilized, desired, reason


def reference_normalize_explained(
    current: int,
    recommended: int,
    now: float,
    *,
    behavior: dict[str, Any] | None,
    min_replicas: int,
    max_replicas: int,
    recommendations: Sequence[tuple[float, int]],
    events: Sequence[tuple[float, int]],
) -> tuple[int, int, str]:
    """(stabilized, desired, reason) for a camelCase ``spec.behavior`` dict (None = omitted)."""
    controller = ReferenceController(now, recommendations, events)
    return controller.normalize_desired_replicas_with_behaviors(
        set_defaults(behavior), current, recommended, min_replicas, max_replicas
    )


def reference_normalize(*args: Any, **kwargs: Any) -> int:
    """The replica count the HPA controller would set (reference_normalize_explained's
    arguments)."""
    return reference_normalize_explained(*args, **kwargs)[1]
