"""The daemon's own metrics, /healthz, /readyz and /statusz, on an explicit CollectorRegistry.

/healthz says the loop runs (a tick finished within three intervals), not that the last
tick succeeded: a Prometheus outage must not get the daemon restarted by its watchdog.
/readyz says the process runs with a loaded config, as a controller's does: a rollout with
`maxUnavailable: 0` must complete during a Prometheus outage. What is degraded (Prometheus,
a target, an HPA conflict) is in its body, in the `problem`/`degraded` metrics, and on
/statusz, which answers 503 while anything is.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from autoscaler.model import Decision, SignalState

NAMESPACE = "autoscaler"
# Beside `target` on every per-target series: what the target scales, so the series join with
# kube-state-metrics and cAdvisor (`on(namespace, workload)`, Swarm `on(service)`). The
# Kubernetes kind is `workload_kind`: `kind` is already the clip kind of autoscaler_clips_total.
IDENTITY = ("namespace", "workload_kind", "workload", "service")
NO_IDENTITY = ("", "", "", "")
_STATES = tuple((state, str(state)) for state in SignalState)
FORECASTING = frozenset({"seasonal"})  # policy types that always show a forecast series
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True)
class LastDecision:
    """A target's last decision, as its gauges show it until the next one."""

    decision: Decision
    min_replicas: int
    max_replicas: int
    paused: bool


class DecisionGauges(Collector):
    """Every per-target gauge, computed at scrape time from each target's last decision: a
    target or policy that is gone has no decision to show, so no series of it is left."""

    def __init__(self) -> None:
        self._last: dict[str, LastDecision] = {}
        self._identity: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def identify(self, identities: dict[str, tuple[str, ...]]) -> None:
        with self._lock:
            self._identity = dict(identities)

    def set(self, last: LastDecision) -> None:
        with self._lock:
            self._last[last.decision.target] = last

    def drop(self, target: str) -> None:
        with self._lock:
            self._last.pop(target, None)

    def drop_policies(self, target: str, labels: Collection[str]) -> None:
        """Policies removed by a reload: shown no more, even before the next decision."""
        with self._lock:
            last = self._last.get(target)
            if last is not None:
                kept = tuple(p for p in last.decision.policies if p.name not in labels)
                self._last[target] = replace(last, decision=replace(last.decision,
                                                                    policies=kept))

    def describe(self) -> list[Metric]:
        return self._families({}, {})

    def collect(self) -> list[Metric]:
        with self._lock:
            last, identity = dict(self._last), dict(self._identity)
        return self._families(last, identity)

    @staticmethod
    def _families(last: dict[str, LastDecision],
                  identity: dict[str, tuple[str, ...]]) -> list[Metric]:
        def gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=labels)

        t = ("target", *IDENTITY)
        desired = gauge("target_desired_replicas", "Replicas the last decision asked for", t)
        current = gauge("target_current_replicas", "Spec replicas read from the backend", t)
        ready = gauge("target_ready_replicas", "Ready replicas (NaN when unknown)", t)
        low = gauge("target_min_replicas", "Configured min_replicas", t)
        high = gauge("target_max_replicas", "Configured max_replicas", t)
        paused = gauge("target_paused", "1 while the target is paused", t)
        dry_run = gauge("target_dry_run", "1 when the target is in dry-run", t)
        value = gauge("policy_value", "Latest value of a policy's signal", (*t, "policy"))
        recommendation = gauge("policy_recommendation",
                               "A policy's replica proposal (NaN: no opinion)", (*t, "policy"))
        signal_state = gauge("signal_state", "1 for the current state of a policy's signal",
                             (*t, "policy", "state"))
        forecast = gauge("policy_forecast",
                         "What a forecasting policy (seasonal) expects its signal to read "
                         "`lead` from now (NaN: no forecast, e.g. history loading)",
                         (*t, "policy"))
        history = gauge("policy_history_seconds",
                        "Seconds of history a learning policy (seasonal) was handed at its "
                        "last evaluation (0 while it loads or after a failed load)",
                        (*t, "policy"))
        for name, one in last.items():
            d = one.decision
            who = (name, *identity.get(name, NO_IDENTITY))
            desired.add_metric(who, d.desired)
            current.add_metric(who, d.current)
            ready.add_metric(who, math.nan if d.ready is None else d.ready)
            low.add_metric(who, one.min_replicas)
            high.add_metric(who, one.max_replicas)
            paused.add_metric(who, 1 if one.paused else 0)
            dry_run.add_metric(who, 1 if d.dry_run else 0)
            for p in d.policies:
                value.add_metric((*who, p.name), math.nan if p.value is None else p.value)
                recommendation.add_metric((*who, p.name),
                                          math.nan if p.replicas is None else p.replicas)
                for state, label in _STATES:
                    signal_state.add_metric((*who, p.name, label), 1 if p.state is state else 0)
                if p.forecast is not None or p.type in FORECASTING:
                    forecast.add_metric((*who, p.name),
                                        math.nan if p.forecast is None else p.forecast)
                if p.history_seconds is not None:
                    history.add_metric((*who, p.name), p.history_seconds)
        return [desired, current, ready, low, high, paused, dry_run, value, recommendation,
                signal_state, forecast, history]


