"""`PrometheusSource` against the real Prometheus and against loopback servers that misbehave.

The real Prometheus scrapes a tiny exporter (registered through file_sd) whose values the tests
set; the loopback servers play a Prometheus that is slow, broken, picky about auth, on TLS, or
counting how many queries reach it at once. Deadlines are generous: they say whether a thing
happens, not how fast.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from autoscaler.config import PrometheusConfig
from autoscaler.model import Signal, SignalState
from autoscaler.sources.prometheus import PrometheusSource, SignalRequest
from tests.support.loopback import Loopback, servers
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

OK, EMPTY, NAN, STALE, ERROR = (SignalState.OK, SignalState.EMPTY, SignalState.NAN,
                                SignalState.STALE, SignalState.ERROR)
T = TypeVar("T")
WAIT = 60.0  # generous: how long Prometheus may take to pick up and scrape a target



def vector(value: str = "7") -> bytes:
    """A well-formed one-series instant answer, stamped now (so it is not stale)."""
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [time.time(), value]}]}}).encode()



def config(url: str, **extra: Any) -> PrometheusConfig:
    return PrometheusConfig.model_validate({"url": url, "scrape_interval": 1, **extra})


def read_one(source: PrometheusSource, query: str, window: float = 0.0,
             budget: float = 30.0) -> Signal:
    request = SignalRequest("k", query, window)
    return source.read([request], time.time(), time.monotonic() + budget)["k"]





@pytest.fixture
def loopback() -> Iterator[Callable[..., Loopback]]:
    with servers() as start:
        yield start


# ------------------------------------------------------------------------------ the real Prometheus

@dataclass
class Exporter:
    """A /metrics endpoint scraped by the real Prometheus; `run` labels everything it exports."""

    run: str
    address: str
    target_file: Path
    scrapes: int = 0

    def metrics(self) -> bytes:
        self.scrapes += 1
        return (
            "# TYPE psrc_gauge gauge\n"
            "psrc_gauge 42\n"
            "psrc_nan NaN\n"
            "psrc_inf +Inf\n"
            "psrc_ninf -Inf\n"
            "# TYPE psrc_requests_total counter\n"
            f"psrc_requests_total {self.scrapes}\n"
            'psrc_two{i="a"} 1\n'
            'psrc_two{i="b"} 2\n'
        ).encode()

    def sel(self, metric: str) -> str:
        return f'{metric}{{psrc_run="{self.run}"}}'

    def register(self) -> None:
        tmp = self.target_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [self.address], "labels": {
            "job": "psrc", "psrc_run": self.run, "__metrics_path__": "/metrics"}}]))
        tmp.rename(self.target_file)  # atomic: Prometheus never reads a half-written file


def start_exporter(realenv: RealEnv, loopback: Callable[..., Loopback]) -> Exporter:
    run = uuid.uuid4().hex[:12]
    holder: list[Exporter] = []

    def respond(path: str, *_: Any) -> tuple[int, str, bytes]:
        if path != "/metrics" or not holder:
            return 404, "text/plain", b"not found\n"
        return 200, "text/plain; version=0.0.4", holder[0].metrics()

    server = loopback(respond)
    exporter = Exporter(run, server.url.removeprefix("http://"),
                        realenv.prometheus_file_sd_dir / f"psrc-{run}.json")
    holder.append(exporter)
    exporter.register()
    return exporter


@contextmanager
def registered_exporter(realenv: RealEnv) -> Iterator[Exporter]:
    """An exporter on a free port, in Prometheus' file_sd directory until the end."""
    with servers() as start:
        exp = start_exporter(realenv, start)
        try:
            yield exp
        finally:
            exp.target_file.unlink(missing_ok=True)
            exp.target_file.with_suffix(".tmp").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def source(prometheus_url: str) -> Iterator[PrometheusSource]:
    with PrometheusSource(config(prometheus_url, timeout=10)) as src:
        yield src


@pytest.fixture(scope="module")
def scraped(realenv: RealEnv, source: PrometheusSource) -> Iterator[Exporter]:
    """One exporter for the module, once Prometheus holds a few scrapes of it."""
    with registered_exporter(realenv) as exporter:
        wait_until("a few scrapes of the exporter", lambda: (
            (s := read_one(source, f"count_over_time({exporter.sel('psrc_gauge')}[1m])"))
            .state is OK and (s.latest or 0) >= 3), WAIT)
        yield exporter


