"""Reading signals from Prometheus: one bounded, deadline-aware batch of queries per tick.

The pure part, `classify_response`, turns whatever Prometheus (or something pretending to be
it) answered into a `Signal` with a state; `PrometheusSource` only moves bytes. Nothing here
raises for a bad answer: a policy that cannot be fed is "not reported", never a crashed tick.

Two clocks, on purpose: `now` is epoch seconds, the evaluation time sent to Prometheus and the
reference for staleness; `deadline` is a `time.monotonic()` value, so a wall-clock step (NTP)
can neither cut a tick short nor stretch it.

Other Prometheus-compatible backends are read the same way: Thanos, Mimir and Cortex under a
path prefix (in `url`) with a tenant header (`headers: {X-Scope-OrgID: ...}`); every query asks
`partial_response=false` (Thanos; others ignore it) and an answer marked partial (`isPartial`,
VictoriaMetrics cluster) is an error, never `ok`; `warnings` are kept on the signal for the
decision record. VictoriaMetrics shows samples only after `-search.latencyOffset` (30 s by
default): `query_offset` (learned by default) moves every evaluation that far back, so its
latest samples are neither `stale` nor missing from a short window.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import math
import os
import queue
import re
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)
from urllib3.util.retry import Retry

from autoscaler.config import PrometheusConfig
from autoscaler.model import Sample, Signal, SignalKind, SignalRequest, SignalState
from autoscaler.sources.base import SignalSource
from autoscaler.sources.grouping import (
    GroupSpec,
    chunk_values,
    group_query,
    split_result,
    template_of,
)
from autoscaler.sources.history import Failure, HistoryCache, Points
from policies.base import HISTORY_STEP

__all__ = ["PrometheusSource", "SignalRequest", "classify_response", "parse_matrix"]

log = logging.getLogger(__name__)

RESULT_TYPES = ("vector", "matrix", "scalar")
MAX_POINTS = 10_000  # Prometheus refuses a range query of more than 11,000 points
MAX_OFFSET = 3600.0  # seconds: a learned query offset above this is a broken clock, not a delay
# The reachability probe: a query through the query API (a prefixed Thanos or Mimir serves no
# /-/ready), whose value also tells the backend's query offset (time() at the time asked).
PROBE_QUERY = "vector(time())"
MIN_ATTEMPT = 0.05  # seconds: an attempt with less time left than this is not worth sending
MARGIN = 0.1  # seconds kept back before the deadline: a timed-out attempt still reports why
DETAIL_CHARS = 240
POST_ABOVE = 1500  # characters of PromQL: a longer query is sent as a form POST, not in a URL
# Prometheus writes sample values as Go floats in strings: digits, an exponent, NaN or ±Inf.
# float() alone would also take "1_000", " 1" or "infinity".
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN")


# --------------------------------------------------------------------------- classification


class Garbage(Exception):
    """A range answer is not a one-series matrix of [time, value] pairs (`parse_matrix`)."""


class _Malformed(Exception):
    """The answer does not have the shape of a Prometheus query response."""


def one_line(text: str, limit: int = DETAIL_CHARS) -> str:
    """A detail fits one log line: whitespace collapsed, long text cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _snippet(text: str) -> str:
    """A hostile string, shown whole when short, else only its length (never a cut piece)."""
    return repr(text) if len(text) <= 40 else f"({len(text)} characters)"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _shown(value: Any) -> str:
    return _snippet(value) if isinstance(value, str) else _json_type(value)


