"""`classify_response`: every metric state and every malformed shape, as tables; then a fuzz.

What Prometheus answers (or a proxy, or something hostile) decides whether a policy may act;
each row is one answer and the state and detail it must give.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.model import Sample, SignalState
from autoscaler.sources.prometheus import classify_response, redact
from tests.support.strategies import json_like, shaped
from tests.support.tier import examples

OK, EMPTY, NAN, STALE, ERROR = (SignalState.OK, SignalState.EMPTY, SignalState.NAN,
                                SignalState.STALE, SignalState.ERROR)
NOW = 1_700_000_000.0
SCRAPE = 15.0
EP = "http://127.0.0.1:9090/api/v1/query"


def ok(result_type: Any, result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


def vector(*values: tuple[Any, Any]) -> dict[str, Any]:
    return ok("vector", [{"metric": {"job": f"j{i}"}, "value": [t, v]}
                         for i, (t, v) in enumerate(values)])


def matrix(*series: list[tuple[float, Any]]) -> dict[str, Any]:
    return ok("matrix", [{"metric": {"i": str(i)}, "values": [[t, v] for t, v in points]}
                         for i, points in enumerate(series)])


# ------------------------------------------------------------------------------ good answers

@pytest.mark.parametrize(
    ("payload", "samples"),
    [
        (vector((NOW, "1.5")), ((NOW, 1.5),)),
        (vector((NOW, "0")), ((NOW, 0.0),)),
        (vector((NOW, "-3e2")), ((NOW, -300.0),)),
        (vector((int(NOW), "7")), ((NOW, 7.0),)),
        (ok("scalar", [NOW, "42"]), ((NOW, 42.0),)),
        (matrix([(NOW - 30, "1"), (NOW - 15, "2"), (NOW, "3")]),
         ((NOW - 30, 1.0), (NOW - 15, 2.0), (NOW, 3.0))),
        (matrix([(NOW, "3"), (NOW - 30, "1"), (NOW - 15, "2")]),
         ((NOW - 30, 1.0), (NOW - 15, 2.0), (NOW, 3.0))),
        (vector((NOW - 2 * SCRAPE, "1")), ((NOW - 2 * SCRAPE, 1.0),)),
        (vector((NOW + 5, "1")), ((NOW + 5, 1.0),)),
        (vector((NOW, 2.5)), ((NOW, 2.5),)),
        (vector((NOW, "1" + "0" * 300)), ((NOW, 1e300),)),
    ],
    ids=["vector", "zero", "exponent", "int-timestamp", "scalar", "matrix-sorted",
         "matrix-unsorted-is-sorted", "exactly-2-scrapes-old", "future-timestamp",
         "json-number-value", "huge-but-finite"],
)
def test_ok(payload: dict[str, Any], samples: tuple[tuple[float, float], ...]) -> None:
    signal = classify_response(payload, NOW, SCRAPE, endpoint=EP)
    assert signal.state is OK, signal.detail
    assert signal.samples == tuple(Sample(t, v) for t, v in samples)
    assert all(isinstance(s.t, float) and isinstance(s.value, float) for s in signal.samples)
    assert signal.detail == ""


# ------------------------------------------------------------------------------ other backends

def with_fields(payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**payload, **fields}


# What VictoriaMetrics, Thanos, Mimir or a newer Prometheus add around the same answer.
@pytest.mark.parametrize(
    ("payload", "state", "detail"),
    [
        pytest.param(with_fields(vector((NOW, "1")), stats={"seriesFetched": "1"}), OK, "",
                     id="vm-stats-ignored"),
        pytest.param(with_fields(vector((NOW, "1")), infos=["x"], extra={"a": 1}), OK, "",
                     id="unknown-fields-ignored"),
        pytest.param({"status": "success", "data": {"resultType": "vector", "stats": {},
                      "result": [{"metric": {}, "value": [NOW, "1"], "x": 1}]}}, OK, "",
                     id="extra-fields-inside-data-and-series"),
        pytest.param(with_fields(vector((NOW, "1")), warnings=[]), OK, "",
                     id="empty-warnings"),
        pytest.param(with_fields(vector((NOW, "1")), warnings=["store a: no data", "slow"]), OK,
                     f"{EP} warned: store a: no data; slow", id="thanos-warnings-kept"),
        pytest.param(with_fields(vector((NOW, "1")), warnings="oops"), OK,
                     f"{EP} warned: warnings field is a string", id="warnings-not-a-list"),
        pytest.param(with_fields(vector((NOW, "1")), warnings=[1, None]), OK,
                     f"{EP} warned: warnings field is an array", id="warnings-not-strings"),
        pytest.param(with_fields(vector((NOW, "1")), isPartial=True), ERROR,
                     "partial response", id="vm-cluster-partial"),
        pytest.param(with_fields(vector((NOW, "1")), isPartial=False), OK, "",
                     id="vm-cluster-complete"),
        pytest.param(with_fields(ok("vector", []), warnings=["w"]), EMPTY, "no series",
                     id="empty-with-warnings-is-empty"),
    ],
)
def test_answers_of_other_backends(payload: dict[str, Any], state: SignalState,
                                   detail: str) -> None:
    """Fields Prometheus would not send are read or classified, never a traceback; an ok
    signal keeps the backend's warnings (the decision record shows them)."""
    signal = classify_response(payload, NOW, SCRAPE, endpoint=EP)
    assert signal.state is state
    assert detail in signal.detail if state is not OK else signal.detail == detail
    if state is OK:
        assert signal.samples == (Sample(NOW, 1.0),)