def test_ok_with_the_exported_value(source: PrometheusSource, scraped: Exporter) -> None:
    signal = read_one(source, scraped.sel("psrc_gauge"))
    assert signal.state is OK, signal.detail
    assert signal.latest == 42.0
    assert len(signal.samples) == 1
    assert abs(signal.samples[0].t - time.time()) < 5  # an instant result is at `now`


def test_range_query_gives_sorted_samples_over_the_window(
    source: PrometheusSource, scraped: Exporter
) -> None:
    query = scraped.sel("psrc_requests_total")
    give_up = time.monotonic() + 60
    while True:  # the exporter may have been scraped only once or twice so far
        now = time.time()
        signal = source.read([SignalRequest("c", query, 10.0)], now, time.monotonic() + 30)["c"]
        if (signal.state is OK and len(signal.samples) >= 3) or time.monotonic() > give_up:
            break
        time.sleep(1)
    assert signal.state is OK, signal.detail
    assert len(signal.samples) >= 3
    times = [s.t for s in signal.samples]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert now - 11 <= times[0] and times[-1] <= now + 1
    values = [s.value for s in signal.samples]
    assert values == sorted(values)  # the counter only goes up
    assert values[-1] > values[0]


@pytest.mark.parametrize(
    ("metric", "window", "state", "detail"),
    [
        ("psrc_does_not_exist", 0.0, EMPTY, "no series"),
        ("psrc_does_not_exist", 30.0, EMPTY, "no series"),
        ("psrc_nan", 0.0, NAN, "NaN or ±Inf"),
        ("psrc_inf", 0.0, NAN, "NaN or ±Inf"),
        ("psrc_ninf", 0.0, NAN, "NaN or ±Inf"),
        ("psrc_nan", 5.0, NAN, "NaN or ±Inf"),
        ("psrc_two", 0.0, ERROR, "returned 2 series; aggregate it with sum/avg/max"),
        ("psrc_two", 5.0, ERROR, "returned 2 series; aggregate it with sum/avg/max"),
    ],
    ids=["empty-instant", "empty-range", "nan", "plus-inf", "minus-inf", "nan-range",
         "two-series-instant", "two-series-range"],
)
def test_states_from_the_real_prometheus(
    source: PrometheusSource, scraped: Exporter, metric: str, window: float,
    state: SignalState, detail: str
) -> None:
    signal = read_one(source, scraped.sel(metric), window)
    assert signal.state is state
    assert detail in signal.detail
    assert signal.samples == ()


@pytest.mark.parametrize(
    ("query", "value"),
    [("sum({})", 3.0), ("max({})", 2.0), ("count({})", 2.0)],
    ids=["sum", "max", "count"],
)
def test_aggregating_two_series_is_ok(
    source: PrometheusSource, scraped: Exporter, query: str, value: float
) -> None:
    signal = read_one(source, query.format(scraped.sel("psrc_two")))
    assert signal.state is OK, signal.detail
    assert signal.latest == value


def test_scalar_result_is_ok(source: PrometheusSource, scraped: Exporter) -> None:
    signal = read_one(source, f"scalar({scraped.sel('psrc_gauge')}) * 2")
    assert signal.state is OK, signal.detail
    assert signal.latest == 84.0


@pytest.mark.parametrize(
    ("query", "window", "said"),
    [
        ("sum(", 0.0, "parse error"),
        ("rate(psrc_gauge)", 0.0, "expected type range vector"),
        ("sum(", 30.0, "parse error"),
    ],
    ids=["syntax-instant", "type-error", "syntax-range"],
)
def test_promql_errors_carry_prometheus_message(
    source: PrometheusSource, prometheus_url: str, query: str, window: float, said: str
) -> None:
    started = time.monotonic()
    signal = read_one(source, query, window)
    assert signal.state is ERROR
    assert said in signal.detail
    assert "HTTP 400" in signal.detail
    assert prometheus_url in signal.detail
    assert time.monotonic() - started < 10  # a 4xx is final: no retries until the deadline


def test_identical_requests_share_one_answer(source: PrometheusSource, scraped: Exporter) -> None:
    query = scraped.sel("psrc_gauge")
    requests = [SignalRequest("a", query, 0), SignalRequest("b", query, 0),
                SignalRequest("c", query, 5)]
    signals = source.read(requests, time.time(), time.monotonic() + 30)
    assert set(signals) == {"a", "b", "c"}
    assert signals["a"] is signals["b"]
    assert signals["c"].state is OK and len(signals["c"].samples) > 1


