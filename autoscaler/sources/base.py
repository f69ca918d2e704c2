"""What the engine needs of a signal source: one batch read per tick, a reachability probe.

A Protocol the engine calls through, so every method it uses is listed here; a source
subclasses it explicitly to inherit the defaults of the optional ones.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol

from autoscaler.model import Signal, SignalRequest

OnSignals = Callable[[dict[str, Signal]], None]


class SignalSource(Protocol):
    """Reads every target's signals for one tick."""

    def read(self, requests: Sequence[SignalRequest], now: float, deadline: float,
             on_signals: OnSignals | None = None) -> dict[str, Signal]:
        """Every request's signal by key, returned by `deadline` (monotonic); never raises.

        A `history` request (`SignalKind.HISTORY`) is answered `ok` with `Signal.history`
        set when the source has the query's past, else None and why ("history loading"): a
        history never makes a signal other than ok, and its load never waits for a tick.

        `on_signals`, when given, receives signals as they arrive (each target then goes on
        as soon as its own are in); the return value still holds them all.
        """
        ...

    def retain_history(self, keep: Collection[tuple[str, float]]) -> None:
        """After a config reload: keep the cached `history` reads of these (query, step)
        pairs and drop the others (a source that caches none has nothing to do)."""
        return None

    def adopt_history(self, previous: SignalSource) -> int:
        """After a reload that built this source to replace `previous`: take over its loaded
        histories when both read the same data (a changed timeout or credential leaves the
        series as they were; another URL or tenant does not); how many were taken."""
        return 0

    def check_reachable(self, deadline: float) -> str | None:
        """None when the source answers, else why not (shown in /readyz)."""
        return None

    def close(self) -> None:
        """Release connections and workers."""
        return None


if TYPE_CHECKING:  # the static check that each source satisfies the Protocol (mypy)
    from autoscaler.sources.prometheus import PrometheusSource
    from autoscaler.sources.stalwart_api import RoutedSource, StalwartQueueSource

    def _conforms(prometheus: PrometheusSource, queue_api: StalwartQueueSource,
                  routed: RoutedSource) -> tuple[SignalSource, SignalSource, SignalSource]:
        return prometheus, queue_api, routed