# ------------------------------------------------------------------------------ empty, nan, stale

@pytest.mark.parametrize(
    ("payload", "state", "detail"),
    [
        (ok("vector", []), EMPTY, "no series"),
        (ok("matrix", []), EMPTY, "no series"),
        (matrix([]), EMPTY, "a series without points"),
        (vector((NOW, "NaN")), NAN, "NaN or ±Inf in 1 of 1"),
        (vector((NOW, "+Inf")), NAN, "NaN or ±Inf"),
        (vector((NOW, "-Inf")), NAN, "NaN or ±Inf"),
        (vector((NOW, "Inf")), NAN, "NaN or ±Inf"),
        (ok("scalar", [NOW, "NaN"]), NAN, "NaN or ±Inf"),
        (matrix([(NOW - 15, "1"), (NOW - 5, "NaN"), (NOW, "2")]), NAN, "in 1 of 3 samples"),
        (vector((NOW, "1e999")), NAN, "NaN or ±Inf"),
        (vector((NOW - 2 * SCRAPE - 1, "1")), STALE, "31s old"),
        (matrix([(NOW - 120, "1"), (NOW - 60, "2")]), STALE, "60s old"),
        (matrix([(NOW - 120, "NaN"), (NOW - 60, "2")]), NAN, "NaN"),
        (ok("vector", [{"metric": {}, "value": [NOW - 600, "1"]}]), STALE,
         "600s old (stale after 30s)"),
    ],
    ids=["vector-no-series", "matrix-no-series", "series-without-points", "nan", "plus-inf",
         "minus-inf", "bare-inf", "scalar-nan", "one-nan-in-range", "overflow-to-inf",
         "stale-vector", "stale-matrix", "nan-beats-stale", "stale-detail"],
)
def test_not_ok_states(payload: dict[str, Any], state: SignalState, detail: str) -> None:
    signal = classify_response(payload, NOW, SCRAPE, endpoint=EP)
    assert signal.state is state
    assert detail in signal.detail
    assert signal.samples == ()


@pytest.mark.parametrize(
    ("scrape", "step", "age", "state"),
    [(1.0, 0.0, 1.9, OK), (1.0, 0.0, 2.1, STALE), (15.0, 0.0, 29.0, OK),
     (15.0, 0.0, 31.0, STALE), (60.0, 0.0, 119.0, OK), (60.0, 0.0, 121.0, STALE),
     (15.0, 15.0, 31.0, STALE), (15.0, 60.0, 74.0, OK), (15.0, 60.0, 76.0, STALE)],
    ids=["1s-fresh", "1s-stale", "15s-fresh", "15s-stale", "60s-fresh", "60s-stale",
         "step-equal-to-scrape-changes-nothing", "coarse-step-fresh", "coarse-step-stale"],
)
def test_staleness_is_two_scrape_intervals(
    scrape: float, step: float, age: float, state: SignalState
) -> None:
    payload = matrix([(NOW - age - 60, "1"), (NOW - age, "1")])
    assert classify_response(payload, NOW, scrape, step=step).state is state


