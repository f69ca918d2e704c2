"""The daemon's own metrics, /healthz and /readyz, on an explicit CollectorRegistry.

/healthz says the loop runs (a tick finished within three intervals), not that the last
tick succeeded: a Prometheus outage must not get the daemon restarted by its watchdog.
/readyz says the config is loaded and Prometheus and every backend answer.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from autoscaler.model import Decision, SignalState

NAMESPACE = "autoscaler"
_STATES = tuple((state, str(state)) for state in SignalState)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Telemetry:
    """Every metric the daemon exports; see the README's metrics table."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace=NAMESPACE, registry=r)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=NAMESPACE, registry=r)

        t = ("target",)
        self.desired = gauge("target_desired_replicas", "Replicas the last decision asked for", t)
        self.current = gauge("target_current_replicas", "Spec replicas read from the backend", t)
        self.ready = gauge("target_ready_replicas", "Ready replicas (NaN when unknown)", t)
        self.bounds_min = gauge("target_min_replicas", "Configured min_replicas", t)
        self.bounds_max = gauge("target_max_replicas", "Configured max_replicas", t)
        self.paused = gauge("target_paused", "1 while the target is paused", t)
        self.dry_run = gauge("target_dry_run", "1 when the target is in dry-run", t)
        self.policy_value = gauge("policy_value", "Latest value of a policy's signal",
                                  ("target", "policy"))
        self.policy_recommendation = gauge(
            "policy_recommendation", "A policy's replica proposal (NaN: no opinion)",
            ("target", "policy"))
        self.signal_state = gauge(
            "signal_state", "1 for the current state of a policy's signal",
            ("target", "policy", "state"))
        self.decisions = counter("decisions", "Decisions by outcome", ("target", "outcome"))
        self.clips = counter("clips", "Rules that changed a proposal, by kind",
                             ("target", "kind"))
        self.scale_writes = counter("scale_writes", "Replica changes written to a backend",
                                    ("target", "direction"))
        self.query_errors = counter("query_errors", "Signals that came back not ok, by state",
                                    ("target", "state"))
        self.query_seconds = Histogram("query_duration_seconds",
                                       "Time to read a target's signals", t,
                                       namespace=NAMESPACE, registry=r,
                                       buckets=LATENCY_BUCKETS)
        self.actuation_errors = counter("actuation_errors", "Failed backend reads and writes",
                                        ("target", "verb"))
        self.actuation_seconds = Histogram("actuation_duration_seconds",
                                           "Backend read/write latency", ("target", "verb"),
                                           namespace=NAMESPACE, registry=r,
                                           buckets=LATENCY_BUCKETS)
        self.tick_seconds = Histogram("tick_duration_seconds", "Wall time of one tick",
                                      namespace=NAMESPACE, registry=r, buckets=LATENCY_BUCKETS)
        self.ticks = counter("ticks", "Ticks run")
        self.last_tick = gauge("last_tick_timestamp_seconds", "When the last tick finished")
        self.last_success = gauge("last_successful_tick_timestamp_seconds",
                                  "When the last tick finished with every target evaluated")
        self.leader = gauge("leader", "1 while this process may write")
        self.reload_failures = counter("config_reload_failures",
                                       "SIGHUP reloads rejected for an invalid config")
        self.info = gauge("build_info", "Version of the running daemon", ("version",))
        # Labelled children by (metric, label values): `labels()` validates, locks and hashes
        # at every call, about 30 calls per target per tick; the child objects do not change.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # The signal state last exported per (target, policy): the one-hot gauges are set
        # again only when it changes.
        self._states: dict[tuple[str, str], SignalState] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered until the target's series are forgotten."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def forget_children(self, target: str) -> None:
        """Forget the remembered children of `target` (its series are being removed)."""
        for key in [k for k in list(self._children) if k[1][:1] == (target,)]:
            self._children.pop(key, None)
        for pair in [k for k in list(self._states) if k[0] == target]:
            self._states.pop(pair, None)

    def forget_target(self, target: str) -> None:
        """Drop a removed target's series (config reload)."""
        self.forget_children(target)
        for metric in (self.desired, self.current, self.ready, self.bounds_min,
                       self.bounds_max, self.paused, self.dry_run):
            with contextlib.suppress(KeyError):
                metric.remove(target)

    def record_decision(self, decision: Decision, min_replicas: int, max_replicas: int,
                        paused: bool) -> None:
        name, child = decision.target, self.child
        child(self.desired, name).set(decision.desired)
        child(self.current, name).set(decision.current)
        child(self.ready, name).set(math.nan if decision.ready is None else decision.ready)
        child(self.bounds_min, name).set(min_replicas)
        child(self.bounds_max, name).set(max_replicas)
        child(self.paused, name).set(1 if paused else 0)
        child(self.dry_run, name).set(1 if decision.dry_run else 0)
        child(self.decisions, name, str(decision.outcome)).inc()
        for clip in decision.clips:
            child(self.clips, name, str(clip.kind)).inc()
        for p in decision.policies:
            child(self.policy_value, name, p.name).set(math.nan if p.value is None else p.value)
            child(self.policy_recommendation, name, p.name).set(
                math.nan if p.replicas is None else p.replicas)
            if self._states.get((name, p.name)) is not p.state:
                for state, label in _STATES:
                    child(self.signal_state, name, p.name, label).set(
                        1 if p.state is state else 0)
                self._states[(name, p.name)] = p.state
            if p.state is not SignalState.OK:
                child(self.query_errors, name, str(p.state)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """What /healthz and /readyz answer, updated by the loop."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval  # the loop sets it to its tick budget: ticks may run long
        self.clock = clock
        self.started = clock()
        self.last_tick: float | None = None
        self.config_loaded = False
        self.problems: dict[str, str] = {}
        self.role = "starting"
        self._lock = threading.Lock()

    def ticked(self) -> None:
        with self._lock:
            self.last_tick = self.clock()

    def set_problems(self, problems: dict[str, str]) -> None:
        with self._lock:
            self.problems = dict(problems)

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """The loop ran within three intervals (or is still within its first three)."""
        with self._lock:
            now = self.clock()
            since = now - (self.last_tick if self.last_tick is not None else self.started)
            ok = since <= 3 * self.interval
            return ok, {"status": "ok" if ok else "stuck",
                        "seconds_since_last_tick": round(since, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Config loaded, and the last tick found Prometheus and every backend answering
        (not ready before a first tick has checked them)."""
        with self._lock:
            ok = self.config_loaded and self.last_tick is not None and not self.problems
            return ok, {"status": "ready" if ok else "not ready",
                        "config_loaded": self.config_loaded, "role": self.role,
                        "problems": dict(self.problems)}


class _Handler(BaseHTTPRequestHandler):
    telemetry: Telemetry
    health: Health

    def log_message(self, format: str, *args: Any) -> None:
        return  # the access log would drown the decision log

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.telemetry.exposition(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            ok, body = self.health.healthy() if path == "/healthz" else self.health.ready()
            self._send(200 if ok else 503, json.dumps(body).encode() + b"\n",
                       "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")


class TelemetryServer:
    """A small threaded HTTP server for /metrics, /healthz and /readyz."""

    def __init__(self, listen: str, telemetry: Telemetry, health: Health) -> None:
        host, _, port = listen.rpartition(":")
        handler = type("Handler", (_Handler,), {"telemetry": telemetry, "health": health})
        self.server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="telemetry",
                                       daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"{host}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