def test_a_target_that_vanished_reads_stale_then_empty(
    source: PrometheusSource, realenv: RealEnv
) -> None:
    with registered_exporter(realenv) as exp:
        query = exp.sel("psrc_gauge")
        wait_until("the exporter to be scraped", lambda: read_one(source, query, 30).state is OK,
                   WAIT)
    # Prometheus marks the series stale when the target goes: the range ends, instants vanish.
    def stale() -> Signal | None:
        signal = read_one(source, query, 30)
        return signal if signal.state is STALE else None

    assert "old" in wait_until("the range signal to go stale", stale, WAIT).detail
    assert wait_until("the instant signal to go empty",
                      lambda: read_one(source, query).state is EMPTY, WAIT)


def test_check_reachable_on_the_real_prometheus(source: PrometheusSource) -> None:
    assert source.check_reachable(time.monotonic() + 10) is None


# ------------------------------------------------------------------------------ transport failures

@pytest.mark.parametrize("window", [0.0, 30.0], ids=["instant", "range"])
def test_closed_port_is_an_error_naming_the_endpoint(window: float) -> None:
    port = free_port()
    url = f"http://scott:tiger-pw@127.0.0.1:{port}"
    with PrometheusSource(config(url, timeout=1)) as src:
        started = time.monotonic()
        signal = read_one(src, "up", window, budget=1.5)
        elapsed = time.monotonic() - started
        reason = src.check_reachable(time.monotonic() + 2)
    assert signal.state is ERROR
    assert f"http://127.0.0.1:{port}/api/v1/" in signal.detail
    assert "connection refused" in signal.detail
    assert "attempts" in signal.detail  # refused is transient: retried within the deadline
    assert elapsed < 1.5 + 1
    assert reason is not None and f"127.0.0.1:{port}" in reason
    assert "tiger-pw" not in signal.detail + reason


def test_a_server_slower_than_the_timeout(loopback: Callable[..., Loopback]) -> None:
    server: Loopback

    def slow(*_: Any) -> tuple[int, str, bytes]:
        server.release.wait(30)
        return 200, "application/json", vector()

    server = loopback(slow)
    with PrometheusSource(config(server.url, timeout=0.5)) as src:
        deadline = time.monotonic() + 2.0
        signals = src.read([SignalRequest("a", "up", 0), SignalRequest("b", "up", 60)],
                           time.time(), deadline)
        returned = time.monotonic()
    assert returned < deadline + 1
    for signal in signals.values():
        assert signal.state is ERROR
        assert "timed out after" in signal.detail
        assert server.url in signal.detail
    assert len(server.seen.requests) >= 4  # a timeout is transient: retried within the deadline


def test_read_returns_by_the_deadline_even_when_every_worker_is_stuck(
    loopback: Callable[..., Loopback],
) -> None:
    server: Loopback

    def slow(*_: Any) -> tuple[int, str, bytes]:
        server.release.wait(30)
        return 200, "application/json", vector()

    server = loopback(slow)
    with PrometheusSource(config(server.url, timeout=20, max_concurrent_queries=2)) as src:
        deadline = time.monotonic() + 1.0
        requests = [SignalRequest(f"k{i}", f"q{i}", 0) for i in range(6)]
        signals = src.read(requests, time.time(), deadline)
        assert time.monotonic() < deadline + 1
    assert set(signals) == {f"k{i}" for i in range(6)}
    assert all(s.state is ERROR for s in signals.values())
    assert any("before the tick's deadline" in s.detail for s in signals.values())


GARBAGE: dict[str, tuple[int, str, bytes]] = {
    "text": (200, "text/plain", b"hello, I am not Prometheus\n"),
    "html": (200, "text/html", b"<html><body><h1>Login</h1></body></html>"),
    "truncated": (200, "application/json", vector()[:40]),
    "empty-body": (200, "application/json", b""),
    "binary": (200, "application/octet-stream", bytes(range(256))),
    "deep": (200, "application/json", b"[" * 100_000 + b"]" * 100_000),
    "wrong-shape": (200, "application/json", b'{"status": "success", "data": []}'),
    "string-result": (200, "application/json", json.dumps({"status": "success", "data": {
        "resultType": "string", "result": [0, "x"]}}).encode()),
    "500-json": (500, "application/json",
                 b'{"status":"error","errorType":"internal","error":"storage is on fire"}'),
    "500-html": (500, "text/html", b"<html>Internal Server Error</html>"),
    "502": (502, "text/html", b"<html>Bad Gateway</html>"),
    "401": (401, "text/plain", b"Unauthorized"),
    "404": (404, "text/plain", b"404 page not found"),
    "422": (422, "application/json",
            b'{"status":"error","errorType":"execution","error":"many-to-many matching"}'),
    "204": (204, "application/json", b""),
}


