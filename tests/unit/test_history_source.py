"""The source's history reads (seasonal), against a loopback HTTP server playing Prometheus:
chunked first load in its own thread, one small extension per tick, failures as "no
opinion" with an ok state, the query offset, reloads and memory. The real Prometheus test is
tests/integration/test_seasonal_history.py."""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from autoscaler.config import PrometheusConfig
from autoscaler.loop import with_history
from autoscaler.model import (
    History,
    PolicyContext,
    Sample,
    Signal,
    SignalKind,
    SignalRequest,
    SignalState,
)
from autoscaler.sources import history as history_mod
from autoscaler.sources.history import CHUNK_POINTS, spans
from autoscaler.sources.prometheus import Garbage, PrometheusSource, parse_matrix
from autoscaler.sources.stalwart_api import RoutedSource
from policies.seasonal import SeasonalPolicy
from tests.support.loopback import Loopback, servers

QUERY = "sum(rate(queue_queue_message[5m])) * 3600"
STEP = 60.0
DAY = 86400.0
NOW = 1_800_000_000.0  # on the 60 s grid
PERIOD = 3600.0


def value_at(t: float) -> float:
    """An hourly burst: 50,000/h for 10 minutes from the top of each hour, else 1,000/h."""
    return 50_000.0 if t % PERIOD < 600 else 1_000.0


