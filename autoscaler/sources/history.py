"""The `history` reads of learning policies (`seasonal`): a cache owned by the source.

A policy with `history_seconds() > 0` asks, beside its live read, for its query's past: days
at a 60 s step. Per (query, step) the source keeps that past as two `array('d')` (times,
values: 16 bytes a point, about 350 kB for 15 days), and:

- loads it ONCE, in chunks of at most `CHUNK_POINTS` points (Prometheus refuses a range of
  more than 11,000), oldest first, in a background thread of its own with its own time budget
  (`LOAD_BUDGET`, `CHUNK_TIMEOUT` per query): a long load never delays a tick and never uses
  its deadline. Until it is in, the history read answers `ok` with no history and "history
  loading" (the policy says no opinion, the target's other policies act);
- then extends it with at most ONE small range query per tick: only the points on the step's
  grid after the last one held, up to the evaluation time (which already carries the learned
  query offset of a backend that shows samples late), never a point twice;
- on a failure (transport, HTTP, timeout, garbage, more than one series) the load is dropped
  and retried later with backoff (`RETRY_FIRST` doubling up to `RETRY_MAX`); the read says
  why, still `ok`: a history that cannot be read never blocks a scale-down. A failed
  extension leaves the history as it was (the next tick asks again). A history cut short by
  retention is handed over as it is: the policy judges whether it is enough;
- keeps at most `history + TRIM_SLACK` of points: past that the oldest are dropped (new
  arrays: the policy notices and learns afresh from what is left).

Arrays only ever grow at the end, values before times: a policy reading them (up to its own
`now`) while an extension lands never sees a time without its value.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from array import array
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from autoscaler.model import History, Signal, SignalRequest, SignalState

log = logging.getLogger(__name__)

CHUNK_POINTS = 1440  # points per query of a first load: a day at 60 s (limit: 11,000)
CHUNK_TIMEOUT = 30.0  # seconds per query of a load (its own, not the tick's)
LOAD_BUDGET = 300.0  # seconds a whole load may take before it is dropped and retried
RETRY_FIRST = 30.0  # seconds before the first retry of a failed load; doubles each time
RETRY_MAX = 1800.0
TRIM_SLACK = 0.25  # fraction of the history kept beyond it before the oldest are dropped
CLOSE_WAIT = 2.0  # seconds `close` waits for a load in flight (its connection is closing)

Key = tuple[str, float]  # (query, step)
Points = list[tuple[float, float]]  # finite (t, value), in time order
# (query, (start, end, step), monotonic deadline, timeout) -> its points, or a Failure
RangeFetch = Callable[[str, tuple[float, float, float], float, float], "Points | Failure"]


@dataclass(frozen=True)
class Failure:
    """Why a range query gave no usable answer."""

    detail: str


def grid(t: float, step: float) -> float:
    """The last point of the step's grid at or before `t`."""
    return math.floor(t / step + 1e-9) * step


def spans(start: float, end: float, step: float, points: int) -> list[tuple[float, float]]:
    """[start, end] on the grid, in pieces of at most `points` points (both ends inclusive)."""
    out = []
    t = start
    while t <= end + 1e-9:
        last = min(end, t + (points - 1) * step)
        out.append((t, last))
        t = last + step
    return out