M = TypeVar("M", Counter, Histogram, Gauge)


@dataclass(frozen=True, slots=True)
class _Child:
    metric: Counter | Histogram | Gauge
    labels: tuple[str, ...]
    child: Counter | Histogram | Gauge


class TargetCounters:
    """The per-target counters, histograms (and the HPA-conflict gauge, set by the engine
    rather than from a decision) and their one owner: every labelled child is
    made here and remembered by target, so `forget` drops all of a target's series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            labels = (labels[0], *IDENTITY, *labels[1:])  # target, its identity, the rest
            return Counter(name, doc, labels, namespace=NAMESPACE, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...]) -> Histogram:
            labels = (labels[0], *IDENTITY, *labels[1:])
            return Histogram(name, doc, labels, namespace=NAMESPACE, registry=registry,
                             buckets=LATENCY_BUCKETS)

        self.decisions = counter("decisions", "Decisions by outcome", ("target", "outcome"))
        self.clips = counter("clips", "Rules that changed a proposal, by kind",
                             ("target", "kind"))
        self.scale_writes = counter("scale_writes", "Replica changes written to a backend",
                                    ("target", "direction"))
        self.query_errors = counter("query_errors", "Signals that came back not ok, by state",
                                    ("target", "state"))
        self.query_seconds = histogram("query_duration_seconds",
                                       "Time to read a target's signals", ("target",))
        self.actuation_errors = counter("actuation_errors", "Failed backend reads and writes",
                                        ("target", "verb"))
        self.actuation_seconds = histogram("actuation_duration_seconds",
                                           "Backend read/write latency", ("target", "verb"))
        self.hpa_conflict = Gauge("target_hpa_conflict",
                                  "1 while a HorizontalPodAutoscaler also scales the target "
                                  "(it is then read, never written)", ("target", *IDENTITY),
                                  namespace=NAMESPACE, registry=registry)
        # Children by target, then (metric, label values): `labels()` validates, locks and
        # hashes at every call, several calls per target per tick; the children do not change.
        self._children: dict[str, dict[tuple[int, tuple[str, ...]], _Child]] = {}
        self._identity: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def identify(self, identities: dict[str, tuple[str, ...]]) -> None:
        """Each target's identity labels from now on; a target whose identity changed loses
        its series under the old one."""
        with self._lock:
            changed = [t for t, old in self._identity.items()
                       if identities.get(t, old) != old]
            self._identity = dict(identities)
        for target in changed:
            self.forget(target)

    def of(self, metric: M, target: str, *labels: str) -> M:
        """`metric.labels(target, *labels)`, remembered until the target is forgotten."""
        key = (id(metric), labels)
        found = self._children.get(target, {}).get(key)
        if found is None:
            with self._lock:
                found = self._children.setdefault(target, {}).get(key)
                if found is None:
                    full = (target, *self._identity.get(target, NO_IDENTITY), *labels)
                    found = self._children[target][key] = _Child(
                        metric, full, metric.labels(*full))
        return cast(M, found.child)

    def forget(self, target: str) -> None:
        """Drop every series of `target` (removed by a reload)."""
        with self._lock:
            children = self._children.pop(target, {})
        for made in children.values():
            with contextlib.suppress(KeyError):
                made.metric.remove(*made.labels)


class Telemetry:
    """Every metric the daemon exports; see the README's metrics table."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.gauges = DecisionGauges()
        r.register(self.gauges)
        self.targets = TargetCounters(r)
        self.tick_seconds = Histogram("tick_duration_seconds", "Wall time of one tick",
                                      namespace=NAMESPACE, registry=r, buckets=LATENCY_BUCKETS)
        self.ticks = Counter("ticks", "Ticks run", namespace=NAMESPACE, registry=r)
        self.last_tick = Gauge("last_tick_timestamp_seconds", "When the last tick finished",
                               namespace=NAMESPACE, registry=r)
        self.last_success = Gauge("last_successful_tick_timestamp_seconds",
                                  "When the last tick finished with every target evaluated",
                                  namespace=NAMESPACE, registry=r)
        self.leader = Gauge("leader", "1 while this process may write", namespace=NAMESPACE,
                            registry=r)
        self.degraded = Gauge("degraded", "1 while the last tick found a problem (see /statusz)",
                              namespace=NAMESPACE, registry=r)
        self.problem = Gauge("problem", "1 while the last tick found a problem with this "
                             "component (prometheus or a target), else 0", ("component",),
                             namespace=NAMESPACE, registry=r)
        self._problem_components: set[str] = set()
        self.reload_failures = Counter("config_reload_failures",
                                       "SIGHUP reloads rejected for an invalid config",
                                       namespace=NAMESPACE, registry=r)
        self.info = Gauge("build_info", "Version of the running daemon", ("version",),
                          namespace=NAMESPACE, registry=r)

    def record_decision(self, decision: Decision, min_replicas: int, max_replicas: int,
                        paused: bool) -> None:
        """A target's decision: its gauges now show it; its outcome, clips and signals that
        were not ok are counted."""
        self.gauges.set(LastDecision(decision, min_replicas, max_replicas, paused))
        name, of, t = decision.target, self.targets.of, self.targets
        of(t.decisions, name, str(decision.outcome)).inc()
        for clip in decision.clips:
            of(t.clips, name, str(clip.kind)).inc()
        for p in decision.policies:
            if p.state is not SignalState.OK:
                of(t.query_errors, name, str(p.state)).inc()

    def observe_query(self, target: str, seconds: float) -> None:
        self.targets.of(self.targets.query_seconds, target).observe(seconds)

    def observe_actuation(self, target: str, verb: str, seconds: float, failed: bool) -> None:
        t = self.targets
        if failed:
            t.of(t.actuation_errors, target, verb).inc()
        t.of(t.actuation_seconds, target, verb).observe(seconds)

    def count_actuation_error(self, target: str, verb: str) -> None:
        """A failed backend call that was not timed (a client that could not be built)."""
        self.targets.of(self.targets.actuation_errors, target, verb).inc()

    def set_hpa_conflict(self, target: str, conflict: bool) -> None:
        self.targets.of(self.targets.hpa_conflict, target).set(1 if conflict else 0)

    def count_write(self, target: str, direction: str) -> None:
        self.targets.of(self.targets.scale_writes, target, direction).inc()

    def identify(self, identities: dict[str, tuple[str, ...]]) -> None:
        """What each target scales, as labels beside `target` on its series: (namespace,
        kind, workload, service), see IDENTITY. Set before a target's first series."""
        self.gauges.identify(identities)
        self.targets.identify(identities)

    def forget_policies(self, target: str, labels: Collection[str]) -> None:
        """Policies a reload removed from a kept target: their series go now."""
        self.gauges.drop_policies(target, labels)

    def record_problems(self, problems: Mapping[str, str]) -> None:
        """The last tick's problems by component: 1 for each, 0 for one seen before."""
        self.degraded.set(1 if problems else 0)
        for component in {*self._problem_components, *problems}:
            self.problem.labels(component).set(1 if component in problems else 0)
        self._problem_components.update(problems)

    def forget_target(self, target: str) -> None:
        """Every series of a target a reload removed."""
        self.gauges.drop(target)
        self.targets.forget(target)
        if target in self._problem_components:
            self._problem_components.discard(target)
            with contextlib.suppress(KeyError):
                self.problem.remove(target)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """What /healthz, /readyz and /statusz answer, updated by the loop."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval  # the loop sets it to its tick budget: ticks may run long
        self.clock = clock
        self.started = clock()
        self.last_tick: float | None = None
        self.config_loaded = False
        self.problems: dict[str, str] = {}
        self.paused: dict[str, str] = {}  # target -> why it holds ("paused at 3: held")
        self.role = "starting"
        self._lock = threading.Lock()

    def ticked(self) -> None:
        with self._lock:
            self.last_tick = self.clock()

    def set_problems(self, problems: dict[str, str]) -> None:
        with self._lock:
            self.problems = dict(problems)

    def set_paused(self, paused: dict[str, str]) -> None:
        with self._lock:
            self.paused = dict(paused)

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """The loop ran within three intervals (or is still within its first three)."""
        with self._lock:
            now = self.clock()
            since = now - (self.last_tick if self.last_tick is not None else self.started)
            ok = since <= 3 * self.interval
            return ok, {"status": "ok" if ok else "stuck",
                        "seconds_since_last_tick": round(since, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready = the process runs with a loaded config. Prometheus, the backends and HPA
        conflicts do not decide it: a rollout must complete during their outage, and a
        restart mends none of them. The body still says what is degraded."""
        with self._lock:
            ok = self.config_loaded
            return ok, {"status": "ready" if ok else "not ready",
                        "config_loaded": self.config_loaded, "role": self.role,
                        "degraded": self._degraded(), "problems": dict(self.problems)}

    def status(self) -> tuple[bool, dict[str, Any]]:
        """/statusz: ok once a tick has checked everything and found no problem; degraded
        (503, naming each problem) otherwise, for dashboards and blackbox probes."""
        with self._lock:
            ok = self.config_loaded and self.last_tick is not None and not self.problems
            if ok:
                status = "ok"
            elif not self.config_loaded:
                status = "no config"
            elif self.last_tick is None:
                status = "starting"
            else:
                status = "degraded"
            since = None if self.last_tick is None else round(self.clock() - self.last_tick, 3)
            return ok, {"status": status, "config_loaded": self.config_loaded,
                        "role": self.role, "problems": dict(self.problems),
                        "paused": dict(self.paused), "seconds_since_last_tick": since}

    def _degraded(self) -> bool:
        """Something is wrong, or not known to be right yet (no tick has checked)."""
        return self.last_tick is None or bool(self.problems)


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
        elif path in ("/healthz", "/readyz", "/statusz"):
            answer = {"/healthz": self.health.healthy, "/readyz": self.health.ready,
                      "/statusz": self.health.status}[path]
            ok, body = answer()
            self._send(200 if ok else 503, json.dumps(body).encode() + b"\n",
                       "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz, /readyz or /statusz\n",
                       "text/plain")


SHUTDOWN_POLL = 0.1  # seconds


class TelemetryServer:
    """A small threaded HTTP server for /metrics, /healthz, /readyz and /statusz."""

    def __init__(self, listen: str, telemetry: Telemetry, health: Health) -> None:
        host, _, port = listen.rpartition(":")
        handler = type("Handler", (_Handler,), {"telemetry": telemetry, "health": health})
        self.server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self.server.daemon_threads = True
        # serve_forever checks for `shutdown` every poll interval: 0.1 s, not its 0.5 s, so a
        # stop (and a reload that moves `listen`) does not wait half a second on it.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(SHUTDOWN_POLL,),
                                       name="telemetry", daemon=True)

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
