"""Durations as config values: `15s`, `5m`, `1h30m`, `500ms`, `7d` (Go's units and days) or
seconds.

One grammar, kept as a regular expression, is both what the validator accepts and what the
JSON Schema says: units in order (d, h, m, s, ms, us, ns), each at most once, with few
enough digits that no duration can pass MAX_DURATION_SECONDS. Parsed exactly (decimal), so
`1ns` is above 0 here as it is in the schema.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, GetJsonSchemaHandler, PlainSerializer
from pydantic.json_schema import JsonSchemaValue

# ~31 years: longer than any interval a config needs, short enough for time.sleep and socket
# timeouts (a 10**400 number or a 1e300 one would crash them).
MAX_DURATION_SECONDS = 1_000_000_000

_FRACTION = r"(?:\.[0-9]{1,9})?"
# (unit, seconds, most integer digits): the sum of the largest of each stays below the max.
_UNITS: tuple[tuple[str, Decimal, int], ...] = (
    ("d", Decimal(86400), 3),
    ("h", Decimal(3600), 5),
    ("m", Decimal(60), 6),
    ("s", Decimal(1), 8),
    ("ms", Decimal("0.001"), 11),
    ("(?:us|µs|μs)", Decimal("0.000001"), 14),
    ("ns", Decimal("0.000000001"), 17),
)
_COMPONENTS = "".join(f"(?:([0-9]{{1,{digits}}}{_FRACTION}){unit})?"
                      for unit, _, digits in _UNITS)
# Either plain seconds or components (the components' alternative alone matches "", which
# DURATION_MIN_LENGTH refuses in both the validator and the schema).
DURATION_PATTERN = f"^(?:([0-9]{{1,9}}{_FRACTION})|{_COMPONENTS})$"
DURATION_MIN_LENGTH = 1
# A duration string is above 0 exactly when some digit is not 0 (no exponents in the grammar).
ZERO_DURATION_PATTERN = "^[^1-9]*$"
_DURATION = re.compile(DURATION_PATTERN)
_HINT = "use a number of seconds or a string like 15s, 5m, 1h30m, 500ms"


def parse_duration(value: Any) -> float:
    """Seconds from a number or a duration string; ValueError for anything else, for a
    negative or non-finite number and for one above MAX_DURATION_SECONDS."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"a duration must be a number of seconds or a string; {_HINT}")
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None or len(value) < DURATION_MIN_LENGTH:
            raise ValueError(f"invalid duration {value!r}: {_HINT}")
        plain, *parts = match.groups()
        if plain is not None:
            return float(Decimal(plain))
        return float(sum((Decimal(n) * size for n, (_, size, _) in zip(parts, _UNITS, strict=True)
                          if n is not None), Decimal(0)))
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"invalid duration {value!r}: must be a finite number of seconds")
    if not 0 <= value <= MAX_DURATION_SECONDS:  # compared before float(): 10**400 fits no float
        raise ValueError(f"invalid duration {_short(value)}: must be between 0 and "
                         f"{MAX_DURATION_SECONDS:,} seconds")
    return float(value)


def _short(value: float) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"


def format_duration(seconds: float) -> str | int | float:
    """Whole seconds as the shortest spelling (`1h30m`) that the grammar accepts back; anything
    finer, or more hours than the grammar's digits allow, as the number of seconds itself, so
    printing a config back never loses precision."""
    if seconds == int(seconds):
        whole = int(seconds)
        if whole >= 10 ** _UNITS[1][2] * 3600:
            return whole
        parts = []
        for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
            if whole >= size:
                parts.append(f"{whole // size}{unit}")
                whole %= size
        return "".join(parts) or "0s"
    return seconds


class _DurationSchema:
    """The JSON Schema of a duration, derived from the same bounds the validator checks:
    the number's own (`ge`/`gt` given on the field, pydantic puts them in `number`), the
    maximum, and the grammar; a lower bound above 0 is refused, no string could carry it."""

    def __get_pydantic_json_schema__(self, core_schema: Any,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        number = dict(handler(core_schema))
        number.pop("description", None)
        if number.get("minimum", 0) < 0:  # no bound of the field's own: a float's range
            del number["minimum"]
        lowest = number.get("exclusiveMinimum", number.get("minimum", 0))
        if lowest != 0:
            raise TypeError(f"a Duration's lower bound can be ge=0 or gt=0, not {lowest}")
        positive = "exclusiveMinimum" in number
        if not positive:
            number["minimum"] = 0
        number["maximum"] = min(number.get("maximum", MAX_DURATION_SECONDS), MAX_DURATION_SECONDS)
        string: dict[str, Any] = {"type": "string", "pattern": DURATION_PATTERN,
                                  "minLength": DURATION_MIN_LENGTH}
        if positive:
            string["not"] = {"pattern": ZERO_DURATION_PATTERN}
        return {"anyOf": [number, string],
                "description": "seconds, or a duration such as 15s, 5m, 1h30m, 500ms"}


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str | int | float),
    _DurationSchema(),
]

# Above 0, for a field that is optional too (`PositiveDuration | None`): there a `gt=0` given on
# the field would reach the schema as pydantic's own `gt` word, which JSON Schema ignores.
PositiveDuration = Annotated[
    float,
    Field(gt=0),
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str | int | float),
    _DurationSchema(),
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
