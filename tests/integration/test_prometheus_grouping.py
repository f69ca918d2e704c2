"""Grouped queries (`prometheus.group_by_label`) against the real Prometheus: every target reads
exactly what its own query gives, in every metric state, with far fewer queries.

An exporter (registered through file_sd) exports `gq_value` for services a, b (values), c
(NaN), d (two series), and `gone` until it is told to stop (its series then goes stale);
`missing` has no series at all. A counting proxy in front of Prometheus shows what was sent.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from autoscaler.config import PrometheusConfig
from autoscaler.model import Signal, SignalState
from autoscaler.sources.prometheus import POST_ABOVE, PrometheusSource, SignalRequest
from tests.support.loopback import servers
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until

OK, EMPTY, NAN, STALE, ERROR = (SignalState.OK, SignalState.EMPTY, SignalState.NAN,
                                SignalState.STALE, SignalState.ERROR)
SERVICES = ("a", "b", "c", "d", "gone", "missing")

WAIT = 60.0  # generous: how long Prometheus may take to pick up and scrape a target


@dataclass
class GroupExporter:
    run: str
    keep_gone: bool = True

    def metrics(self) -> bytes:
        lines = ["# TYPE gq_value gauge", 'gq_value{svc="a"} 1', 'gq_value{svc="b"} 2',
                 'gq_value{svc="c"} NaN', 'gq_value{svc="d",i="1"} 1',
                 'gq_value{svc="d",i="2"} 2']
        if self.keep_gone:
            lines.append('gq_value{svc="gone"} 5')
        return ("\n".join(lines) + "\n").encode()


@dataclass
class Proxy:
    """Forwards to Prometheus; records (method, path, PromQL) of every query."""

    url: str
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def queries(self) -> list[tuple[str, str, str]]:
        with self.lock:
            return list(self.seen)

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()


@pytest.fixture(scope="module")
def exporter(realenv: RealEnv) -> Iterator[GroupExporter]:
    exp = GroupExporter(uuid.uuid4().hex[:12])
    target = realenv.prometheus_file_sd_dir / f"gq-{exp.run}.json"
    with servers() as start:
        server = start(lambda path, *_: (200, "text/plain; version=0.0.4", exp.metrics())
                       if path == "/metrics" else (404, "text/plain", b""))
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [server.url.removeprefix("http://")],
                                    "labels": {"job": "gq", "gq_run": exp.run}}]))
        tmp.rename(target)
        try:
            yield exp
        finally:
            target.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def proxy(prometheus_url: str) -> Iterator[Proxy]:
    found = Proxy("")
    upstream = requests.Session()
    upstream.trust_env = False

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self, method: str) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            form = parse_qs(body.decode() if method == "POST" else parts.query)
            with found.lock:
                found.seen.append((method, parts.path, form.get("query", [""])[0]))
            answer = upstream.request(method, prometheus_url + parts.path, params=parts.query,
                                      data=body or None, timeout=30, headers={
                                          "Content-Type": self.headers.get("Content-Type", "")})
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def do_GET(self) -> None:
            self.forward("GET")

        def do_POST(self) -> None:
            self.forward("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        upstream.close()


def source(url: str, group: bool) -> PrometheusSource:
    extra = {"group_by_label": "svc"} if group else {}
    return PrometheusSource(PrometheusConfig.model_validate(
        {"url": url, "scrape_interval": 1, "timeout": 10, **extra}))


def requests_for(run: str, shape: str, window: float,
                 services: tuple[str, ...] = SERVICES) -> list[SignalRequest]:
    return [SignalRequest(f"{svc}/{window:g}", shape.format(f'gq_run="{run}",svc="{svc}"'),
                          window) for svc in services]


def both(proxy: Proxy, reqs: list[SignalRequest]) -> tuple[dict[str, Signal],
                                                          dict[str, Signal]]:
    """The same requests at the same `now`, grouped and one by one."""
    now = time.time()
    with source(proxy.url, True) as grouped, source(proxy.url, False) as plain:
        return (grouped.read(reqs, now, time.monotonic() + 30),
                plain.read(reqs, now, time.monotonic() + 30))


@pytest.fixture(scope="module")
def scraped(exporter: GroupExporter, proxy: Proxy) -> GroupExporter:
    query = f'count_over_time(gq_value{{gq_run="{exporter.run}",svc="a"}}[1m])'
    with source(proxy.url, False) as src:
        wait_until("a few scrapes", lambda: (
            (s := src.read([SignalRequest("k", query, 0)], time.time(),
                           time.monotonic() + 30)["k"]).state is OK and (s.latest or 0) >= 6), WAIT)
    return exporter


@pytest.mark.parametrize("window", [0.0, 5.0], ids=["instant", "range"])
def test_grouped_reads_what_each_target_would_read(
    scraped: GroupExporter, proxy: Proxy, window: float
) -> None:
    reqs = requests_for(scraped.run, "gq_value{{{}}}", window)
    proxy.clear()
    grouped, plain = both(proxy, reqs)
    assert grouped == plain
    states = {key.split("/")[0]: s.state for key, s in grouped.items()}
    assert states == {"a": OK, "b": OK, "c": NAN, "d": ERROR, "gone": OK, "missing": EMPTY}
    assert "2 series" in grouped[f"d/{window:g}"].detail
    assert grouped[f"b/{window:g}"].latest == 2.0
    sent = [q for _, _, q in proxy.queries()]
    assert sent.count(reqs[0].query.replace('svc="a"', 'svc=~"a|b|c|d|gone|missing"')) == 1
    assert len(sent) == 1 + len(reqs)  # one grouped query, then the plain source's six


def test_a_series_that_went_away_is_stale_for_its_target_only(
    scraped: GroupExporter, proxy: Proxy
) -> None:
    reqs = requests_for(scraped.run, "gq_value{{{}}}", 5.0, ("a", "gone"))
    scraped.keep_gone = False
    try:
        def gone_stale() -> dict[str, Signal] | None:
            grouped, plain = both(proxy, reqs)
            if grouped["gone/5"].state is STALE and plain["gone/5"].state is STALE:
                return grouped
            return None

        grouped = wait_until("the vanished series to read stale", gone_stale, WAIT)
        assert grouped["a/5"].state is OK
        instant = requests_for(scraped.run, "gq_value{{{}}}", 0.0, ("a", "gone"))
        grouped, plain = both(proxy, instant)
        assert grouped == plain
        assert (grouped["a/0"].state, grouped["gone/0"].state) == (OK, EMPTY)
    finally:
        scraped.keep_gone = True


@pytest.mark.parametrize(
    ("shape", "window", "state", "said"),
    [
        ("rate(gq_value{{{}}})", 0.0, ERROR, "expected type range vector"),
        ("rate(gq_value{{{}}})", 5.0, ERROR, "expected type range vector"),
    ],
    ids=["instant", "range"],
)
def test_an_error_of_the_grouped_query_is_every_members(
    scraped: GroupExporter, proxy: Proxy, shape: str, window: float, state: SignalState,
    said: str
) -> None:
    reqs = requests_for(scraped.run, shape, window)
    grouped, plain = both(proxy, reqs)
    assert grouped == plain
    assert all(s.state is state and said in s.detail for s in grouped.values())


def test_a_query_that_drops_the_label_falls_back_to_per_target(
    scraped: GroupExporter, proxy: Proxy
) -> None:
    reqs = requests_for(scraped.run, "max(gq_value{{{}}})", 0.0, ("a", "b", "missing"))
    now = time.time()
    proxy.clear()
    with source(proxy.url, True) as grouped_source, source(proxy.url, False) as plain_source:
        first = grouped_source.read(reqs, now, time.monotonic() + 30)
        after_first = len(proxy.queries())
        again = grouped_source.read(reqs, now, time.monotonic() + 30)
        after_again = len(proxy.queries())
        plain = plain_source.read(reqs, now, time.monotonic() + 30)
    assert first == again == plain
    assert [first[f"{s}/0"].latest for s in ("a", "b")] == [1.0, 2.0]
    assert first["missing/0"].state is EMPTY
    assert after_first == 1 + 3  # the grouped try, then each member on its own
    assert after_again - after_first == 3  # remembered: per target straight away


def test_many_targets_are_sent_in_chunks_by_post(scraped: GroupExporter, proxy: Proxy) -> None:
    fillers = tuple(f"member-{i:03d}-{uuid.uuid4().hex}" for i in range(250))
    reqs = requests_for(scraped.run, "gq_value{{{}}}", 0.0, ("a", "b", *fillers))
    proxy.clear()
    grouped, plain = both(proxy, reqs)
    assert grouped == plain
    assert grouped["a/0"].latest == 1.0 and grouped["b/0"].latest == 2.0
    assert all(grouped[f"{f}/0"].state is EMPTY for f in fillers)
    sent = proxy.queries()[: -len(reqs)]  # the grouped source's, before the plain one's
    assert 3 <= len(sent) <= 4  # 252 values: at most 100 per query
    assert all("=~" in q for _, _, q in sent)
    assert all(method == ("POST" if len(q) > POST_ABOVE else "GET") for method, _, q in sent)
    assert any(method == "POST" for method, _, _ in sent)