@pytest.mark.parametrize(
    ("mode", "detail", "retried"),
    [
        ("text", "is not JSON (text/plain)", False),
        ("html", "is not JSON (text/html)", False),
        ("truncated", "is not JSON", False),
        ("empty-body", "is not JSON", False),
        ("binary", "is not JSON", False),
        ("deep", "is not JSON", False),
        ("wrong-shape", "no 'data' object", False),
        ("string-result", "resultType 'string' is not vector, matrix or scalar", False),
        ("500-json", "HTTP 500 from {url}/api/v1/query: storage is on fire", True),
        ("500-html", "HTTP 500 from {url}/api/v1/query", True),
        ("502", "HTTP 502 from {url}/api/v1/query", True),
        ("401", "HTTP 401 from {url}/api/v1/query", False),
        ("404", "HTTP 404 from {url}/api/v1/query", False),
        ("422", "HTTP 422 from {url}/api/v1/query: many-to-many matching", False),
        ("204", "is not JSON", False),
    ],
    ids=list(GARBAGE),
)
def test_garbage_answers_are_errors(
    loopback: Callable[..., Loopback], mode: str, detail: str, retried: bool
) -> None:
    server = loopback(lambda path, query, headers: GARBAGE[query["query"][0]])
    with PrometheusSource(config(server.url, timeout=2)) as src:
        deadline = time.monotonic() + 1.5
        signal = read_one(src, mode, budget=1.5)
        assert time.monotonic() < deadline + 1
    assert signal.state is ERROR
    assert detail.format(url=server.url) in signal.detail
    assert server.url in signal.detail
    assert (len(server.seen.requests) > 1) is retried  # only 5xx is worth another attempt


# ------------------------------------------------------------------------------ auth and headers

def echo_auth(path: str, query: dict[str, list[str]], headers: dict[str, str]
              ) -> tuple[int, str, bytes]:
    """A proxy that says no and echoes the credentials it was sent (the worst case)."""
    said = f"denied: authorization={headers.get('authorization')} for {path}"
    return 403, "application/json", json.dumps({"status": "error", "error": said}).encode()


def test_bearer_token_is_read_at_every_tick_and_never_shown(
    loopback: Callable[..., Loopback], tmp_path: Path
) -> None:
    server = loopback(echo_auth)
    token_file = tmp_path / "token"
    token_file.write_text("  first-t0ken-abc\n")
    cfg = config(server.url, bearer_token_file=token_file,
                 headers={"X-Scope-OrgID": "tenant-7", "X-Extra": "yes"})
    with PrometheusSource(cfg) as src:
        first = read_one(src, "up", budget=5)
        token_file.write_text("second-t0ken-xyz")
        second = read_one(src, "up", 30, budget=5)
        reachable = src.check_reachable(time.monotonic() + 5)
        token_file.unlink()
        missing = read_one(src, "up", budget=5)
        missing_ready = src.check_reachable(time.monotonic() + 5)

    sent = [headers for _, _, headers in server.seen.requests]
    assert [h["authorization"] for h in sent] == [
        "Bearer first-t0ken-abc", "Bearer second-t0ken-xyz", "Bearer second-t0ken-xyz"]
    assert all(h["x-scope-orgid"] == "tenant-7" and h["x-extra"] == "yes" for h in sent)
    assert first.state is ERROR and second.state is ERROR
    assert "HTTP 403" in first.detail and "<redacted>" in first.detail
    assert reachable is not None and "HTTP 403" in reachable
    assert missing.state is ERROR
    assert str(token_file) in missing.detail and "bearer_token_file" in missing.detail
    assert missing_ready is not None and str(token_file) in missing_ready
    assert len(server.seen.requests) == 3  # no request without the token
    for text in (first.detail, second.detail, reachable, missing.detail, missing_ready):
        assert "t0ken" not in text and "tenant-7" not in text


