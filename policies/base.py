"""The contract every policy keeps: validated parameters plus one pure `recommend`.

A policy sees only its own signal (samples with their timestamps) and the target's current
and ready counts. It never sees min/max, cooldowns or the clock: `autoscaler.decide` owns those.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.model import PolicyContext, Recommendation, Signal
from autoscaler.units import promql_lookback

# The plant's signals, the one list: what `simulate_as` may name (checked at config load),
# what a bare query may name in simulate, and what the plant's scrape history records.
PlantSignal = Literal["cpu", "memory", "queue", "arrival_rate", "processed_rate", "net_inflow",
                      "latency", "active_deliveries", "arrival_rate_1m"]
HISTORY_STEP = 60.0  # seconds between the points of a `history` read
PLANT_SIGNALS: tuple[PlantSignal, ...] = get_args(PlantSignal)


class Policy(BaseModel):
    """Base of every policy; subclasses add a `type` literal and their own parameters."""

    # Strict numbers and booleans (`"5"` or `on` for a number is an error, as the config
    # schema says) and no NaN or ±Inf: a subclass inherits both.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True,
                              allow_inf_nan=False)

    type: str
    name: str | None = Field(None, description="label in the decision record; default: type")
    query: str = Field(..., min_length=1, description="PromQL returning one value")
    simulate_as: PlantSignal | None = Field(
        None, description=f"plant signal read in `simulate`: one of {', '.join(PLANT_SIGNALS)}"
    )
    tolerance: float = Field(0.0, ge=0, description="relative dead band around the current size")

    @property
    def label(self) -> str:
        return self.name or self.type

    def window_seconds(self) -> float:
        """How much history the policy needs; 0 means the latest sample is enough."""
        return 0.0

    def history_seconds(self) -> float:
        """How far back a learning policy reads its query's past (a `history` read: days at
        a coarse step, handed over as `Signal.history`); 0: it reads none."""
        return 0.0

    def settle_seconds(self) -> float:
        """How long after a gap in its data an answer can still be skewed by it: the
        policy's own window plus the query's longest range (a `rate()` whose window spans
        a scrape gap reads low while Prometheus calls it fine)."""
        return self.window_seconds() + promql_lookback(self.query)

    def recommend(self, signal: Signal, ctx: PolicyContext) -> Recommendation:
        raise NotImplementedError

    def cross_field_errors(self) -> list[tuple[str, str]]:
        """(key, message) pairs for rules that involve several parameters."""
        return []


def ceil_exact(x: float) -> int:
    """ceil() that ignores binary noise: 2.0000000000000004 is 2, not 3."""
    return math.ceil(round(x, 9))


def within_tolerance(recommended: int, current: int, tolerance: float) -> bool:
    """True when a proposal is close enough to the current size to leave it alone."""
    if current <= 0 or tolerance <= 0:
        return False
    return abs(recommended / current - 1.0) <= tolerance


def samples_in_window(signal: Signal, window: float) -> tuple[float, ...]:
    """Values of the samples no older than `window` before the newest one."""
    if not signal.samples:
        return ()
    newest = signal.samples[-1].t
    return tuple(s.value for s in signal.samples if s.t >= newest - window - 1e-9)
