"""Queue depth from Stalwart's management API: a second kind of signal source beside Prometheus.

Stalwart's community edition exports no queue-depth gauge, and counter differences cannot
give a standing backlog (no zero point, per-node resets, DSNs and reports counted elsewhere).
`GET /api/queue/messages?limit=1` answers `data.total`, the messages in the shared queue,
but each call scans the queue: one call per `every` (default 60 s) per endpoint, however many
targets and ticks ask, and the answers in between are the last ones read. The source keeps
the values it read, so a policy with a window (queue_trend's slope) gets their history.

A policy names this source in its `query` (the presets write it for you):

    stalwart_queue_total url=http://stalwart:8080 user=admin password_file=/run/secrets/pw every=60s

The password file is read at every call (a rotated secret is picked up; its text never
appears in a detail or a log). `RoutedSource` sends these requests here and every other one
to Prometheus.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from autoscaler.model import Sample, Signal, SignalKind, SignalRequest, SignalState
from autoscaler.presets import QUEUE_API_QUERY
from autoscaler.sources.base import OnSignals, SignalSource
from autoscaler.units import parse_duration

__all__ = ["QUERY_NAME", "QueueApiSpec", "RoutedSource", "StalwartQueueSource",
           "is_queue_api_query"]

log = logging.getLogger(__name__)

QUERY_NAME = QUEUE_API_QUERY
PATH = "/api/queue/messages"
HISTORY = 8 * 3600.0  # seconds of read values kept per endpoint (longer windows see less)
MIN_ATTEMPT = 0.05


class SpecError(ValueError):
    """A `stalwart_queue_total` query that cannot be used, with the reason."""


@dataclass(frozen=True)
class QueueApiSpec:
    """Where and how to ask: the management API's base URL, an admin user, the file with its
    password, and the least time between two calls."""

    url: str
    password_file: str
    user: str = "admin"
    every: float = 60.0
    timeout: float = 5.0

    def query(self) -> str:
        """The policy `query` that stands for this spec."""
        return (f"{QUERY_NAME} url={self.url} user={self.user} "
                f"password_file={self.password_file} every={self.every:g}s "
                f"timeout={self.timeout:g}s")

    @classmethod
    def parse(cls, query: str) -> QueueApiSpec:
        """Read a `stalwart_queue_total key=value ...` query; SpecError says what is wrong."""
        words = query.split()
        if not words or words[0] != QUERY_NAME:
            raise SpecError(f"not a {QUERY_NAME} query")
        fields: dict[str, str] = {}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep or not value:
                raise SpecError(f"{word!r} is not key=value")
            if key not in ("url", "user", "password_file", "every", "timeout"):
                raise SpecError(f"unknown key {key!r} (url, user, password_file, every, "
                                "timeout)")
            fields[key] = value
        for required in ("url", "password_file"):
            if required not in fields:
                raise SpecError(f"{QUERY_NAME} needs {required}=")
        parts = urlsplit(fields["url"])
        if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
            raise SpecError(f"url={fields['url']} must be http(s)://host[:port] without "
                            "credentials (the password comes from password_file)")
        try:
            every = parse_duration(fields.get("every", "60s"))
            timeout = parse_duration(fields.get("timeout", "5s"))
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        if every <= 0 or timeout <= 0:
            raise SpecError("every and timeout must be above 0")
        return cls(url=fields["url"].rstrip("/"), password_file=fields["password_file"],
                   user=fields.get("user", "admin"), every=every, timeout=timeout)


def is_queue_api_query(query: str) -> bool:
    """Whether a policy's query is for this source rather than PromQL."""
    return query.split(maxsplit=1)[:1] == [QUERY_NAME]


@dataclass
class _Endpoint:
    """What one endpoint answered: the values read so far, and when it was last asked."""

    samples: list[Sample]
    asked: float | None = None  # monotonic time of the last call, answered or not
    error: str | None = None  # why the last call failed, while it is the newest word