def _number(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise _Malformed(f"{what} is {_json_type(raw)}, not a number")
    if isinstance(raw, str) and not _NUMBER.fullmatch(raw):
        raise _Malformed(f"{what} {_snippet(raw)} is not a number")
    try:
        return float(raw)
    except (OverflowError, ValueError) as exc:  # an int too large for a float
        raise _Malformed(f"{what} is out of range") from exc


def _point(raw: Any) -> Sample:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise _Malformed("a sample is not a [timestamp, value] pair")
    t = _number(raw[0], "a timestamp")
    if not math.isfinite(t):
        raise _Malformed("a timestamp is not finite")
    return Sample(t, _number(raw[1], "a value"))


def _series_points(series: Any, key: str) -> list[Sample]:
    if not isinstance(series, dict):
        raise _Malformed(f"a series is {_json_type(series)}, not an object")
    if key not in series:
        raise _Malformed(f"a series has no {key!r}")
    raw = series[key]
    if key == "value":
        return [_point(raw)]
    if not isinstance(raw, list):
        raise _Malformed(f"a series' values are {_json_type(raw)}, not an array")
    return [_point(p) for p in raw]


def _samples(result_type: str, result: Any) -> tuple[int, list[Sample]]:
    """(number of series, samples) of a well-formed `data.result`."""
    if result_type == "scalar":
        return 1, [_point(result)]
    if not isinstance(result, list):
        raise _Malformed(f"a {result_type} result is {_json_type(result)}, not an array")
    if len(result) != 1:
        return len(result), []
    return 1, _series_points(result[0], "value" if result_type == "vector" else "values")


def classify_response(
    payload: Any,
    now: float,
    scrape_interval: float,
    *,
    endpoint: str = "Prometheus",
    secrets: Sequence[str] = (),
    step: float = 0.0,
) -> Signal:
    """The signal in a decoded /api/v1/query(_range) body, with its state; never raises.

    Errors win over empty, empty over nan, nan over stale: a state says what is wrong first.
    Staleness is judged by the newest point's own timestamp against `now` (epoch seconds):
    older than 2 scrape intervals is stale — or than step + 1 interval, when a range query's
    `step` had to be coarser than the scrape interval (its newest point may sit a step back).
    `secrets` are blanked out of the detail (a proxy may echo what it was sent).
    """
    stale_after = max(2 * scrape_interval, step + scrape_interval)
    try:
        signal = _classify(payload, now, stale_after, endpoint)
    except _Malformed as exc:
        signal = Signal.bad(SignalState.ERROR, f"malformed answer from {endpoint}: {exc}")
    except Exception as exc:  # a hostile payload must not crash the tick
        signal = Signal.bad(
            SignalState.ERROR, f"unreadable answer from {endpoint} ({type(exc).__name__})"
        )
    return Signal(signal.state, signal.samples, redact(signal.detail, secrets))


def redact(text: str, secrets: Sequence[str]) -> str:
    """One short line with every secret blanked out; blanked before cut, so no piece leaks."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "<redacted>")
    return one_line(text)


def _result(payload: Any, endpoint: str) -> Signal | tuple[str, Any]:
    """(resultType, result) of a successful answer; an ERROR signal for Prometheus' own
    error or a partial answer; raises _Malformed for anything else."""
    if not isinstance(payload, dict):
        raise _Malformed(f"the body is {_json_type(payload)}, not an object")
    status = payload.get("status")
    if status == "error":
        kind, text = payload.get("errorType"), payload.get("error")
        said = ": ".join(str(x) for x in (kind, text) if isinstance(x, str) and x)
        return Signal.bad(SignalState.ERROR, f"{endpoint} said: {said or 'error (no message)'}")
    if status != "success":
        raise _Malformed(f"status {_shown(status) if 'status' in payload else 'missing'}")
    if payload.get("isPartial") is True:  # VictoriaMetrics cluster: some storage nodes missing
        return Signal.bad(SignalState.ERROR, f"{endpoint} answered a partial response "
                                             "(some of its storage did not answer)")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise _Malformed("no 'data' object")
    result_type = data.get("resultType")
    if not isinstance(result_type, str) or result_type not in RESULT_TYPES:
        shown = _shown(result_type) if "resultType" in data else "missing"
        raise _Malformed(f"resultType {shown} is not vector, matrix or scalar")
    if "result" not in data:
        raise _Malformed("no 'result'")
    return result_type, data["result"]


def _classify(payload: Any, now: float, stale_after: float, endpoint: str) -> Signal:
    head = _result(payload, endpoint)
    if isinstance(head, Signal):
        return head
    n_series, samples = _samples(*head)
    if n_series > 1:
        return Signal.bad(
            SignalState.ERROR,
            f"{endpoint} returned {n_series} series; aggregate it with sum/avg/max",
        )
    if not samples:
        what = "no series" if n_series == 0 else "a series without points"
        return Signal.bad(SignalState.EMPTY, f"{what} for this query")
    samples.sort(key=lambda s: s.t)
    bad = sum(1 for s in samples if not math.isfinite(s.value))
    if bad:
        return Signal.bad(SignalState.NAN, f"NaN or ±Inf in {bad} of {len(samples)} samples")
    age = now - samples[-1].t
    if age > stale_after:
        return Signal.bad(
            SignalState.STALE, f"newest sample is {age:.0f}s old (stale after {stale_after:g}s)"
        )
    said = warnings_of(payload)
    return Signal(SignalState.OK, tuple(samples), f"{endpoint} warned: {said}" if said else "")


def parse_matrix(payload: Any, endpoint: str = "Prometheus") -> list[tuple[float, float]]:
    """The finite (t, value) points of a one-series range answer, in time order ([] for no
    series): a history read, on the same checks as a live answer. A history has gaps anyway,
    so a NaN or ±Inf point is left out rather than spoiling the whole answer.

    Raises Garbage for anything else: an error, a partial answer, not a matrix, several
    series, malformed points.
    """
    try:
        head = _result(payload, endpoint)
        if isinstance(head, Signal):
            raise Garbage(head.detail)
        result_type, result = head
        if result_type != "matrix":
            raise Garbage(f"a {result_type} result, not a matrix")
        n_series, samples = _samples(result_type, result)
    except _Malformed as exc:
        raise Garbage(str(exc)) from exc
    if n_series > 1:
        raise Garbage(f"{n_series} series; aggregate it with sum/avg/max")
    return sorted((x.t, x.value) for x in samples if math.isfinite(x.value))


def warnings_of(payload: dict[str, Any]) -> str:
    """The answer's `warnings` (Thanos, Mimir, Prometheus' own), one line; "" without any.

    Any shape is read: a list of strings as the API documents, else whatever it is, shown
    by type (never a reason to lose the samples).
    """
    raw = payload.get("warnings")
    if raw is None or raw == []:
        return ""
    if isinstance(raw, list) and all(isinstance(w, str) for w in raw):
        return "; ".join(raw)
    return f"warnings field is {_json_type(raw)}"


# --------------------------------------------------------------------------- transport


class _Transient(Exception):  # a signal carrier, not an error type of its own
    """A failure worth another attempt (transport, timeout, 5xx); carries its signal."""

    def __init__(self, signal: Signal) -> None:
        super().__init__(signal.detail)
        self.signal = signal


@dataclass(frozen=True)
class _Body:
    """A 2xx answer's decoded JSON body (any JSON value: judged by the classifier)."""

    payload: Any


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests and urllib3 nest several levels)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        wrapped = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        todo.extend(w for w in wrapped if isinstance(w, BaseException))


