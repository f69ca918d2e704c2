"""Fakes of the engine's capabilities for tests about something else."""

from __future__ import annotations

from collections.abc import Sequence

from autoscaler.model import Sample, Signal, SignalRequest
from autoscaler.sources.base import OnSignals, SignalSource

__all__ = ["ConstantSource"]


class ConstantSource(SignalSource):
    """Every query reads `value`, now (always reachable)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def read(self, requests: Sequence[SignalRequest], now: float, deadline: float,
             on_signals: OnSignals | None = None) -> dict[str, Signal]:
        return {r.key: Signal.ok((Sample(now, self.value),)) for r in requests}