class FakePrometheus:
    """Answers instant queries with the value at `time`, range queries with the grid points
    of [start, end]; can be held (a slow load), fail, or answer garbage."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | error | garbage | two-series
        self.hold = threading.Event()
        self.hold.set()
        self.oldest = 0.0  # retention: no point before this

    def respond(self, path: str, query: dict[str, list[str]],
                headers: dict[str, str]) -> tuple[int, str, bytes]:
        import json

        if path.endswith("/query"):
            t = float(query["time"][0])
            body = {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": [t, str(value_at(t))]}]}}
            return 200, "application/json", json.dumps(body).encode()
        self.hold.wait(30)
        if self.mode == "error":
            return 503, "application/json", b'{"status":"error","error":"overloaded"}'
        if self.mode == "garbage":
            return 200, "application/json", b'{"status":"success","data":{"resultType":"x"}}'
        start, end, step = (float(query[k][0]) for k in ("start", "end", "step"))
        points = []
        t = start
        while t <= end + 1e-9:
            if t >= self.oldest:
                points.append([t, str(value_at(t))])
            t += step
        series = [{"metric": {}, "values": points}] if points else []
        if self.mode == "two-series":
            series = series * 2
        body = {"status": "success", "data": {"resultType": "matrix", "result": series}}
        return 200, "application/json", json.dumps(body).encode()


@pytest.fixture
def fake() -> Iterator[tuple[FakePrometheus, Loopback]]:
    prom = FakePrometheus()
    with servers() as start:
        server = start(prom.respond)
        yield prom, server
        prom.hold.set()


def source_for(url: str, **extra: Any) -> PrometheusSource:
    return PrometheusSource(PrometheusConfig(url=url, scrape_interval=15, timeout=2,
                                             query_offset=extra.pop("query_offset", 0),
                                             **extra))


def ranges(server: Loopback) -> list[dict[str, list[str]]]:
    with server.seen.lock:
        return [q for path, q, _ in server.seen.requests if path.endswith("/query_range")]


REQUESTS = [SignalRequest("live", QUERY, 0.0),
            SignalRequest("past", QUERY, 8 * DAY, SignalKind.HISTORY)]


def read(source: PrometheusSource, now: float,
         requests: Sequence[SignalRequest] = REQUESTS) -> dict[str, Signal]:
    return source.read(requests, now, time.monotonic() + 5)


def loaded(source: PrometheusSource, now: float, timeout: float = 30,
           requests: Sequence[SignalRequest] = REQUESTS) -> dict[str, Signal]:
    """Read until the history of "past" is in (its load runs in the source's own thread)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = read(source, now, requests)
        if got["past"].history is not None:
            return got
        time.sleep(0.05)
    raise AssertionError(f"history never loaded: {got['past'].detail}")


def test_first_load_is_chunked_under_the_point_limit_and_never_waits(fake: Any) -> None:
    prom, server = fake
    prom.hold.clear()  # the load hangs: the tick must not
    with source_for(server.url) as source:
        got = read(source, NOW)
        assert got["live"].state is SignalState.OK  # the live read is not held up
        assert got["past"].state is SignalState.OK
        assert got["past"].history is None
        assert "history loading" in got["past"].detail
        prom.hold.set()
        got = loaded(source, NOW)
    history = got["past"].history
    assert history is not None
    asked = ranges(server)
    assert len(asked) == len(spans(NOW - 8 * DAY, NOW, STEP, CHUNK_POINTS))
    for q in asked:
        points = (float(q["end"][0]) - float(q["start"][0])) / float(q["step"][0]) + 1
        assert points <= CHUNK_POINTS < 11_000
        assert float(q["step"][0]) == STEP
    assert len(history.t) == 8 * 1440 + 1
    assert history.t[0] == NOW - 8 * DAY and history.t[-1] == NOW
    assert all(b - a == STEP for a, b in zip(history.t, history.t[1:], strict=False))


def test_steady_state_one_small_range_query_per_tick_only_new_points(fake: Any) -> None:
    _prom, server = fake
    with source_for(server.url) as source:
        got = loaded(source, NOW)
        history = got["past"].history
        assert history is not None
        before = len(ranges(server))
        now = NOW
        for _ in range(16):  # 4 minutes of 15 s ticks
            now += 15
            got = read(source, now)
            assert got["past"].history is history  # the same arrays, grown at the end
        asked = ranges(server)[before:]
    assert len(asked) <= 16  # at most one per tick...
    assert len(asked) == 4  # ...and only when a grid point is due
    for q in asked:
        assert float(q["start"][0]) == float(q["end"][0])  # one new point each
    assert list(history.t[-5:]) == [NOW + i * STEP for i in range(5)]
    assert len(set(history.t)) == len(history.t)


def test_extension_respects_the_query_offset(fake: Any) -> None:
    _prom, server = fake
    with source_for(server.url, query_offset=30) as source:
        got = loaded(source, NOW + 45)  # evaluated at NOW + 15: the grid ends at NOW
        history = got["past"].history
        assert history is not None and history.t[-1] == NOW
        read(source, NOW + 75)  # evaluated at NOW + 45: nothing new on the grid
        assert history.t[-1] == NOW
        read(source, NOW + 95)  # evaluated at NOW + 65
        assert history.t[-1] == NOW + STEP


@pytest.mark.parametrize("mode", ["error", "garbage", "two-series"])
def test_a_failing_load_is_no_opinion_with_an_ok_state_and_retried(
        fake: Any, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    prom, server = fake
    prom.mode = mode
    monkeypatch.setattr(history_mod, "RETRY_FIRST", 0.3)
    policy = SeasonalPolicy(query=QUERY, periods=[PERIOD], lead=120)
    with source_for(server.url) as source:
        read(source, NOW)
        deadline = time.monotonic() + 20
        while "unavailable" not in (got := read(source, NOW))["past"].detail:
            assert time.monotonic() < deadline, got["past"].detail
            time.sleep(0.05)
        assert got["past"].state is SignalState.OK and got["past"].history is None
        signal = with_history(got["live"], got["past"])
        assert signal.state is SignalState.OK  # never blocks a scale-down
        rec = policy.recommend(signal, PolicyContext(current=2))
        assert rec.replicas is None and "no opinion" in rec.reason
        assert "retry in" in rec.reason
        prom.mode = "ok"  # Prometheus is back: the load is retried after the backoff
        assert loaded(source, NOW)["past"].history is not None


def test_a_failing_extension_keeps_the_history(fake: Any) -> None:
    prom, server = fake
    with source_for(server.url) as source:
        history = loaded(source, NOW)["past"].history
        assert history is not None
        n = len(history.t)
        prom.mode = "error"
        got = read(source, NOW + STEP)
        assert got["past"].history is history and len(history.t) == n
        prom.mode = "ok"
        read(source, NOW + STEP)
        assert len(history.t) == n + 1


def test_retention_cut_short_is_handed_over_as_it_is(fake: Any) -> None:
    prom, server = fake
    prom.oldest = NOW - 2 * DAY
    with source_for(server.url) as source:
        got = loaded(source, NOW)
    history = got["past"].history
    assert history is not None and history.t[0] == NOW - 2 * DAY
    assert "2.0 of 8 days" in got["past"].detail


def test_seasonal_forecasts_the_burst_from_the_loaded_history(fake: Any) -> None:
    _prom, server = fake
    policy = SeasonalPolicy(query=QUERY, periods=[PERIOD, DAY], lead=120)
    now = NOW - NOW % PERIOD + PERIOD - 180  # three minutes before the next burst
    with source_for(server.url) as source:
        got = loaded(source, now)
    rec = policy.recommend(with_history(got["live"], got["past"]), PolicyContext(current=1))
    assert rec.replicas == 6, rec.reason  # ceil(50,000 / 10,000 x 1.1)
    assert "period 1h" in rec.reason


def test_reload_keeps_histories_still_read_and_drops_the_others(fake: Any) -> None:
    _prom, server = fake
    other = SignalRequest("other", "sum(smtp_active_connections)", 8 * DAY, SignalKind.HISTORY)
    with source_for(server.url) as source:
        loaded(source, NOW)
        deadline = time.monotonic() + 30
        while source.read([other], NOW, time.monotonic() + 5)["other"].history is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(source.history.keys()) == 2
        source.retain_history({(QUERY, STEP)})
        assert source.history.keys() == [(QUERY, STEP)]
        before = len(ranges(server))
        assert read(source, NOW)["past"].history is not None  # kept: no reload
        assert len(ranges(server)) == before


def test_memory_of_fifteen_days_is_under_a_megabyte(fake: Any) -> None:
    _prom, server = fake
    request = SignalRequest("past", QUERY, 15 * DAY, SignalKind.HISTORY)
    with source_for(server.url) as source:
        got = loaded(source, NOW, requests=[request])
    history = got["past"].history
    assert history is not None and len(history.t) == 15 * 1440 + 1
    size = sys.getsizeof(history.t) + sys.getsizeof(history.v)
    assert size < 1_000_000, size


def test_arrays_are_trimmed_past_the_slack(fake: Any) -> None:
    _prom, server = fake
    request = SignalRequest("past", QUERY, 0.5 * DAY, SignalKind.HISTORY)
    with source_for(server.url) as source:
        first = loaded(source, NOW, requests=[request])["past"].history
        assert first is not None
        now = NOW
        for _ in range(25):  # 10 new points a read, one range query each
            now += 10 * STEP
            got = source.read([request], now, time.monotonic() + 5)
        last = got["past"].history
    assert last is not None and last is not first  # new arrays: the policy learns afresh
    assert len(last.t) <= 720 * 1.25 + 1
    assert last.t[-1] == now


def test_with_history_keeps_the_live_state() -> None:
    live = Signal.ok((Sample(NOW, 5.0),))
    past = Signal(SignalState.OK, (), "", History(*([],) * 2))  # type: ignore[arg-type]
    assert with_history(live, past).history is past.history
    assert with_history(live, None) is live
    bad = Signal.bad(SignalState.STALE, "old")
    assert with_history(bad, past) is bad
    loading = with_history(live, Signal(SignalState.OK, (), "history loading (1/9 chunks)"))
    assert loading.state is SignalState.OK and loading.history is None
    assert loading.history_detail == "history loading (1/9 chunks)"
    # the live read's own words (a backend's warning) stay the signal's detail beside it
    warned = Signal(SignalState.OK, (Sample(NOW, 5.0),), "partial response from a store")
    loading = with_history(warned, Signal(SignalState.OK, (), "history unavailable: HTTP 503"))
    assert loading.detail == "partial response from a store"
    assert loading.history_detail == "history unavailable: HTTP 503"


def test_the_management_api_answers_history_reads_without_history() -> None:
    class Never:
        def read(self, requests_: Any, now: float, deadline: float,
                 on_signals: Any = None) -> dict[str, Signal]:
            return {r.key: Signal.ok((Sample(now, 1.0),)) for r in requests_}

        def check_reachable(self, deadline: float) -> str | None:
            return None

        def close(self) -> None:
            return None

        def retain_history(self, keep: Any) -> None:
            return None

    routed = RoutedSource(Never())  # type: ignore[arg-type]
    got = routed.read([SignalRequest("h", "stalwart_queue_total", 8 * DAY, SignalKind.HISTORY)],
                      NOW, time.monotonic() + 1)
    assert got["h"].state is SignalState.OK and got["h"].history is None
    assert "management API" in got["h"].detail


@pytest.mark.parametrize("payload", [
    None, [], {"status": "error"}, {"status": "success", "isPartial": True},
    {"status": "success", "data": {"resultType": "vector", "result": []}},
    {"status": "success", "data": {"resultType": "matrix", "result": [{"values": [[1]]}]}},
    {"status": "success", "data": {"resultType": "matrix", "result": [{"values": [["x", "1"]]}]}},
])
def test_garbage_is_refused(payload: Any) -> None:
    with pytest.raises(Garbage):
        parse_matrix(payload)


def test_non_finite_points_are_left_out() -> None:
    payload = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"values": [[2, "1"], [1, "NaN"], [3, "+Inf"], [4, "2"]]}]}}
    assert parse_matrix(payload) == [(2.0, 1.0), (4.0, 2.0)]


