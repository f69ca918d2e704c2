"""Durations as config values: `15s`, `5m`, `1h30m` (Go syntax, via durationpy) or seconds."""

from __future__ import annotations

import math
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
