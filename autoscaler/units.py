"""Durations as config values: `15s`, `5m`, `1h30m` (Go syntax, via durationpy) or seconds."""

from __future__ import annotations

import functools
import math
import re
from typing import Annotated, Any

import durationpy
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Go-style duration string; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like 15s, 5m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                seconds = durationpy.from_str(text).total_seconds()
            except Exception as exc:  # durationpy raises its own error types
                raise ValueError(
                    f"invalid duration {value!r}: use a number of seconds or a string like "
                    "15s, 5m, 1h30m"
                ) from exc
    else:
        raise ValueError("a duration must be a number of seconds or a string like 15s, 5m, 1h")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be finite and not negative")
    return seconds


def format_duration(seconds: float) -> str | float:
    """Whole seconds as the shortest Go-style spelling (`1h30m`); anything finer as the
    number of seconds itself, so printing a config back never loses precision."""
    if seconds == int(seconds):
        whole = int(seconds)
        parts = []
        for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
            if whole >= size:
                parts.append(f"{whole // size}{unit}")
                whole %= size
        return "".join(parts) or "0s"
    return seconds


DURATION_PATTERN = r"^\s*([0-9.]+(ns|us|µs|ms|s|m|h))+\s*$|^\s*[0-9.]+\s*$"

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str | float),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds, or a duration such as 15s, 5m, 1h30m",
        }
    ),
]


_PROMQL_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
                 "w": 604800.0, "y": 31536000.0}
_PROMQL_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
# `[5m]`, `[1h30m]`, a subquery's `[30m:1m]` (its range), and `offset 5m`
_PROMQL_RANGE = re.compile(r"\[\s*((?:\d+(?:ms|s|m|h|d|w|y))+)\s*(?::[^\]]*)?\]")
_PROMQL_OFFSET = re.compile(r"\boffset\s+((?:\d+(?:ms|s|m|h|d|w|y))+)", re.IGNORECASE)


def promql_duration(text: str) -> float:
    """Seconds of a PromQL duration literal such as `5m` or `1h30m`."""
    return sum(int(n) * _PROMQL_UNITS[unit] for n, unit in _PROMQL_DURATION.findall(text))


@functools.lru_cache(maxsize=4096)  # asked at every evaluation, about a few fixed queries
def promql_lookback(query: str) -> float:
    """How far back from its evaluation time a PromQL expression reads, in seconds: its
    longest range (or subquery range) plus its longest offset; 0 for a plain selector.
    A conservative reading of the text, enough to know how long a gap in the data can
    still skew an answer that Prometheus reports as fine."""
    ranges = [promql_duration(m) for m in _PROMQL_RANGE.findall(query)]
    offsets = [promql_duration(m) for m in _PROMQL_OFFSET.findall(query)]
    return max(ranges, default=0.0) + max(offsets, default=0.0)
