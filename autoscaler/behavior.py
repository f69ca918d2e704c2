"""Kubernetes-HPA-compatible scaling behavior: stabilization, rate limits, bounds.

This is the HPA's ``spec.behavior`` (autoscaling/v2) as a pure function, so a target
configured like an HPA moves exactly as the HPA would move it, and the ``hpa-cpu``
baseline of ``simulate`` is a faithful HPA rather than a straw man. There is no clock and
no stored history here: ``now``, the earlier recommendations and the earlier scale events
are arguments, and the caller prunes its history with :meth:`Behavior.max_window_seconds`
and :meth:`Behavior.max_period_seconds`.

Percent limits use IEEE double arithmetic on purpose, as Kubernetes does with float64:
``trunc(10 × (1 − 80/100))`` is 1, not 2, in both.

Each direction may also carry a ``tolerance`` (Kubernetes 1.33, KEP-4951): it is not used by
:func:`normalize` but by the target-value rule (``policies.target_value``), as in the HPA.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from pydantic.config import JsonDict

__all__ = [
    "Behavior",
    "HPAScalingPolicy",
    "HPAScalingRules",
    "NormalizeSteps",
    "normalize",
    "normalize_explained",
    "parse_quantity",
    "scale_down_limit",
    "scale_up_limit",
    "stabilize",
]

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]
LimitedBy = Literal["rate_limit", "bounds"]

# Kubernetes' validation limits (pkg/apis/autoscaling/validation).
MAX_PERIOD_SECONDS = 1800
MAX_STABILIZATION_WINDOW_SECONDS = 3600

# Kubernetes' SetDefaults for an omitted field, per direction (the scale-down window is the
# controller's --horizontal-pod-autoscaler-downscale-stabilization default).
_SCALE_UP_DEFAULTS: dict[str, Any] = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15},
        {"type": "Pods", "value": 4, "periodSeconds": 15},
    ],
}
_SCALE_DOWN_DEFAULTS: dict[str, Any] = {
    "stabilizationWindowSeconds": 300,
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}
# (camelCase alias, snake_case name) of each HPAScalingRules field.
_RULES_FIELDS = (
    ("stabilizationWindowSeconds", "stabilization_window_seconds"),
    ("selectPolicy", "select_policy"),
    ("policies", "policies"),
)

_MODEL_CONFIG = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

# The HPA controller's --horizontal-pod-autoscaler-tolerance default, used by a direction
# whose own tolerance is not set.
DEFAULT_TOLERANCE = 0.1

# A Kubernetes resource.Quantity: a decimal number, then a binary-SI, decimal-SI or
# exponent suffix ("50m", "0.05", "1e-1", "1Ki").
# Digits and exponent are bounded so that every quantity the pattern (and so the JSON Schema)
# accepts is a finite float (`1e400` or 400 digits would not be); no `-`: a tolerance is >= 0.
_QUANTITY = re.compile(
    r"^(\+?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30}))"
    r"(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]{1,2})?$"
)
_QUANTITY_SUFFIX = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}
QUANTITY_PATTERN = _QUANTITY.pattern


def parse_quantity(value: Any) -> float:
    """A Kubernetes Quantity (``"50m"``, ``"0.05"``) or a plain number, as a float.

    Written here rather than taken from the kubernetes client so this module stays pure
    (importing that client costs ~40 MB and is an I/O library); raises ValueError.
    """
    if isinstance(value, bool):
        raise ValueError("a quantity must be a number or a string such as 50m or 0.05")
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        raise ValueError("invalid quantity: too large")  # float() would raise OverflowError
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _QUANTITY.fullmatch(value)
        if match is None:
            raise ValueError(f"invalid quantity {value!r}: use a number or a string such as 50m")
        digits, suffix = match.group(1), match.group(2) or ""
        try:
            scale = (_QUANTITY_SUFFIX[suffix] if suffix in _QUANTITY_SUFFIX  # "Ei" too
                     else Decimal(1).scaleb(int(suffix[1:])))
            number = float(Decimal(digits) * scale)
        except (InvalidOperation, OverflowError) as exc:
            raise ValueError(f"invalid quantity {value!r}") from exc
    else:
        raise ValueError("a quantity must be a number or a string such as 50m or 0.05")
    if not math.isfinite(number):
        raise ValueError(f"invalid quantity {value!r}: must be finite")
    return number


Tolerance = Annotated[
    float,
    BeforeValidator(parse_quantity),
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": sys.float_info.max},
                {"type": "string", "pattern": QUANTITY_PATTERN},
            ],
            "description": "a Kubernetes Quantity such as 50m (0.05), or a number",
        }
    ),
]


class HPAScalingPolicy(BaseModel):
    """One rate limit: at most ``value`` pods (or percent) of change per ``period_seconds``.

    Integers are strict, as in the Kubernetes API: ``"4"``, ``4.0`` and ``true`` are errors.
    """

    model_config = _MODEL_CONFIG

    type: PolicyType
    value: int = Field(gt=0, le=2**31 - 1, strict=True)  # an int32 in Kubernetes
    period_seconds: int = Field(ge=1, le=MAX_PERIOD_SECONDS, strict=True, alias="periodSeconds")


def _nullable(schema: JsonDict) -> None:
    """`null` reads as omitted (Kubernetes' SetDefaults), so the schema allows it too."""
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for key, value in properties.items():
            properties[key] = {"anyOf": [value, {"type": "null"}]}


def _nothing_required(schema: JsonDict) -> None:
    """In a config file every field of a direction may be omitted or null: Behavior fills it
    in."""
    schema.pop("required", None)
    _nullable(schema)


class HPAScalingRules(BaseModel):
    """The rules of one direction, fully specified.

    Defaults depend on the direction, so they are filled in by :class:`Behavior`, not here.
    """

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, frozen=True, json_schema_extra=_nothing_required
    )

    stabilization_window_seconds: int = Field(
        ge=0,
        le=MAX_STABILIZATION_WINDOW_SECONDS,
        strict=True,
        alias="stabilizationWindowSeconds",
    )
    select_policy: SelectPolicy = Field(alias="selectPolicy")
    # A tuple, not a list, so the frozen model is really immutable (and hashable).
    # Kubernetes rejects an explicitly empty list ("must specify at least one Policy").
    policies: tuple[HPAScalingPolicy, ...] = Field(min_length=1)
    # KEP-4951: how far the target-value ratio may move this way before it acts; None =
    # the controller-wide DEFAULT_TOLERANCE, as an HPA without the field.
    tolerance: Tolerance | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_tolerance(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> Any:
        """An unset tolerance is left out, as Kubernetes prints an HPA without one."""
        data = handler(self)
        if self.tolerance is None and isinstance(data, dict):
            data.pop("tolerance", None)
        return data

    def max_period_seconds(self) -> int:
        """The longest policy period: events older than that no longer limit this direction."""
        return max((p.period_seconds for p in self.policies), default=0)


def _rules_with_defaults(rules: Any, defaults: Mapping[str, Any]) -> Any:
    """Fill the omitted (or null) fields of one direction, as Kubernetes' SetDefaults does."""
    if rules is None:
        return dict(defaults)
    if not isinstance(rules, Mapping):
        return rules  # an HPAScalingRules instance, or garbage for pydantic to reject
    filled = {k: v for k, v in rules.items() if v is not None}
    for alias, name in _RULES_FIELDS:
        if alias not in filled and name not in filled:
            filled[alias] = defaults[alias]
    return filled


_BEHAVIOR_CONFIG = ConfigDict(extra="forbid", populate_by_name=True, frozen=True,
                              json_schema_extra=_nullable)


class Behavior(BaseModel):
    """An HPA ``spec.behavior`` block; accepts camelCase (as in Kubernetes) or snake_case."""

    model_config = _BEHAVIOR_CONFIG

    scale_up: HPAScalingRules = Field(
        default_factory=lambda: HPAScalingRules.model_validate(_SCALE_UP_DEFAULTS),
        alias="scaleUp",
    )
    scale_down: HPAScalingRules = Field(
        default_factory=lambda: HPAScalingRules.model_validate(_SCALE_DOWN_DEFAULTS),
        alias="scaleDown",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_hpa_defaults(cls, data: Any) -> Any:
        """Per direction and per field, like SetDefaults_HorizontalPodAutoscalerBehavior."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        for alias, name, defaults in (
            ("scaleUp", "scale_up", _SCALE_UP_DEFAULTS),
            ("scaleDown", "scale_down", _SCALE_DOWN_DEFAULTS),
        ):
            key = name if name in filled and alias not in filled else alias
            filled[key] = _rules_with_defaults(filled.get(key), defaults)
        return filled

    @classmethod
    def hpa_default(cls) -> Behavior:
        """What an HPA does with no ``behavior`` block at all."""
        return cls.model_validate({})

    def max_window_seconds(self) -> int:
        """The longest stabilization window: older recommendations can be dropped."""
        return max(
            self.scale_up.stabilization_window_seconds,
            self.scale_down.stabilization_window_seconds,
        )

    def max_period_seconds(self) -> int:
        """The longest policy period of either direction: older events can be dropped.

        Both directions' limits read events of both directions, hence one figure.
        """
        return max(self.scale_up.max_period_seconds(), self.scale_down.max_period_seconds())

    def tolerances(self) -> tuple[float, float]:
        """(up, down) tolerance of the target-value rule, the default where unset."""
        up, down = self.scale_up.tolerance, self.scale_down.tolerance
        return (DEFAULT_TOLERANCE if up is None else up,
                DEFAULT_TOLERANCE if down is None else down)


class NormalizeSteps(NamedTuple):
    """What each step of :func:`normalize` made of the recommendation, for the decision record.

    ``limit`` is the rate limit of the direction moved in (None when stabilization kept the
    current count); ``limited_by`` says which of the rate limit or ``min``/``max`` clipped the
    stabilized value (None when neither did). When both give the same figure it is
    ``bounds``, as the HPA reports ``TooManyReplicas``/``TooFewReplicas`` then. A named
    tuple, not a frozen dataclass: one is built on every evaluation and it is cheaper.
    """

    stabilized: int
    limit: int | None
    bounded: int
    limited_by: LimitedBy | None


def _in_window(
    recommendations: Sequence[tuple[float, int]], now: float, window: int
) -> list[int]:
    """The recommendations a stabilization window holds.

    An entry counts when its time is strictly after now - window; a 0 s window holds
    nothing, not even a record stamped in the future by a skewed clock elsewhere.
    """
    if window <= 0:
        return []
    cut = now - window
    return [value for t, value in recommendations if t > cut]


def stabilize(
    current: int,
    recommended: int,
    now: float,
    *,
    behavior: Behavior,
    recommendations: Sequence[tuple[float, int]],
) -> int:
    """Step 1: the count the recommendations of both windows agree on moving to.

    Start from ``current``, raise it to the lowest recommendation of the scale-up window,
    lower it to the highest of the scale-down window; ``recommended`` counts in both. So a
    scale-up needs every recent recommendation to be higher, and a scale-down every one
    to be lower: that is what damps flapping.
    """
    up = _in_window(recommendations, now, behavior.scale_up.stabilization_window_seconds)
    down = _in_window(recommendations, now, behavior.scale_down.stabilization_window_seconds)
    floor = min([recommended, *up])
    ceiling = max([recommended, *down])
    return min(max(current, floor), ceiling)


def _period_start(
    current: int, now: float, period: int, events: Sequence[tuple[float, int]]
) -> int:
    """The count at the start of a policy's period, from the changes made since.

    Events of both directions count, as in current Kubernetes: after 10 → 4 → 8 within the
    period, the period started at 10, not at 4.
    """
    recent = [change for t, change in events if t > now - period]
    added = sum(change for change in recent if change > 0)
    removed = -sum(change for change in recent if change < 0)
    return current - added + removed


def scale_up_limit(
    current: int,
    now: float,
    *,
    rules: HPAScalingRules,
    events: Sequence[tuple[float, int]],
) -> int:
    """Step 2 going up: the highest count the scale-up policies allow now.

    Per policy, Pods → start + value, Percent → ceil(start × (1 + value/100)); selectPolicy
    Max takes the largest of them, Min the smallest, Disabled allows no change. Never below
    ``current``: a period already used up stops the scale-up, it does not force a scale-down.
    """
    if rules.select_policy == "Disabled" or not rules.policies:
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, now, policy.period_seconds, events)
        if policy.type == "Pods":
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    limit = max(proposals) if rules.select_policy == "Max" else min(proposals)
    return max(limit, current)


def scale_down_limit(
    current: int,
    now: float,
    *,
    rules: HPAScalingRules,
    events: Sequence[tuple[float, int]],
) -> int:
    """Step 2 going down: the lowest count the scale-down policies allow now.

    Per policy, Pods → start − value, Percent → trunc(start × (1 − value/100)); selectPolicy
    Max takes the largest change (the lowest count), Min the smallest, Disabled allows no
    change. Never above ``current``: a used-up period stops the scale-down, nothing more.
    """
    if rules.select_policy == "Disabled" or not rules.policies:
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, now, policy.period_seconds, events)
        if policy.type == "Pods":
            proposals.append(start - policy.value)
        else:
            proposals.append(math.trunc(start * (1 - policy.value / 100)))
    limit = min(proposals) if rules.select_policy == "Max" else max(proposals)
    return min(limit, current)


def normalize_explained(
    current: int,
    recommended: int,
    now: float,
    *,
    behavior: Behavior,
    min_replicas: int,
    max_replicas: int,
    recommendations: Sequence[tuple[float, int]],
    events: Sequence[tuple[float, int]],
) -> NormalizeSteps:
    """:func:`normalize`, keeping each step's result so the caller can say what clipped it."""
    stabilized = stabilize(
        current, recommended, now, behavior=behavior, recommendations=recommendations
    )
    if stabilized > current:
        limit = scale_up_limit(current, now, rules=behavior.scale_up, events=events)
        allowed = min(max_replicas, limit)
        if stabilized <= allowed:
            return NormalizeSteps(stabilized, limit, stabilized, None)
        return NormalizeSteps(
            stabilized, limit, allowed, "rate_limit" if limit < max_replicas else "bounds"
        )
    if stabilized < current:
        limit = scale_down_limit(current, now, rules=behavior.scale_down, events=events)
        allowed = max(min_replicas, limit)
        if stabilized >= allowed:
            return NormalizeSteps(stabilized, limit, stabilized, None)
        return NormalizeSteps(
            stabilized, limit, allowed, "rate_limit" if limit > min_replicas else "bounds"
        )
    return NormalizeSteps(stabilized, None, stabilized, None)


def normalize(
    current: int,
    recommended: int,
    now: float,
    *,
    behavior: Behavior,
    min_replicas: int,
    max_replicas: int,
    recommendations: Sequence[tuple[float, int]],
    events: Sequence[tuple[float, int]],
) -> int:
    """The replica count the HPA would set: stabilize → rate limit → min/max bounds.

    ``recommendations`` are earlier (time, recommended) pairs, ``events`` earlier (time,
    signed replica change) pairs, times in seconds. Called with min ≤ current ≤ max; outside
    that it does what the HPA's code does (going up is capped at ``max_replicas`` even when
    that is below ``current``), and the caller's final clamp sorts it out.
    """
    return normalize_explained(
        current,
        recommended,
        now,
        behavior=behavior,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        recommendations=recommendations,
        events=events,
    ).bounded