class StalwartQueueSource(SignalSource):
    """Reads `data.total` from each endpoint at most once per its `every`."""

    def __init__(self, session: requests.Session | None = None,
                 clock: Any = time.monotonic) -> None:
        self._session = session or requests.Session()
        self._session.trust_env = False  # loopback or the cluster network: no proxies
        self._clock = clock
        self._lock = threading.Lock()
        self._endpoints: dict[tuple[str, str], _Endpoint] = {}
        self.calls = 0

    def read(self, requests_: Sequence[SignalRequest], now: float, deadline: float,
             on_signals: OnSignals | None = None) -> dict[str, Signal]:
        out: dict[str, Signal] = {}
        for request in requests_:
            try:
                spec = QueueApiSpec.parse(request.query)
            except SpecError as exc:
                out[request.key] = Signal.bad(SignalState.ERROR, str(exc))
                continue
            out[request.key] = self._signal(spec, request.window, now, deadline)
        if on_signals is not None and out:
            on_signals(out)
        return out

    def _signal(self, spec: QueueApiSpec, window: float, now: float,
                deadline: float) -> Signal:
        with self._lock:  # one call per endpoint at a time; the others wait for its answer
            endpoint = self._endpoints.setdefault((spec.url, spec.user), _Endpoint([]))
            due = endpoint.asked is None or self._clock() - endpoint.asked >= spec.every
            if due:
                self._ask(spec, endpoint, now, deadline)
            if endpoint.error is not None:
                return Signal.bad(SignalState.ERROR, endpoint.error)
            start = now - window - 1e-9
            samples = tuple(s for s in endpoint.samples if s.t >= start) or tuple(
                endpoint.samples[-1:])
        if not samples:
            return Signal.bad(SignalState.EMPTY, f"{spec.url}{PATH}: no answer yet")
        return Signal.ok(samples)

    def _ask(self, spec: QueueApiSpec, endpoint: _Endpoint, now: float,
             deadline: float) -> None:
        where = f"{spec.url}{PATH}"
        timeout = min(spec.timeout, deadline - self._clock())
        if timeout < MIN_ATTEMPT:
            endpoint.error = f"{where}: no time left in the tick"
            return
        endpoint.asked = self._clock()
        self.calls += 1
        try:
            password = Path(spec.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            endpoint.error = f"{where}: cannot read password_file {spec.password_file}: " \
                             f"{exc.strerror or type(exc).__name__}"
            return
        try:
            response = self._session.get(where, params={"limit": "1"},
                                         auth=(spec.user, password), timeout=timeout)
            endpoint.error = self._total(response, where, endpoint, now)
        except requests.RequestException as exc:
            endpoint.error = f"{where}: {type(exc).__name__}"
        if endpoint.error:
            log.warning("queue depth unread: %s", endpoint.error)

    @staticmethod
    def _total(response: requests.Response, where: str, endpoint: _Endpoint,
               now: float) -> str | None:
        """Store `data.total` as a sample; the reason when there is none."""
        if response.status_code in (401, 403):
            return (f"{where}: HTTP {response.status_code}: the admin credential was refused "
                    "(needs the message-queue-list permission)")
        if response.status_code != 200:
            return f"{where}: HTTP {response.status_code}"
        try:
            total = response.json()["data"]["total"]
        except (ValueError, KeyError, TypeError):
            return f"{where}: the answer has no data.total"
        if isinstance(total, bool) or not isinstance(total, int | float) or total < 0:
            return f"{where}: data.total is not a count: {str(total)[:40]!r}"
        endpoint.samples.append(Sample(now, float(total)))
        cut = now - HISTORY
        while endpoint.samples and endpoint.samples[0].t < cut:
            endpoint.samples.pop(0)
        return None

    def close(self) -> None:
        self._session.close()


class RoutedSource(SignalSource):
    """Prometheus for PromQL, the management API for `stalwart_queue_total` queries."""

    def __init__(self, prometheus: SignalSource,
                 queue_api: StalwartQueueSource | None = None) -> None:
        self.prometheus = prometheus
        self.queue_api = queue_api or StalwartQueueSource()

    def read(self, requests_: Sequence[SignalRequest], now: float, deadline: float,
             on_signals: OnSignals | None = None) -> dict[str, Signal]:
        api = [r for r in requests_ if is_queue_api_query(r.query)]
        promql = [r for r in requests_ if not is_queue_api_query(r.query)]
        # The management API keeps no past: its history reads answer ok, without history.
        pasts = {r.key: Signal(SignalState.OK, (), "no history from the management API")
                 for r in api if r.kind is SignalKind.HISTORY}
        if pasts:
            api = [r for r in api if r.kind is not SignalKind.HISTORY]
            if on_signals is not None:
                on_signals(pasts)
        if not api:
            out = self.prometheus.read(promql, now, deadline, on_signals) if promql else {}
            return {**out, **pasts}
        # The API call runs beside the Prometheus queries, never in front of them.
        answers: dict[str, Signal] = {}
        worker = threading.Thread(
            target=lambda: answers.update(self.queue_api.read(api, now, deadline, on_signals)),
            name="stalwart-api", daemon=True)
        worker.start()
        out = self.prometheus.read(promql, now, deadline, on_signals) if promql else {}
        worker.join(max(0.0, deadline - time.monotonic()))
        late = Signal.bad(SignalState.ERROR, "the management API did not answer in the tick")
        out.update({r.key: answers.get(r.key, late) for r in api})
        out.update(pasts)
        return out

    def retain_history(self, keep: Collection[tuple[str, float]]) -> None:
        self.prometheus.retain_history(keep)

    def adopt_history(self, previous: SignalSource) -> int:
        return self.prometheus.adopt_history(
            previous.prometheus if isinstance(previous, RoutedSource) else previous)

    def check_reachable(self, deadline: float) -> str | None:
        return self.prometheus.check_reachable(deadline)

    def close(self) -> None:
        self.prometheus.close()
        self.queue_api.close()
