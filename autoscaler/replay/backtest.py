"""`backtest`: Prometheus history through `query_range`, replayed through the same engine.

Fetching is the only I/O (chunked so no range exceeds Prometheus' point limit, with a
progress bar on stderr for long ranges); the replay itself is pure: at every evaluation
time the policies see the samples Prometheus held then, and the replica count follows the
engine's own decisions from `initial_replicas` (a what-if: the history's load is taken as
it was, whatever the real cluster did).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from autoscaler.config import Settings, TargetConfig
from autoscaler.model import Sample, Signal, SignalRequest, SignalState
from autoscaler.replay.evaluations import ReplayTarget
from autoscaler.replay.plant import HistoryFeed, window_signal
from autoscaler.sources.history import CHUNK_POINTS, CHUNK_TIMEOUT, grid, spans
from autoscaler.units import parse_duration
from policies.base import HISTORY_STEP

MAX_POINTS_PER_QUERY = 9000  # Prometheus refuses more than 11,000 points per series


class BacktestError(ValueError):
    """Bad input for a backtest (times, range)."""


def parse_time(text: str, now: float) -> float:
    """Epoch seconds from `now`, `-6h` (before now), epoch seconds, or ISO 8601."""
    value = text.strip()
    if value == "now":
        return now
    if value.startswith("-"):
        try:
            return now - parse_duration(value[1:])
        except ValueError as exc:
            raise BacktestError(f"{text!r}: {exc}") from exc
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BacktestError(
            f"{text!r} is not a time: use now, -6h, epoch seconds or ISO 8601") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass
class SeriesHistory:
    """One query's samples over the whole range, and the gaps Prometheus could not fill."""

    samples: list[Sample] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    def extend(self, signal: Signal) -> None:
        if signal.state is not SignalState.OK:
            self.gaps.append(f"{signal.state}: {signal.detail}")
            return
        for s in signal.samples:
            if not self.times or s.t > self.times[-1]:
                self.samples.append(s)
                self.times.append(s.t)


def chunks(start: float, end: float, step: float) -> list[tuple[float, float]]:
    """[start, end] cut into pieces of at most MAX_POINTS_PER_QUERY steps."""
    size = step * MAX_POINTS_PER_QUERY
    out = []
    t = start
    while t < end:
        out.append((t, min(end, t + size)))
        t += size
    return out or [(start, end)]


class Progress:
    """A one-line progress bar on stderr, shown only for ranges of several chunks."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.stream, self.width, self.done = total, stream, width, 0

    def step(self) -> None:
        self.done += 1
        if self.total < 3:
            return
        filled = self.width * self.done // self.total
        self.stream.write(f"\rfetching history [{'#' * filled}{'.' * (self.width - filled)}]"
                          f" {self.done}/{self.total}")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def fetch_history(
    source: Any, queries: dict[str, str], start: float, end: float, step: float,
    timeout: float, progress: Callable[[], None] | None = None,
) -> dict[str, SeriesHistory]:
    """Every query's samples over [start, end], fetched chunk by chunk through the source."""

    history = {key: SeriesHistory() for key in queries}
    for c0, c1 in chunks(start, end, step):
        requests = [SignalRequest(key, query, c1 - c0) for key, query in queries.items()]
        signals = source.read(requests, c1, time.monotonic() + timeout * 3)
        for key in queries:
            history[key].extend(signals[key])
        if progress is not None:
            progress()
    return history


def history_policies(target: TargetConfig) -> dict[str, tuple[str, float]]:
    """The learning policies' history reads: label -> (query, seconds before the range)."""
    return {p.label: (p.query, p.history_seconds()) for p in target.effective_policies()
            if p.history_seconds() > 0}


def history_spans(seconds: float, start: float, end: float) -> list[tuple[float, float]]:
    """The chunks of a history read for a range: `seconds` before `start` up to `end`, on
    the 60 s grid, at most CHUNK_POINTS points each (as the live load)."""
    return spans(grid(start - seconds, HISTORY_STEP), grid(end, HISTORY_STEP), HISTORY_STEP,
                 CHUNK_POINTS)


def fetch_pasts(source: Any, reads: dict[str, tuple[str, float]], start: float, end: float,
                progress: Callable[[], None] | None = None) -> dict[str, SeriesHistory]:
    """Each learning policy's history over [start - its history, end] at the live step,
    chunked; the replay hands it over only up to each evaluation's time."""
    pasts = {label: SeriesHistory() for label in reads}
    for label, (query, seconds) in reads.items():
        for c0, c1 in history_spans(seconds, start, end):
            got = source.fetch_range(query, c0, c1, HISTORY_STEP, CHUNK_TIMEOUT)
            if isinstance(got, str):
                pasts[label].gaps.append(f"history: {got}")
            else:
                pasts[label].extend(Signal.ok(tuple(Sample(t, v) for t, v in got))
                                    if got else Signal.ok(()))
            if progress is not None:
                progress()
    return pasts


@dataclass
class BacktestResult:
    target: str
    timeline: list[dict[str, Any]]
    events: list[dict[str, Any]]
    summary: dict[str, Any]


