"""`forecast`: instances for the email rate expected one lead time ahead.

`capacity` sizes for the rate measured now, but a new instance serves only after its
start-up delay, and the measured rate itself trails demand by the scrape interval and the
rate window: on rising demand it answers late, and its headroom (the guide's 1.5x) is paid
all day to cover that lateness. This policy removes the lag instead: it fits a
least-squares line to the rate over `window` and sizes for the rate `lead` seconds after
the newest sample, so a smaller headroom covers only noise. It never sizes for less than
the rate it measures (a falling trend is not extrapolated down: scale-down stays as slow
and safe as `capacity`'s).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from autoscaler.model import PolicyContext, Recommendation, Signal
from autoscaler.units import Duration
from policies.base import Policy, ceil_exact, within_tolerance
from policies.capacity import replicas_for_rate
from policies.queue_trend import slope_per_hour


def forecast_rate(latest: float, slope_per_hour: float | None, lead: float) -> float:
    """The rate `lead` seconds ahead on a rising trend; the latest rate otherwise."""
    if slope_per_hour is None or slope_per_hour <= 0:
        return latest
    return latest + slope_per_hour * lead / 3600.0


def sized_with_hysteresis(rate: float, current: int, per_instance: float, headroom: float,
                          hysteresis: float) -> int:
    """Instances for `rate` with `headroom`; fewer than `current` only when the rate with
    headroom leaves `hysteresis` of one instance spare on the smaller count, so noise at a
    boundary holds the size instead of flapping."""
    wanted = replicas_for_rate(rate, per_instance, headroom)
    if wanted >= current:
        return wanted
    return min(current, ceil_exact(rate * headroom / per_instance + hysteresis))


class ForecastPolicy(Policy):
    """Sizes the service for the email rate (emails/hour) predicted `lead` seconds ahead."""

    type: Literal["forecast"] = "forecast"
    per_instance: float = Field(10000.0, gt=0, description="emails/hour one instance handles")
    headroom: float = Field(1.1, ge=1.0, description="safety factor over the predicted rate")
    window: Duration = Field(120.0, gt=0, description="history the trend is fitted over")
    lead: Duration = Field(
        90.0, ge=0, description="how far ahead to size for: start-up delay + scrape + tick"
    )

    hysteresis: float = Field(
        0.1, ge=0, description="fraction of one instance the smaller count must leave spare "
                               "before a scale-down: no flapping at a boundary"
    )

    def window_seconds(self) -> float:
        return self.window

    def recommend(self, signal: Signal, ctx: PolicyContext) -> Recommendation:
        if not signal.samples:
            return Recommendation(None, "no sample")
        latest = signal.samples[-1].value
        if latest < 0:
            return Recommendation(None, f"negative rate {latest:g}/h ignored (counter reset?)")
        cut = signal.samples[-1].t - self.window - 1e-9
        fitted = tuple(s for s in signal.samples if s.t >= cut)
        slope = slope_per_hour(fitted)
        rate = forecast_rate(latest, slope, self.lead)
        wanted = sized_with_hysteresis(rate, ctx.current, self.per_instance, self.headroom,
                                       self.hysteresis)
        trend = "" if slope is None else f", trend {slope:+.0f}/h per hour"
        formula = (f"rate {latest:.0f}/h{trend} -> {rate:.0f}/h in {self.lead:g}s: "
                   f"ceil({rate:.0f} / {self.per_instance:g} x {self.headroom:g}) = {wanted}")
        if wanted != ctx.current and within_tolerance(wanted, ctx.current, self.tolerance):
            return Recommendation(ctx.current, f"{formula}, within tolerance of {ctx.current}")
        return Recommendation(wanted, formula)


POLICY = ForecastPolicy
