"""Kubernetes backend: read a Deployment or StatefulSet, write replicas + state in one patch.

The write is ONE JSON merge patch (`application/merge-patch+json`) of the workload itself that
carries the `metadata.resourceVersion` read by `status()`: the API server refuses it with 409
when anything changed in between, so a decision is never applied to an object it was not made
for. The /scale subresource cannot carry annotations, hence the patch of the whole object.

Responses are read as raw JSON (`_preload_content=False`) rather than through the client's
generated models: only a handful of fields matter, and raw dicts cannot fail to deserialize on
an API server older or newer than the client. The kubernetes client has no type stubs: its
values are `Any` only inside this module's helpers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import kubernetes.client
import kubernetes.config
import kubernetes.config.incluster_config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from autoscaler.actuators.base import (
    Actuator,
    ActuatorError,
    ConflictError,
    NotAllowed,
    TargetMissing,
)
from autoscaler.model import TargetState, TargetStatus
from autoscaler.state import KUBERNETES_PREFIX, PAUSED, decode_state, encode_state

__all__ = ["COMPONENT", "FIELD_MANAGER", "KubernetesActuator", "kubernetes_api_client"]

log = logging.getLogger(__name__)

COMPONENT = "stalwart-autoscaler"
"""Event source component and field manager: who changed the object, in its managedFields."""
FIELD_MANAGER = COMPONENT

_MERGE_PATCH = "application/merge-patch+json"
_DETAIL_LIMIT = 300  # characters of the API server's own words kept in a message
_EVENT_MESSAGE_LIMIT = 1024  # events.k8s.io's limit; core/v1 has none, but keep them short


def kubernetes_api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """A client configured as kubectl would be, touching no global configuration.

    An explicit `kubeconfig` wins; in a pod (KUBERNETES_SERVICE_HOST set and the service-account
    token mounted) the in-cluster account; else KUBECONFIG or ~/.kube/config. Each actuator can
    thus talk to its own cluster, and tests can hold several clients at once.
    """
    config: Any = kubernetes.config  # its loaders are untyped
    in_cluster = kubeconfig is None and _in_cluster()
    # KUBECONFIG is read now: the client reads it once, when it is first imported.
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        if in_cluster:
            configuration = kubernetes.client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            client = kubernetes.client.ApiClient(configuration)
        else:
            client = config.new_client_from_config(config_file=where)
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError) as exc:
        source = "the in-cluster service account" if in_cluster else where
        raise ActuatorError(f"load the Kubernetes configuration from {source}: {exc}") from exc
    # One try per call: urllib3's default Retry(3) would turn one timeout into four and
    # overrun the tick; the loop retries at the next tick.
    no_retry = urllib3.util.Retry(total=0, redirect=0, raise_on_status=False)
    client.configuration.retries = no_retry
    client.rest_client.pool_manager.connection_pool_kw["retries"] = no_retry
    return client


def _in_cluster() -> bool:
    token: str = kubernetes.config.incluster_config.SERVICE_TOKEN_FILENAME
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.isfile(token)


@dataclass(frozen=True, slots=True)
class _Kind:
    """What differs between the two workload kinds: names and API methods."""

    kind: str  # as in an object reference: Deployment
    resource: str  # as RBAC and error messages name it: deployments.apps
    read: str  # AppsV1Api method names
    patch: str


_KINDS = {
    "deployment": _Kind("Deployment", "deployments.apps", "read_namespaced_deployment",
                        "patch_namespaced_deployment"),
    "statefulset": _Kind("StatefulSet", "statefulsets.apps", "read_namespaced_stateful_set",
                         "patch_namespaced_stateful_set"),
}


@dataclass(frozen=True, slots=True)
class _Read:
    """The workload as the last status() saw it: what scale() patches, versioned."""

    resource_version: str
    uid: str
    replicas: int
    paused: bool


class KubernetesActuator(Actuator):
    """One Deployment or StatefulSet. Not thread-safe: one loop tick uses it at a time."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        kind: Literal["deployment", "statefulset"],
        namespace: str,
        name: str,
        *,
        timeout: float = 10.0,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, not {kind!r}")
        self._client = api_client
        self._apps: Any = kubernetes.client.AppsV1Api(api_client)
        self._core: Any = kubernetes.client.CoreV1Api(api_client)
        self._autoscaling: Any = kubernetes.client.AutoscalingV1Api(api_client)
        self._kind = _KINDS[kind]
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self._timeout = timeout
        self._read: _Read | None = None
        self._uid = ""  # of the last object read; outlives the write, for its event

    @property
    def description(self) -> str:
        return f"kubernetes {self.kind} {self.namespace}/{self.name}"

    # --- calling the API --------------------------------------------------------------------

    def _call(self, verb: str, resource: str, fn: Callable[..., Any], *args: Any,
              **kwargs: Any) -> Any:
        """Run one API call, return its JSON body; failures become errors naming the verb.

        `verb` and `resource` are RBAC's words (`patch`, `deployments.apps`), so a 403 says
        exactly which rule the Role lacks.
        """
        what = (f"{verb} {resource} {self.namespace}/{self.name}"
                if resource == self._kind.resource
                else f"{verb} {resource} in namespace {self.namespace}")
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self._timeout,
                          **kwargs)
            data = response.data
        except ApiException as exc:
            raise self._api_error(exc, verb, resource, what) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            cause: BaseException = exc
            if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
                cause = exc.reason  # the wrapper's text repeats the URL and the pool
            # NewConnectionError subclasses ConnectTimeoutError, yet it means "refused"
            timed_out = isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError) \
                and not isinstance(cause, urllib3.exceptions.NewConnectionError)
            if timed_out:
                message = (f"{what}: the API server at {self._host()} did not answer within "
                           f"{self._timeout:g}s")
            else:
                message = (f"{what}: cannot reach the API server at {self._host()}: "
                           f"{_one_line(cause)}")
            raise ActuatorError(self._scrub(message)) from exc
        try:
            return json.loads(data)
        except ValueError as exc:  # not JSON: a proxy's error page, a truncated answer
            raise ActuatorError(f"{what}: unexpected answer ({_one_line(exc)})") from exc

    def _api_error(self, exc: ApiException, verb: str, resource: str,
                   what: str) -> ActuatorError:
        status = exc.status or 0
        detail = _api_message(exc)
        error: ActuatorError
        if status == 403:
            error = NotAllowed(
                f"forbidden: {verb} {resource} in namespace {self.namespace} — grant it in "
                f"the Role ({detail})")
        elif status == 401:
            error = ActuatorError(
                f"{what}: unauthorized: the API server rejected the credentials (expired or "
                f"revoked token?) ({detail})")
        elif status == 404 and resource != self._kind.resource:  # e.g. the namespace is gone
            error = ActuatorError(f"{what}: not found ({detail})")
        elif status == 404:
            error = TargetMissing(
                f"{what}: {self._kind.kind} {self.namespace}/{self.name} not found ({detail})")
        elif status == 409:
            error = ConflictError(
                f"{what}: it changed since it was read; re-read and decide again ({detail})")
        elif status == 0:  # the client's own failures (e.g. TLS) carry no HTTP status
            error = ActuatorError(f"{what}: cannot reach the API server at {self._host()}: "
                                  f"{_one_line(exc.reason)}")
        else:
            error = ActuatorError(f"{what}: HTTP {status} {exc.reason or ''}: {detail}"
                                  + _retry_after(exc))
        error.args = (self._scrub(str(error.args[0])),)
        return error

    def _host(self) -> str:
        return str(getattr(self._client.configuration, "host", "?"))

    def _scrub(self, message: str) -> str:
        """Never let a credential reach a message, whatever an error happened to echo."""
        keys = getattr(self._client.configuration, "api_key", None) or {}
        for value in keys.values():
            token = str(value).removeprefix("Bearer ").strip()
            if len(token) >= 8:
                message = message.replace(token, "<redacted>")
        return message

    # --- reading ----------------------------------------------------------------------------

    def _get(self) -> tuple[_Read, int | None, dict[str, str]]:
        raw = self._call("get", self._kind.resource, getattr(self._apps, self._kind.read),
                         self.name, self.namespace)
        try:
            metadata = raw["metadata"]
            annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
            replicas = int((raw.get("spec") or {}).get("replicas", 1))  # the API's default is 1
            status = raw.get("status") or {}
            # No controller has reported a status (e.g. an API server alone): readiness is
            # unknown, not zero. Once reported, a missing readyReplicas does mean 0 (omitempty).
            ready = (int(status.get("readyReplicas") or 0)
                     if status.get("observedGeneration") is not None else None)
            read = _Read(str(metadata["resourceVersion"]), str(metadata.get("uid") or ""),
                         replicas, paused=decode_state(_only_paused(annotations),
                                                       KUBERNETES_PREFIX).paused)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ActuatorError(
                f"get {self._kind.resource} {self.namespace}/{self.name}: unexpected answer "
                f"({exc!r})") from exc
        self._uid = read.uid
        return read, ready, annotations

    def _decode(self, annotations: dict[str, str]) -> TargetState:
        """The state in the annotations; unreadable parts are logged and dropped, never fatal."""
        try:
            decoded = decode_state(annotations, KUBERNETES_PREFIX)
        except Exception as exc:  # untrusted input must not stop the target
            log.warning("%s: state annotations unreadable (%r); adopting it as it is",
                        self.description, exc)
            return TargetState()
        for problem in decoded.problems:
            log.warning("%s: %s", self.description, problem)
        return decoded.state

    def status(self) -> TargetStatus:
        """Spec replicas, ready replicas (None until a controller reports), state and pause."""
        read, ready, annotations = self._get()
        state = self._decode(annotations)
        self._read = read
        return TargetStatus(current=read.replicas, ready=ready, state=state, paused=read.paused,
                            uid=read.uid)

    # --- writing ----------------------------------------------------------------------------

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        """Write `replicas` and `state` in ONE merge patch carrying the resourceVersion read.

        ConflictError when the count read is not `expected_current` or the workload changed
        since (409); the caller re-reads and decides again.
        """
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, not {replicas}")
        read = self._read if self._read is not None else self._get()[0]
        what = f"patch {self._kind.resource} {self.namespace}/{self.name}"
        if read.replicas != expected_current:
            raise ConflictError(
                f"{what}: it has {read.replicas} replicas, not the {expected_current} the "
                "decision was made for; re-read and decide again")
        if read.paused:
            raise NotAllowed(f"{what}: it is paused ({KUBERNETES_PREFIX}{PAUSED}=true)")

        annotations = encode_state(state, KUBERNETES_PREFIX)
        annotations.pop(KUBERNETES_PREFIX + PAUSED, None)  # the operator's switch, never ours
        body = {
            "metadata": {"resourceVersion": read.resource_version, "annotations": annotations},
            "spec": {"replicas": replicas},
        }
        try:
            self._call("patch", self._kind.resource, getattr(self._apps, self._kind.patch),
                       self.name, self.namespace, body, field_manager=FIELD_MANAGER,
                       _content_type=_MERGE_PATCH)
        finally:
            self._read = None  # a write, or a failed one, spends the version we read

    def record_event(self, reason: str, message: str, type_: str = "Normal") -> None:
        """A core/v1 Event on the workload, as the HPA records SuccessfulRescale/FailedRescale.

        Events are a courtesy to `kubectl describe`: a failure is logged, never raised, so it
        can never fail a tick whose write already happened.
        """
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved: dict[str, str] = {"apiVersion": "apps/v1", "kind": self._kind.kind,
                                    "name": self.name, "namespace": self.namespace}
        if self._uid:
            involved["uid"] = self._uid
        body = {
            # client-go's recorder names events <object>.<unix nanoseconds in hex>
            "metadata": {"name": f"{self.name}.{time.time_ns():x}",
                         "namespace": self.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:_EVENT_MESSAGE_LIMIT],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": socket.gethostname(),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._call("create", "events", self._core.create_namespaced_event, self.namespace,
                       body)
        except Exception as exc:  # whatever it is, the tick it reports on goes on
            log.warning("%s: could not record event %s (%s): %s", self.description, reason,
                        message, exc)

    def hpa_conflict(self) -> str | None:
        """A message naming the HorizontalPodAutoscaler that also scales this workload, if any.

        Two controllers writing one replica count fight forever, so the loop refuses such a
        target. autoscaling/v1 is listed because it exists on every supported Kubernetes (v2
        does not on 1.20) and every HPA is visible through it. When RBAC forbids the list,
        the answer is a refusal too: the check cannot be skipped silently. Other failures
        (timeouts, 5xx) raise ActuatorError, as any read does.
        """
        hpas: list[Any] = []
        cont: str | None = None
        while True:
            try:
                page = self._call("list", "horizontalpodautoscalers.autoscaling",
                                  self._autoscaling.list_namespaced_horizontal_pod_autoscaler,
                                  self.namespace, limit=500, _continue=cont)
            except NotAllowed as exc:
                return (f"cannot check that no HorizontalPodAutoscaler also scales "
                        f"{self._kind.kind} {self.namespace}/{self.name}: the RBAC needs list "
                        f"on horizontalpodautoscalers ({exc})")
            if not isinstance(page, dict):
                raise ActuatorError(f"list horizontalpodautoscalers.autoscaling in namespace "
                                    f"{self.namespace}: unexpected answer")
            hpas.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue") or None
            if cont is None:
                break
        for hpa in hpas:
            ref = ((hpa or {}).get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == self._kind.kind and ref.get("name") == self.name:
                hpa_name = ((hpa.get("metadata") or {}).get("name")) or "?"
                return (f"HorizontalPodAutoscaler {self.namespace}/{hpa_name} also scales "
                        f"{self._kind.kind} {self.namespace}/{self.name}; two controllers "
                        "would fight over its replicas: delete the HPA or drop this target")
        return None


def _only_paused(annotations: dict[str, str]) -> dict[str, str]:
    """Just the pause annotation: reading it must not depend on the rest being readable."""
    key = KUBERNETES_PREFIX + PAUSED
    return {key: annotations[key]} if key in annotations else {}


def _api_message(exc: ApiException) -> str:
    """The API server's own message (a Status object's `message`), else the HTTP reason.

    Cut short: a 422 echoes the whole patched object, which belongs in no log line.
    """
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(exc.reason or f"HTTP {exc.status}")
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
            text = body
        if isinstance(parsed, dict) and parsed.get("message"):
            text = str(parsed["message"])
    text = _one_line(text)
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "…"


def _retry_after(exc: ApiException) -> str:
    """The server's Retry-After (429, 503), said in the message: the loop tries again at
    its next tick, once, so an overloaded API server sees one request per interval."""
    value = (getattr(exc, "headers", None) or {}).get("Retry-After")
    return f" (Retry-After: {_one_line(value)[:20]}s)" if value else ""


def _one_line(value: object) -> str:
    text = str(value) or type(value).__name__
    return " ".join(text.split())