def test_engine_asks_a_history_read_per_learning_policy_and_reload_keeps_it() -> None:
    from autoscaler.config import load_config_data
    from autoscaler.loop import Engine
    from autoscaler.telemetry import Telemetry
    from tests.unit.test_reload import Backend, FakeSource

    class Recording(FakeSource):
        def __init__(self) -> None:
            super().__init__({QUERY: 1000.0, "load": 1000.0})
            self.asked: list[SignalRequest] = []
            self.kept: list[set[tuple[str, float]]] = []

        def read(self, requests: Any, now: float, deadline: float,
                 on_signals: Any = None) -> dict[str, Signal]:
            self.asked = list(requests)
            out = super().read([r for r in requests if r.kind is SignalKind.LIVE], now,
                               deadline, on_signals)
            out.update({r.key: Signal(SignalState.OK, (), "history loading (0/9 chunks)")
                        for r in requests if r.kind is SignalKind.HISTORY})
            return out

        def retain_history(self, keep: Any) -> None:
            self.kept.append(set(keep))

    def cfg(with_seasonal: bool) -> Any:
        policies: list[dict[str, Any]] = [
            {"type": "capacity", "query": "load", "per_instance": 10000}]
        if with_seasonal:
            policies.append({"type": "seasonal", "query": QUERY, "periods": ["1h", "1d"]})
        return load_config_data({
            "evaluation_interval": "1s", "prometheus": {"url": "http://127.0.0.1:9"},
            "targets": [{"name": "smtp", "backend": "swarm", "service": "smtp",
                         "min_replicas": 1, "max_replicas": 5, "policies": policies}]},
            environ={})

    source = Recording()
    engine = Engine(cfg(True), source=source, actuator_factory=Backend(1).factory,
                    telemetry=Telemetry())
    try:
        [outcome] = engine.tick()
        past = [r for r in source.asked if r.kind is SignalKind.HISTORY]
        assert [(r.query, r.window) for r in past] == [(QUERY, 8 * DAY)]
        assert outcome.decision is not None
        seasonal = next(p for p in outcome.decision.policies if p.type == "seasonal")
        assert seasonal.state is SignalState.OK and seasonal.replicas is None
        assert "history loading (0/9 chunks): no opinion" in seasonal.reason
        assert "history" not in seasonal.warnings  # the load's state is no backend warning
        engine.reload(cfg(True))
        assert source.kept[-1] == {(QUERY, STEP)}
        engine.reload(cfg(False))
        assert source.kept[-1] == set()
    finally:
        engine.close()


