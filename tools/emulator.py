"""Stalwart metrics emulator: the plant of `autoscaler/replay/plant.py` behind a real HTTP endpoint.

It closes the loop through real components without a real mail cluster: the autoscaler
scales a real Swarm service or Kubernetes workload, the emulator follows that backend's
instance count, runs the simulator's `Plant` (start-up delay, queue, capacity) in real time,
and serves what those instances would export — Stalwart's own `/metrics/prometheus` (real
names, no `_total`, per-node counters absent until their first event, non-cumulative
histograms in ms) and cAdvisor-style container CPU/memory on `/metrics` — for a real
Prometheus to scrape. The physics are the plant's; this module only splits its totals over
nodes and turns them into the series a node would show.

Assumptions beyond the plant (none of them measured, all constants below): 70 % of the
inflow arrives by MX and 30 % as submissions; one SMTP session per message; the outbound
connection and SMTP session times follow Little's law; IMAP/HTTP session counts scale with
demand; a starting container burns idle CPU although the plant counts it as not serving.

A real cluster is varied, so the emulator is too: one process can serve several node groups
(`Cluster`: e.g. an SMTP and an IMAP service, each following its own backend with its own
load and `role`), every Stalwart series carries the labels service discovery gives a node
(Swarm `service`, relabeled from `__meta_dockerswarm_service_name`; Kubernetes `namespace`
and `pod`, with pod names shaped as the workload kind makes them), and containers may have a
CPU limit of several cores (cAdvisor's `container_spec_cpu_quota`/`_period`) or a
Kubernetes request (`container_spec_cpu_shares`). It also serves Stalwart's management API
queue listing (`GET /api/queue/messages?limit=N` → `data.total`), behind an admin secret.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import math
import random
import re
import signal
import sys
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol, Self
from urllib.parse import parse_qs

from autoscaler.actuators.base import Actuator
from autoscaler.errors import TargetMissing
from autoscaler.replay.plant import (
    BASE_LATENCY,
    BASE_MEMORY,
    BUSY_MEMORY,
    DELIVERY_SECONDS,
    IDLE_CPU,
    Plant,
    PlantParams,
)
from autoscaler.trace import Trace, demand_at, load_trace, resolve_trace
from autoscaler.units import parse_duration

__all__ = [
    "BackendInstances",
    "Cluster",
    "Emulator",
    "FixedInstances",
    "InstanceSource",
    "KubernetesReplicas",
    "SwarmTasks",
    "Workload",
    "main",
]

log = logging.getLogger(__name__)

INBOUND_SHARE = 0.7  # of the inflow that arrives by MX (queue_queue_message); rest: submissions
SMTP_SESSION_SECONDS = 2.0  # one inbound SMTP session per message, this long
IMAP_SESSIONS_PER_EMAIL_HOUR = 0.1  # open IMAP sessions per email/hour of demand
HTTP_SESSIONS_PER_IMAP = 0.25  # webmail/JMAP sessions per IMAP session
MEMORY_LIMIT_BYTES = 2 * 1024**3  # the container's limit; the plant's memory % is of this
REFRESH_SECONDS = 300.0  # server.memory and (Enterprise) queue.count are recomputed this often
TIME_SPREAD = 0.5  # sigma of the log-normal spread of attempt and session times
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
STALWART_IMAGE = "stalwartlabs/stalwart:latest"
K8S_CONTAINER = "stalwart"

# AtomicHistogram bounds (crates/trc/src/atomics/histogram.rs); an overflow bucket follows.
MEDIUM_DURATIONS = (250, 500, 1_000, 5_000, 10_000, 60_000, 300_000, 600_000, 1_800_000,
                    3_600_000, 18_000_000)
LONG_DURATIONS = (1_000, 30_000, 300_000, 600_000, 1_800_000, 3_600_000, 14_400_000,
                  28_800_000, 43_200_000, 86_400_000, 604_800_000)

Edition = Literal["community", "enterprise"]
Role = Literal["all", "smtp", "imap"]
"""What a node group serves: `smtp` takes the mail flow and no IMAP sessions, `imap` holds
sessions from its load and takes no mail, `all` does both (one service for every protocol)."""
CPU_PERIOD_US = 100_000  # cgroup cpu.cfs_period_us, what Docker and the kubelet set

# Families in Stalwart's export order (counters, gauges, histograms), with their help text.
COUNTERS: dict[str, str] = {
    "queue_queue_message": "Queued message for delivery",
    "queue_queue_message_authenticated": "Queued message submission for delivery",
    "smtp_connection_start": "SMTP connection started",
    "delivery_attempt_start": "Delivery attempt started",
    "delivery_completed": "Delivery completed",
}
GAUGES: dict[str, str] = {
    "server_memory": "Server memory usage",
    "queue_count": "Total number of messages in the queue",
    "smtp_active_connections": "Active SMTP connections",
    "delivery_active_connections": "Active delivery connections",
    "imap_active_connections": "Active IMAP connections",
    "pop3_active_connections": "Active POP3 connections",
    "http_active_connections": "Active HTTP connections",
    "sieve_active_connections": "Active ManageSieve connections",
}
ENTERPRISE_GAUGES = frozenset({"queue_count"})
HISTOGRAMS: dict[str, tuple[str, tuple[int, ...]]] = {
    "delivery_total_time": ("Total message delivery time from submission to delivery",
                            LONG_DURATIONS),
    "smtp_request_time": ("SMTP request duration", MEDIUM_DURATIONS),
    "delivery_attempt_time": ("Message delivery attempt time", MEDIUM_DURATIONS),
}

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


# --- where the instance count comes from ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """Whose containers the series describe: labels differ between Swarm and Kubernetes.

    `kind` shapes the pod names (Deployment `<name>-<hash>-<5>`, StatefulSet `<name>-<n>`);
    `cpu_limit` (cores) becomes the cAdvisor CFS quota, `cpu_request` (cores, Kubernetes)
    the CPU shares. A node's CPU use is the plant's per-instance CPU % of `cores`, which is
    the limit when there is one: a 4-core container at 25 % uses one core.
    """

    backend: Literal["swarm", "kubernetes"]
    name: str
    namespace: str | None = None
    kind: Literal["deployment", "statefulset"] = "deployment"
    cpu_limit: float | None = None
    cpu_request: float | None = None

    @property
    def cores(self) -> float:
        """How many cores the plant's 100 % stands for."""
        return self.cpu_limit or self.cpu_request or 1.0

    def pod_name(self, node_id: int) -> str:
        """The pod name a Kubernetes controller would give the node's pod."""
        if self.kind == "statefulset":
            return f"{self.name}-{node_id - 1}"
        digest = hashlib.sha256(f"{self.namespace}/{self.name}".encode()).hexdigest()
        suffix = hashlib.sha256(f"{self.name}#{node_id}".encode()).hexdigest()
        return f"{self.name}-{digest[:10]}-{suffix[:5]}"

    def discovery_labels(self, node_id: int) -> dict[str, str]:
        """The labels the shipped scrape configs give a node (deploy/prometheus/)."""
        if self.backend == "kubernetes":
            return {"namespace": self.namespace or "default", "pod": self.pod_name(node_id)}
        return {"service": self.name}


