"""Grouped queries: which queries group, the alternation they become, and how answers split."""

from __future__ import annotations

import re
from typing import Any

import pytest

from autoscaler.sources.grouping import (
    PLACEHOLDER,
    alternation,
    chunk_values,
    group_query,
    split_result,
    template_of,
)

P = PLACEHOLDER


@pytest.mark.parametrize(
    ("query", "template", "value"),
    [
        ('avg by (service) (x{service="a"})', f"avg by (service) (x{{{P}}})", "a"),
        ("avg by (service) (x{service='a'})", f"avg by (service) (x{{{P}}})", "a"),
        ('max by (service) (x{job="m", service = "svc-1"})',
         f'max by (service) (x{{job="m", {P}}})', "svc-1"),
        ('sum by (service) (rate(x{service="a"}[1m])) * 3600',
         f"sum by (service) (rate(x{{{P}}}[1m])) * 3600", "a"),
        # the same value twice: both matchers become the alternation
        ('sum by (service) (a{service="s"}) / sum by (service) (b{service="s"})',
         f"sum by (service) (a{{{P}}}) / sum by (service) (b{{{P}}})", "s"),
        # the label's name inside strings or `by (...)` is not a matcher
        ('avg by (service) (x{path="service=\\"b\\"", service="a"})',
         f'avg by (service) (x{{path="service=\\"b\\"", {P}}})', "a"),
    ],
)
def test_groupable_queries(query: str, template: str, value: str) -> None:
    spec = template_of(query, "service")
    assert spec is not None
    assert (spec.template, spec.value) == (template, value)


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("avg(x)", "no matcher on the label"),
        ('avg(x{job="a"})', "a matcher on another label"),
        ('avg(x{service=~"a|b"})', "already a regex"),
        ('avg(x{service!="a"})', "a negative matcher"),
        ('avg(x{service="a"}) / avg(y{service!~"b"})', "another matcher on the label"),
        ('avg(a{service="a"}) / avg(b{service="b"})', "two different values"),
        ('avg(x{service=""})', "empty matches series without the label"),
        ('avg(x{service="a\\"b"})', "an escape in the value"),
        ('avg by (service) (x{service="a"}) or vector(0)', "or adds series"),
        ('absent(x{service="a"})', "absent invents a series"),
        ('topk(1, x{service="a"})', "topk looks across series"),
        ('x{service="a"} / on() group_left scalar(y)', "matching modifiers, scalar"),
        ('label_replace(x{service="a"}, "service", "b", "", "")', "rewrites the label"),
        ('avg by (service) (x{service="a"}) OR y', "keywords in capitals"),
        ('x{service="a\x00"}', "the placeholder itself"),
    ],
)
def test_queries_sent_as_written(query: str, why: str) -> None:
    assert template_of(query, "service") is None, why


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        (["a", "b"], "a|b"),
        (["svc-1"], "svc-1"),
        (["a.b", "c+d", "e|f", "(g)", "h*", "[i]", "^j$", "k?", "{l}"],
         r"a\\.b|c\\+d|e\\|f|\\(g\\)|h\\*|\\[i\\]|\\^j\\$|k\\?|\\{l\\}"),
    ],
)
def test_alternation_escapes_regex_and_string(values: list[str], pattern: str) -> None:
    assert alternation(values) == pattern
    # Unescaping the PromQL string gives a regex that matches exactly the values.
    regex = re.compile(alternation(values).replace("\\\\", "\\"))
    assert all(regex.fullmatch(v) for v in values)
    assert not regex.fullmatch("ab") and not regex.fullmatch("x")


def test_group_query_replaces_every_placeholder() -> None:
    spec = template_of('sum by (service) (a{service="s"}) / sum by (service) (b{service="s"})',
                       "service")
    assert spec is not None
    assert group_query(spec.template, "service", ["s", "t.u"]) == (
        'sum by (service) (a{service=~"s|t\\\\.u"}) / sum by (service) (b{service=~"s|t\\\\.u"})')


@pytest.mark.parametrize(
    ("count", "max_values", "room", "sizes"),
    [
        (250, 100, 100_000, [100, 100, 50]),
        (5, 100, 100_000, [5]),
        (0, 100, 100_000, []),
        (10, 3, 100_000, [3, 3, 3, 1]),
        # room for "v-00|v-01|v-02|v-03" (4 + 3 x 5 characters) past the bare query
        (10, 100, 19, [4, 4, 2]),
        (10, 100, 18, [3, 3, 3, 1]),
        (3, 100, 0, [1, 1, 1]),  # a value longer than the limit still gets its own query
    ],
)
def test_chunks_keep_order_and_limits(count: int, max_values: int, room: int,
                                      sizes: list[int]) -> None:
    values = [f"v-{i:02d}" for i in range(count)]
    template = f"max by (service) (x{{{P}}})"
    max_chars = len(group_query(template, "service", [])) + room
    chunks = chunk_values(template, "service", values, max_values, max_chars)
    assert [len(c) for c in chunks] == sizes
    assert [v for c in chunks for v in c] == values
    if room >= 4:
        assert all(len(group_query(template, "service", c)) <= max_chars for c in chunks)


def vector(*series: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(series)}}


def one(labels: dict[str, str], value: str = "1") -> dict[str, Any]:
    return {"metric": labels, "value": [1700000000, value]}


ERROR = {"status": "error", "errorType": "bad_data", "error": "parse error"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # each value gets its own series; a value without a series gets an empty result
        (vector(one({"service": "a"}, "1"), one({"service": "b"}, "2")),
         {"a": vector(one({"service": "a"}, "1")), "b": vector(one({"service": "b"}, "2")),
          "c": vector()}),
        # two series for one value stay together (that member's own query had two)
        (vector(one({"service": "a", "i": "1"}), one({"service": "a", "i": "2"})),
         {"a": vector(one({"service": "a", "i": "1"}), one({"service": "a", "i": "2"})),
          "b": vector(), "c": vector()}),
        (vector(), {"a": vector(), "b": vector(), "c": vector()}),
        # an error or a malformed body is every member's answer as it is
        (ERROR, {"a": ERROR, "b": ERROR, "c": ERROR}),
        ("garbage", {"a": "garbage", "b": "garbage", "c": "garbage"}),
        ({"status": "success", "data": []},
         {key: {"status": "success", "data": []} for key in "abc"}),
        # cannot be split: never guess whose value it is
        (vector(one({})), None),
        (vector(one({"service": "a"}), one({"job": "x"})), None),
        (vector(one({"service": "z"})), None),
        (vector("not a series"), None),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}}, None),
    ],
    ids=["one-each", "two-series", "empty", "error", "garbage", "malformed", "no-label",
         "one-without-label", "value-not-asked", "bad-series", "scalar"],
)
def test_split_result(payload: Any, expected: dict[str, Any] | None) -> None:
    assert split_result(payload, "service", ["a", "b", "c"]) == expected


def test_split_matrix_keeps_its_type() -> None:
    series = {"metric": {"service": "a"}, "values": [[1, "1"], [2, "2"]]}
    payload = {"status": "success", "data": {"resultType": "matrix", "result": [series]}}
    parts = split_result(payload, "service", ["a", "b"])
    assert parts == {
        "a": {"status": "success", "data": {"resultType": "matrix", "result": [series]}},
        "b": {"status": "success", "data": {"resultType": "matrix", "result": []}}}
