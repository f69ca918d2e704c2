"""`threshold`: the guide's rules (CPU above 70 %, memory above 80 %, latency above the SLA).

Every sample over `for` above the upper bound asks for `step` more instances; every sample
below the lower bound asks for `step` fewer; anything else votes to keep the current size, so
one content threshold blocks a scale-down that another policy would allow (none beats scale-in).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from autoscaler.model import PolicyContext, Recommendation, Signal
from autoscaler.units import Duration
from policies.base import Policy


def covers_window(times: Sequence[float], window: float) -> bool:
    """True when the samples span `window` (to within one sample spacing).

    `for: 5m` must not fire on the first sample after start-up: the condition has to have
    been seen for the whole duration, as in a Prometheus alert.
    """
    if window <= 0:
        return bool(times)
    if len(times) < 2:
        return False
    span = times[-1] - times[0]
    spacing = span / (len(times) - 1)  # the mean: samples come at the scrape interval
    return span >= window - spacing - 1e-9


class ThresholdPolicy(Policy):
    """Steps the size up or down when a metric stays outside its band for `for`."""

    type: Literal["threshold"] = "threshold"
    scale_up_above: float | None = Field(None, description="upper bound; None: never scales up")
    scale_down_below: float | None = Field(
        None, description="lower bound; None: never scales down"
    )
    for_: Duration = Field(0.0, alias="for", description="how long the bound must be crossed")
    step: int = Field(1, ge=1, le=2**31 - 1,
                      description="instances added or removed per decision")

    def window_seconds(self) -> float:
        return self.for_

    def cross_field_errors(self) -> list[tuple[str, str]]:
        up, down = self.scale_up_above, self.scale_down_below
        if up is None and down is None:
            return [("scale_up_above", "set scale_up_above, scale_down_below or both")]
        if up is not None and down is not None and down >= up:
            return [
                (
                    "scale_down_below",
                    f"scale_down_below ({down:g}) must be below scale_up_above ({up:g})",
                )
            ]
        return []

    def recommend(self, signal: Signal, ctx: PolicyContext) -> Recommendation:
        if not signal.samples:
            return Recommendation(None, "no sample")
        samples = signal.samples
        cut = samples[-1].t - self.for_ - 1e-9
        window = samples if samples[0].t >= cut else tuple(s for s in samples if s.t >= cut)
        values = [s.value for s in window]
        shown = f"{values[-1]:.4g}"
        if not covers_window([s.t for s in window], self.for_):
            return Recommendation(ctx.current, f"{shown}: fewer samples than for={self.for_:g}s")
        up = self.scale_up_above
        above = None if up is None else up * (1 + self.tolerance)
        if above is not None and all(v > above for v in values):
            held = f" for {self.for_:g}s" if self.for_ else ""
            return Recommendation(ctx.current + self.step, f"{shown} > {up:g}{held}")
        down = self.scale_down_below
        below = None if down is None else down * (1 - self.tolerance)
        if below is not None and all(v < below for v in values):
            held = f" for {self.for_:g}s" if self.for_ else ""
            return Recommendation(max(ctx.current - self.step, 0), f"{shown} < {down:g}{held}")
        if up is None or down is None:
            # A one-sided threshold has no band to be content in: it only ever pushes.
            bound = f"<= {up:g}" if up is not None else f">= {down:g}"
            return Recommendation(None, f"{shown} {bound}: no opinion")
        return Recommendation(ctx.current, f"{shown} within [{down:g}, {up:g}]: hold")


POLICY = ThresholdPolicy
