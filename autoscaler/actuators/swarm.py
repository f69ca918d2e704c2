"""Docker Swarm backend: read a replicated service, write replicas + state in one update.

The write mirrors `docker service scale`: the service's whole Spec, exactly as inspected, is
POSTed back to `/services/{id}/update?version=N` with only `Mode.Replicated.Replicas` and the
`autoscaler.*` labels changed. docker-py's `update(labels=...)` would replace every label
(`com.docker.stack.*` included), and its low-level `update_service()` rebuilds the spec from
the keys it knows (dropping any it does not, moving networks, adding a registry-auth header
that resets PullOptions), so neither can promise that nothing else changes.

The docker SDK has no type stubs: its values are `Any` only inside this module's helpers.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import docker
import docker.errors
import requests

from autoscaler.actuators.base import (
    Actuator,
    ActuatorError,
    ConflictError,
    NotAllowed,
    TargetMissing,
)
from autoscaler.model import TargetState, TargetStatus
from autoscaler.state import (
    PAUSED,
    SWARM_PREFIX,
    Pause,
    decode_state,
    encode_state,
    read_pause,
)

__all__ = ["ServiceDirectory", "SwarmActuator", "swarm_client"]

log = logging.getLogger(__name__)

# What swarmkit answers when the version we send is not the service's current one.
_OUT_OF_SEQUENCE = "update out of sequence"


def swarm_client(timeout: float) -> docker.DockerClient:
    """A client that connects the way the docker CLI does.

    DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH are honored (default: the local
    socket); the API version is negotiated with the engine (or DOCKER_API_VERSION), because
    docker-py's default is newer than dockerd 20.10 accepts. Negotiating connects, so an
    unreachable engine fails here, as an ActuatorError.
    """
    version = os.environ.get("DOCKER_API_VERSION") or "auto"
    try:
        return docker.from_env(timeout=timeout, version=version)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        host = os.environ.get("DOCKER_HOST") or "the local docker socket"
        raise ActuatorError(f"connect to docker at {host}: {_cause(exc)}") from exc


def _cause(exc: BaseException) -> str:
    """The engine's own words when it gave any, else the exception's, on one line."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc) or type(exc).__name__
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class _Read:
    """The service as the last status() saw it: what scale() writes back, versioned."""

    service_id: str
    version: int
    spec: dict[str, Any]
    replicas: int
    pause: Pause  # the operator's switches, read once


class ServiceDirectory:
    """The service list and the running tasks, read ONCE per tick and shared by every Swarm
    target of the process, instead of an inspect and a task list per target.

    A listed service carries the same `Spec` and `Version` as an inspect, so a target's write
    still sends the version its tick read (and swarm refuses it if the service changed
    since). With fewer than two targets it reads nothing: a target's own inspect is cheaper
    than listing every service; nor once the engine refused the list with 403 (a proxy that
    allows inspecting a service by name but not listing them; the Docker API proxy of
    deploy/swarm allows both): each target then inspects its own, as without a directory.
    Thread-safe: the first target of a tick lists, the others wait for that list.
    """

    def __init__(self, client: docker.DockerClient) -> None:
        self._api: Any = client.api
        self._lock = threading.Lock()
        self._members: set[str] = set()
        self._targets = 0  # actuators registered (several may read one service)
        self._tick = 0
        self._read_at = -1
        self._services: dict[str, Any] = {}
        self._ready: dict[str, int] = {}
        self._error: ActuatorError | None = None
        self._refused = False

    def register(self, service: str) -> None:
        with self._lock:
            self._members.add(service)
            self._targets += 1

    def begin_tick(self) -> None:
        """A new tick: the next lookup lists again."""
        with self._lock:
            self._tick += 1

    def lookup(self, service: str) -> tuple[Any, int] | None:
        """(the service as listed, its running tasks) this tick; None when the target should
        inspect it itself (directory unused, or no service of exactly that name or ID)."""
        with self._lock:
            if self._targets < 2 or self._refused:
                return None
            if self._read_at != self._tick:
                self._read_at = self._tick
                self._refresh()
                if self._refused:
                    return None
            if self._error is not None:
                raise self._error
            raw = self._services.get(service)
            if raw is None:
                return None
            return raw, self._ready.get(str(raw.get("ID")), 0)

    def _refresh(self) -> None:
        self._services, self._ready, self._error = {}, {}, None
        try:
            listed = self._api.services()
            by_key: dict[str, Any] = {}
            for raw in listed:
                by_key[str(raw["ID"])] = raw
                by_key.setdefault(str(raw["Spec"]["Name"]), raw)
            ids = sorted({str(by_key[m]["ID"]) for m in self._members if m in by_key})
            tasks = self._api.tasks(filters={"service": ids, "desired-state": "running"}) \
                if ids else []
            ready: dict[str, int] = {}
            for t in tasks:
                if (t.get("DesiredState") == "running"
                        and (t.get("Status") or {}).get("State") == "running"):
                    sid = str(t.get("ServiceID"))
                    ready[sid] = ready.get(sid, 0) + 1
        except docker.errors.APIError as exc:
            if exc.status_code == 403:
                self._refused = True
                log.warning("listing swarm services is refused (%s); every target inspects "
                            "its own service from now on", _cause(exc))
                return
            self._error = ActuatorError(f"list services: {_cause(exc)}")
            return
        except (docker.errors.DockerException, requests.exceptions.RequestException,
                OSError) as exc:
            self._error = ActuatorError(f"list services: cannot reach docker: {_cause(exc)}")
            return
        except (KeyError, TypeError, AttributeError) as exc:
            self._error = ActuatorError(f"list services: unexpected answer ({exc!r})")
            return
        self._services, self._ready = by_key, ready