def test_backtest_feeds_the_real_history_before_its_range(fake: Any) -> None:
    from autoscaler.config import load_config_data
    from autoscaler.replay.backtest import run_backtest

    _prom, server = fake
    settings = load_config_data({
        "evaluation_interval": "60s",
        "prometheus": {"url": server.url, "timeout": "5s", "scrape_interval": "60s"},
        "targets": [{"name": "smtp", "backend": "swarm", "service": "smtp",
                     "min_replicas": 1, "max_replicas": 10,
                     "policies": [{"type": "seasonal", "query": QUERY, "periods": ["1h", "1d"],
                                   "history": "2d", "lead": "120s"}]}]}, environ={})
    top = NOW - NOW % PERIOD + PERIOD  # a burst starts here
    start, end = top - 1800, top - 60
    with source_for(server.url) as source:
        result = run_backtest(settings, settings.targets[0], start, end, 1, source,
                              stream=io.StringIO())
    asked = [q for q in ranges(server) if float(q["step"][0]) == STEP]
    assert asked and min(float(q["start"][0]) for q in asked) == start - 2 * DAY
    assert max(float(q["end"][0]) for q in asked) <= end  # never past the range
    assert not result.summary["gaps"]
    rows = result.timeline
    assert rows[0]["replicas"] == 1  # half an hour before: no burst ahead
    ahead = [r for r in rows if r["replicas"] == 6]  # ceil(50,000 / 10,000 x 1.1)
    assert ahead, [r["replicas"] for r in rows]
    assert all(r["t"] < top and r["values"]["seasonal"] == 1000.0 for r in ahead)