def replay_history(
    settings: Settings, target: TargetConfig, history: dict[str, SeriesHistory],
    start: float, end: float, initial_replicas: int,
    pasts: dict[str, SeriesHistory] | None = None,
) -> BacktestResult:
    """Evaluate the target at every interval over [start, end] on the recorded samples.

    `pasts` (label -> points at the live history step) feed the learning policies' history
    reads through the same `History` arrays as live, never past the replayed clock."""
    policies = target.effective_policies()
    guards = target.effective_guards()
    replay = ReplayTarget(target.name, policies, guards, target.rules())
    stale_after = 2 * settings.prometheus.scrape_interval
    replicas = initial_replicas
    timeline: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    feeds = {label: HistoryFeed(HISTORY_STEP) for label in (pasts or {})}
    t = start
    while t <= end + 1e-9:
        psignals = {p.label: _signal(history, f"policy/{p.label}", t, p.window_seconds(),
                                     stale_after) for p in policies}
        for label, feed in feeds.items():
            if label in psignals and pasts is not None:
                psignals[label] = feed.signal(psignals[label], pasts[label].samples, t)
        gsignals = {g.label: _signal(history, f"guard/{g.label}", t, 0.0, stale_after)
                    for g in guards}
        decision = replay.evaluate(t, replicas, None, psignals, gsignals)
        if decision.desired != replicas:
            events.append({"t": t, "from": replicas, "to": decision.desired,
                           "winner": decision.winner})
        timeline.append({
            "t": t, "replicas": decision.desired, "recommended": decision.recommended,
            "outcome": str(decision.outcome), "winner": decision.winner,
            "values": {p.name: p.value for p in decision.policies},
            "states": {p.name: str(p.state) for p in decision.policies},
        })
        replicas = decision.desired
        t += settings.evaluation_interval
    gaps = {key: h.gaps for key, h in history.items() if h.gaps}
    gaps.update({f"history/{label}": h.gaps for label, h in (pasts or {}).items() if h.gaps})
    hours = max(end - start, 0.0) / 3600.0
    summary = {
        "target": target.name, "start": start, "end": end, "evaluations": len(timeline),
        "scale_events": len(events),
        "replica_hours": round(sum(r["replicas"] for r in timeline)
                               * settings.evaluation_interval / 3600.0, 3),
        "hours": round(hours, 3),
        "peak_replicas": max((r["replicas"] for r in timeline), default=replicas),
        "clips": dict(sorted(replay.clips.items())),
        "gaps": gaps,
    }
    return BacktestResult(target.name, timeline, events, summary)


def _signal(history: dict[str, SeriesHistory], key: str, now: float, window: float,
            stale_after: float) -> Signal:
    series = history.get(key)
    if series is None:
        return Signal.bad(SignalState.ERROR, "not fetched")
    return window_signal(series.samples, series.times, now, window, stale_after, key)


def history_queries(target: TargetConfig) -> dict[str, str]:
    """The queries to fetch, keyed as `replay_history` reads them."""
    return {
        **{f"policy/{p.label}": p.query for p in target.effective_policies()},
        **{f"guard/{g.label}": g.query for g in target.effective_guards()},
    }


def lookback(target: TargetConfig) -> float:
    """How much history before `start` the first evaluation needs."""
    return max([p.window_seconds() for p in target.effective_policies()] + [0.0])


def plot_backtest(result: BacktestResult, path: Any) -> None:
    """Policy values and the replayed replica count over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({n for row in result.timeline for n in row["values"]})
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(12, 2.5 * (len(names) + 1)),
                             sharex=True, squeeze=False)
    t0 = result.timeline[0]["t"] if result.timeline else 0.0
    xs = [(r["t"] - t0) / 3600.0 for r in result.timeline]
    axes[0][0].step(xs, [r["replicas"] for r in result.timeline], where="post",
                    label="replicas (replayed)")
    axes[0][0].set_ylabel("instances")
    for ev in result.events:
        axes[0][0].axvline((ev["t"] - t0) / 3600.0, color="grey", lw=0.4, alpha=0.5)
    for ax_row, name in zip(axes[1:], names, strict=True):
        ys = [r["values"].get(name) for r in result.timeline]
        ax_row[0].plot(xs, [float("nan") if y is None else y for y in ys], lw=0.8)
        ax_row[0].set_ylabel(name)
    axes[-1][0].set_xlabel("hours from start")
    axes[0][0].set_title(f"backtest of {result.target}")
    for row in axes:
        row[0].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_backtest(settings: Settings, target: TargetConfig, start: float, end: float,
                 initial_replicas: int | None, source: Any,
                 stream: TextIO = sys.stderr) -> BacktestResult:
    """Fetch and replay; the CLI's whole job apart from printing."""
    if end <= start:
        raise BacktestError("--end must be after --start")
    step = settings.prometheus.scrape_interval
    need = lookback(target)
    pieces = chunks(start - need, end, step)
    reads = history_policies(target)
    bar = Progress(len(pieces) + sum(len(history_spans(seconds, start, end))
                                     for _, seconds in reads.values()), stream)
    history = fetch_history(source, history_queries(target), start - need, end, step,
                            settings.prometheus.timeout, bar.step)
    pasts = fetch_pasts(source, reads, start, end, bar.step)
    return replay_history(settings, target, history, start, end,
                          initial_replicas or target.min_replicas, pasts)


def summary_lines(result: BacktestResult) -> Sequence[str]:
    s = result.summary
    lines = [
        f"target {s['target']}: {s['evaluations']} evaluations over {s['hours']} h",
        f"  scale events {s['scale_events']}, replica-hours {s['replica_hours']}, "
        f"peak {s['peak_replicas']}",
    ]
    if s["clips"]:
        lines.append("  clips: " + ", ".join(f"{k} {v}" for k, v in s["clips"].items()))
    for key, gaps in s["gaps"].items():
        lines.append(f"  gaps in {key}: {len(gaps)} chunk(s), e.g. {gaps[0]}")
    return lines