def _transport_reason(exc: BaseException, timeout: float) -> str:
    """Why a request failed, in a few words and without the request URL (it has the query)."""
    names = {type(c).__name__ for c in _causes(exc)}
    if isinstance(exc, requests.Timeout) or names & {"ReadTimeoutError", "ConnectTimeoutError",
                                                     "TimeoutError"}:
        return f"timed out after {timeout:.3g}s"
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError) and isinstance(cause.reason, str):
            # e.g. SSLV3_ALERT_BAD_CERTIFICATE, TLSV13_ALERT_CERTIFICATE_REQUIRED: the server
            # wants a client certificate (cert_file, key_file) it can verify
            return f"TLS handshake failed ({cause.reason})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken while reading the answer"
    return f"request failed ({type(exc).__name__})"


def _public_url(url: str) -> str:
    """The URL without user:password@, fit to name in details and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class _Tick:
    """One read's credentials: this read's headers, auth and the secrets to hide.

    Secret files are read at every read (tokens and passwords rotate while the daemon runs);
    each read carries its own, so concurrent callers never mix secrets.
    """

    headers: dict[str, str]
    auth: tuple[bytes, bytes] | None
    secrets: tuple[str, ...]

    def scrub(self, text: str) -> str:
        return redact(text, self.secrets)

    def error(self, detail: str) -> Signal:
        return Signal.bad(SignalState.ERROR, self.scrub(detail))


Pair = tuple[str, float]  # (query, window): what one signal asks
Span = tuple[float, float, float]  # (start, end, step) of an exact range query


def late_with(late: Signal, last_error: str | None) -> Signal:
    """The deadline's `error`, naming the last failed attempt's reason when there was one."""
    if not last_error:
        return late
    return Signal.bad(SignalState.ERROR,
                      f"{late.detail}; last attempt: {one_line(last_error, DETAIL_CHARS // 2)}")


@dataclass(frozen=True)
class _Job:
    """One HTTP query of a read: a query of its own, or a group's alternation.

    `members` are the (query, window) pairs it answers; for a grouped job, `values[i]` is the
    label value of `members[i]` and `group` the (template, window) it was built from.
    """

    query: str
    window: float
    members: tuple[Pair, ...]
    values: tuple[str, ...] = ()
    group: Pair | None = None


class _SecretError(Exception):
    """A secret file cannot be used; the message names the file, never its content."""


def _read_secret(path: Path, key: str) -> str:
    try:
        text = path.read_bytes().decode("utf-8").strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _SecretError(f"cannot read {key} {path}: {reason}") from None
    except UnicodeDecodeError:
        raise _SecretError(f"{key} {path} is not UTF-8 text") from None
    if not text:
        raise _SecretError(f"{key} {path} is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _SecretError(f"{key} {path} holds control characters (a line break?)")
    return text


class PrometheusSource(SignalSource):
    """Prometheus queries for one daemon: a session, a bounded pool of workers, retries.

    One `read` per tick carries every target's requests: identical queries are sent once and,
    with `group_by_label`, queries that differ only in that label's value are sent as one
    grouped query (see `autoscaler.sources.grouping`). Thread-safe: `read` (the tick) and
    `check_reachable` (/readyz) may run at the same time.
    """

    def __init__(self, config: PrometheusConfig, *, wait_for_history: bool = False) -> None:
        """`wait_for_history`: a one-shot command (explain, run --once) waits for a history
        load within its own deadline; the daemon's ticks never do."""
        self.config = config
        self.wait_for_history = wait_for_history
        self.endpoint = _public_url(config.url)
        session = requests.Session()
        session.verify = str(config.ca_file) if config.ca_file else config.verify_tls
        # Proxies from the environment are resolved once, here, instead of at every request
        # (requests re-reads the environment per request: a large share of its CPU per
        # query). Credentials come from the config only (never from ~/.netrc).
        session.proxies.update(requests.utils.get_environ_proxies(config.url))
        session.trust_env = False
        if config.cert_file is not None and config.key_file is not None:
            session.cert = (str(config.cert_file), str(config.key_file))  # mutual TLS
        # Queries go through this session directly, not through prometheus-api-client: its
        # custom_query(_range) return only `data.result` (dropping `resultType`, Prometheus'
        # `error` text and `warnings`, which the metric states need), decode the body
        # themselves and cannot send a long query as a form POST (README, Dependencies).
        # No retries of urllib3's own (tenacity alone retries, within the tick's deadline),
        # and a pool big enough for every worker to keep its connection.
        pool = max(10, config.max_concurrent_queries)
        session.mount(config.url, HTTPAdapter(max_retries=Retry(total=0), pool_maxsize=pool))
        self._session = session
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_concurrent_queries, thread_name_prefix="prometheus"
        )
        self._lock = threading.Lock()
        # Seconds every evaluation is moved back: configured, or learned (0 until it is).
        self._offset = 0.0 if config.query_offset == "auto" else float(config.query_offset)
        self._templates: dict[str, GroupSpec | None] = {}
        self._ungroupable: set[Pair] = set()
        # The `history` reads of learning policies: loaded in a thread of their own, then
        # extended by at most one small range query per tick (autoscaler.sources.history).
        self.history = HistoryCache(self._range, endpoint=self.endpoint)

    # ----------------------------------------------------------------- public API

    def read(
        self, requests_: Sequence[SignalRequest], now: float, deadline: float,
        on_signals: Callable[[dict[str, Signal]], None] | None = None,
    ) -> dict[str, Signal]:
        """Every request's signal by key; returns by `deadline` (monotonic) and never raises.

        `now` (epoch seconds) is the evaluation time; identical (query, window) pairs are
        sent once. A query still unanswered at the deadline is an `error`. `on_signals`, if
        given, is handed each answer's signals by key as soon as they are in (from the
        calling thread; the return value still has them all).
        """
        if not requests_:
            return {}
        try:
            evaluated = now - self.query_offset
            past = [r for r in requests_ if r.kind is SignalKind.HISTORY]
            live = [r for r in requests_ if r.kind is not SignalKind.HISTORY]
            extending = self._extend_history(past, evaluated, deadline) if past else {}
            out = self._read(live, evaluated, deadline, on_signals) if live else {}
            if past:
                out.update(self._history_signals(past, extending, deadline, on_signals))
            return out
        except Exception as exc:  # the tick must go on with "not reported"
            log.error("reading %s failed: %s", self.endpoint, type(exc).__name__)
            detail = f"reading {self.endpoint} failed ({type(exc).__name__})"
            return {r.key: Signal.bad(SignalState.ERROR, detail) for r in requests_}

    def retain_history(self, keep: Collection[tuple[str, float]]) -> None:
        """After a reload: keep the histories of these (query, step) pairs, drop the rest."""
        self.history.retain(keep)

    def adopt_history(self, previous: SignalSource) -> int:
        """The previous source's loaded histories, when it read the same series: the same
        URL (path prefix included) and the same headers (a tenant's `X-Scope-OrgID`)."""
        if not isinstance(previous, PrometheusSource) or (
                str(previous.config.url), previous.config.headers) != (
                str(self.config.url), self.config.headers):
            return 0
        return self.history.adopt(previous.history)

    def _extend_history(self, past: Sequence[SignalRequest], now: float,
                        deadline: float) -> dict[tuple[str, float], Future[None]]:
        """Start the loads that are due (their own thread) and this tick's extensions (at
        most one small range query per (query, step), beside the live queries)."""
        started: dict[tuple[str, float], Future[None]] = {}
        for key, entry in self.history.plan(past, HISTORY_STEP, now).items():
            span = self.history.extension(entry, now)
            if span is None:
                continue
            try:
                started[key] = self._pool.submit(self.history.extend, entry, span, deadline,
                                                 self.config.timeout)
            except RuntimeError:  # closing
                entry.extending = False
        return started

    def _history_signals(self, past: Sequence[SignalRequest],
                         extending: dict[tuple[str, float], Future[None]], deadline: float,
                         on_signals: Callable[[dict[str, Signal]], None] | None
                         ) -> dict[str, Signal]:
        """Each history read's answer, once this tick's extension is in (or the deadline
        came: then the history as it was)."""
        for future in extending.values():
            with contextlib.suppress(Exception):  # late or failed: the history as it was
                future.result(timeout=max(0.0, deadline - MARGIN - time.monotonic()))
        if self.wait_for_history:  # one-shot: the load within the command's own deadline
            for key in {(r.query, HISTORY_STEP) for r in past}:
                entry = self.history.entry(*key)
                loading = entry.loading if entry is not None else None
                if loading is not None:
                    with contextlib.suppress(Exception):
                        loading.result(timeout=max(0.0, deadline - MARGIN - time.monotonic()))
        out: dict[str, Signal] = {}
        for r in past:
            entry = self.history.entry(r.query, HISTORY_STEP)
            out[r.key] = (self.history.signal(entry) if entry is not None else
                          Signal(SignalState.OK, (), "history loading"))
        if on_signals is not None:
            try:
                on_signals(out)
            except Exception:
                log.exception("on_signals failed")
        return out

    def _range(self, query: str, span: Span, deadline: float, timeout: float
               ) -> Points | Failure:
        """One exact range query for the history cache: its finite points in time order, or
        why there are none."""
        try:
            tick = self._tick()
        except _SecretError as exc:
            return Failure(str(exc))
        if min(timeout, deadline - MARGIN - time.monotonic()) < MIN_ATTEMPT:
            return Failure("the history load's time budget ran out")
        # One attempt: a failed load is retried as a whole, later, with its own backoff.
        try:
            answer = self._attempt(tick, query, max(span[1] - span[0], span[2]), span[1],
                                   deadline, span, timeout)
        except _Transient as exc:
            return Failure(exc.signal.detail)
        if isinstance(answer, Signal):
            return Failure(answer.detail)
        try:
            return parse_matrix(answer.payload, self.endpoint)
        except Garbage as exc:
            return Failure(f"unusable answer from {self.endpoint}: {exc}")

    def fetch_range(self, query: str, start: float, end: float, step: float,
                    timeout: float) -> list[tuple[float, float]] | str:
        """One exact range query, [start, end] at `step` (at most 11,000 points: the caller
        chunks): its finite points in time order, or why there are none (`backtest`'s
        history reads; the live ones go through the cache)."""
        answer = self._range(query, (start, end, step), time.monotonic() + timeout + 1.0,
                             timeout)
        return answer.detail if isinstance(answer, Failure) else answer

    @property
    def query_offset(self) -> float:
        """Seconds every query is evaluated in the past (configured, or as last learned)."""
        with self._lock:
            return self._offset

    def check_reachable(self, deadline: float) -> str | None:
        """None when the query API answers a query in time, else why not (for /readyz).

        The query API, not `/-/ready`: a Thanos or Mimir under a path prefix serves none.
        With `query_offset: auto` its answer also updates the learned offset.
        """
        where = f"{self.endpoint}/api/v1/query"
        try:
            tick = self._tick()
        except _SecretError as exc:
            return str(exc)
        timeout = min(self.config.timeout, deadline - time.monotonic())
        if timeout < MIN_ATTEMPT:
            return f"no time left to ask {where}"
        asked = round(time.time(), 3)  # as sent: the offset is read against it
        try:
            response = self._session.get(
                f"{self.config.url}/api/v1/query",
                params={"query": PROBE_QUERY, "time": f"{asked:.3f}"},
                headers=tick.headers,
                auth=tick.auth,  # type: ignore[arg-type]  # bytes: see _tick
                timeout=timeout,
                verify=self._session.verify,
            )
        except Exception as exc:  # /readyz must answer, whatever happened
            return tick.scrub(f"{where}: {_transport_reason(exc, timeout)}")
        if response.status_code != 200:
            return tick.scrub(f"{where}: HTTP {response.status_code} {response.reason or ''}")
        signal = classify_response(_decoded(response), asked, MAX_OFFSET, endpoint=where,
                                   secrets=tick.secrets)
        if signal.state is not SignalState.OK:
            return f"{where} did not answer {PROBE_QUERY}: {signal.detail}"
        if self.config.query_offset == "auto" and signal.latest is not None:
            self._learn_offset(asked - signal.latest)
        return None

    def _learn_offset(self, seen: float) -> None:
        """Keep the offset the backend showed: time() evaluated `seen` seconds before the
        time asked. Rounded up to 0.1 s (so a query is never just inside the delay), 0 below
        half a second (Prometheus answers exactly), refused when absurd (clock trouble)."""
        if not math.isfinite(seen) or seen < -0.5 or seen > MAX_OFFSET:
            log.warning("%s: cannot learn a query offset from time() %.3gs before the time "
                        "asked; keeping %gs", self.endpoint, seen, self.query_offset)
            return
        offset = 0.0 if seen < 0.5 else math.ceil(seen * 10) / 10
        with self._lock:
            old, self._offset = self._offset, offset
        if abs(offset - old) >= 0.5:
            log.info("%s evaluates queries %gs in the past (was %gs): queries are asked that "
                     "far back (prometheus.query_offset: auto)", self.endpoint, offset, old)

    def close(self) -> None:
        """Stop the workers (queued queries are dropped), close the connections, and wait a
        little for a history load in flight to end (bounded: `history.CLOSE_WAIT`)."""
        self.history.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()
        self.history.join()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    def _tick(self) -> _Tick:
        cfg = self.config
        headers = dict(cfg.headers)
        auth: tuple[bytes, bytes] | None = None
        secrets = [v for v in headers.values() if len(v) >= 4]
        url = urlsplit(cfg.url)
        if url.password:
            userinfo = f"{url.username or ''}:{url.password}".encode()
            secrets += [url.password, base64.b64encode(userinfo).decode()]
        if cfg.bearer_token_file is not None:
            token = _read_secret(cfg.bearer_token_file, "bearer_token_file")
            headers["Authorization"] = f"Bearer {token}"
            secrets.append(token)
        if cfg.basic_auth is not None:
            password = _read_secret(cfg.basic_auth.password_file, "basic_auth.password_file")
            # bytes: requests would encode a str as latin-1 and fail with the password in the
            # exception message.
            auth = (cfg.basic_auth.username.encode(), password.encode())
            # What goes on the wire is base64(user:password): as secret as the password.
            secrets += [password, base64.b64encode(b":".join(auth)).decode()]
        for key, path in (("cert_file", cfg.cert_file), ("key_file", cfg.key_file)):
            if path is not None and not os.access(path, os.R_OK):
                raise _SecretError(f"cannot read {key} {path}")
        return _Tick(headers, auth, tuple(secrets))

    def _read(
        self, requests_: Sequence[SignalRequest], now: float, deadline: float,
        on_signals: Callable[[dict[str, Signal]], None] | None = None,
    ) -> dict[str, Signal]:
        try:
            tick = self._tick()
        except _SecretError as exc:
            return {r.key: Signal.bad(SignalState.ERROR, str(exc)) for r in requests_}
        keys: dict[Pair, list[str]] = {}
        for r in requests_:
            keys.setdefault((r.query, float(r.window)), []).append(r.key)
        pairs = list(keys)
        results: dict[Pair, Signal] = {}

        def arrived(answer: dict[Pair, Signal]) -> None:
            results.update(answer)
            if on_signals is not None:
                try:
                    on_signals({k: s for pair, s in answer.items() for k in keys[pair]})
                except Exception:  # the caller's problem; the read goes on
                    log.exception("on_signals failed")

        # Finished jobs arrive on a queue: waiting on thousands of futures with
        # concurrent.futures.wait(FIRST_COMPLETED) would touch every pending one per wake-up.
        finished: queue.SimpleQueue[Future[dict[Pair, Signal] | None]] = queue.SimpleQueue()
        pending: dict[Future[dict[Pair, Signal] | None], _Job] = {}
        # job -> the last failed attempt's (redacted) detail, written by the worker retrying it
        last_error: dict[_Job, str] = {}
        late = Signal.bad(SignalState.ERROR,
                          f"no answer from {self.endpoint} before the tick's deadline")

        def submit(job: _Job) -> None:
            future = self._pool.submit(self._run, tick, job, now, deadline,
                                       functools.partial(last_error.__setitem__, job))
            pending[future] = job
            future.add_done_callback(finished.put)

        for job in self._plan(pairs):
            submit(job)
        while pending:
            try:
                future = finished.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            job = pending.pop(future)
            if future.cancelled():  # the source is closing
                arrived(dict.fromkeys(job.members, late))
                continue
            if (crash := future.exception()) is not None:
                kind = type(crash).__name__
                log.error("query to %s crashed: %s", self.endpoint, kind)
                failed = Signal.bad(SignalState.ERROR, f"query to {self.endpoint} failed ({kind})")
                arrived(dict.fromkeys(job.members, failed))
                continue
            answer = future.result()
            if answer is not None:
                arrived(answer)
                continue
            # A grouped answer that cannot be split: ask each member on its own, now and at
            # every later tick.
            self._not_groupable(job)
            for query, window in job.members:
                submit(_Job(query, window, ((query, window),)))
        for future, job in pending.items():
            future.cancel()  # not started yet: drop it; running: it ends on its timeout
            results.update(dict.fromkeys(job.members, late_with(late, last_error.get(job))))
        return {r.key: results[(r.query, float(r.window))] for r in requests_}

    def _plan(self, pairs: Sequence[Pair]) -> list[_Job]:
        """The HTTP queries for `pairs`: grouped where `group_by_label` allows, else one each."""
        label = self.config.group_by_label
        if not label:
            return [_Job(q, w, ((q, w),)) for q, w in pairs]
        jobs: list[_Job] = []
        groups: dict[Pair, dict[str, list[Pair]]] = {}
        with self._lock:
            ungroupable = set(self._ungroupable)
        for query, window in pairs:
            spec = self._template(query, label)
            if spec is None or (spec.template, window) in ungroupable:
                jobs.append(_Job(query, window, ((query, window),)))
                continue
            groups.setdefault((spec.template, window), {}).setdefault(
                spec.value, []).append((query, window))
        chunked: list[list[_Job]] = []
        for (template, window), by_value in groups.items():
            if len(by_value) < 2:  # nothing to share: the query as written
                jobs.extend(_Job(q, w, ((q, w),)) for members in by_value.values()
                            for q, w in members)
                continue
            chunked.append([])
            for chunk in chunk_values(template, label, list(by_value)):
                members = [(pair, value) for value in chunk for pair in by_value[value]]
                chunked[-1].append(_Job(group_query(template, label, chunk), window,
                                        tuple(p for p, _ in members),
                                        tuple(v for _, v in members), (template, window)))
        # The first chunk of every group, then the second...: the targets of a chunk have all
        # their signals early, and can go on while the rest is asked.
        for i in range(max(map(len, chunked), default=0)):
            jobs.extend(group[i] for group in chunked if i < len(group))
        return jobs

    def _template(self, query: str, label: str) -> GroupSpec | None:
        with self._lock:
            if query in self._templates:
                return self._templates[query]
        spec = template_of(query, label)
        with self._lock:
            if len(self._templates) >= 100_000:  # queries are config: this is a backstop
                self._templates.clear()
            self._templates[query] = spec
        return spec

    def _not_groupable(self, job: _Job) -> None:
        if job.group is None:
            return
        with self._lock:
            known = job.group in self._ungroupable
            self._ungroupable.add(job.group)
        if not known:
            log.warning(
                "grouping by %r does not apply to %s (its answer has a series without that "
                "label, with a value not asked for, or a scalar): it is sent per target",
                self.config.group_by_label, one_line(job.members[0][0]))

    def _run(self, tick: _Tick, job: _Job, now: float, deadline: float,
             on_error: Callable[[str], None] | None = None) -> dict[Pair, Signal] | None:
        """The signal of every member of `job`; None when a grouped answer cannot be split."""
        where = self._where(job.window)
        answer = self._fetch(tick, job.query, job.window, now, deadline, on_error=on_error)
        if isinstance(answer, Signal):
            return dict.fromkeys(job.members, answer)
        step = self._step(job.window) if job.window > 0 else 0.0

        def classify(payload: Any) -> Signal:
            return classify_response(payload, now, self.config.scrape_interval,
                                     endpoint=where, secrets=tick.secrets, step=step)

        if not job.values:
            return {job.members[0]: classify(answer.payload)}
        label = self.config.group_by_label or ""
        parts = split_result(answer.payload, label, sorted(set(job.values)))
        if parts is None:
            return None
        signals = {value: classify(payload) for value, payload in parts.items()}
        return {pair: signals[value] for pair, value in zip(job.members, job.values,
                                                            strict=True)}

    def _fetch(self, tick: _Tick, query: str, window: float, now: float,
               deadline: float, span: Span | None = None,
               timeout: float | None = None,
               on_error: Callable[[str], None] | None = None) -> Signal | _Body:
        """One query, retried on transient failures with jittered backoff, never past deadline.

        The first attempt runs bare; tenacity is set up only once it failed. `span` (start,
        end, step) asks that exact range instead of the window's; `timeout` replaces the
        configured per-query timeout (a history load's own). `on_error` hears each failed
        attempt's detail: if the tick's deadline passes while this still retries, the late
        signal says what went wrong, not only that no answer came.
        """
        def once() -> Signal | _Body:
            """One attempt; `on_error` hears its failure."""
            try:
                return self._attempt(tick, query, window, now, deadline, span, timeout)
            except _Transient as exc:
                if on_error is not None:
                    on_error(exc.signal.detail)
                raise

        try:
            return once()
        except _Transient as exc:
            first = exc

        def out_of_time(state: RetryCallState) -> bool:
            return time.monotonic() + state.upcoming_sleep + MARGIN + MIN_ATTEMPT >= deadline

        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            # 0.1 s, 0.2 s, 0.4 s ... up to 2 s, plus up to 0.1 s of jitter so that the workers
            # of one tick (and several autoscalers) do not retry in lockstep.
            wait=wait_exponential(multiplier=0.1, max=2.0) + wait_random(0, 0.1),
            stop=out_of_time,
            reraise=True,
        )
        attempts = 1
        try:
            for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        raise first  # the attempt already made: the backoff starts after it
                    attempts += 1
                    answer = once()
        except _Transient as exc:
            if attempts > 1:  # already redacted: cutting it now leaks nothing
                detail = one_line(exc.signal.detail, DETAIL_CHARS - 16)
                return Signal.bad(SignalState.ERROR, f"{detail} ({attempts} attempts)")
            return exc.signal
        return answer

    def _where(self, window: float) -> str:
        return self.endpoint + ("/api/v1/query_range" if window > 0 else "/api/v1/query")

    def _attempt(
        self, tick: _Tick, query: str, window: float, now: float, deadline: float,
        span: Span | None = None, per_query: float | None = None,
    ) -> Signal | _Body:
        where = self._where(window)
        limit = self.config.timeout if per_query is None else per_query
        timeout = min(limit, deadline - MARGIN - time.monotonic())
        if timeout < MIN_ATTEMPT:
            return tick.error(f"no time left before the tick's deadline to ask {where}")
        try:
            response = self._send(tick, query, window, now, timeout, span)
        except requests.exceptions.SSLError as exc:  # a bad certificate stays bad: no retry
            return tick.error(f"{where}: {_transport_reason(exc, timeout)}")
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            reason = tick.scrub(_transport_reason(exc, timeout))
            log.debug("query to %s failed, may retry: %s", where, reason)
            raise _Transient(tick.error(f"{where}: {reason}")) from None
        except Exception as exc:  # e.g. a header value requests refuses to send
            return tick.error(f"{where}: the request could not be sent ({type(exc).__name__})")
        return self._judge(tick, response, where)

    def _send(self, tick: _Tick, query: str, window: float, now: float,
              timeout: float, span: Span | None = None) -> requests.Response:
        # Prometheus' own `timeout` parameter lets it give up on the query when we do.
        # partial_response=false: Thanos answers an error instead of what some stores gave.
        params = {"query": query, "timeout": f"{timeout:.3f}", "partial_response": "false"}
        if span is not None:  # an exact range (history): points on its own grid
            params.update(start=f"{span[0]:.3f}", end=f"{span[1]:.3f}", step=f"{span[2]:.3f}")
            url = f"{self.config.url}/api/v1/query_range"
        elif window > 0:
            # Whole seconds for the range: the points stay on the same grid from tick to tick.
            params.update(start=str(round(now - window)), end=str(round(now)),
                          step=f"{self._step(window):.3f}")
            url = f"{self.config.url}/api/v1/query_range"
        else:
            params["time"] = f"{now:.3f}"
            url = f"{self.config.url}/api/v1/query"
        # Explicit verify, as the client passes it: left unset, REQUESTS_CA_BUNDLE in the
        # environment would replace ca_file and even verify_tls: false.
        options: dict[str, Any] = {"headers": tick.headers, "auth": tick.auth,
                                   "timeout": timeout, "verify": self._session.verify}
        if len(query) > POST_ABOVE:  # a long (grouped) query: in the body, not the URL
            return self._session.post(url, data=params, **options)
        return self._session.get(url, params=params, **options)

    def _step(self, window: float) -> float:
        """A range query's resolution: one scrape interval, coarser only for huge windows."""
        return max(self.config.scrape_interval, window / MAX_POINTS, 0.001)

    def _judge(self, tick: _Tick, response: requests.Response, where: str) -> Signal | _Body:
        """The decoded body of a 2xx answer, else its error; a 5xx is raised as worth a retry.

        The body is decoded once, here; `classify_response` judges what it holds.
        """
        status = response.status_code
        payload = _decoded(response)
        if status >= 400:
            said = payload.get("error") if isinstance(payload, dict) else None
            suffix = f": {said}" if isinstance(said, str) and said else ""
            signal = tick.error(f"HTTP {status} from {where}{suffix}")
            if status >= 500:
                raise _Transient(signal)
            return signal
        if not 200 <= status < 300:
            return tick.error(f"unexpected HTTP {status} from {where}")
        if payload is None:
            kind = response.headers.get("Content-Type", "no Content-Type").split(";")[0]
            return tick.error(f"answer from {where} is not JSON ({kind})")
        return _Body(payload)


def _decoded(response: requests.Response) -> Any:
    """The body as JSON, or None when it is not (bad bytes, bad JSON, nesting too deep)."""
    try:
        return json.loads(response.content)
    except Exception:
        return None
