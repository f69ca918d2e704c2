"""`queue_trend`: add instances while the mail queue grows, enough to stop it and drain it.

Growth is the least-squares slope of the queue depth over `window`. Stalwart's community
edition exports no depth gauge; with `signal: growth` the query returns the net inflow
(inflow - outflow, messages/hour) instead, and the backlog is estimated by integrating it;
a newest net inflow below -tolerance x per_instance is a queue shrinking now. A shrinking
queue gives no opinion: it neither blocks nor holds a scale-down. A flat one
with a backlog that would take more than `tolerance` of an instance to drain within
`drain_within` asks for that much more (a standing 50,000 messages is not "fine" because it
stopped growing); a flat, small queue gives no opinion.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import Field

from autoscaler.model import PolicyContext, Recommendation, Sample, Signal
from autoscaler.units import Duration
from policies.base import Policy, ceil_exact


def slope_per_hour(samples: tuple[Sample, ...]) -> float | None:
    """Least-squares slope of the values, per hour; None with fewer than two distinct times."""
    n = len(samples)
    if n < 2:
        return None
    ts = [s.t for s in samples]
    vs = [s.value for s in samples]
    mean_t = sum(ts) / n
    mean_v = sum(vs) / n
    var_t = sum([(t - mean_t) ** 2 for t in ts])
    if var_t <= 0:
        return None
    cov = sum([(t - mean_t) * (v - mean_v) for t, v in zip(ts, vs, strict=True)])
    return cov / var_t * 3600.0


def backlog_from_growth(samples: tuple[Sample, ...]) -> float:
    """Messages accumulated over the samples' span from net inflow rates (messages/hour)."""
    total = 0.0
    for a, b in pairwise(samples):
        total += (a.value + b.value) / 2.0 * (b.t - a.t) / 3600.0
    return max(total, 0.0)


class QueueTrendPolicy(Policy):
    """Scales up on a growing queue: current + ceil((growth + depth/drain) / per_instance)."""

    type: Literal["queue_trend"] = "queue_trend"
    window: Duration = Field(600.0, gt=0, description="history the slope is fitted over")
    per_instance: float = Field(10000.0, gt=0, description="emails/hour one instance handles")
    drain_within: Duration = Field(900.0, gt=0, description="time to drain the backlog in")
    signal: Literal["depth", "growth"] = Field(
        "depth", description="depth: the query is the queue depth; growth: net inflow per hour"
    )
    tolerance: float = Field(
        0.1, ge=0, description="growth below tolerance x per_instance counts as flat"
    )

    def window_seconds(self) -> float:
        return self.window

    def recommend(self, signal: Signal, ctx: PolicyContext) -> Recommendation:
        if not signal.samples:
            return Recommendation(None, "no sample")
        samples = signal.samples
        floor = self.tolerance * self.per_instance  # growth within +-floor counts as flat
        cut = samples[-1].t - self.window - 1e-9
        window = samples if samples[0].t >= cut else tuple(s for s in samples if s.t >= cut)
        if self.signal == "depth":
            growth = slope_per_hour(window)
            if growth is None:
                return Recommendation(None, "need two samples for a trend")
            depth = max(window[-1].value, 0.0)
        else:
            newest = window[-1].value
            if newest < -floor:
                # Draining now: the window's mean still remembers the growth before, and
                # added instances to a queue already shrinking (the contract: no opinion).
                return Recommendation(
                    None, f"queue shrinking now (net {newest:+.0f}/h at the newest sample, "
                          f"beyond -{floor:g}/h): no opinion")
            growth = sum(s.value for s in window) / len(window)
            depth = backlog_from_growth(window)
        drain = depth / (self.drain_within / 3600.0)  # msgs/hour that empty it in time
        if growth > floor:
            extra = ceil_exact((growth + drain) / self.per_instance)
            return Recommendation(
                ctx.current + extra,
                f"queue {depth:.0f} growing {growth:+.0f}/h: +{extra} to drain in "
                f"{self.drain_within:g}s",
            )
        if growth >= -floor and drain > floor:
            extra = ceil_exact((growth + drain) / self.per_instance)
            return Recommendation(
                ctx.current + extra,
                f"queue {depth:.0f} standing (growth {growth:+.0f}/h): +{extra} to drain in "
                f"{self.drain_within:g}s",
            )
        # Shrinking, or flat and small enough to drain in time (the same words as before a
        # standing backlog counted: the pinned replays keep their decision records).
        return Recommendation(
            None, f"queue {depth:.0f}, growth {growth:+.0f}/h: not growing (<= {floor:g}/h)"
        )

POLICY = QueueTrendPolicy
