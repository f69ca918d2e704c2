"""`capacity`: instances needed for an email rate, as the sizing guide computes them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from autoscaler.model import PolicyContext, Recommendation, Signal
from policies.base import Policy, ceil_exact, within_tolerance


def replicas_for_rate(rate_per_hour: float, per_instance: float, headroom: float) -> int:
    """The guide's formula: ceil(peak emails/hour / per-instance capacity x headroom)."""
    return ceil_exact(rate_per_hour / per_instance * headroom)


class CapacityPolicy(Policy):
    """Sizes the service from the email rate the query returns (emails/hour)."""

    type: Literal["capacity"] = "capacity"
    per_instance: float = Field(10000.0, gt=0, description="emails/hour one instance handles")
    headroom: float = Field(1.5, ge=1.0, description="safety factor over the measured rate")

    def recommend(self, signal: Signal, ctx: PolicyContext) -> Recommendation:
        rate = signal.latest
        if rate is None:
            return Recommendation(None, "no sample")
        if rate < 0:
            return Recommendation(None, f"negative rate {rate:g}/h ignored (counter reset?)")
        wanted = replicas_for_rate(rate, self.per_instance, self.headroom)
        formula = f"ceil({rate:.0f}/h / {self.per_instance:g} x {self.headroom:g}) = {wanted}"
        if wanted != ctx.current and within_tolerance(wanted, ctx.current, self.tolerance):
            return Recommendation(ctx.current, f"{formula}, within tolerance of {ctx.current}")
        return Recommendation(wanted, formula)


POLICY = CapacityPolicy