# ------------------------------------------------------------------------------ errors

TWO = vector((NOW, "1"), (NOW, "2"))
DEEP: Any = ok("vector", [])
for _ in range(10_000):
    DEEP = [DEEP]


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (TWO, "returned 2 series; aggregate it with sum/avg/max"),
        (matrix([(NOW, "1")], [(NOW, "2")], [(NOW, "3")]),
         "returned 3 series; aggregate it with sum/avg/max"),
        ({"status": "error", "errorType": "bad_data",
          "error": "1:5: parse error: unexpected <op:+>"},
         "said: bad_data: 1:5: parse error: unexpected <op:+>"),
        ({"status": "error"}, "said: error (no message)"),
        ({"status": "error", "error": {"nested": "x"}}, "said: error (no message)"),
        ({"status": "success"}, "no 'data' object"),
        ({"status": "success", "data": []}, "no 'data' object"),
        ({"status": "success", "data": {"result": []}}, "resultType missing"),
        ({"status": "success", "data": {"resultType": "vector"}}, "no 'result'"),
        ({"data": {"resultType": "vector", "result": []}}, "status missing"),
        ({"status": "pending", "data": {}}, "status 'pending'"),
        ({"status": 1, "data": {}}, "status a number"),
        (ok("string", [NOW, "hello"]), "resultType 'string' is not vector, matrix or scalar"),
        (ok("streams", []), "resultType 'streams'"),
        (ok(["vector"], []), "resultType an array"),
        (ok("x" * 5000, []), "resultType (5000 characters)"),
        (ok("vector", {"metric": {}}), "a vector result is an object, not an array"),
        (ok("vector", "1"), "not an array"),
        (ok("vector", [{"metric": {}}]), "a series has no 'value'"),
        (ok("matrix", [{"metric": {}, "value": [NOW, "1"]}]), "a series has no 'values'"),
        (ok("vector", [[NOW, "1"]]), "a series is an array, not an object"),
        (ok("vector", [None]), "a series is null"),
        (ok("matrix", [{"values": "1,2"}]), "values are a string"),
        (ok("matrix", [{"values": [[NOW]]}]), "not a [timestamp, value] pair"),
        (ok("matrix", [{"values": [NOW, "1"]}]), "not a [timestamp, value] pair"),
        (ok("vector", [{"value": [NOW, "1", "2"]}]), "not a [timestamp, value] pair"),
        (ok("vector", [{"value": {"t": NOW, "v": "1"}}]), "not a [timestamp, value] pair"),
        (ok("scalar", "1"), "not a [timestamp, value] pair"),
        (ok("scalar", [[NOW, "1"]]), "not a [timestamp, value] pair"),
        (vector((NOW, "abc")), "a value 'abc' is not a number"),
        (vector((NOW, "")), "a value '' is not a number"),
        (vector((NOW, " 1")), "is not a number"),
        (vector((NOW, "1_000")), "is not a number"),
        (vector((NOW, "infinity")), "is not a number"),
        (vector((NOW, "0x10")), "is not a number"),
        (vector((NOW, "9" * 500 + "x")), "a value (501 characters) is not a number"),
        (vector((NOW, None)), "a value is null, not a number"),
        (vector((NOW, True)), "a value is a boolean, not a number"),
        (vector((NOW, ["1"])), "a value is an array"),
        (vector((NOW, {"v": 1})), "a value is an object"),
        (vector(("now", "1")), "a timestamp 'now' is not a number"),
        (vector((None, "1")), "a timestamp is null"),
        (vector((10**400, "1")), "a timestamp is out of range"),
        (vector((NOW, 10**400)), "a value is out of range"),
        (vector((math.nan, "1")), "a timestamp is not finite"),
        (vector((math.inf, "1")), "a timestamp is not finite"),
        (vector(("NaN", "1")), "a timestamp is not finite"),
        ([], "the body is an array, not an object"),
        (None, "the body is null"),
        ("NaN", "the body is a string"),
        (12, "the body is a number"),
        (DEEP, "the body is an array"),
    ],
    ids=["two-series", "three-series", "status-error", "status-error-no-text",
         "status-error-text-not-string", "no-data", "data-not-object", "no-result-type",
         "no-result", "no-status", "status-pending", "status-not-string", "result-type-string",
         "result-type-unknown", "result-type-not-string", "result-type-huge",
         "vector-not-list", "vector-is-string", "series-without-value",
         "matrix-series-with-value", "series-is-list", "series-is-null", "values-not-list",
         "point-one-element", "values-flat", "point-three-elements", "point-is-object",
         "scalar-not-pair", "scalar-nested", "value-word", "value-empty", "value-whitespace",
         "value-underscore", "value-infinity-spelling", "value-hex", "value-huge-string",
         "value-null", "value-bool", "value-list", "value-object", "timestamp-word",
         "timestamp-null", "timestamp-huge-int", "value-huge-int", "timestamp-nan",
         "timestamp-inf", "timestamp-nan-string", "body-array", "body-null", "body-string",
         "body-number", "body-deeply-nested"],
)
def test_error(payload: Any, detail: str) -> None:
    signal = classify_response(payload, NOW, SCRAPE, endpoint=EP)
    assert signal.state is ERROR
    assert detail in signal.detail
    assert EP in signal.detail
    assert signal.samples == ()
    assert "\n" not in signal.detail and len(signal.detail) <= 240


