"""Kubernetes backend: read a Deployment or StatefulSet, write replicas + state in one patch.

The write is ONE JSON merge patch (`application/merge-patch+json`) of the workload itself that
carries the `metadata.resourceVersion` read by `status()`: the API server refuses it with 409
when anything changed in between, so a decision is never applied to an object it was not made
for. The /scale subresource cannot carry annotations, hence the patch of the whole object.

Every call goes through `autoscaler.kube` (the client layer the Lease elector shares): it
reads the raw JSON, types the failures (403 NotAllowed, 404 TargetMissing, 409 ConflictError)
and scrubs credentials from their messages.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import kubernetes.client

from autoscaler.actuators.base import Actuator
from autoscaler.actuators.hpa import HpaDirectory, conflicting_hpa
from autoscaler.errors import ActuatorError, ConflictError, NotAllowed
from autoscaler.kube import COMPONENT, FIELD_MANAGER, KubeApi, Ref
from autoscaler.model import TargetState, TargetStatus
from autoscaler.state import KUBERNETES_PREFIX, PAUSED, decode_state, encode_state, read_pause

__all__ = ["KubernetesActuator"]

log = logging.getLogger(__name__)

_MERGE_PATCH = "application/merge-patch+json"
_EVENT_MESSAGE_LIMIT = 1024  # events.k8s.io's limit; core/v1 has none, but keep them short


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
        hpas: HpaDirectory | None = None,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, not {kind!r}")
        self._api = KubeApi(api_client, timeout)
        self._apps: Any = kubernetes.client.AppsV1Api(api_client)
        self._core: Any = kubernetes.client.CoreV1Api(api_client)
        # The tick's shared HPA list (one per namespace per tick), or this actuator's own.
        self._own_hpas = hpas is None
        self._hpas = hpas or HpaDirectory(hpa_lister(api_client, timeout))
        self._kind = _KINDS[kind]
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self._ref = Ref(self._kind.resource, namespace, name, self._kind.kind)
        self._read: _Read | None = None
        self._uid = ""  # of the last object read; outlives the write, for its event

    @property
    def description(self) -> str:
        return f"kubernetes {self.kind} {self.namespace}/{self.name}"

    # --- reading ----------------------------------------------------------------------------

    def _get(self) -> tuple[_Read, int | None, dict[str, str]]:
        raw = self._api.call("get", self._ref, getattr(self._apps, self._kind.read),
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
                         replicas, paused=read_pause(annotations, KUBERNETES_PREFIX).paused)
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
        pause = read_pause(annotations, KUBERNETES_PREFIX)
        return TargetStatus(current=read.replicas, ready=ready, state=state, paused=read.paused,
                            paused_replicas=pause.replicas, pause_problem=pause.problem,
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
            self._api.call("patch", self._ref, getattr(self._apps, self._kind.patch),
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
            self._api.call("create", Ref("events", self.namespace),
                           self._core.create_namespaced_event, self.namespace, body)
        except Exception as exc:  # whatever it is, the tick it reports on goes on
            log.warning("%s: could not record event %s (%s): %s", self.description, reason,
                        message, exc)

    def hpa_conflict(self) -> str | None:
        """A message naming the HorizontalPodAutoscaler that also scales this workload, if any.

        Asked at every tick; the namespace's HPAs come from the tick's shared list
        (`HpaDirectory`), matched on API group, kind and name of their scaleTargetRef. When
        RBAC forbids the list, the answer is a refusal too: the check cannot be skipped
        silently. Other failures (timeouts, 5xx) raise ActuatorError, as any read does.
        """
        if self._own_hpas:
            self._hpas.begin_tick()  # no tick shares this actuator's list: always fresh
        try:
            hpas = self._hpas.list(self.namespace)
        except NotAllowed as exc:
            return (f"cannot check that no HorizontalPodAutoscaler also scales "
                    f"{self._kind.kind} {self.namespace}/{self.name}: the RBAC needs list "
                    f"on horizontalpodautoscalers ({exc})")
        hpa = conflicting_hpa(hpas, api_version="apps/v1", kind=self._kind.kind,
                              name=self.name)
        if hpa is None:
            return None
        return (f"HorizontalPodAutoscaler {self.namespace}/{hpa} also scales "
                f"{self._kind.kind} {self.namespace}/{self.name}; two controllers "
                "would fight over its replicas: delete the HPA or drop this target")


def hpa_lister(api_client: kubernetes.client.ApiClient,
               timeout: float) -> Callable[[str], list[Any]]:
    """`fetch` for an HpaDirectory: every autoscaling/v1 HPA of a namespace, all pages.
    autoscaling/v1 because it exists on every supported Kubernetes (v2 does not on 1.20) and
    every HPA is visible through it."""
    api = KubeApi(api_client, timeout)
    autoscaling: Any = kubernetes.client.AutoscalingV1Api(api_client)

    def fetch(namespace: str) -> list[Any]:
        hpas: list[Any] = []
        cont: str | None = None
        while True:
            page = api.call("list", Ref("horizontalpodautoscalers.autoscaling", namespace),
                            autoscaling.list_namespaced_horizontal_pod_autoscaler,
                            namespace, limit=500, _continue=cont)
            if not isinstance(page, dict):
                raise ActuatorError(f"list horizontalpodautoscalers.autoscaling in namespace "
                                    f"{namespace}: unexpected answer")
            hpas.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue") or None
            if cont is None:
                return hpas

    return fetch