class InstanceSource(Protocol):
    """A backend the emulator follows: how many Stalwart instances run now."""

    @property
    def workload(self) -> Workload: ...

    @property
    def description(self) -> str: ...

    def count(self) -> int:
        """Instances running now; raises on a backend failure (the last count is kept)."""
        ...

    def close(self) -> None: ...


class FixedInstances:
    """A fixed number of instances, for demos and tests without a backend."""

    def __init__(self, replicas: int, workload: Workload | None = None) -> None:
        if replicas < 0:
            raise ValueError("replicas must not be negative")
        self.replicas = replicas
        self._workload = workload or Workload("swarm", "stalwart")

    @property
    def workload(self) -> Workload:
        return self._workload

    @property
    def description(self) -> str:
        return f"fixed {self.replicas} replicas"

    def count(self) -> int:
        return self.replicas

    def close(self) -> None:
        pass


class BackendInstances:
    """A real backend's instance count, read through its actuator's own `status()` (one
    reading of a Swarm service or a Kubernetes workload, shared with the daemon): the
    running tasks / ready replicas when the backend reports them, else the spec count (the
    test API server runs no controllers, so its workloads never report readiness). A deleted
    service or workload runs nothing; any other failure raises (the last count is kept)."""

    def __init__(self, actuator: Actuator, workload: Workload,
                 close: Callable[[], None] | None = None) -> None:
        self._actuator = actuator
        self._workload = workload
        self._close = close

    @property
    def workload(self) -> Workload:
        return self._workload

    @property
    def description(self) -> str:
        return self._actuator.description

    def count(self) -> int:
        try:
            status = self._actuator.status()
        except TargetMissing:
            return 0
        return status.ready if status.ready is not None else status.current

    def close(self) -> None:
        if self._close is not None:
            self._close()


class SwarmTasks(BackendInstances):
    """A Swarm service's running tasks, through SwarmActuator.status().

    Connects the way the docker CLI does (DOCKER_HOST...) unless given a client; the docker
    SDK is imported only here, so a run without Swarm does not load it. The containers' CPU
    limit is what cAdvisor sees (the CFS quota): read from the service spec unless given
    (a reservation never reaches cAdvisor).
    """

    def __init__(self, service: str, client: Any = None, timeout: float = 10.0,
                 cpu_limit: float | None = None) -> None:
        from autoscaler.actuators.swarm import SwarmActuator, swarm_client

        owned = client is None
        if client is None:
            client = swarm_client(timeout)
        if cpu_limit is None:
            cpu_limit = _spec_cpu_limit(client, service)
        super().__init__(SwarmActuator(client, service),
                         Workload("swarm", service, cpu_limit=cpu_limit),
                         client.close if owned else None)
        self.service = service