def test_multi_series_error_holds_even_when_all_are_nan_or_stale() -> None:
    payload = vector((NOW - 600, "NaN"), (NOW - 600, "NaN"))
    assert classify_response(payload, NOW, SCRAPE).state is ERROR


# ------------------------------------------------------------------------------ details

@pytest.mark.parametrize(
    ("payload", "secret"),
    [
        ({"status": "error", "error": "bad token s3cr3t-t0ken in header"}, "s3cr3t-t0ken"),
        ({"status": "error", "error": "x" * 235 + "s3cr3t-t0ken"}, "s3cr3t-t0ken"),
        (ok("s3cr3t-t0ken", []), "s3cr3t-t0ken"),
        (vector((NOW, "s3cr3t-t0ken")), "s3cr3t-t0ken"),
    ],
    ids=["error-echo", "secret-where-the-detail-is-cut", "in-result-type", "in-value"],
)
def test_secrets_never_reach_the_detail(payload: Any, secret: str) -> None:
    detail = classify_response(payload, NOW, SCRAPE, secrets=[secret]).detail
    assert detail
    for n in range(4, len(secret) + 1):  # not even a cut piece of it
        assert secret[:n] not in detail


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("a\nb\t c", [], "a b c"),
        ("token abc123 and abc123", ["abc123"], "token <redacted> and <redacted>"),
        ("pw abcdef", ["abc", "abcdef"], "pw <redacted>"),
        ("nothing", [""], "nothing"),
        ("y" * 500, [], "y" * 239 + "…"),
    ],
    ids=["one-line", "every-occurrence", "longest-first", "empty-secret-ignored", "cut"],
)
def test_redact(text: str, secrets: list[str], expected: str) -> None:
    assert redact(text, secrets) == expected


# ------------------------------------------------------------------------------ fuzz

@settings(
    max_examples=examples(300, "AUTOSCALER_FUZZ_EXAMPLES"),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(payload=json_like | shaped, now=st.floats(allow_nan=False), scrape=st.floats(0, 1e6))
def test_fuzz_never_raises(payload: Any, now: float, scrape: float) -> None:
    signal = classify_response(payload, now, scrape, endpoint=EP, secrets=["hunter22"])
    assert signal.state in set(SignalState)
    assert "\n" not in signal.detail and len(signal.detail) <= 240
    assert "hunter22" not in signal.detail
    if signal.state is OK:
        assert signal.samples and signal.detail == ""
        assert all(math.isfinite(s.value) for s in signal.samples)
        assert [s.t for s in signal.samples] == sorted(s.t for s in signal.samples)
    else:
        assert signal.detail and signal.samples == ()
    json.dumps(signal.detail)  # printable in a JSON decision record