def test_basic_auth_password_is_read_from_its_file_and_never_shown(
    loopback: Callable[..., Loopback], tmp_path: Path
) -> None:
    server = loopback(echo_auth)
    password_file = tmp_path / "password"
    password_file.write_text("pässw0rd-one\n")
    cfg = config(server.url, basic_auth={"username": "autoscaler",
                                         "password_file": str(password_file)})
    with PrometheusSource(cfg) as src:
        first = read_one(src, "up", budget=5)
        password_file.write_text("pässw0rd-two")
        second = read_one(src, "up", budget=5)

    def basic(password: str) -> str:
        return "Basic " + base64.b64encode(f"autoscaler:{password}".encode()).decode()

    assert [h["authorization"] for _, _, h in server.seen.requests] == [
        basic("pässw0rd-one"), basic("pässw0rd-two")]
    for signal, password in ((first, "pässw0rd-one"), (second, "pässw0rd-two")):
        assert signal.state is ERROR and "HTTP 403" in signal.detail
        assert "pässw0rd" not in signal.detail
        # The echoed header carries user:password in base64: as good as the password.
        assert basic(password).split()[1] not in signal.detail
        assert "<redacted>" in signal.detail


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "No such file or directory"), ("", "is empty"), ("   \n", "is empty"),
     ("tok-123\nzq9x", "control characters"), (b"tok-123\xff\xfe", "not UTF-8")],
    ids=["missing", "empty", "blank", "line-break-inside", "not-utf8"],
)
def test_unusable_secret_files_are_errors_naming_the_file(
    loopback: Callable[..., Loopback], tmp_path: Path, content: str | bytes | None, problem: str
) -> None:
    server = loopback(echo_auth)
    secret = tmp_path / "secret"
    if isinstance(content, bytes):
        secret.write_bytes(content)
    elif content is not None:
        secret.write_text(content)
    with PrometheusSource(config(server.url, bearer_token_file=secret)) as src:
        signal = read_one(src, "up", budget=5)
    assert signal.state is ERROR
    assert str(secret) in signal.detail and problem in signal.detail
    assert "tok-123" not in signal.detail and "zq9x" not in signal.detail
    assert server.seen.requests == []


# ------------------------------------------------------------------------------ TLS

@pytest.mark.parametrize(
    ("settings", "state", "detail"),
    [
        ({}, ERROR, "TLS certificate verification failed"),
        ({"verify_tls": True}, ERROR, "TLS certificate verification failed"),
        ({"ca_file": "CERT"}, OK, ""),
        ({"verify_tls": False}, OK, ""),
    ],
    ids=["verify-default-no-ca", "verify-on-no-ca", "ca-file", "verify-off"],
)
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_with_a_self_signed_certificate(
    loopback: Callable[..., Loopback], self_signed: tuple[Path, Path],
    settings: dict[str, Any], state: SignalState, detail: str
) -> None:
    cert, key = self_signed
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = loopback(lambda *_: (200, "application/json", vector()), tls=tls)
    settings = {k: (str(cert) if v == "CERT" else v) for k, v in settings.items()}
    with PrometheusSource(config(server.url, timeout=5, **settings)) as src:
        started = time.monotonic()
        signal = read_one(src, "up", budget=10)
        elapsed = time.monotonic() - started
        reachable = src.check_reachable(time.monotonic() + 5)
    assert signal.state is state, signal.detail
    assert detail in signal.detail
    if state is OK:
        assert signal.latest == 7.0
        assert reachable is None
    else:
        assert server.url in signal.detail
        assert elapsed < 5  # a bad certificate stays bad: not retried until the deadline
        assert reachable is not None and "TLS certificate verification failed" in reachable


# ------------------------------------------------------------------------------ concurrency

@pytest.mark.parametrize("limit", [1, 4, 8], ids=["one", "four", "eight"])
def test_queries_run_concurrently_up_to_the_limit(
    loopback: Callable[..., Loopback], limit: int
) -> None:
    def answer(*_: Any) -> tuple[int, str, bytes]:
        time.sleep(0.1)  # long enough for every worker to be in flight at once
        return 200, "application/json", vector()

    server = loopback(answer)
    # 50 requests, 40 distinct (query, window) pairs: the 10 repeats are not sent again.
    requests = [SignalRequest(f"k{i}", f"q{i % 40}", 0) for i in range(50)]
    with PrometheusSource(config(server.url, timeout=30,
                                 max_concurrent_queries=limit)) as src:
        signals = src.read(requests, time.time(), time.monotonic() + 60)
    assert set(signals) == {f"k{i}" for i in range(50)}
    assert all(s.state is OK and s.latest == 7.0 for s in signals.values())
    assert len(server.seen.requests) == 40
    assert sorted(q["query"][0] for _, q, _ in server.seen.requests) == sorted(
        f"q{i}" for i in range(40))
    assert server.seen.peak == limit
