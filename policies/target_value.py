"""`target_value`: the Kubernetes HPA's rule for a per-instance average, kept faithful.

It is also the `hpa-cpu` baseline, so it copies the HPA's handling of tolerance, of
instances that are not ready yet (counted as 0 % when scaling up, left out when scaling
down) and of proposals that land on the wrong side of the current size. Tolerance is per
direction as since Kubernetes 1.33 (KEP-4951): the target's ``behavior.scaleUp.tolerance``
and ``behavior.scaleDown.tolerance``, unless the policy sets its own for both ways.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from autoscaler.model import PolicyContext, Recommendation, Signal
from policies.base import Policy, ceil_exact


def within_tolerances(ratio: float, up: float, down: float) -> bool:
    """The HPA's dead band: no change while 1 - down <= ratio <= 1 + up (KEP-4951)."""
    return 1.0 - down <= ratio <= 1.0 + up


def _tolerance_text(up: float, down: float) -> str:
    return f"tolerance {up:g}" if up == down else f"tolerance +{up:g}/-{down:g}"


def hpa_replicas(
    value: float, target: float, current: int, ready: int | None, tolerance: float,
    tolerance_down: float | None = None,
) -> tuple[int, str]:
    """The HPA's replica proposal for an average `value` over the ready instances.

    `tolerance` bounds a scale-up, `tolerance_down` (default: the same) a scale-down.
    """
    up, down = tolerance, tolerance if tolerance_down is None else tolerance_down
    ratio = value / target
    if within_tolerances(ratio, up, down):
        return current, f"ratio {ratio:.3f} within {_tolerance_text(up, down)}"
    counted = current if ready is None else min(ready, current)
    if counted <= 0:
        return current, "no ready instance to average over"
    if ratio > 1.0 and counted < current:
        # Instances still starting count as idle: the average over all of them decides.
        ratio_all = ratio * counted / current
        if within_tolerances(ratio_all, up, down) or ratio_all < 1.0:
            return current, (
                f"ratio {ratio:.3f} over {counted} ready, {ratio_all:.3f} with "
                f"{current - counted} starting: hold"
            )
        wanted = ceil_exact(ratio_all * current)
        how = f"ceil({current} x {ratio_all:.3f}) = {wanted} ({current - counted} starting at 0)"
    else:
        wanted = ceil_exact(ratio * counted)
        how = f"ceil({counted} x {ratio:.3f}) = {wanted}"
    if (ratio > 1.0 and wanted < current) or (ratio < 1.0 and wanted > current):
        return current, f"{how}: opposite direction, hold"
    return wanted, how


class TargetValuePolicy(Policy):
    """Keeps a per-instance average at `target`, as the HPA does."""

    type: Literal["target_value"] = "target_value"
    target: float = Field(..., gt=0, description="the per-instance average to hold")
    tolerance: float | None = Field(  # type: ignore[assignment]  # None: the behavior's
        None, ge=0,
        description="no change while |value/target - 1| <= this, both ways; default: the "
                    "target's behavior.scaleUp/scaleDown.tolerance (0.1 where unset)",
    )

    def recommend(self, signal: Signal, ctx: PolicyContext) -> Recommendation:
        value = signal.latest
        if value is None:
            return Recommendation(None, "no sample")
        if value < 0:
            return Recommendation(None, f"negative value {value:g} ignored")
        if self.tolerance is None:
            up, down = ctx.tolerance_up, ctx.tolerance_down
        else:
            up = down = self.tolerance
        wanted, how = hpa_replicas(value, self.target, ctx.current, ctx.ready, up, down)
        return Recommendation(wanted, f"{value:.4g} vs target {self.target:g}: {how}")


POLICY = TargetValuePolicy
