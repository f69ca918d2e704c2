"""Backtest's pure parts: time parsing, chunking, and the replay on recorded samples."""

from __future__ import annotations

import io

import pytest

from autoscaler.config import load_config_data
from autoscaler.model import Sample, Signal, SignalState
from autoscaler.replay.backtest import (
    MAX_POINTS_PER_QUERY,
    BacktestError,
    Progress,
    SeriesHistory,
    chunks,
    history_queries,
    parse_time,
    replay_history,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW), ("-6h", NOW - 21600), ("-90", NOW - 90), ("1700000000", 1_700_000_000.0),
    ("2026-01-01T00:00:00Z", 1767225600.0), ("2026-01-01T00:00:00", 1767225600.0),
    ("2026-01-01T01:00:00+01:00", 1767225600.0),
])
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-5x", "2026-13-01", ""])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(BacktestError):
        parse_time(text, NOW)


@pytest.mark.parametrize(("start", "end", "step", "count"), [
    (0.0, 100.0, 1.0, 1),
    (0.0, MAX_POINTS_PER_QUERY * 15.0, 15.0, 1),
    (0.0, MAX_POINTS_PER_QUERY * 15.0 + 1, 15.0, 2),
    (0.0, 7 * 86400.0, 15.0, 5),
])
def test_chunks_cover_the_range_without_exceeding_the_point_limit(
        start: float, end: float, step: float, count: int) -> None:
    pieces = chunks(start, end, step)
    assert len(pieces) == count
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(b - a <= step * MAX_POINTS_PER_QUERY for a, b in pieces)
    assert all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))


def test_series_history_keeps_order_and_records_gaps() -> None:
    h = SeriesHistory()
    h.extend(Signal.ok((Sample(1, 1.0), Sample(2, 2.0))))
    h.extend(Signal.ok((Sample(2, 2.0), Sample(3, 3.0))))  # overlapping chunk edge
    h.extend(Signal.bad(SignalState.ERROR, "timeout"))
    assert h.times == [1, 2, 3] and h.gaps == ["error: timeout"]


def test_progress_bar_only_for_long_ranges() -> None:
    short, long = io.StringIO(), io.StringIO()
    for bar, n in ((Progress(2, short), 2), (Progress(4, long), 4)):
        for _ in range(n):
            bar.step()
    assert short.getvalue() == ""
    assert "4/4" in long.getvalue() and long.getvalue().endswith("\n")


def settings():  # type: ignore[no-untyped-def]
    return load_config_data({
        "evaluation_interval": "10s", "prometheus": {"scrape_interval": "5s"},
        "targets": [{"name": "smtp", "backend": "swarm", "service": "s", "min_replicas": 1,
                     "max_replicas": 10, "cooldown": {"up": "0s", "down": "0s"},
                     "policies": [{"type": "capacity", "name": "inflow", "query": "q"}]}],
    }, environ={})


def recorded(values: list[tuple[float, float]]) -> dict[str, SeriesHistory]:
    h = SeriesHistory()
    h.extend(Signal.ok(tuple(Sample(t, v) for t, v in values)))
    return {"policy/inflow": h}


def test_replay_follows_the_recorded_load() -> None:
    s = settings()
    history = recorded([(float(t), 10000.0 if t < 300 else 40000.0)
                        for t in range(0, 600, 5)])
    result = replay_history(s, s.targets[0], history, 100.0, 590.0, 1)
    by_time = {row["t"]: row for row in result.timeline}
    assert by_time[200.0]["replicas"] == 2  # ceil(1 x 1.5)
    assert by_time[400.0]["replicas"] == 6  # ceil(4 x 1.5)
    assert [e["to"] for e in result.events] == [2, 6]
    assert result.summary["evaluations"] == 50


def test_replay_holds_through_a_gap_and_reports_it() -> None:
    s = settings()
    history = recorded([(float(t), 40000.0) for t in range(0, 200, 5)])  # data ends at 195
    history["policy/inflow"].gaps.append("error: timeout")
    result = replay_history(s, s.targets[0], history, 100.0, 400.0, 1)
    after_gap = [r for r in result.timeline if r["t"] > 220]
    assert {r["states"]["inflow"] for r in after_gap} == {"stale"}
    assert {r["replicas"] for r in after_gap} == {6}  # held: no scale-down without data
    assert result.summary["gaps"] == {"policy/inflow": ["error: timeout"]}


def test_history_queries_names_policies_and_guards() -> None:
    s = load_config_data({"targets": [{"name": "smtp", "backend": "swarm", "service": "s",
                                       "max_replicas": 5, "preset": "stalwart-smtp"}]},
                         environ={})
    keys = set(history_queries(s.targets[0]))
    assert {"policy/inflow", "policy/cpu", "policy/inflow_seasonal",
            "guard/active_deliveries"} == keys