def _spec_cpu_limit(client: Any, service: str) -> float | None:
    """The service's `resources.limits.cpus`, in cores (None: no limit, or no service yet)."""
    try:
        spec = client.api.inspect_service(service)["Spec"]
    except Exception:  # a service not there yet: no limit known
        return None
    nano = spec.get("TaskTemplate", {}).get("Resources", {}).get("Limits", {}).get("NanoCPUs")
    return nano / 1e9 if nano else None


WorkloadKind = Literal["deployment", "statefulset"]


class KubernetesReplicas(BackendInstances):
    """A Deployment's or StatefulSet's replicas, through KubernetesActuator.status(). Uses
    the in-cluster account in a pod, else KUBECONFIG."""

    def __init__(self, namespace: str, kind: WorkloadKind, name: str, *,
                 kubeconfig: str | None = None, api_client: Any = None,
                 cpu_limit: float | None = None, cpu_request: float | None = None) -> None:
        if kind not in ("deployment", "statefulset"):
            raise ValueError(f"kind must be deployment or statefulset, not {kind!r}")
        from autoscaler.actuators.kubernetes import KubernetesActuator
        from autoscaler.kube import kubernetes_api_client

        owned = api_client is None
        if api_client is None:
            api_client = kubernetes_api_client(kubeconfig)
        super().__init__(KubernetesActuator(api_client, kind, namespace, name),
                         Workload("kubernetes", name, namespace, kind=kind,
                                  cpu_limit=cpu_limit, cpu_request=cpu_request),
                         api_client.close if owned else None)
        self.namespace, self.kind, self.name = namespace, kind, name
        self.cpu_limit, self.cpu_request = cpu_limit, cpu_request


# --- one node's series ------------------------------------------------------------------------


@dataclass(slots=True)
class StalwartHistogram:
    """Stalwart's AtomicHistogram as exported: NOT Prometheus semantics.

    `observe` adds to the one bucket the value falls in (value < bound), and it adds the
    VALUE, not 1 (crates/trc/src/atomics/histogram.rs); the exporter passes each bucket as
    the cumulative count and writes the last as `le="inf"`. `_sum` and `_count` are right,
    which is why presets use rate(sum)/rate(count).
    """

    bounds: tuple[int, ...]
    buckets: list[int] = field(default_factory=list)
    total: int = 0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * (len(self.bounds) + 1)

    def observe(self, value: int) -> None:
        self.total += value
        self.count += 1
        self.buckets[bisect_right(self.bounds, value)] += value


@dataclass(slots=True)
class _Node:
    """One Stalwart instance: per-process counters that die with it, as on a restart."""

    id: int
    start: float
    container_id: str
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    histograms: dict[str, StalwartHistogram] = field(
        default_factory=lambda: {name: StalwartHistogram(bounds)
                                 for name, (_, bounds) in HISTOGRAMS.items()})
    gauges: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GAUGES, 0))
    cpu_seconds: float = 0.0
    memory_bytes: float = MEMORY_LIMIT_BYTES * BASE_MEMORY / 100.0
    memory_refreshed: float = -math.inf
    queue_count: float = 0.0
    queue_refreshed: float = -math.inf

    def add(self, counter: str, amount: float) -> int:
        """Add a (fractional) amount of events; returns how many whole events that made."""
        before = math.floor(self.counters[counter])
        self.counters[counter] += amount
        return math.floor(self.counters[counter]) - before

    def exported(self, counter: str) -> int:
        return math.floor(self.counters[counter])


# --- the emulator -----------------------------------------------------------------------------


class _Served:
    """What Emulator and Cluster share: start()/stop() as a context manager, and where the
    HTTP server is bound."""

    _server: _Server | None
    _what = "emulator"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """`host:port` the server is bound to (what a file_sd target names)."""
        if self._server is None:
            raise RuntimeError(f"{self._what} not started")
        host, port = self._server.server_address[:2]
        return f"{host.decode() if isinstance(host, bytes) else host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


