"""Who may write. Standby copies keep evaluating (explain, metrics, records) but never write.

The Lease elector talks to the API server through `autoscaler.kube` (the client layer the
Kubernetes actuator shares), imported only when a LeaseLeader makes its first call, so the
pure Lease logic below (lease_action, next_lease) is testable without the kubernetes client.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from autoscaler.errors import ActuatorError, ConflictError, TargetMissing

if TYPE_CHECKING:
    from autoscaler.config import LeaderElectionConfig

log = logging.getLogger("autoscaler.leader")


class Leadership(Protocol):
    """Asked before every write; `role` is shown in /readyz and the `leader` metric."""

    def is_leader(self) -> bool: ...

    @property
    def role(self) -> str: ...

    def close(self) -> None: ...


class NoElection:
    """`leader_election.mode: none`: this process always acts (one copy only)."""

    role = "leader"

    def is_leader(self) -> bool:
        return True

    def close(self) -> None:
        return None


class NotACandidate:
    """A copy that can never write (dry-run) takes no part in the Lease election: holding the
    Lease would only keep the live copies from writing. It decides as a standby would."""

    def __init__(self, why: str) -> None:
        self.role = f"standby ({why})"

    def is_leader(self) -> bool:
        return False

    def close(self) -> None:
        return None


class SwarmLeader:
    """`leader_election.mode: swarm`: act only while this engine is the Raft leader.

    Checked at every tick, so a daemon on each manager gives high availability with no extra
    parts: when the leader's node is lost, another manager becomes leader and its daemon acts.
    """

    def __init__(self, docker_client: Any) -> None:
        self._client = docker_client
        self.role = "standby"

    def is_leader(self) -> bool:
        try:
            swarm = self._client.info().get("Swarm", {})
            node_id = swarm.get("NodeID")
            if not node_id or not swarm.get("ControlAvailable"):
                self.role = "standby (not a manager)"
                return False
            node = self._client.api.inspect_node(node_id)
            leader = bool(node.get("ManagerStatus", {}).get("Leader"))
        except Exception:
            self.role = "standby (docker unreachable)"
            return False
        self.role = "leader" if leader else "standby"
        return leader

    def close(self) -> None:
        return None


# --------------------------------------------------------------------------- Kubernetes Lease

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
LEASE_RESOURCE = "leases.coordination.k8s.io"


class LeaseAction(StrEnum):
    """What one election round does with the Lease it read."""

    CREATE = "create"  # there is no Lease yet
    ACQUIRE = "acquire"  # free, released or expired: take it over
    RENEW = "renew"  # ours: bump renewTime
    WAIT = "wait"  # another holder's, still valid


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The Lease spec fields the election reads and writes; times are epoch seconds."""

    holder: str = ""  # holderIdentity; empty when released
    duration: float = 0.0  # leaseDurationSeconds
    acquire_time: float | None = None
    renew_time: float | None = None
    transitions: int = 0  # leaseTransitions


def lease_action(lease: LeaseRecord | None, identity: str, now: float,
                 unchanged_for: float) -> LeaseAction:
    """Acquire, renew or wait, as client-go's leaderelection decides.

    Another holder's Lease is expired only when BOTH its own times say so (renewTime +
    leaseDurationSeconds < now) AND this process has seen it unchanged for longer than
    leaseDurationSeconds (`unchanged_for`, on its own monotonic clock, as client-go's
    observedTime): a standby whose wall clock runs ahead can then never take over early.
    """
    if lease is None:
        return LeaseAction.CREATE
    if lease.holder == identity:
        return LeaseAction.RENEW
    if not lease.holder:
        return LeaseAction.ACQUIRE
    renewed = lease.renew_time if lease.renew_time is not None else lease.acquire_time
    expired_by_lease = renewed is None or renewed + lease.duration < now
    if expired_by_lease and unchanged_for > lease.duration:
        return LeaseAction.ACQUIRE
    return LeaseAction.WAIT


def next_lease(lease: LeaseRecord | None, identity: str, now: float,
               duration: float) -> LeaseRecord:
    """The record to write when acquiring or renewing; a takeover counts a transition."""
    if lease is not None and lease.holder == identity:
        return replace(lease, duration=duration, renew_time=now)
    transitions = 0 if lease is None else lease.transitions + 1
    return LeaseRecord(identity, duration, acquire_time=now, renew_time=now,
                       transitions=transitions)


def released_lease(lease: LeaseRecord, now: float) -> LeaseRecord:
    """What a clean shutdown writes (as client-go): no holder, so a standby takes over at once."""
    return LeaseRecord("", 1.0, acquire_time=now, renew_time=now, transitions=lease.transitions)


def parse_lease(raw: dict[str, Any], default_duration: float) -> LeaseRecord:
    """A Lease as the API returns it (JSON) → LeaseRecord; unreadable fields count as absent."""
    spec = raw.get("spec") or {}
    try:
        duration = float(spec["leaseDurationSeconds"])
    except (KeyError, TypeError, ValueError):
        duration = default_duration
    try:
        transitions = int(spec.get("leaseTransitions") or 0)
    except (TypeError, ValueError):
        transitions = 0
    return LeaseRecord(str(spec.get("holderIdentity") or ""), duration,
                       _parse_time(spec.get("acquireTime")), _parse_time(spec.get("renewTime")),
                       transitions)


