"""`PrometheusSource` against a real HTTP server on loopback answering generated junk.

Each example sets what the server answers (status code, Content-Type, body — well-formed
Prometheus answers with hostile parts, random JSON, binary, invalid UTF-8, deep nesting, huge
numbers — or a broken exchange: a garbage status line, a body shorter than its
Content-Length, a closed connection, a too-slow answer), then reads an instant and a range
signal through the source's public API. Nothing may escape `read` (every result is a signal
with a state: ok, empty, nan, stale or error), and the signals then go through the pure
evaluation: whatever is not `ok` never lowers (nor changes) the size, and the result stays
within [min, max].

Default: AUTOSCALER_FUZZ_EXAMPLES (60 here) examples; `scripts/reliability fuzz --examples
10000` runs the long version and records its figures in docs/reliability.md.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from autoscaler.config import PrometheusConfig
from autoscaler.decide import TargetRules
from autoscaler.evaluate import evaluate
from autoscaler.model import Signal, SignalState, TargetStatus
from autoscaler.registry import policy_types
from autoscaler.sources import prometheus
from autoscaler.sources.prometheus import PrometheusSource, SignalRequest
from tests.support.loopback import served
from tests.support.strategies import json_like, shaped
from tests.support.tier import examples

EXAMPLES = examples(60, "AUTOSCALER_FUZZ_EXAMPLES")
TIMEOUT = 0.3  # seconds per attempt; a too-slow answer sleeps past it
BUDGET = 0.45  # seconds per read (the tick's deadline): 5xx retries end within it
SECRET = "fuzz-secret-header-value"


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class Answer:
    mode: str  # normal | raw | short | close | slow | then_slow (this answer once, then slow)
    status: int
    content_type: str | None
    body: bytes


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    answer = Answer("normal", 200, "application/json", b"{}")
    requests = 0
    answered = 0  # requests answered since the answer was set (then_slow)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        self.server.requests += 1
        a = self.server.answer
        try:
            if a.mode == "close":
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if a.mode == "raw":  # whatever bytes, as if the peer were not HTTP at all
                self.wfile.write(a.body)
                self.wfile.flush()
                self.close_connection = True
                return
            if a.mode == "slow" or (a.mode == "then_slow" and self.server.answered):
                time.sleep(TIMEOUT * 2)
            self.server.answered += 1
            self.send_response(a.status)
            if a.content_type is not None:
                self.send_header("Content-Type", a.content_type)
            length = len(a.body) + (1000 if a.mode == "short" else 0)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(a.body)
            if a.mode == "short":
                self.close_connection = True
        except OSError:
            pass  # the client gave up first

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with served(Handler, Server) as srv:
        assert isinstance(srv, Server)
        yield srv


@pytest.fixture(scope="module")
def source(server: Server) -> Iterator[PrometheusSource]:
    cfg = PrometheusConfig.model_validate({
        "url": f"http://127.0.0.1:{server.server_address[1]}", "timeout": TIMEOUT,
        "scrape_interval": 15, "headers": {"X-Scope-OrgID": SECRET}})
    with PrometheusSource(cfg) as src:
        yield src


# --------------------------------------------------------------------------- answers

NOW_OFFSETS = st.one_of(st.floats(-5, 5), st.floats(-1e6, 1e6), st.sampled_from([0.0, -29.0,
                                                                                  -31.0, -3600.0]))
number_strings = st.one_of(
    st.sampled_from(["1", "0", "-1", "NaN", "+Inf", "-Inf", "1e308", "1e309", "-1e309",
                     "4.9e-324", "12.5", "99999999999999999999999", "1_000", " 1", "0x10",
                     "infinity", "", "nan", "1e-400"]),
    st.floats().map(repr),
    st.integers().map(str),
)


@st.composite
def plausible(draw: st.DrawFn) -> bytes:
    """A well-shaped answer stamped near now, so the ok, nan and stale paths are reached."""
    now = time.time()
    kind = draw(st.sampled_from(["vector", "matrix", "scalar", "empty", "two-series"]))

    def point() -> list[Any]:
        fresh = st.floats(-10, 1)  # mostly fresh, finite values, so `ok` is common
        value = st.floats(0, 200).map(lambda v: f"{v:.3f}")
        return [now + draw(fresh | fresh | NOW_OFFSETS), draw(value | value | number_strings)]

    if kind == "vector":
        result: Any = [{"metric": {}, "value": point()}]
    elif kind == "matrix":
        result = [{"metric": {"a": "b"},
                   "values": [point() for _ in range(draw(st.integers(0, 6)))]}]
    elif kind == "scalar":
        result = point()
    elif kind == "empty":
        result = []
    else:
        result = [{"metric": {"i": "1"}, "value": point()}, {"metric": {"i": "2"},
                                                              "value": point()}]
    rtype = kind if kind in ("vector", "matrix", "scalar") else draw(
        st.sampled_from(["vector", "matrix"]))
    return json.dumps({"status": "success", "data": {"resultType": rtype, "result": result}},
                      allow_nan=True).encode()


def deep(depth: int) -> bytes:
    return b'{"status": "success", "data": ' + b"[" * depth + b"]" * depth + b"}"


bodies = st.one_of(
    plausible(),
    (json_like | shaped).map(lambda p: json.dumps(p, allow_nan=True).encode()),
    st.binary(max_size=600),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(deep, st.integers(10, 200_000)),
    plausible().map(lambda b: b[: len(b) // 2]),
    plausible().map(lambda b: b.replace(b'"', b"\xff", 1)),
    st.just(b'{"status": "error", "errorType": "bad_data", "error": "parse error: '
            + SECRET.encode() + b'"}'),
)
statuses = st.one_of(
    st.just(200),
    st.sampled_from([100, 204, 206, 301, 302, 304, 400, 401, 403, 404, 422, 429, 500, 502,
                     503, 504]),
    st.integers(200, 599),
)
content_types = st.sampled_from(["application/json", "text/plain; charset=utf-8",
                                 "text/html", "application/octet-stream", None, "\u00e9/x"])
raw_lines = st.one_of(
    st.sampled_from([b"", b"garbage\r\n\r\n", b"HTTP/1.1 200\r\n", b"HTTP/9.9 200 OK\r\n\r\n{}",
                     b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n{}",
                     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                     b"HTTP/1.1 99999 OK\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n"]),
    st.binary(max_size=300),
)
well_formed = st.builds(Answer, st.just("normal"), st.just(200), st.just("application/json"),
                        plausible())
answers = st.one_of(
    well_formed,  # a third of the examples: reach the ok, nan, stale and empty states
    st.builds(Answer, st.just("normal"), statuses, content_types, bodies),
    st.builds(Answer, st.just("raw"), st.just(0), st.none(), raw_lines),
    st.builds(Answer, st.sampled_from(["short", "close", "slow"]), statuses, content_types,
              bodies),
)


# --------------------------------------------------------------------------- the property


def policies() -> list[Any]:
    types = policy_types()
    return [
        # ok values below 30 ask for a scale-down: the property is that nothing else does.
        types["threshold"].model_validate({"type": "threshold", "name": "instant",
                                           "query": "q_instant", "scale_up_above": 70,
                                           "scale_down_below": 30}),
        types["capacity"].model_validate({"type": "capacity", "name": "range",
                                          "query": "q_range", "per_instance": 1,
                                          "headroom": 1.5}),
    ]


RULES = TargetRules(min_replicas=2, max_replicas=10)
CURRENT = 5


@hyp_settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
@given(answer=answers)
def test_fuzz_every_answer_becomes_a_signal_state_and_never_lowers_the_size(
    server: Server, source: PrometheusSource, answer: Answer
) -> None:
    server.answer = answer
    now = time.time()
    asked = [SignalRequest("instant", "q_instant", 0.0), SignalRequest("range", "q_range", 60.0)]
    signals = source.read(asked, now, time.monotonic() + BUDGET)
    assert set(signals) == {"instant", "range"}
    for signal in signals.values():
        assert isinstance(signal, Signal)
        assert signal.state in set(SignalState)
        assert "\n" not in signal.detail and len(signal.detail) <= 240
        assert SECRET not in signal.detail
        if signal.state is SignalState.OK:
            assert signal.samples and all(math.isfinite(s.value) for s in signal.samples)
        else:
            assert signal.detail and not signal.samples
        event(f"{signal.state}")
    pols = policies()
    decision = evaluate(target="fuzz", now=now, status=TargetStatus(CURRENT, CURRENT),
                        policies=pols, policy_signals={p.label: signals[p.label] for p in pols},
                        guards=[], guard_signals={}, rules=RULES)
    assert RULES.min_replicas <= decision.desired <= RULES.max_replicas
    states = {s.state for s in signals.values()}
    if states != {SignalState.OK}:
        assert decision.desired >= CURRENT, "a signal not ok must never lower the size"
    if SignalState.OK not in states:
        assert decision.desired == CURRENT, "with no ok signal the size is held"
        event("no ok signal: held")


def test_the_server_answers_what_the_example_says(server: Server,
                                                   source: PrometheusSource) -> None:
    """The harness itself: a plausible answer reads ok, a 503 reads error (with retries)."""
    now = time.time()
    server.answer = Answer("normal", 200, "application/json", json.dumps(
        {"status": "success", "data": {"resultType": "vector",
                                       "result": [{"metric": {}, "value": [now, "12"]}]}}
    ).encode())
    got = source.read([SignalRequest("k", "q", 0.0)], now, time.monotonic() + 5)["k"]
    assert got.state is SignalState.OK and got.latest == 12.0
    before = server.requests
    server.answer = Answer("normal", 503, "text/plain", b"down")
    got = source.read([SignalRequest("k", "q", 0.0)], now, time.monotonic() + 2)["k"]
    assert got.state is SignalState.ERROR and "HTTP 503" in got.detail
    assert server.requests - before >= 2, "a 5xx is retried within the deadline"


def test_a_deadline_passing_during_retries_names_the_last_error(
        server: Server, source: PrometheusSource, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 503, then a retry still running when the tick's deadline passes: the late signal
    says what went wrong, not only that no answer came (MARGIN < 0 lets the retry outlive
    the deadline, as a starved worker thread does)."""
    monkeypatch.setattr(prometheus, "MARGIN", -0.5)
    server.answered = 0
    server.answer = Answer("then_slow", 503, "text/plain", b"down")
    got = source.read([SignalRequest("k", "q", 0.0)], time.time(), time.monotonic() + 0.35)["k"]
    assert got.state is SignalState.ERROR
    assert "before the tick's deadline; last attempt: HTTP 503" in got.detail, got.detail
    assert SECRET not in got.detail