class Emulator(_Served):
    """A Stalwart cluster's metrics, driven by demand and a real backend's instance count.

    `start()` binds the HTTP server and starts two daemon threads (server, and a loop that
    polls the backend and steps the plant every `poll` seconds); `stop()` ends both.
    Instances present at start are taken as warm (serving at once); later ones serve after
    `startup_delay`, as in the plant.
    """

    def __init__(
        self,
        source: InstanceSource,
        *,
        demand: float = 0.0,
        trace: Trace | None = None,
        speed: float = 1.0,
        capacity_per_instance: float = 10000.0,
        startup_delay: float = 10.0,
        poll: float = 1.0,
        prefix: str = "",
        edition: Edition = "community",
        role: Role = "all",
        admin_secret: str | None = None,
        discovery_labels: bool = True,
        initial_queue: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if prefix and not _METRIC_NAME.match(prefix):
            raise ValueError(f"prefix {prefix!r} would make invalid metric names")
        if not (math.isfinite(demand) and demand >= 0):
            raise ValueError("demand must be a finite number >= 0 (emails/hour)")
        if speed <= 0 or poll <= 0 or capacity_per_instance <= 0 or startup_delay < 0:
            raise ValueError("speed, poll and capacity must be > 0, startup_delay >= 0")
        self.source = source
        self.trace = trace
        self.speed = speed
        self.poll = poll
        self.prefix = prefix
        self.edition: Edition = edition
        self.role: Role = role
        # Off: the scrape config under test attaches them (one node per scrape target).
        self.discovery_labels = discovery_labels
        self.admin_secret = admin_secret
        self.queue_api_calls = 0
        self._host, self._port = host, port
        self._manual: float | None = None if trace is not None else float(demand)
        self._plant = Plant(PlantParams(capacity_per_instance, startup_delay))
        if not (math.isfinite(initial_queue) and initial_queue >= 0):
            raise ValueError("initial_queue must be a finite number >= 0 (messages)")
        self._plant.queue = float(initial_queue)  # e.g. a standing backlog from before
        self._nodes: list[_Node] = []  # sorted by (start, id): the plant removes the newest
        self._rng = random.Random(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0 = 0.0
        self._t = 0.0  # plant time (seconds since start) the state has been advanced to
        self._done_rate = 0.0  # completions per second in the last step
        self._backend_error: str | None = None
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    # -- life cycle --

    def start(self, serve: bool = True) -> None:
        """Take the backend's count as warm instances and start stepping; with `serve`, bind
        and serve too (a `Cluster` serves its groups itself)."""
        if self._server is not None or self._threads:
            raise RuntimeError("emulator already started")
        count = self.source.count()  # a backend that cannot be read at all fails loudly here
        self._t0 = self._clock()
        with self._lock:
            self._t = 0.0
            self._resize(count, -self._plant.params.startup_delay)
            self._refresh_gauges(0.0)
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, name="emulator-plant", daemon=True)]
        if serve:
            self._server = _Server((self._host, self._port), _Handler, self)
            self._threads.append(threading.Thread(target=self._server.serve_forever,
                                                  name="emulator-http", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop serving and stepping; closes the backend client the emulator made."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=15)
        self._threads = []
        self._server = None
        self.source.close()

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self.tick()

    # -- control --

    def set_demand(self, emails_per_hour: float) -> None:
        """Replace the demand (and any trace) from now on; the past keeps the old demand."""
        if not (math.isfinite(emails_per_hour) and emails_per_hour >= 0):
            raise ValueError("demand must be a finite number >= 0 (emails/hour)")
        with self._lock:
            self._advance_to(self._clock() - self._t0)
            self._manual = float(emails_per_hour)

    def demand(self) -> float:
        with self._lock:
            return self._demand_at(self._t)

    def tick(self) -> None:
        """Poll the backend, advance the plant to now, apply the new count."""
        try:
            count: int | None = self.source.count()
            error = None
        except Exception as exc:  # any backend failure: keep the last count, say why
            count, error = None, f"{type(exc).__name__}: {exc}"
            if error != self._backend_error:
                log.warning("reading %s failed (keeping %d instances): %s",
                            self.source.description, len(self._nodes), error)
        with self._lock:
            now = self._clock() - self._t0
            self._advance_to(now)
            if count is not None:
                self._resize(count, now)
            self._refresh_gauges(now)
            self._backend_error = error

    # -- physics --

    def _demand_at(self, t: float) -> float:
        if self._manual is not None or self.trace is None:
            return self._manual or 0.0
        return demand_at(self.trace, self.trace.t[0] + t * self.speed)

    def _advance_to(self, now: float) -> None:
        dt = now - self._t
        if dt <= 0:
            return
        self._step(self._t, dt, self._demand_at(self._t))
        self._t = now

    def _step(self, t: float, dt: float, demand: float) -> None:
        """One plant step; its totals are split over the nodes that did the work."""
        plant = self._plant
        n_serving = plant.serving(t)
        arrived0, processed0, cpu0 = plant.arrived, plant.processed, plant.cpu_seconds
        capacity, _ = plant.step(t, dt, demand)
        arrived = plant.arrived - arrived0
        done = plant.processed - processed0
        self._done_rate = done / dt
        queue_wait = BASE_LATENCY + plant.queue / (capacity / 3600.0) if capacity > 0 else 0.0
        nodes, serving = self._nodes, self._nodes[:n_serving]
        cores = self.source.workload.cores
        # Mail is accepted by every running node (the start-up delay is warm-up, not refusal);
        # with none running, the plant still queues it, but no node counts it. An IMAP group
        # takes no mail: its load is sessions, its plant only makes its CPU.
        for node in nodes if self.role != "imap" else ():
            share = arrived / len(nodes)
            inbound = node.add("queue_queue_message", share * INBOUND_SHARE)
            submitted = node.add("queue_queue_message_authenticated",
                                 share * (1.0 - INBOUND_SHARE))
            node.queue_count += inbound + submitted
            for _ in range(node.add("smtp_connection_start", share)):
                node.histograms["smtp_request_time"].observe(
                    self._duration_ms(SMTP_SESSION_SECONDS))
        for node in serving:
            per_node = done / len(serving)
            node.cpu_seconds += (plant.cpu_seconds - cpu0) / len(serving) * cores
            node.memory_bytes = MEMORY_LIMIT_BYTES * (
                BASE_MEMORY + BUSY_MEMORY * plant.last_util) / 100.0
            if self.role == "imap":
                continue
            node.add("delivery_attempt_start", per_node)
            completed = node.add("delivery_completed", per_node)
            node.queue_count -= completed
            for _ in range(completed):
                attempt = self._duration_ms(DELIVERY_SECONDS)
                node.histograms["delivery_attempt_time"].observe(attempt)
                node.histograms["delivery_total_time"].observe(
                    attempt + round(queue_wait * 1000.0))
        for node in nodes[n_serving:]:
            node.cpu_seconds += IDLE_CPU / 100.0 * dt * cores

    def _duration_ms(self, mean_seconds: float) -> int:
        """A log-normal duration with the given mean, in whole milliseconds."""
        mu = math.log(mean_seconds * 1000.0) - TIME_SPREAD**2 / 2.0
        return max(1, round(self._rng.lognormvariate(mu, TIME_SPREAD)))

    def _resize(self, count: int, t: float) -> None:
        """Follow the backend: add nodes that start at `t`, or drop the newest, as the plant."""
        count = max(count, 0)
        while len(self._nodes) < count:
            taken = {n.id for n in self._nodes}
            node_id = next(i for i in range(1, len(taken) + 2) if i not in taken)
            # Unique across the groups of a Cluster too (cAdvisor's `id` joins its series).
            cid = hashlib.sha256(
                f"{self.source.workload.name}:{self._rng.getrandbits(256)}".encode()).hexdigest()
            self._nodes.append(_Node(node_id, t, cid))
        del self._nodes[count:]  # the list is in (start, id) order: these are the newest
        self._plant.set_replicas(count, t)
        if sorted(self._plant.starts) != [n.start for n in self._nodes]:
            raise AssertionError("emulator nodes and plant instances diverged")

    def _refresh_gauges(self, t: float) -> None:
        """Gauges as a node would show them now (Little's law for connections)."""
        nodes = self._nodes
        n_serving = self._plant.serving(t)
        demand = self._demand_at(t)
        arrival_per_node = demand / 3600.0 / len(nodes) if nodes else 0.0
        imap = demand * IMAP_SESSIONS_PER_EMAIL_HOUR / n_serving if n_serving else 0.0
        if self.role == "smtp":
            imap = 0.0
        mail = self.role != "imap"
        for i, node in enumerate(nodes):
            serving = i < n_serving
            g = node.gauges
            g["smtp_active_connections"] = (
                round(arrival_per_node * SMTP_SESSION_SECONDS) if mail else 0)
            g["delivery_active_connections"] = (
                round(self._done_rate / n_serving * DELIVERY_SECONDS) if serving and mail
                else 0)
            g["imap_active_connections"] = round(imap) if serving else 0
            g["http_active_connections"] = round(imap * HTTP_SESSIONS_PER_IMAP) if serving else 0
            if t - node.memory_refreshed >= REFRESH_SECONDS:
                node.memory_refreshed = t
                g["server_memory"] = round(node.memory_bytes)
            if t - node.queue_refreshed >= REFRESH_SECONDS:
                # Every node has the metrics.calculate role (unset = all): a full count of
                # the shared queue, then +-1 per local event until the next refresh.
                node.queue_refreshed = t
                node.queue_count = self._plant.queue if mail else 0.0
            g["queue_count"] = max(0, round(node.queue_count))

    # -- what is served --

    def state(self) -> dict[str, Any]:
        """Demand, instances, queue and counter totals: what a test or an operator checks."""
        with self._lock:
            plant = self._plant
            return {
                "t": round(self._t, 3),
                "demand": self._demand_at(self._t),
                "running": len(self._nodes),
                "serving": plant.serving(self._t),
                "queue": round(plant.queue, 3),
                "capacity_per_hour": plant.serving(self._t) * plant.params.capacity_per_instance,
                "arrived": round(plant.arrived, 3),
                "processed": round(plant.processed, 3),
                "nodes": [n.id for n in self._nodes],
                "counters": {name: sum(n.exported(name) for n in self._nodes)
                             for name in COUNTERS},
                "prefix": self.prefix,
                "edition": self.edition,
                "role": self.role,
                "workload": self.source.workload.name,
                "queue_api_calls": self.queue_api_calls,
                "backend": self.source.description,
                "backend_error": self._backend_error,
            }

    def stalwart_families(self) -> list[Family]:
        """Stalwart's families as its rust-prometheus encoder writes them, one series per
        node, each with the labels service discovery gives that node."""
        with self._lock:
            nodes = sorted(self._nodes, key=lambda n: n.id)
            w = self.source.workload
            own = {n.id: _labels({**(w.discovery_labels(n.id) if self.discovery_labels else {}),
                                  "node": str(n.id)})
                   for n in nodes}
            families: list[Family] = []
            p = self.prefix
            for name, help_text in COUNTERS.items():
                lines = [f"{p}{name}{{{own[n.id]}}} {n.exported(name)}"
                         for n in nodes if n.exported(name) > 0]
                families.append((p + name, help_text, "counter", lines))
            for name, help_text in GAUGES.items():
                if name in ENTERPRISE_GAUGES and self.edition != "enterprise":
                    continue
                lines = [f"{p}{name}{{{own[n.id]}}} {n.gauges[name]}" for n in nodes]
                families.append((p + name, help_text, "gauge", lines))
            for name, (help_text, _) in HISTOGRAMS.items():
                lines = []
                for n in nodes:
                    h = n.histograms[name]
                    if h.count == 0:
                        continue  # a histogram is exported once it has an observation
                    les = [str(b) for b in h.bounds] + ["inf"]
                    lines += [f'{p}{name}_bucket{{{own[n.id]},le="{le}"}} {v}'
                              for le, v in zip(les, h.buckets, strict=True)]
                    lines += [f"{p}{name}_sum{{{own[n.id]}}} {h.total}",
                              f"{p}{name}_count{{{own[n.id]}}} {h.count}"]
                families.append((p + name, help_text, "histogram", lines))
            return families

    def stalwart_metrics(self) -> str:
        """`/metrics/prometheus` of this group's nodes."""
        return render(self.stalwart_families())

    def cadvisor_families(self) -> list[Family]:
        """cAdvisor's (or the kubelet's) families for the instances' containers."""
        with self._lock:
            nodes = sorted(self._nodes, key=lambda n: n.id)
            w = self.source.workload
            series: dict[str, list[str]] = {name: [] for name, _, _ in CADVISOR_FAMILIES}
            for n in nodes:
                for labels, is_container in self._container_labels(n):
                    values: dict[str, float | None] = {
                        "container_cpu_usage_seconds_total": n.cpu_seconds,
                        "container_memory_working_set_bytes": round(n.memory_bytes),
                        "container_spec_memory_limit_bytes": MEMORY_LIMIT_BYTES,
                        "container_spec_cpu_period": CPU_PERIOD_US,
                        "container_spec_cpu_quota": (round(w.cpu_limit * CPU_PERIOD_US)
                                                     if w.cpu_limit else None),
                        # Docker leaves 1024 when nothing asks; the kubelet writes
                        # request x 1024 (at least 2) on Kubernetes.
                        "container_spec_cpu_shares": (
                            max(2, round((w.cpu_request or 0.0) * 1024))
                            if w.backend == "kubernetes" else 1024),
                    }
                    if not is_container:
                        values["container_spec_cpu_quota"] = None
                    for name, value in values.items():
                        if value is None:
                            continue
                        text = f"{value:.6f}" if isinstance(value, float) else str(value)
                        series[name].append(f"{name}{{{labels}}} {text}")
            return [(name, help_text, kind, series[name])
                    for name, help_text, kind in CADVISOR_FAMILIES]

    def cadvisor_metrics(self) -> str:
        """`/metrics` as cAdvisor shows this group's containers."""
        return render(self.cadvisor_families())

    def queue_total(self) -> int:
        """What `GET /api/queue/messages` counts: the messages in the (shared) queue."""
        with self._lock:
            self.queue_api_calls += 1
            return max(0, round(self._plant.queue)) if self.role != "imap" else 0

    def _container_labels(self, node: _Node) -> list[tuple[str, bool]]:
        """Label sets of a node's container series, and whether each is the container's own
        (Kubernetes adds the pod's cgroup, container="")."""
        w = self.source.workload
        cid = node.container_id
        if w.backend == "kubernetes":
            pod = w.pod_name(node.id)
            common = {"namespace": w.namespace or "default", "pod": pod, "node": str(node.id)}
            container = _labels({**common, "container": K8S_CONTAINER,
                                 "id": f"/kubepods/pod{cid[:32]}/{cid}", "image": STALWART_IMAGE,
                                 "name": f"k8s_{K8S_CONTAINER}_{pod}"})
            # The pod cgroup: container="" — what the preset's container!="" leaves out.
            pod_cgroup = _labels({**common, "container": "", "id": f"/kubepods/pod{cid[:32]}",
                                  "image": "", "name": ""})
            return [(container, True), (pod_cgroup, False)]
        task = f"{w.name}.{node.id}.{cid[:25]}"
        return [(_labels({
            "container_label_com_docker_swarm_service_name": w.name,
            "container_label_com_docker_swarm_task_name": task,
            "id": f"/docker/{cid}", "image": STALWART_IMAGE, "name": task,
            "node": str(node.id),
        }), True)]


Family = tuple[str, str, str, list[str]]
"""(name, help, type, series lines) of one metric family."""
CADVISOR_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.",
     "counter"),
    ("container_memory_working_set_bytes", "Current working set in bytes.", "gauge"),
    ("container_spec_memory_limit_bytes", "Memory limit for the container.", "gauge"),
    ("container_spec_cpu_period", "CPU period of the container.", "gauge"),
    ("container_spec_cpu_quota", "CPU quota of the container.", "gauge"),
    ("container_spec_cpu_shares", "CPU share of the container.", "gauge"),
)