def lease_spec(record: LeaseRecord) -> dict[str, Any]:
    """LeaseRecord → the Lease's spec (MicroTime: RFC 3339 with microseconds, UTC)."""
    return {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": max(1, math.ceil(record.duration)),
        "acquireTime": _format_time(record.acquire_time),
        "renewTime": _format_time(record.renew_time),
        "leaseTransitions": record.transitions,
    }


def _parse_time(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _format_time(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity(environ: Mapping[str, str] | None = None) -> str:
    """POD_NAME when set (the downward API), else hostname and pid: unique per process."""
    env = os.environ if environ is None else environ
    return env.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def default_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """The pod's own namespace (its service account's), else `default`."""
    try:
        return path.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


class LeaseLeader:
    """`leader_election.mode: kubernetes`: hold a coordination.k8s.io/v1 Lease, as client-go.

    A thread tries to acquire or renew every `retry_period`, each write carrying the
    resourceVersion read (409: another copy won). `is_leader()` is True only while the last
    successful renewal, timed from BEFORE its request was sent, is younger than
    `renew_deadline`: a copy frozen (SIGSTOP) or cut off from the API server stops claiming
    leadership by itself, `lease_duration - renew_deadline` before any other copy may take the
    Lease over. `close()` releases the Lease so a standby takes over at its next retry.
    `is_leader()` only reads: the election thread logs each change of role after its round.
    Calls go through `autoscaler.kube` (errors typed and scrubbed there, as the actuator's).
    """

    def __init__(self, *, name: str, namespace: str, identity: str, lease_duration: float,
                 renew_deadline: float, retry_period: float, api_client: Any = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = float(max(1, math.ceil(lease_duration)))  # whole seconds in a Lease
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._timeout = max(1.0, renew_deadline / 2)  # per request; a later answer is useless
        self._client = api_client
        self._owns_client = api_client is None
        self._coordination: Any = None  # CoordinationV1Api, built at the first call
        self._kube: Any = None  # autoscaler.kube.KubeApi on the same client
        self._ref: Any = None  # autoscaler.kube.Ref of the Lease
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()  # the fields below
        self._io = threading.Lock()  # one round (or the release) at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False
        self._renewed_at: float | None = None  # monotonic, before the last successful write
        self._reason = "starting"
        self._error = ""
        self._seen: tuple[str, float] | None = None  # (resourceVersion, first seen, monotonic)
        self._was_leader: bool | None = None  # as last logged; None: nothing logged yet

    @classmethod
    def from_config(cls, config: LeaderElectionConfig, api_client: Any = None, *,
                    environ: Mapping[str, str] | None = None,
                    namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> LeaseLeader:
        return cls(name=config.lease_name,
                   namespace=config.lease_namespace or default_namespace(namespace_file),
                   identity=default_identity(environ), lease_duration=config.lease_duration,
                   renew_deadline=config.renew_deadline, retry_period=config.retry_period,
                   api_client=api_client)

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    # --- the Leadership protocol ------------------------------------------------------------

    def is_leader(self) -> bool:
        """True while the last renewal is younger than renew_deadline. No side effects: it is
        asked before every write and by /readyz, from any thread."""
        with self._lock:
            return self._leading()

    def _leading(self) -> bool:
        """is_leader's answer; the caller holds `_lock`."""
        return (self._held and self._renewed_at is not None
                and self._monotonic() - self._renewed_at < self.renew_deadline)

    def _log_role_change(self) -> None:
        """After each round: say when this copy became the leader or stopped being it (a
        renewal that came too late is noticed here, at most one retry_period after)."""
        with self._lock:
            leader = self._leading()
            was, self._was_leader = self._was_leader, leader
            reason = self._standby_reason()
        if leader == was:
            return
        if leader:
            log.info("leader: holding lease %s as %s", self.lease, self.identity)
        else:  # losing leadership is worth a warning; starting as standby is not
            (log.warning if was else log.info)("standby: %s (lease %s, %s)", reason,
                                               self.lease, self.identity)

    @property
    def role(self) -> str:
        if self.is_leader():
            return "leader"
        with self._lock:
            return f"standby ({self._standby_reason()})"

    def _standby_reason(self) -> str:
        if self._held:  # ours on the API server as far as we know, but not renewed in time
            return "renewal overdue" + (f": {self._error}" if self._error else "")
        return self._reason

    def start(self) -> LeaseLeader:
        """One round now (a lone copy acts at its first tick), then one per retry_period."""
        self._round()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and release the Lease if it is ours (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=4 * self._timeout + self.retry_period)
            self._thread = None
        with self._io:
            with self._lock:
                held, self._held = self._held, False
                self._reason = "stopped"
            if held:
                self._release()
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = None
                self._coordination = self._kube = None

    # --- rounds -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.retry_period):
            self._round()

    def _round(self) -> None:
        try:
            with self._io:
                if not self._stop.is_set():
                    self.try_acquire_or_renew()
            self._log_role_change()
        except Exception:  # the thread must outlive any surprise; standby is the safe side
            log.exception("lease %s: election round failed", self.lease)

    def try_acquire_or_renew(self) -> bool:
        """One round: read the Lease, decide, write it if ours to take. True when held."""
        try:
            raw = self._call("get", "read_namespaced_lease", self.name, self.namespace)
        except ActuatorError as exc:
            self._failed(str(exc))
            return False
        lease = None if raw is None else parse_lease(raw, self.lease_duration)
        version = "" if raw is None else str((raw.get("metadata") or {}).get("resourceVersion"))
        action = lease_action(lease, self.identity, self._clock(),
                              self._unchanged_for(version))
        if action is LeaseAction.WAIT:
            assert lease is not None
            self._standby(f"lease held by {lease.holder}")
            return False
        sent = self._monotonic()
        record = next_lease(lease, self.identity, self._clock(), self.lease_duration)
        try:
            if raw is None:
                self._call("create", "create_namespaced_lease", self.namespace,
                           {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": self.name, "namespace": self.namespace},
                            "spec": lease_spec(record)})
            else:
                self._call("update", "replace_namespaced_lease", self.name, self.namespace,
                           _replacement(raw, record))
        except ConflictError:
            self._standby("another copy won the race for the lease")
            return False
        except ActuatorError as exc:
            self._failed(str(exc))
            return False
        with self._lock:
            self._held, self._renewed_at, self._error, self._reason = True, sent, "", ""
        if action is not LeaseAction.RENEW:
            log.info("acquired lease %s as %s (%s; transitions %d)", self.lease,
                     self.identity, action.value, record.transitions)
        return True

    def _unchanged_for(self, version: str) -> float:
        """How long this process has seen this resourceVersion (0 when it is new)."""
        now = self._monotonic()
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, now)
        return now - self._seen[1]

    def _standby(self, reason: str) -> None:
        with self._lock:
            lost, self._held = self._held, False
            self._reason, self._error = reason, ""
        if lost:
            log.warning("lost lease %s: %s", self.lease, reason)

    def _failed(self, error: str) -> None:
        with self._lock:
            changed = error != self._error
            self._error = error
            if not self._held:
                self._reason = error
        (log.warning if changed else log.debug)("lease %s: %s", self.lease, error)

    def _release(self) -> None:
        try:
            raw = self._call("get", "read_namespaced_lease", self.name, self.namespace)
            if raw is None:
                return
            lease = parse_lease(raw, self.lease_duration)
            if lease.holder != self.identity:
                log.info("lease %s is held by %s; nothing to release", self.lease, lease.holder)
                return
            self._call("update", "replace_namespaced_lease", self.name, self.namespace,
                       _replacement(raw, released_lease(lease, self._clock())))
            log.info("released lease %s", self.lease)
        except ActuatorError as exc:  # it expires by itself after lease_duration
            log.warning("lease %s not released (%s); it expires in %gs", self.lease, exc,
                        self.lease_duration)

    # --- the API ----------------------------------------------------------------------------

    def _api(self) -> Any:
        """The Lease API on the shared client layer, built at the first call."""
        from autoscaler.kube import KubeApi, Ref

        if self._coordination is None:
            import kubernetes.client

            from autoscaler.kube import kubernetes_api_client

            if self._client is None:
                self._client = kubernetes_api_client()  # ActuatorError: the round fails
            self._coordination = kubernetes.client.CoordinationV1Api(self._client)
        if self._kube is None:
            self._kube = KubeApi(self._client, self._timeout)
            self._ref = Ref(LEASE_RESOURCE, self.namespace, self.name, "Lease")
        return self._coordination

    def _call(self, verb: str, method: str, *args: Any) -> dict[str, Any] | None:
        """One API call's JSON body; None for a `get` of a missing Lease (404). Failures are
        the client layer's: ConflictError (409), ActuatorError with a scrubbed message."""
        from autoscaler.kube import FIELD_MANAGER

        coordination = self._api()
        kwargs = {} if verb == "get" else {"field_manager": FIELD_MANAGER}
        try:
            body = self._kube.call(verb, self._ref, getattr(coordination, method), *args,
                                   **kwargs)
        except TargetMissing:
            if verb == "get":
                return None
            raise
        if not isinstance(body, dict):
            raise ActuatorError(f"{self._ref.what(verb)}: unexpected answer")
        return body


def _replacement(raw: dict[str, Any], record: LeaseRecord) -> dict[str, Any]:
    """The Lease read, with a new spec: its labels and annotations kept, and its
    resourceVersion, so the API server refuses the write (409) if anyone wrote in between."""
    metadata = raw.get("metadata") or {}
    keep = ("name", "namespace", "resourceVersion", "labels", "annotations", "uid")
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {k: metadata[k] for k in keep if k in metadata},
            "spec": lease_spec(record)}