@dataclass
class _Entry:
    """One (query, step)'s history and how far its load has come."""

    query: str
    step: float
    seconds: float  # how far back it reaches (the longest asked)
    history: History | None = None
    loading: Future[None] | None = None
    extending: bool = False
    detail: str = "history loading"
    failures: int = 0
    retry_at: float = 0.0  # monotonic: no load before this
    load_seconds: float | None = None  # how long the last completed load took
    load_queries: int = 0
    cut_short: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class HistoryCache:
    """Every history read of one source: loads in a thread of their own, small extensions in
    the tick. Thread-safe."""

    def __init__(self, fetch: RangeFetch, *, endpoint: str = "Prometheus") -> None:
        self._fetch = fetch
        self._endpoint = endpoint
        self._clock = time.monotonic
        self._entries: dict[Key, _Entry] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self.range_queries = 0  # every range query sent (loads and extensions): a figure
        self.load_budget = LOAD_BUDGET

    # ------------------------------------------------------------------ the tick's side

    def plan(self, requests_: Sequence[SignalRequest], step: float,
             now: float) -> dict[Key, _Entry]:
        """The entries these requests read; starts the loads that are due (never waits)."""
        furthest: dict[Key, float] = {}
        for r in requests_:
            key = (r.query, step)
            furthest[key] = max(furthest.get(key, 0.0), r.window)
        wanted: dict[Key, _Entry] = {}
        for key, seconds in furthest.items():
            with self._lock:
                entry = self._entries.get(key)
                if entry is None or (seconds > entry.seconds + step and entry.loading is None):
                    # new, or now asked further back than loaded: (re)load that far
                    entry = _Entry(key[0], step, max(seconds, entry.seconds if entry else 0))
                    self._entries[key] = entry
            wanted[key] = entry
        for entry in wanted.values():
            self._maybe_load(entry, now)
        return wanted

    def extension(self, entry: _Entry, now: float) -> tuple[float, float] | None:
        """The grid points to ask this tick (at most one small range), None when none are
        due or the history is not loaded; marks the entry as being extended."""
        with entry.lock:
            if entry.history is None or entry.loading is not None or entry.extending:
                return None
            end = grid(now, entry.step)
            t = entry.history.t
            start = t[-1] + entry.step if t else grid(now - entry.seconds, entry.step)
            if start > end + 1e-9:
                return None
            # After a long outage: only the newest chunk's worth (a gap is fine for a policy)
            start = max(start, end - (CHUNK_POINTS - 1) * entry.step)
            entry.extending = True
            return start, end

    def extend(self, entry: _Entry, span: tuple[float, float], deadline: float,
               timeout: float) -> None:
        """Ask the span and append its new points; a failure leaves the history as it was."""
        try:
            answer = self._ask(entry, span, deadline, timeout)
            with entry.lock:
                if isinstance(answer, Failure):
                    log.debug("history of %s not extended: %s", entry.query, answer.detail)
                    return
                if entry.history is None:
                    return
                _append(entry.history, answer, span[1])
                self._trim(entry)
        finally:
            entry.extending = False

    def signal(self, entry: _Entry) -> Signal:
        """The history read's answer: always `ok` (a history problem never blocks a
        scale-down), the History when loaded, else None and why."""
        with entry.lock:
            if entry.history is None:
                return Signal(SignalState.OK, (), entry.detail)
            return Signal(SignalState.OK, (), entry.detail, entry.history)

    # ------------------------------------------------------------------ housekeeping

    def retain(self, keep: Collection[Key]) -> None:
        """Keep only the histories of these (query, step) pairs (a config reload)."""
        wanted = set(keep)
        with self._lock:
            for key in [k for k in self._entries if k not in wanted]:
                del self._entries[key]

    def adopt(self, other: HistoryCache) -> int:
        """Take over `other`'s loaded histories (a reload's new source, same data): they go
        on being extended here; a load still in flight there is left to it (it loads here
        anew). How many were taken."""
        with other._lock:
            entries = dict(other._entries)
        taken = {}
        for key, entry in entries.items():
            with entry.lock:
                if entry.history is not None and entry.loading is None:
                    taken[key] = entry
        with self._lock:
            for key, entry in taken.items():
                self._entries.setdefault(key, entry)
        return len(taken)

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._entries)

    def entry(self, query: str, step: float) -> _Entry | None:
        with self._lock:
            return self._entries.get((query, step))

    def close(self) -> None:
        """No new load; a queued one is dropped, the one in flight stops at its next chunk."""
        self._closed.set()
        self._loader.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float | None = None) -> bool:
        """Wait (bounded, CLOSE_WAIT by default: a stop must not hang on a slow Prometheus)
        for the load in flight to end after `close`, so none runs on past its source; True
        when none does."""
        with self._lock:
            entries = list(self._entries.values())
        loads = [f for e in entries if (f := e.loading) is not None]
        return not wait(loads, timeout=CLOSE_WAIT if timeout is None else timeout).not_done

    # ------------------------------------------------------------------ loads

    def _maybe_load(self, entry: _Entry, now: float) -> None:
        with entry.lock:
            if entry.history is not None or entry.loading is not None:
                return
            if self._clock() < entry.retry_at or self._closed.is_set():
                return
            try:
                entry.loading = self._loader.submit(self._load, entry, now)
            except RuntimeError:  # closing
                return
            if entry.failures == 0:
                entry.detail = "history loading"

    def _load(self, entry: _Entry, now: float) -> None:
        """The whole history of one entry, chunk by chunk, within LOAD_BUDGET."""
        started = self._clock()
        deadline = started + self.load_budget
        step = entry.step
        end = grid(now, step)
        start = end - grid(entry.seconds, step)
        t: array[float] = array("d")
        v: array[float] = array("d")
        pieces = spans(start, end, step, CHUNK_POINTS)
        failure: str | None = None
        queries = 0
        try:
            for i, (c0, c1) in enumerate(pieces):
                if self._closed.is_set():
                    failure = "the source is closing"
                    break
                with entry.lock:
                    entry.detail = f"history loading ({i}/{len(pieces)} chunks)"
                queries += 1
                answer = self._ask(entry, (c0, c1), deadline, CHUNK_TIMEOUT)
                if isinstance(answer, Failure):
                    failure = answer.detail
                    break
                for pt, pv in answer:
                    if c0 - 1e-9 <= pt <= c1 + 1e-9 and (not t or pt > t[-1] + 1e-9):
                        v.append(pv)
                        t.append(pt)
        except Exception as exc:  # a load must never take the loader thread down
            failure = f"history load failed ({type(exc).__name__})"
            log.exception("history load of %s failed", entry.query)
        took = self._clock() - started
        with entry.lock:
            entry.loading = None
            entry.load_queries = queries
            if failure is not None:
                entry.failures += 1
                pause = min(RETRY_MAX, RETRY_FIRST * 2 ** (entry.failures - 1))
                entry.retry_at = self._clock() + pause
                entry.detail = f"history unavailable ({failure}); retry in {pause:g}s"
                # closing: the failure is the stop's own doing, not news for the operator
                (log.debug if self._closed.is_set() else log.warning)(
                    "history of %s from %s not loaded: %s; retry in %gs",
                    entry.query, self._endpoint, failure, pause)
                return
            entry.failures = 0
            entry.load_seconds = took
            entry.cut_short = not t or t[0] > start + 60 * step
            entry.history = History(t, v)
            entry.detail = ("" if not entry.cut_short else
                            f"history holds {len(t) * step / 86400:.1f} of "
                            f"{entry.seconds / 86400:g} days")
        log.info("history of %s loaded from %s: %d points in %d queries, %.2fs",
                 entry.query, self._endpoint, len(t), queries, took)

    def _ask(self, entry: _Entry, span: tuple[float, float], deadline: float,
             timeout: float) -> list[tuple[float, float]] | Failure:
        self.range_queries += 1
        return self._fetch(entry.query, (span[0], span[1], entry.step), deadline, timeout)

    def _trim(self, entry: _Entry) -> None:
        """Past `seconds` + TRIM_SLACK of points, keep only the last `seconds` (new arrays)."""
        history = entry.history
        if history is None:
            return
        keep = int(entry.seconds / entry.step)
        if len(history.t) <= keep * (1 + TRIM_SLACK):
            return
        entry.history = History(history.t[-keep:], history.v[-keep:])


def _append(history: History, points: list[tuple[float, float]], end: float) -> None:
    """New points only (after the last one held, not after `end`), values before times."""
    t, v = history.t, history.v
    last = t[-1] if t else -math.inf
    new: list[tuple[float, float]] = []
    for pt, pv in points:
        if last + 1e-9 < pt <= end + 1e-9:
            new.append((pt, pv))
            last = pt
    v.extend(pv for _, pv in new)
    t.extend(pt for pt, _ in new)
