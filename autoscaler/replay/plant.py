"""The simulated backend: a plant of mail instances with a start-up delay and a queue.

Pure and deterministic. The replay engine drives it with a demand trace and scrapes it the
way Prometheus would (every `scrape_interval`, counters turned into rates over a window), so
the policies see the lag and smoothing they see live.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from autoscaler.model import History, Sample, Signal, SignalState
from policies.base import PLANT_SIGNALS

IDLE_CPU = 5.0  # % of a core an idle Stalwart node burns
BUSY_CPU = 90.0  # extra % at full utilisation
BASE_MEMORY = 30.0
BUSY_MEMORY = 45.0
DELIVERY_SECONDS = 3.0  # time an outbound delivery holds a connection
BASE_LATENCY = 0.2  # seconds a message takes with an empty queue


@dataclass(frozen=True, slots=True)
class PlantParams:
    capacity_per_instance: float = 10000.0  # emails/hour
    startup_delay: float = 60.0
    scrape_interval: float = 15.0
    rate_window: float = 300.0  # like rate(x[5m])
    fast_rate_window: float = 60.0  # like rate(x[1m]): `arrival_rate_1m`
    cpu_window: float = 60.0  # like rate(container_cpu_usage_seconds_total[1m])


@dataclass
class Plant:
    """Instances (their start times), the queue, and cumulative counters."""

    params: PlantParams
    starts: list[float] = field(default_factory=list)
    queue: float = 0.0
    arrived: float = 0.0
    processed: float = 0.0
    cpu_seconds: float = 0.0
    serving_seconds: float = 0.0
    last_util: float = 0.0

    def __post_init__(self) -> None:
        self.starts.sort()  # kept sorted, so `serving` is one bisection

    @classmethod
    def running(cls, params: PlantParams, replicas: int, t: float) -> Plant:
        """A plant whose first instances already serve at `t`."""
        return cls(params, [t - params.startup_delay] * replicas)

    @property
    def replicas(self) -> int:
        return len(self.starts)

    def serving(self, t: float) -> int:
        ready_before = t - self.params.startup_delay
        return bisect.bisect_right(self.starts, ready_before + 1e-9)

    def set_replicas(self, n: int, t: float) -> None:
        """Add instances that start now, or remove the newest first (starting ones go first)."""
        if n > len(self.starts):
            self.starts.extend([t] * (n - len(self.starts)))
            self.starts.sort()
        else:
            del self.starts[n:]

    def step(self, t: float, dt: float, demand: float) -> tuple[float, int]:
        """Advance by `dt` seconds at `demand` emails/hour; returns (capacity/h, serving)."""
        serving = self.serving(t)
        capacity = serving * self.params.capacity_per_instance
        arrivals = demand * dt / 3600.0
        self.arrived += arrivals
        self.queue += arrivals
        done = min(self.queue, capacity * dt / 3600.0)
        self.queue -= done
        self.processed += done
        util = done / (capacity * dt / 3600.0) if capacity > 0 else 0.0
        self.last_util = util
        self.cpu_seconds += (IDLE_CPU + BUSY_CPU * util) / 100.0 * serving * dt
        self.serving_seconds += serving * dt
        return capacity, serving


class ScrapeHistory:
    """What Prometheus would hold: counters and gauges at each scrape, and derived series."""

    SERIES: tuple[str, ...] = PLANT_SIGNALS

    def __init__(self, params: PlantParams, wanted: Iterable[str] | None = None) -> None:
        """`wanted`: the series to keep (default all); skipping the rest keeps replay fast."""
        self.params = params
        self.wanted = frozenset(self.SERIES if wanted is None else wanted) | {"cpu"}
        self.times: list[float] = []
        self._counters: dict[str, list[float]] = {
            "arrived": [], "processed": [], "cpu_seconds": [], "serving_seconds": [],
        }
        self.series: dict[str, list[Sample]] = {name: [] for name in self.SERIES}
        self._series_times: dict[str, list[float]] = {name: [] for name in self.series}
        # Which rates the wanted series need; fixed here rather than worked out every scrape.
        self._need_arrival = bool(self.wanted & {"arrival_rate", "net_inflow"})
        self._need_processed = bool(
            self.wanted & {"processed_rate", "net_inflow", "active_deliveries"}
        )

    def _window_start(self, window: float) -> int | None:
        """The scrape a rate over `window` starts from (at least the one before the newest);
        None before the second scrape. One bisection serves every counter of that window."""
        times = self.times
        if len(times) < 2:
            return None
        i = bisect.bisect_left(times, times[-1] - window - 1e-9)
        return min(i, len(times) - 2)

    def _rate(self, counter: str, start: int | None) -> float | None:
        """Per-second increase of `counter` from scrape `start` to the newest."""
        if start is None:
            return None
        values, times = self._counters[counter], self.times
        span = times[-1] - times[start]
        return (values[-1] - values[start]) / span if span > 0 else None

    def _add(self, name: str, t: float, value: float | None) -> None:
        if value is not None and name in self.wanted:
            self.series[name].append(Sample(t, value))
            self._series_times[name].append(t)

    def scrape(self, plant: Plant, t: float) -> None:
        self.times.append(t)
        for name, values in self._counters.items():
            values.append(getattr(plant, name))
        p, want = self.params, self.wanted
        serving = plant.serving(t)
        capacity = serving * p.capacity_per_instance
        cpu_start = self._window_start(p.cpu_window)
        busy = self._rate("cpu_seconds", cpu_start)
        alive = self._rate("serving_seconds", cpu_start)
        if busy is not None and alive:
            self._add("cpu", t, 100.0 * busy / alive)
        rate_start = self._window_start(p.rate_window)
        if self._need_arrival:
            arrival = self._rate("arrived", rate_start)
            self._add("arrival_rate", t, None if arrival is None else arrival * 3600.0)
        if "arrival_rate_1m" in want:
            fast = self._rate("arrived", self._window_start(p.fast_rate_window))
            self._add("arrival_rate_1m", t, None if fast is None else fast * 3600.0)
        if self._need_processed:
            processed = self._rate("processed", rate_start)
            if "processed_rate" in want and processed is not None:
                self._add("processed_rate", t, processed * 3600.0)
            if "net_inflow" in want and arrival is not None and processed is not None:
                self._add("net_inflow", t, (arrival - processed) * 3600.0)
        if serving:
            if "memory" in want:
                self._add("memory", t, BASE_MEMORY + BUSY_MEMORY * plant.last_util)
            if "active_deliveries" in want:
                per_node = (processed or 0.0) / 3600.0 * DELIVERY_SECONDS / serving
                self._add("active_deliveries", t, per_node)
        if "queue" in want:
            self._add("queue", t, plant.queue)
        if "latency" in want:
            wait = plant.queue / (capacity / 3600.0) if capacity else 3600.0
            self._add("latency", t, BASE_LATENCY + wait)

    def signal(self, name: str, now: float, window: float) -> Signal:
        """The samples of `name` over (now - window, now], at least the newest; else empty."""
        samples = self.series.get(name)
        if samples is None:
            return Signal.bad(SignalState.ERROR, f"no plant signal {name!r}")
        return window_signal(samples, self._series_times[name], now, window,
                             2 * self.params.scrape_interval, name)


def window_signal(samples: list[Sample], times: list[float], now: float, window: float,
                  stale_after: float, name: str) -> Signal:
    """A signal as Prometheus would give it at `now`: the samples over (now - window, now]
    (at least the newest), `stale` when the newest is older than `stale_after`, `empty`
    before the first. Shared by `simulate` and `backtest`."""
    end = len(times)
    if end and times[-1] > now + 1e-9:  # replay reads at the newest scrape: rarely searched
        end = bisect.bisect_right(times, now + 1e-9)
    if end == 0:
        return Signal.bad(SignalState.EMPTY, f"no {name} sample yet")
    if now - times[end - 1] > stale_after + 1e-9:
        return Signal.bad(SignalState.STALE, f"newest {name} sample is too old")
    start = bisect.bisect_right(times, now - window + 1e-9) if window > 0 else end - 1
    start = min(start, end - 1)
    return Signal(SignalState.OK, tuple(samples[start:end]))


class HistoryFeed:
    """A `history` read as the live source hands it over: the query's past at `step`, as
    arrays that grow by only the new points at each evaluation, never past `now` (replay
    shows a policy no more of the trace than the simulated clock has reached)."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.t: array[float] = array("d")
        self.v: array[float] = array("d")
        self._read = 0  # scraped samples looked at

    def signal(self, live: Signal, scraped: list[Sample], now: float) -> Signal:
        """`live` (the policy's usual read) with the history up to `now` attached."""
        t, v, step = self.t, self.v, self.step
        i = self._read
        while i < len(scraped) and scraped[i].t <= now + 1e-9:
            sample = scraped[i]
            if not t or sample.t >= t[-1] + step - 1e-9:
                t.append(sample.t)
                v.append(sample.value)
            i += 1
        self._read = i
        if live.state is not SignalState.OK:
            return live
        return Signal(live.state, live.samples, live.detail, History(t, v))
