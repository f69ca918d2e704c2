"""An independent reference for autoscaler.behavior, shaped like Kubernetes' HPA controller.

Written from the published algorithm (pkg/controller/podautoscaler/horizontal.go and the
autoscaling/v2 defaulting), deliberately in its structure rather than in behavior.py's:
plain dicts for the behavior, defaults copied field by field, separate scale-up and
scale-down event lists holding magnitudes, int32 sentinels and a select function. The
property tests compare the two on random inputs; a shared mistake would have to be made
twice, in two different shapes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_INT32 = 2**31 - 1
MIN_INT32 = -(2**31)

DEFAULT_SCALE_UP_RULES: dict[str, Any] = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
DEFAULT_SCALE_DOWN_RULES: dict[str, Any] = {
    "stabilizationWindowSeconds": 300,  # the controller's downscale-stabilization flag
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


def copy_scaling_rules(source: dict[str, Any] | None, target: dict[str, Any]) -> dict[str, Any]:
    """copyHPAScalingRules: every non-nil field of source overrides the default in target."""
    if source is None:
        return target
    for field_name in ("selectPolicy", "stabilizationWindowSeconds", "policies"):
        if source.get(field_name) is not None:
            target[field_name] = source[field_name]
    return target


def set_defaults(behavior: dict[str, Any] | None) -> dict[str, Any]:
    """SetDefaults_HorizontalPodAutoscalerBehavior for a camelCase behavior dict."""
    behavior = behavior or {}
    return {
        "scaleUp": copy_scaling_rules(
            behavior.get("scaleUp"), copy.deepcopy(DEFAULT_SCALE_UP_RULES)
        ),
        "scaleDown": copy_scaling_rules(
            behavior.get("scaleDown"), copy.deepcopy(DEFAULT_SCALE_DOWN_RULES)
        ),
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

    def calculate_scale_up_limit_with_scaling_rules(
        self, current_replicas: int, scaling_rules: dict[str, Any]
    ) -> int:
        select_policy_fn: Callable[[int, int], int]
        if scaling_rules["selectPolicy"] == "Disabled":
            return current_replicas
        if scaling_rules["selectPolicy"] == "Min":
            result = MAX_INT32
            select_policy_fn = min_int
        else:
            result = MIN_INT32
            select_policy_fn = max_int
        for policy in scaling_rules["policies"]:
            added = self.get_replicas_change_per_period(
                policy["periodSeconds"], self.scale_up_events
            )
            deleted = self.get_replicas_change_per_period(
                policy["periodSeconds"], self.scale_down_events
            )
            period_start_replicas = current_replicas - added + deleted
            proposed = 0
            if policy["type"] == "Pods":
                proposed = period_start_replicas + policy["value"]
            elif policy["type"] == "Percent":
                # Rounded up so that a small percentage still adds a pod.
                proposed = math.ceil(
                    float(period_start_replicas) * (1 + float(policy["value"]) / 100)
                )
            result = select_policy_fn(result, proposed)
        return result

    def calculate_scale_down_limit_with_behaviors(
        self, current_replicas: int, scaling_rules: dict[str, Any]
    ) -> int:
        select_policy_fn: Callable[[int, int], int]
        if scaling_rules["selectPolicy"] == "Disabled":
            return current_replicas
        if scaling_rules["selectPolicy"] == "Min":
            result = MIN_INT32
            select_policy_fn = max_int
        else:
            result = MAX_INT32
            select_policy_fn = min_int
        for policy in scaling_rules["policies"]:
            added = self.get_replicas_change_per_period(
                policy["periodSeconds"], self.scale_up_events
            )
            deleted = self.get_replicas_change_per_period(
                policy["periodSeconds"], self.scale_down_events
            )
            period_start_replicas = current_replicas - added + deleted
            proposed = 0
            if policy["type"] == "Pods":
                proposed = period_start_replicas - policy["value"]
            elif policy["type"] == "Percent":
                # Go's int32(float64) conversion truncates toward zero, as int() does.
                proposed = int(float(period_start_replicas) * (1 - float(policy["value"]) / 100))
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


def reference_normalize(
    current: int,
    recommended: int,
    now: float,
    *,
    behavior: dict[str, Any] | None,
    min_replicas: int,
    max_replicas: int,
    recommendations: Sequence[tuple[float, int]],
    events: Sequence[tuple[float, int]],
) -> int:
    """The replica count the HPA controller would set."""
    return reference_normalize_explained(
        current,
        recommended,
        now,
        behavior=behavior,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        recommendations=recommendations,
        events=events,
    )[1]