def render(families: Iterable[Family]) -> str:
    """Families in text format; the same family from several groups is written once."""
    merged: dict[str, tuple[str, str, list[str]]] = {}
    for name, help_text, kind, lines in families:
        merged.setdefault(name, (help_text, kind, []))[2].extend(lines)
    out: list[str] = []
    for name, (help_text, kind, lines) in merged.items():
        _family(out, name, help_text, kind, lines)
    return "".join(out)


class Cluster(_Served):
    """Several node groups (e.g. an SMTP and an IMAP service, each following its own backend
    with its own load) behind ONE endpoint, as one Prometheus job scrapes a whole cluster;
    the groups share Stalwart's queue (the management API counts it for the cluster)."""

    _what = "emulator cluster"

    def __init__(self, groups: dict[str, Emulator], *, host: str = "127.0.0.1",
                 port: int = 0, admin_secret: str | None = None) -> None:
        if not groups:
            raise ValueError("a cluster needs at least one group")
        self.groups = groups
        self.admin_secret = admin_secret
        self.queue_api_calls = 0
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for group in self.groups.values():
            group.start(serve=False)
        self._server = _Server((self._host, self._port), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="emulator-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._server, self._thread = None, None
        for group in self.groups.values():
            group.stop()


    def stalwart_metrics(self) -> str:
        return render(f for g in self.groups.values() for f in g.stalwart_families())

    def cadvisor_metrics(self) -> str:
        return render(f for g in self.groups.values() for f in g.cadvisor_families())

    def state(self) -> dict[str, Any]:
        return {"groups": {name: g.state() for name, g in self.groups.items()},
                "queue_api_calls": self.queue_api_calls}

    def queue_total(self) -> int:
        self.queue_api_calls += 1
        return sum(g.queue_total() for g in self.groups.values())

    def set_demand(self, emails_per_hour: float, group: str | None = None) -> None:
        self._group(group).set_demand(emails_per_hour)

    def demand(self, group: str | None = None) -> float:
        return self._group(group).demand()

    def _group(self, name: str | None) -> Emulator:
        if name is None and len(self.groups) == 1:
            return next(iter(self.groups.values()))
        if name not in self.groups:
            raise ValueError(f"group must be one of {', '.join(self.groups)}")
        return self.groups[name]


def _family(out: list[str], name: str, help_text: str, kind: str, lines: Sequence[str]) -> None:
    """A family with HELP and TYPE, or nothing at all when it has no series."""
    if lines:
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
        out.extend(line + "\n" for line in lines)


def _labels(values: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in values.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --- HTTP -------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 emulator: Emulator | Cluster) -> None:
        super().__init__(address, handler)
        self.emulator = emulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        emulator = self.server.emulator
        path, _, query = self.path.partition("?")
        if path == "/api/queue/messages":
            self._queue_messages(emulator, parse_qs(query))
        elif path == "/metrics/prometheus":
            self._send(200, emulator.stalwart_metrics(), PROMETHEUS_CONTENT_TYPE)
        elif path == "/metrics":
            self._send(200, emulator.cadvisor_metrics(), PROMETHEUS_CONTENT_TYPE)
        elif path == "/control/state":
            self._send(200, json.dumps(emulator.state()), "application/json")
        elif path in ("/healthz/live", "/healthz/ready"):
            self._send(200, "", "text/plain")
        else:
            self._send(404, "not found\n", "text/plain")

    def _queue_messages(self, emulator: Emulator | Cluster, query: dict[str, list[str]]) -> None:
        """Stalwart's queue listing: `data.total` counts the whole queue (each call scans
        it, hence the callers' rate limit); Basic auth as an admin, else 401."""
        secret = emulator.admin_secret
        given = self.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"admin:{secret}".encode()).decode()
        if secret is None or given != expected:
            self._send(401, json.dumps({"type": "about:blank", "status": 401,
                                        "title": "Unauthorized",
                                        "detail": "You have to authenticate first."}),
                       "application/problem+json")
            return
        try:
            limit = int(query.get("limit", ["0"])[0])
        except ValueError:
            limit = 0
        total = emulator.queue_total()
        items = [{"id": i + 1} for i in range(min(max(limit, 0), total))]
        self._send(200, json.dumps({"data": {"total": total, "items": items}}),
                   "application/json")

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        if path != "/control/demand":
            self._send(404, "not found\n", "text/plain")
            return
        group = parse_qs(query).get("group", [None])[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace").strip()
        try:
            value = json.loads(body)
            if isinstance(value, dict):
                value = value.get("demand")
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(body)
            target = self.server.emulator
            if isinstance(target, Cluster):
                target.set_demand(float(value), group)
                demand = target.demand(group)
            else:
                target.set_demand(float(value))
                demand = target.demand()
        except ValueError as exc:
            self._send(400, json.dumps({"error": "body must be a number of emails/hour >= 0 "
                                                 f"({exc})"}),
                       "application/json")
            return
        self._send(200, json.dumps({"demand": demand}), "application/json")

    def _send(self, status: int, body: str, content_type: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


# --- CLI --------------------------------------------------------------------------------------


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.emulator",
        description="Serve the metrics of an emulated Stalwart cluster that follows a real "
                    "backend's instance count.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 (default): a free port, printed")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--replicas", type=int, help="a fixed number of instances")
    src.add_argument("--swarm-service", metavar="NAME",
                     help="follow this Swarm service's running tasks (DOCKER_HOST...)")
    src.add_argument("--kubernetes", metavar="NAMESPACE/KIND/NAME",
                     help="follow spec.replicas of a deployment or statefulset (KUBECONFIG)")
    dem = p.add_mutually_exclusive_group()
    dem.add_argument("--demand", type=float, default=0.0, help="emails/hour, constant")
    dem.add_argument("--trace", help="trace CSV (t,demand) or a bundled trace name")
    p.add_argument("--speed", type=float, default=1.0, help="trace seconds per real second")
    p.add_argument("--capacity-per-instance", type=float, default=10000.0,
                   help="emails/hour one serving instance delivers")
    p.add_argument("--startup-delay", type=_duration, default=10.0,
                   help="before a new instance serves (default 10s)")
    p.add_argument("--poll", type=_duration, default=1.0,
                   help="backend poll and plant step interval (default 1s)")
    p.add_argument("--prefix", default="", help="metric-name prefix, e.g. stalwart_")
    p.add_argument("--edition", choices=("community", "enterprise"), default="community")
    p.add_argument("--workload", default="stalwart",
                   help="with --replicas: the service (or, with --namespace, workload) name "
                        "in the cAdvisor labels")
    p.add_argument("--namespace", help="with --replicas: use Kubernetes cAdvisor labels")
    p.add_argument("--role", choices=("all", "smtp", "imap"), default="all",
                   help="what the nodes serve: the mail flow, IMAP sessions, or both")
    p.add_argument("--cpu-limit", type=float, help="cores per container (cAdvisor CFS quota)")
    p.add_argument("--cpu-request", type=float,
                   help="cores requested per container (Kubernetes: cAdvisor CPU shares)")
    p.add_argument("--initial-queue", type=float, default=0.0,
                   help="messages already queued at start (a standing backlog)")
    p.add_argument("--admin-secret-file",
                   help="serve GET /api/queue/messages to Basic auth admin:<this file's text>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _source(args: argparse.Namespace) -> InstanceSource:
    if args.swarm_service:
        return SwarmTasks(args.swarm_service, cpu_limit=args.cpu_limit)
    if args.kubernetes:
        parts = args.kubernetes.split("/")
        if len(parts) != 3 or parts[1] not in ("deployment", "statefulset") or not all(parts):
            raise ValueError(f"--kubernetes {args.kubernetes!r}: expected NAMESPACE/deployment/"
                             "NAME or NAMESPACE/statefulset/NAME")
        kind: WorkloadKind = "deployment" if parts[1] == "deployment" else "statefulset"
        return KubernetesReplicas(parts[0], kind, parts[2], cpu_limit=args.cpu_limit,
                                  cpu_request=args.cpu_request)
    workload = (Workload("kubernetes", args.workload, args.namespace,
                         cpu_limit=args.cpu_limit, cpu_request=args.cpu_request)
                if args.namespace
                else Workload("swarm", args.workload, cpu_limit=args.cpu_limit))
    return FixedInstances(args.replicas, workload)


def main(argv: Iterable[str] | None = None) -> int:
    """Run until SIGINT or SIGTERM; exit 2 on a bad argument or an unreachable backend."""
    parser = _parser()
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trace = load_trace(resolve_trace(args.trace)) if args.trace else None
        secret = None
        if args.admin_secret_file:
            with open(args.admin_secret_file, encoding="utf-8") as f:
                secret = f.read().strip()
        emulator = Emulator(
            _source(args), demand=args.demand, trace=trace, speed=args.speed,
            capacity_per_instance=args.capacity_per_instance, startup_delay=args.startup_delay,
            poll=args.poll, prefix=args.prefix, edition=args.edition, role=args.role,
            admin_secret=secret, initial_queue=args.initial_queue, host=args.host,
            port=args.port, seed=args.seed)
        emulator.start()
    except Exception as exc:  # a bad trace, argument or unreachable backend: say it, exit 2
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    try:  # the parent reads the URL from this line
        print(f"emulator listening on {emulator.url} (port {emulator.port}; /metrics/prometheus,"
              f" /metrics, /control/state, POST /control/demand, GET /api/queue/messages)"
              f" following {emulator.source.description}", flush=True)
        done.wait()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