@pytest.mark.parametrize(("instant", "range_", "desired", "range_state"), [
    (50.0, 1.7e308, CURRENT, SignalState.ERROR),  # capacity: 1.7e308 x 1.5 is +Inf: held
    (80.0, 1.7e308, CURRENT + 1, SignalState.ERROR),  # the other policy still scales up
    (10.0, 1.7e308, CURRENT, SignalState.ERROR),  # ... but nothing scales down
    (50.0, 1e300, RULES.max_replicas, SignalState.OK),  # huge but computable: clamped
], ids=["overflow-held", "overflow-other-up", "overflow-no-down", "huge-clamped"])
def test_a_value_a_policy_cannot_compute_is_not_reported(
    instant: float, range_: float, desired: int, range_state: SignalState
) -> None:
    from autoscaler.model import Sample

    now = time.time()
    pols = policies()
    signals = {"instant": Signal.ok((Sample(now, instant),)),
               "range": Signal.ok((Sample(now, range_),))}
    decision = evaluate(target="t", now=now, status=TargetStatus(CURRENT, CURRENT),
                        policies=pols, policy_signals=signals, guards=[], guard_signals={},
                        rules=RULES)
    assert decision.desired == desired
    by_name = {p.name: p for p in decision.policies}
    assert by_name["range"].state is range_state
    if range_state is SignalState.ERROR:
        assert by_name["range"].replicas is None
        assert "OverflowError" in by_name["range"].reason