class SwarmActuator(Actuator):
    """One replicated Swarm service. Not thread-safe: one loop tick uses it at a time."""

    def __init__(self, client: docker.DockerClient, service: str,
                 directory: ServiceDirectory | None = None) -> None:
        self._api: Any = client.api
        self.service = service
        self._read: _Read | None = None
        self._directory = directory
        self._fresh_next = False  # after a write attempt, the next status() inspects itself
        if directory is not None:
            directory.register(service)

    @property
    def description(self) -> str:
        return f"swarm service {self.service}"

    # --- reading ----------------------------------------------------------------------------

    def _call(self, verb: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one API call; every failure becomes an ActuatorError that names `verb`."""
        try:
            return fn(*args, **kwargs)
        except docker.errors.NotFound as exc:
            raise TargetMissing(f"{verb}: service {self.service!r} not found") from exc
        except docker.errors.APIError as exc:
            raise ActuatorError(f"{verb}: {_cause(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException,
                OSError) as exc:
            raise ActuatorError(f"{verb}: cannot reach docker: {_cause(exc)}") from exc

    def _inspect(self) -> _Read:
        verb = f"inspect service {self.service}"
        return self._parse(self._call(verb, self._api.inspect_service, self.service), verb)

    def _parse(self, raw: Any, verb: str) -> _Read:
        try:
            spec = raw["Spec"]
            mode = spec.get("Mode") or {}
            if "Replicated" not in mode:
                kind = next(iter(mode), "missing")
                raise NotAllowed(
                    f"{verb}: Spec.Mode is {kind}; only replicated services can be scaled")
            replicas = int(mode["Replicated"].get("Replicas", 0))
            labels: dict[str, str] = dict(spec.get("Labels") or {})
            read = _Read(str(raw["ID"]), int(raw["Version"]["Index"]), spec, replicas,
                         pause=read_pause(labels, SWARM_PREFIX))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ActuatorError(f"{verb}: unexpected answer ({exc!r})") from exc
        return read

    def _ready(self, service_id: str) -> int:
        verb = f"list tasks of service {self.service}"
        tasks = self._call(verb, self._api.tasks,
                           filters={"service": service_id, "desired-state": "running"})
        try:
            return sum(1 for t in tasks
                       if t.get("ServiceID") == service_id
                       and t.get("DesiredState") == "running"
                       and (t.get("Status") or {}).get("State") == "running")
        except (TypeError, AttributeError) as exc:
            raise ActuatorError(f"{verb}: unexpected answer ({exc!r})") from exc

    def _decode(self, labels: dict[str, str]) -> TargetState:
        """The state in the labels; unreadable parts are logged and dropped, never fatal."""
        try:
            decoded = decode_state(labels, SWARM_PREFIX)
        except Exception as exc:  # untrusted input must never stop the target
            # decode_state drops what it cannot read; this is the backstop should anything
            # still escape it (deeply nested JSON once did, as RecursionError).
            log.warning("swarm service %s: state labels unreadable (%r); adopting it as it is",
                        self.service, exc)
            return TargetState()
        for problem in decoded.problems:
            log.warning("swarm service %s: %s", self.service, problem)
        return decoded.state

    def status(self) -> TargetStatus:
        """Spec replicas, running tasks, decoded state and pause; remembers what it read.

        From the tick's shared service list when there is one; from its own inspect and
        task list otherwise, and always right after a write attempt (a conflict's re-read
        must see the service as it is now, not as the tick began).
        """
        listed = None
        if self._directory is not None and not self._fresh_next:
            listed = self._directory.lookup(self.service)
        self._fresh_next = False
        if listed is not None:
            read = self._parse(listed[0], f"read service {self.service}")
            ready = listed[1]
        else:
            read = self._inspect()
            ready = self._ready(read.service_id)
        state = self._decode(dict(read.spec.get("Labels") or {}))
        self._read = read
        pause = read.pause
        return TargetStatus(current=read.replicas, ready=ready, state=state, paused=pause.paused,
                            paused_replicas=pause.replicas, pause_problem=pause.problem,
                            uid=read.service_id)

    # --- writing ----------------------------------------------------------------------------

    def _require_manager(self, verb: str) -> None:
        info = self._call(f"{verb}: docker info", self._api.info)
        swarm = (info or {}).get("Swarm") or {}
        node_state = swarm.get("LocalNodeState") or "inactive"
        if node_state != "active" or not swarm.get("ControlAvailable"):
            raise NotAllowed(
                f"{verb}: this docker engine is not a swarm manager (swarm state "
                f"{node_state!r}, manager: {bool(swarm.get('ControlAvailable'))}); run the "
                "autoscaler on a manager or point DOCKER_HOST at one")

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        """Write `replicas` and `state` in ONE update of the spec the last status() read.

        ConflictError when that spec's count is not `expected_current` or the service has
        changed since (swarm refuses the stale version); the caller re-reads and decides again.
        """
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, not {replicas}")
        verb = f"update service {self.service}"
        self._require_manager(verb)
        read = self._read if self._read is not None else self._inspect()
        self._read = None  # a write, or a refused one, spends the version that was read
        self._fresh_next = True
        if read.replicas != expected_current:
            raise ConflictError(
                f"{verb}: it has {read.replicas} replicas, not the {expected_current} the "
                "decision was made for; re-read and decide again")
        if read.pause.paused:
            raise NotAllowed(f"{verb}: it is paused ({SWARM_PREFIX}{PAUSED}=true)")

        spec = copy.deepcopy(read.spec)
        labels = encode_state(state, SWARM_PREFIX)
        labels.pop(SWARM_PREFIX + PAUSED, None)  # the operator's switch, never ours
        spec["Labels"] = {**(spec.get("Labels") or {}), **labels}
        spec["Mode"]["Replicated"]["Replicas"] = replicas
        try:
            self._call(verb, _post_update, self._api, read.service_id, read.version, spec)
        except TargetMissing:
            raise
        except ActuatorError as exc:
            status = getattr(getattr(exc.__cause__, "response", None), "status_code", None)
            if status == 409 or _OUT_OF_SEQUENCE in str(exc):
                raise ConflictError(
                    f"{verb}: it changed since it was read (version {read.version}); re-read "
                    "and decide again") from exc.__cause__
            raise


def _post_update(api: Any, service_id: str, version: int, spec: dict[str, Any]) -> None:
    """POST the whole spec, as `docker service scale` does: no registry-auth header, so the
    engine keeps the spec's PullOptions; errors as the SDK's own types (NotFound, APIError)."""
    url = f"{api.base_url}/v{api.api_version}/services/{quote(service_id, safe='')}/update"
    response = api.post(url, json=spec, params={"version": version}, timeout=api.timeout)
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        docker.errors.create_api_error_from_http_exception(exc)  # raises NotFound/APIError
