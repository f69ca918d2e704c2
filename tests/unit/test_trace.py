"""Trace loading: every bad file names its line; the bundled traces are what their names say."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from autoscaler.trace import (
    Trace,
    TraceError,
    bundled_traces,
    demand_at,
    load_trace,
    resolve_trace,
)


def write(tmp_path: Path, text: str | bytes, name: str = "x.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# (content, expected line or None, fragments the message must contain)
ERROR_CASES = [
    pytest.param("", None, ["empty"], id="empty-file"),
    pytest.param("# only a comment\n\n", None, ["empty"], id="only-comments"),
    pytest.param("time,demand\n0,1\n60,2\n", 1, ["'t'", "column"], id="missing-t-column"),
    pytest.param("# c\nt,load\n0,1\n60,2\n", 2, ["'demand'", "column"], id="missing-demand"),
    pytest.param("a,b\n0,1\n", 1, ["'t' and 'demand'"], id="missing-both-columns"),
    pytest.param("t,demand\n0,1\nabc,2\n", 3, ["t 'abc' is not a number"], id="t-not-numeric"),
    pytest.param(
        "t,demand\n0,1\n60,lots\n", 3, ["demand 'lots'", "not a number"], id="demand-text"
    ),
    pytest.param("t,demand\n0,1\n60,\n", 3, ["demand ''", "not a number"], id="demand-empty"),
    pytest.param("t,demand\n0,nan\n60,1\n", 2, ["demand 'nan'", "finite"], id="demand-nan"),
    pytest.param("t,demand\n0,1\ninf,1\n", 3, ["t 'inf'", "finite"], id="t-inf"),
    pytest.param("t,demand\n0,1\n60,-inf\n", 3, ["finite"], id="demand-minus-inf"),
    pytest.param("t,demand\n0,1\n\n# x\n60,-5\n", 5, ["demand '-5' is negative"], id="neg-demand"),
    pytest.param("t,demand\n-1,1\n60,1\n", 2, ["t '-1' is negative"], id="negative-t"),
    pytest.param(
        "t,demand\n0,1\n60,1\n60,2\n", 4, ["t 60 is not after t 60 on line 3"], id="t-repeated"
    ),
    pytest.param(
        "t,demand\n0,1\n120,1\n\n60,2\n", 5, ["t 60 is not after t 120 on line 3"], id="t-back"
    ),
    pytest.param(
        "t,demand\n0,1\n1234567.5,1\n1234567.25,1\n",
        4,
        ["t 1234567.25 is not after t 1234567.5 on line 3"],
        id="t-back-large-values-verbatim",
    ),
    pytest.param("t,demand\n0,1\n60\n", 3, ["1 field", "line 1"], id="too-few-fields"),
    pytest.param("x,t,y,demand\n0,0,0,1\n0,60,0\n", 3, ["3 field"], id="too-few-extra-cols"),
    pytest.param("t,demand\n", None, ["0 data row", "at least 2"], id="header-only"),
    pytest.param("t,demand\n0,1\n", None, ["1 data row", "at least 2"], id="one-row"),
    pytest.param(b"t,demand\n0,1\n60,\xff\n", 3, ["UTF-8"], id="not-utf8"),
    pytest.param(
        't,demand\n0,1\n60,"' + "9" * 200_000 + '"\n', 3, ["not a CSV row"], id="huge-field"
    ),
    pytest.param("t,demand\n0,1\f\n60,x\n", 3, ["demand 'x'"], id="form-feed-not-a-line-end"),
]


@pytest.mark.parametrize(("content", "line", "fragments"), ERROR_CASES)
def test_load_errors_name_the_line(
    tmp_path: Path, content: str | bytes, line: int | None, fragments: list[str]
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    err = info.value
    assert err.line == line
    assert err.path == str(path)
    text = str(err)
    assert text.startswith(str(path) if line is None else f"{path} line {line}: ")
    for fragment in fragments:
        assert fragment in text


@pytest.mark.parametrize(
    ("make_path", "fragment"),
    [
        pytest.param(lambda tmp: tmp / "nope.csv", "no such file", id="missing-file"),
        pytest.param(lambda tmp: tmp, "directory", id="directory"),
    ],
)
def test_unreadable_paths_are_trace_errors(
    tmp_path: Path, make_path: Callable[[Path], Path], fragment: str
) -> None:
    path = make_path(tmp_path)
    with pytest.raises(TraceError, match=fragment) as info:
        load_trace(path)
    assert info.value.line is None


def test_error_message_reads_like_the_docs() -> None:
    err = TraceError("traces/x.csv", 17, "demand '-5' is negative")
    assert str(err) == "traces/x.csv line 17: demand '-5' is negative"
    assert isinstance(err, ValueError)
    assert str(TraceError("x.csv", None, "no such file")) == "x.csv: no such file"


@pytest.mark.parametrize(
    ("content", "t", "demand"),
    [
        pytest.param("t,demand\n0,1\n60,2\n", (0.0, 60.0), (1.0, 2.0), id="plain"),
        pytest.param(
            "# comment\n\n t , demand \n  # indented comment\n5.5, 10\n\n7,0\n",
            (5.5, 7.0),
            (10.0, 0.0),
            id="comments-blanks-spaces",
        ),
        pytest.param(
            "demand,host,t\n100,a,0\n200,b,15\n", (0.0, 15.0), (100.0, 200.0), id="extra-columns"
        ),
        pytest.param("\ufefft,demand\r\n0,1\r\n1e2,3\r\n", (0.0, 100.0), (1.0, 3.0), id="bom-crlf"),
    ],
)
def test_load_accepts(
    tmp_path: Path, content: str, t: tuple[float, ...], demand: tuple[float, ...]
) -> None:
    trace = load_trace(write(tmp_path, content, "my-trace.csv"))
    assert trace == Trace(name="my-trace", t=t, demand=demand)


# name: (rows, step seconds, duration seconds, plausible peak range in emails/hour)
BUNDLED = {
    "diurnal-week": (10_080, 60.0, 7 * 86_400 - 60, (40_000, 65_000)),
    "newsletter-burst": (1_440, 15.0, 6 * 3_600 - 15, (55_000, 80_000)),
    "slow-ramp": (720, 60.0, 12 * 3_600 - 60, (45_000, 60_000)),
    "noisy-flat": (1_440, 15.0, 6 * 3_600 - 15, (35_000, 75_000)),
    "daily-digest": (10_080, 60.0, 7 * 86_400 - 60, (50_000, 65_000)),
    "hourly-job": (5_760, 30.0, 2 * 86_400 - 30, (45_000, 60_000)),
    "weekly-campaign": (20_160, 60.0, 14 * 86_400 - 60, (45_000, 65_000)),
}


def test_bundled_traces_are_exactly_the_documented_ones() -> None:
    assert set(bundled_traces()) == set(BUNDLED)


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_trace_shape(name: str) -> None:
    rows, step, duration, (low, high) = BUNDLED[name]
    trace = load_trace(bundled_traces()[name])
    assert trace.name == name
    assert len(trace.t) == rows
    assert trace.t[0] == 0
    assert {b - a for a, b in zip(trace.t, trace.t[1:], strict=False)} == {step}
    assert trace.duration == duration
    assert low <= trace.peak <= high
    assert all(d >= 0 and d == int(d) for d in trace.demand)
    assert bundled_traces()[name].stat().st_size < 400 * 1024


def mean(trace: Trace, start_h: float, end_h: float) -> float:
    """Mean demand from hour `start_h` (inclusive) to `end_h`."""
    return statistics.mean(
        d for t, d in zip(trace.t, trace.demand, strict=True) if start_h <= t / 3600 < end_h
    )


def peak(trace: Trace, start_h: float, end_h: float) -> float:
    return max(d for t, d in zip(trace.t, trace.demand, strict=True) if start_h <= t / 3600 < end_h)


@pytest.mark.parametrize(
    ("name", "check"),
    [
        pytest.param(
            "diurnal-week",
            lambda tr: peak(tr, 24 * 5, 24 * 7) < 0.6 * peak(tr, 0, 24 * 5),
            id="diurnal-weekend-lower",
        ),
        pytest.param(
            "diurnal-week",
            lambda tr: mean(tr, 2, 4) < 0.2 * tr.peak,
            id="diurnal-night-low",
        ),
        pytest.param(
            "newsletter-burst",
            lambda tr: tr.peak > 3.5 * statistics.median(tr.demand),
            id="newsletter-bursts",
        ),
        pytest.param(
            "slow-ramp",
            lambda tr: mean(tr, 0, 0.5) < 0.2 * mean(tr, 9, 12),
            id="ramp-rises",
        ),
        pytest.param(
            "noisy-flat",
            lambda tr: abs(mean(tr, 0, 3) / mean(tr, 3, 6) - 1) < 0.1,
            id="noisy-no-trend",
        ),
    ],
)
def test_bundled_trace_character(name: str, check: Callable[[Trace], bool]) -> None:
    assert check(load_trace(bundled_traces()[name]))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(0.0, 5.0, id="before-first"),
        pytest.param(10.0, 5.0, id="at-first"),
        pytest.param(15.0, 5.0, id="between-first-second"),
        pytest.param(20.0, 7.0, id="at-second"),
        pytest.param(29.999, 7.0, id="just-before-third"),
        pytest.param(30.0, 1.0, id="at-last"),
        pytest.param(1e9, 1.0, id="after-last"),
    ],
)
def test_demand_at_holds_the_last_value(query: float, expected: float) -> None:
    trace = Trace(name="s", t=(10.0, 20.0, 30.0), demand=(5.0, 7.0, 1.0))
    assert demand_at(trace, query) == expected


@pytest.mark.parametrize(
    ("t", "demand"),
    [
        pytest.param((), (), id="empty"),
        pytest.param((0.0, 1.0), (1.0,), id="length-mismatch"),
        pytest.param((0.0, 0.0), (1.0, 1.0), id="not-increasing"),
    ],
)
def test_trace_rejects_inconsistent_values(t: tuple[float, ...], demand: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Trace(name="bad", t=t, demand=demand)


def test_trace_properties() -> None:
    trace = Trace(name="p", t=(5.0, 65.0, 125.0), demand=(1.0, 9.0, 3.0))
    assert (trace.duration, trace.peak) == (120.0, 9.0)


def test_resolve_bundled_name() -> None:
    assert resolve_trace("diurnal-week") == bundled_traces()["diurnal-week"]


def test_resolve_path(tmp_path: Path) -> None:
    path = write(tmp_path, "t,demand\n0,1\n60,1\n")
    assert resolve_trace(str(path)) == path


def test_resolve_unknown_lists_bundled_names(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as info:
        resolve_trace(str(tmp_path / "missing.csv"))
    for name in BUNDLED:
        assert name in str(info.value)