def test_a_one_shot_command_waits_for_the_load_within_its_own_deadline(fake: Any) -> None:
    _prom, server = fake
    config = PrometheusConfig(url=server.url, scrape_interval=15, timeout=2, query_offset=0)
    with PrometheusSource(config, wait_for_history=True) as source:
        got = read(source, NOW)  # explain, run --once: one read, the history in it
    assert got["past"].history is not None and len(got["past"].history.t) == 8 * 1440 + 1


def test_a_load_past_its_budget_is_dropped_and_retried(
        fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    prom, server = fake
    # The retry must not be due before the test has read the failure: with a retry due at
    # once, a read could start the next load, which succeeds, before it saw "unavailable".
    monkeypatch.setattr(history_mod, "RETRY_FIRST", 2.0)
    prom.hold.clear()
    with source_for(server.url) as source:
        source.history.load_budget = 0.5  # the first chunk is held past it
        read(source, NOW)
        time.sleep(1.0)
        prom.hold.set()
        deadline = time.monotonic() + 20
        while "unavailable" not in (got := read(source, NOW))["past"].detail:
            assert time.monotonic() < deadline, got["past"].detail
            time.sleep(0.05)
        assert "budget" in got["past"].detail or "timed out" in got["past"].detail
        source.history.load_budget = 300.0
        assert loaded(source, NOW)["past"].history is not None


def test_close_waits_a_bounded_time_and_a_load_it_stopped_is_no_warning(
        fake: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop never hangs on a load in flight (a slow Prometheus), and the load it stops
    says nothing above debug: the stop's own doing is no news for the operator."""
    monkeypatch.setattr(history_mod, "CLOSE_WAIT", 0.3)
    prom, server = fake
    prom.hold.clear()  # the first chunk is held
    source = source_for(server.url)
    read(source, NOW)
    entry = source.history.entry(QUERY, STEP)
    assert entry is not None
    loading = entry.loading
    assert loading is not None
    with caplog.at_level(logging.DEBUG, logger="autoscaler.sources.history"):
        started = time.monotonic()
        source.close()
        took = time.monotonic() - started
        assert took < 0.3 + 1.0  # no longer than CLOSE_WAIT (and a little)
        prom.hold.set()
        loading.result(timeout=30)  # the held chunk answers; the load sees the close
        assert source.history.join(0.0)
    stopped = [r for r in caplog.records if "not loaded" in r.getMessage()]
    assert stopped and all(r.levelno == logging.DEBUG for r in stopped), stopped
    assert entry.history is None


def test_a_prometheus_change_reading_the_same_series_keeps_the_loaded_histories(
        fake: Any) -> None:
    """A reload that changes the `prometheus` block gets a new source; one that reads the
    same series (here: a timeout) takes the loaded history over instead of loading days again,
    one that reads other series (another URL; a tenant header) starts afresh."""
    from autoscaler.config import load_config_data
    from autoscaler.loop import Engine
    from tests.unit.test_reload import Backend

    _prom, server = fake

    def cfg(prometheus: dict[str, Any]) -> Any:
        return load_config_data({
            "evaluation_interval": "1s",
            "prometheus": {"scrape_interval": "15s", "query_offset": 0, **prometheus},
            "targets": [{"name": "smtp", "backend": "swarm", "service": "smtp",
                         "min_replicas": 1, "max_replicas": 5, "policies": [
                             {"type": "seasonal", "name": "s", "query": QUERY,
                              "periods": ["1h", "1d"]}]}]}, environ={})

    def held() -> float | None:
        [outcome] = engine.tick()
        assert outcome.decision is not None
        return outcome.decision.policies[0].history_seconds

    def wait_loaded() -> None:
        deadline = time.monotonic() + 30
        while not held():
            assert time.monotonic() < deadline, "history never loaded"
            time.sleep(0.05)

    first = cfg({"url": server.url, "timeout": "2s"})
    engine = Engine(first, source=PrometheusSource(first.prometheus),
                    actuator_factory=Backend(1).factory)
    try:
        wait_loaded()
        loads = len(ranges(server))
        cases = [
            ({"url": server.url, "timeout": "3s"}, True),  # the same series: kept
            ({"url": server.url, "timeout": "3s", "headers": {"X-Scope-OrgID": "b"}}, False),
            ({"url": server.url + "/prefix", "timeout": "3s"}, False),  # another URL
        ]
        for prometheus, kept in cases:
            engine.reload(cfg(prometheus))
            assert (held() or 0.0) > 0 if kept else held() == 0.0, prometheus
            if kept:
                assert len(ranges(server)) <= loads + 1, "at most this tick's extension"
            wait_loaded()  # let the new source load before the next case
            loads = len(ranges(server))
    finally:
        engine.close()
