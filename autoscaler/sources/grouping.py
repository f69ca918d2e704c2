"""Grouped queries: many targets' PromQL that differ only in one label's value, sent as one.

With `prometheus.group_by_label: service`, the queries `avg by (service) (x{service="a"})` and
`avg by (service) (x{service="b"})` (same window) become ONE query
`avg by (service) (x{service=~"a|b"})`, and its answer is split back by the `service` label of
each series. Pure: no I/O, so every rule here has a table test.

Grouping must never change what a target reads. A query is grouped only when the result of the
alternation is, series by series, the union of the per-target results:
- every matcher on the label is `label="value"` with one and the same plain value (no escape,
  not empty: `label=""` also matches series without the label);
- no construct that looks across series or invents them (`or`, `absent`, `topk`, `scalar`,
  `on`/`ignoring`/`group_left`, `label_replace`, ...: see `UNSAFE`);
- at run time, every series of the answer carries the label with a value that was asked for;
  otherwise (the query aggregates the label away, `or vector(0)`, a scalar) the answer is not
  used and the group's members are asked one by one (`split_result` returns None).
A member whose value has no series in a splittable answer is `empty`, as its own query would be.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_VALUES",
    "GroupSpec",
    "alternation",
    "chunk_values",
    "group_query",
    "split_result",
    "template_of",
]

MAX_VALUES = 100  # label values per grouped query
MAX_QUERY_CHARS = 6000  # a grouped query longer than this is split (URLs, server limits)
PLACEHOLDER = "\x00"  # stands for the matcher in a template; never in valid PromQL

# Functions, operators and modifiers whose result for one series may depend on other series
# (or that create series): with them, a grouped query is not the union of the per-target ones.
UNSAFE = frozenset({
    "or", "absent", "absent_over_time", "topk", "bottomk", "limitk", "limit_ratio", "scalar",
    "on", "ignoring", "group_left", "group_right", "label_replace", "label_join", "sort_by_label",
    "sort_by_label_desc", "info",
})

_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # double-quoted string
    r"|'(?:[^'\\]|\\.)*'"  # single-quoted string
    r"|`[^`]*`"  # raw string
    r"|[A-Za-z_:][A-Za-z0-9_:]*"  # identifier (metric, label, function, keyword)
    r"|\s+"
    r"|[=!]~|!=|=="  # two-character operators
    r"|.",
    re.S,
)
_REGEX_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


@dataclass(frozen=True)
class GroupSpec:
    """Where a query's label value sits: the query is `template` with PLACEHOLDER replaced by
    the matcher `label="value"`."""

    template: str
    value: str


def template_of(query: str, label: str) -> GroupSpec | None:
    """The query as a template around its `label="value"` matcher(s), or None when it must be
    sent as it is (no such matcher, another operator on the label, several values, an escaped
    or empty value, a construct in UNSAFE)."""
    tokens = [m.group(0) for m in _TOKEN.finditer(query)]
    if "".join(tokens) != query or PLACEHOLDER in query:
        return None
    parts: list[str] = []
    value: str | None = None
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok in UNSAFE or tok.lower() in UNSAFE:
            return None
        if tok == label and _after_selector_start(tokens, i):
            j = _skip_space(tokens, i + 1)
            op = tokens[j] if j < n else ""
            if op in ("!=", "=~", "!~"):
                return None  # another kind of matcher on the label: not ours to rewrite
            if op == "=":
                k = _skip_space(tokens, j + 1)
                literal = tokens[k] if k < n else ""
                found = _plain_string(literal)
                if found is None or (value is not None and found != value):
                    return None
                value = found
                parts.append(PLACEHOLDER)
                i = k + 1
                continue
        parts.append(tok)
        i += 1
    if value is None:
        return None
    return GroupSpec("".join(parts), value)


def _skip_space(tokens: Sequence[str], i: int) -> int:
    while i < len(tokens) and tokens[i].isspace():
        i += 1
    return i


def _after_selector_start(tokens: Sequence[str], i: int) -> bool:
    """A label matcher follows `{` or `,` (inside a selector's braces)."""
    j = i - 1
    while j >= 0 and tokens[j].isspace():
        j -= 1
    return j >= 0 and tokens[j] in ("{", ",")


def _plain_string(literal: str) -> str | None:
    """The value of a quoted PromQL string without escapes; None for anything else."""
    if len(literal) < 3 or literal[0] not in "\"'`" or literal[-1] != literal[0]:
        return None
    inner = literal[1:-1]
    if "\\" in inner or '"' in inner or "'" in inner or "`" in inner:
        return None
    return inner


def alternation(values: Iterable[str]) -> str:
    """The RE2 alternation matching exactly `values` (Prometheus anchors it), as the inside of
    a double-quoted PromQL string: regex metacharacters escaped, and the escapes escaped."""
    escaped = (_REGEX_SPECIAL.sub(r"\\\1", v) for v in values)
    return "|".join(escaped).replace("\\", "\\\\")


def group_query(template: str, label: str, values: Sequence[str]) -> str:
    """The template with its matcher turned into `label=~"v1|v2|..."`."""
    return template.replace(PLACEHOLDER, f'{label}=~"{alternation(values)}"')


def chunk_values(template: str, label: str, values: Sequence[str],
                 max_values: int = MAX_VALUES,
                 max_chars: int = MAX_QUERY_CHARS) -> list[list[str]]:
    """`values` (order kept) cut so that no grouped query exceeds `max_values` values or
    `max_chars` characters (a single value longer than that still gets its own chunk)."""
    base = len(group_query(template, label, []))
    uses = max(1, template.count(PLACEHOLDER))
    chunks: list[list[str]] = []
    current: list[str] = []
    size = base
    for value in values:
        extra = uses * (len(alternation([value])) + (1 if current else 0))
        if current and (len(current) >= max_values or size + extra > max_chars):
            chunks.append(current)
            current, size = [], base
            extra = uses * len(alternation([value]))
        current.append(value)
        size += extra
    if current:
        chunks.append(current)
    return chunks


def split_result(payload: Any, label: str, values: Sequence[str]) -> dict[str, Any] | None:
    """Per value, the body its own query would have got; None when the answer cannot be split
    safely (a series without the label or with a value not asked for, a scalar result).

    An answer that is not a successful vector or matrix (an error, a malformed body) is every
    member's answer as it is: classified the same for each.
    """
    if not isinstance(payload, dict) or payload.get("status") != "success":
        return dict.fromkeys(values, payload)
    data = payload.get("data")
    result_type = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if result_type == "scalar":
        return None
    if result_type not in ("vector", "matrix") or not isinstance(result, list):
        return dict.fromkeys(values, payload)
    buckets: dict[str, list[Any]] = {v: [] for v in values}
    for series in result:
        metric = series.get("metric") if isinstance(series, dict) else None
        value = metric.get(label) if isinstance(metric, dict) else None
        if not isinstance(value, str) or value not in buckets:
            return None
        buckets[value].append(series)
    return {v: {"status": "success", "data": {"resultType": result_type, "result": found}}
            for v, found in buckets.items()}
