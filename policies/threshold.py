"""`threshold`: the guide's rules (CPU above 70 %, memory above 80 %, latency above the SLA).

Every sample over `for` above the upper bound asks for `step` more instances; every sample
below the lower bound asks for `step` fewer; anything else votes to keep the current size.

That is what a two-sided threshold does ALONE. Beside policies that size the target (capacity,
forecast...), its "hold" and "one fewer" would be floors under max-wins: after a burst the
cluster would come down one instance per cooldown however idle it is. So beside them it votes
the fewest instances its own metric can take instead (`spread_need`): the load, assumed to
spread evenly, over a point safely inside the band, upper x (1 - margin), never more than
now. It still blocks every count that would push its metric over the bound, and no more.
`spreads: false` keeps the old floor for a metric that does not spread over instances (a
latency SLA). Policy-by-policy `alone` votes are combined in `autoscaler.decide`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from autoscaler.model import PolicyContext, Recommendation, Signal
from autoscaler.units import Duration
from policies.base import Policy, ceil_exact


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

    spreads: bool = Field(
        True, description="the metric is a per-instance average that spreads over instances "
                          "(CPU, memory): beside other policies the band only blocks counts "
                          "that would push it over the upper bound; false: it holds as alone")
    margin: float = Field(
        0.1, ge=0, lt=1, description="beside other policies, size for upper x (1 - margin): "
                                     "inside the band, so the next sample does not cross it")

    def window_seconds(self) -> float:
        return self.for_

    def spread_need(self, values: Sequence[float], ctx: PolicyContext) -> tuple[int, str] | None:
        """The fewest instances that keep the highest recent value under upper x (1 - margin)
        with the load spread evenly (the serving instances' load over the new count), never
        more than current; None without an upper bound or for a metric that does not spread."""
        up = self.scale_up_above
        if up is None or not self.spreads:
            return None
        serving = min(ctx.ready, ctx.current) if ctx.ready else ctx.current
        peak = max(*values, 0.0)
        aim = up * (1 - self.margin)
        need = min(ctx.current, ceil_exact(serving * peak / aim))
        return need, f"ceil({serving} x {peak:.4g} / {aim:.4g}) = {need}"

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
            return self._content(ctx, values, f"{shown}: fewer samples than for={self.for_:g}s",
                                 ctx.current)
        up = self.scale_up_above
        above = None if up is None else up * (1 + self.tolerance)
        if above is not None and all(v > above for v in values):
            held = f" for {self.for_:g}s" if self.for_ else ""
            return Recommendation(ctx.current + self.step, f"{shown} > {up:g}{held}")
        down = self.scale_down_below
        below = None if down is None else down * (1 - self.tolerance)
        if below is not None and all(v < below for v in values):
            held = f" for {self.for_:g}s" if self.for_ else ""
            return self._content(ctx, values, f"{shown} < {down:g}{held}",
                                 max(ctx.current - self.step, 0))
        if up is None or down is None:
            # A one-sided threshold has no band to be content in: it only ever pushes.
            bound = f"<= {up:g}" if up is not None else f">= {down:g}"
            return Recommendation(None, f"{shown} {bound}: no opinion")
        return self._content(ctx, values, f"{shown} within [{down:g}, {up:g}]: hold",
                             ctx.current)

    def _content(self, ctx: PolicyContext, values: Sequence[float], why: str,
                 alone: int) -> Recommendation:
        """Not above the band: `alone` is the vote while no other policy sizes the target;
        beside others, the fewest its metric can take (no opinion for a metric with no
        upper bound: it only ever asks for fewer)."""
        if not self.spreads:
            return Recommendation(alone, why)
        need = self.spread_need(values, ctx)
        if need is None:
            return Recommendation(None, f"{why} alone; beside other policies: no opinion",
                                  alone=alone)
        return Recommendation(need[0], f"{why} alone; beside other policies: {need[1]}",
                              alone=alone)


POLICY = ThresholdPolicy
