"""Kubernetes backend: a Deployment, a StatefulSet, or any kind with a scale subresource.

apps/v1 Deployments and StatefulSets: the write is ONE JSON merge patch
(`application/merge-patch+json`) of the workload itself that carries the
`metadata.resourceVersion` read by `status()`: the API server refuses it with 409 when
anything changed in between, so a decision is never applied to an object it was not made for.
The /scale subresource cannot carry annotations, hence the patch of the whole object.

Any other kind (`scale_target_ref`: Argo Rollouts, a custom resource declaring
`subresources.scale`): its resource is found through API discovery (`discovery.py`), replicas
are read and written through `/scale`, and the state annotations by a merge patch of the
object's metadata. That is three writes, in this order:

1. `pending-replicas: N` on the object, carrying the resourceVersion read (409: it changed);
2. `/scale` updated to N, carrying the resourceVersion that write returned (409 likewise);
3. the state annotations, `pending-replicas` removed.

A failure after 1 leaves the count as it was (the pending count, which the spec does not
hold, is ignored when read). A failure after 2 leaves the new count with the old state
annotations: the pending count equals the spec, so the reader takes the count as ours
(`state.with_pending`) instead of an operator's scale. The scale itself happened, so `scale()`
returns normally (the engine keeps the new state in memory) and says the failure in a warning
and a Warning event; the next scale's state write brings the annotations up to date.

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
from autoscaler.actuators.discovery import ApiDiscovery, DiscoveryError, ScaleResource
from autoscaler.actuators.hpa import HpaDirectory, conflicting_hpa
from autoscaler.errors import ActuatorError, ConflictError, NotAllowed, TargetMissing
from autoscaler.kube import COMPONENT, FIELD_MANAGER, KubeApi, Ref
from autoscaler.model import TargetState, TargetStatus
from autoscaler.state import (
    KUBERNETES_PREFIX,
    PAUSED,
    PENDING,
    Pause,
    decode_state,
    encode_state,
    pending_replicas,
    read_pause,
    with_pending,
)

__all__ = ["KubernetesActuator", "discovery_fetcher", "hpa_lister"]

log = logging.getLogger(__name__)

_MERGE_PATCH = "application/merge-patch+json"
_EVENT_MESSAGE_LIMIT = 1024  # events.k8s.io's limit; core/v1 has none, but keep them short
_READ_ATTEMPTS = 3  # the object and its /scale read at one resourceVersion


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
_APPS_KINDS = {k.kind: key for key, k in _KINDS.items()}  # Deployment → deployment


@dataclass(frozen=True, slots=True)
class _Read:
    """The workload as the last status() saw it: what scale() patches, versioned."""

    resource_version: str
    uid: str
    replicas: int
    pause: Pause  # the operator's switches, read once


class KubernetesActuator(Actuator):
    """One workload: a Deployment or StatefulSet (`kind` "deployment"/"statefulset"), or any
    kind with a scale subresource (`kind` as the API names it, e.g. "Rollout", with its
    `api_version`). Not thread-safe: one loop tick uses it at a time."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        kind: Literal["deployment", "statefulset"] | str,
        namespace: str,
        name: str,
        *,
        api_version: str | None = None,
        timeout: float = 10.0,
        hpas: HpaDirectory | None = None,
        discovery: ApiDiscovery | None = None,
    ) -> None:
        if api_version == "apps/v1" and kind in _APPS_KINDS:
            kind = _APPS_KINDS[kind]  # the shorthand's single merge patch
        if api_version is None and kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, or any kind with its "
                             f"api_version; not {kind!r}")
        self._api = KubeApi(api_client, timeout)
        self._apps: Any = kubernetes.client.AppsV1Api(api_client)
        self._core: Any = kubernetes.client.CoreV1Api(api_client)
        # The tick's shared HPA list (one per namespace per tick), or this actuator's own.
        self._own_hpas = hpas is None
        self._hpas = hpas or HpaDirectory(hpa_lister(api_client, timeout))
        self.namespace = namespace
        self.name = name
        self._scale_kind: str | None = None  # set for a kind served through /scale
        if kind in _KINDS:
            self._kind = _KINDS[kind]
            self.kind = kind
            self.api_version = "apps/v1"
        else:
            self._scale_kind = kind
            self.kind = kind
            self.api_version = str(api_version)
            # Until discovery names its resource: the kind, lower-case plural, in its group.
            group = self.api_version.rpartition("/")[0]
            guess = f"{kind.lower()}s" + (f".{group}" if group else "")
            self._kind = _Kind(kind, guess, "", "")
        self._discovery = discovery or ApiDiscovery(discovery_fetcher(api_client, timeout))
        self._resource: ScaleResource | None = None
        self._ref = Ref(self._kind.resource, namespace, name, self._kind.kind)
        self._read: _Read | None = None
        self._uid = ""  # of the last object read; outlives the write, for its event

    @property
    def description(self) -> str:
        return f"kubernetes {self.kind} {self.namespace}/{self.name}"

    def _ref_text(self) -> str:
        return (f"scale_target_ref {{api_version: {self.api_version}, kind: {self.kind}, "
                f"name: {self.name}}}")

    # --- reading ----------------------------------------------------------------------------

    def _scale_resource(self) -> ScaleResource:
        """The kind's resource, through discovery (cached); errors name the reference."""
        if self._resource is None:
            try:
                resource = self._discovery.resolve(self.api_version, str(self._scale_kind))
            except DiscoveryError as exc:
                raise DiscoveryError(f"{self._ref_text()} in namespace {self.namespace}: "
                                     f"{exc}") from exc
            except ActuatorError as exc:
                raise ActuatorError(f"{self._ref_text()}: API discovery of "
                                    f"{self.api_version} failed: {exc}") from exc
            self._resource = resource
            self._kind = _Kind(self.kind, resource.rbac_resource, "", "")
            self._ref = Ref(resource.rbac_resource, self.namespace, self.name, self.kind)
        return self._resource

    def _scale_ref(self) -> Ref:
        return Ref(f"{self._ref.resource}/scale", self.namespace, self.name, self.kind)

    def _get(self) -> tuple[_Read, int | None, dict[str, str]]:
        if self._scale_kind is not None:
            return self._get_through_scale()
        raw = self._api.call("get", self._ref, getattr(self._apps, self._kind.read),
                             self.name, self.namespace)
        return self._parse(raw, raw)

    def _get_through_scale(self) -> tuple[_Read, int | None, dict[str, str]]:
        """The object (annotations, status) and its /scale (replicas), read at one
        resourceVersion: re-read when a write fell between the two reads."""
        resource = self._scale_resource()
        for _ in range(_READ_ATTEMPTS):
            scale = self._api.request("get", self._scale_ref(), "GET",
                                      resource.path(self.namespace, self.name, "scale"))
            obj = self._api.request("get", self._ref, "GET",
                                    resource.path(self.namespace, self.name))
            try:
                same = (str(scale["metadata"]["resourceVersion"])
                        == str(obj["metadata"]["resourceVersion"]))
            except (KeyError, TypeError) as exc:
                raise ActuatorError(f"get {self._ref.resource} {self.namespace}/{self.name}: "
                                    f"unexpected answer ({exc!r})") from exc
            if same:
                return self._parse(obj, scale)
        raise ConflictError(f"get {self._ref.resource} {self.namespace}/{self.name}: it "
                            f"changed at each of {_READ_ATTEMPTS} reads; trying next tick")

    def _parse(self, raw: Any, replicas_from: Any) -> tuple[_Read, int | None, dict[str, str]]:
        """`raw` the object; `replicas_from` the object itself or its /scale."""
        try:
            metadata = raw["metadata"]
            annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
            status = raw.get("status") or {}
            if self._scale_kind is None:
                replicas = int((raw.get("spec") or {}).get("replicas", 1))  # API default: 1
                # No controller has reported a status (e.g. an API server alone): readiness
                # is unknown, not zero. Once reported, a missing readyReplicas does mean 0.
                ready = (int(status.get("readyReplicas") or 0)
                         if status.get("observedGeneration") is not None else None)
            else:
                # /scale omits a zero count (omitempty); readiness where the kind reports one
                replicas = int((replicas_from.get("spec") or {}).get("replicas") or 0)
                ready_raw = status.get("readyReplicas") if isinstance(status, dict) else None
                ready = (int(ready_raw) if isinstance(ready_raw, int)
                         and not isinstance(ready_raw, bool) else None)
            read = _Read(str(replicas_from["metadata"]["resourceVersion"]),
                         str(metadata.get("uid") or ""),
                         replicas, pause=read_pause(annotations, KUBERNETES_PREFIX))
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
        state = with_pending(self._decode(annotations),
                             pending_replicas(annotations, KUBERNETES_PREFIX), read.replicas)
        self._read = read
        pause = read.pause
        return TargetStatus(current=read.replicas, ready=ready, state=state, paused=pause.paused,
                            paused_replicas=pause.replicas, pause_problem=pause.problem,
                            uid=read.uid)

    # --- writing ----------------------------------------------------------------------------

    def scale(self, replicas: int, state: TargetState, *, expected_current: int) -> None:
        """Write `replicas` and `state` in ONE merge patch carrying the resourceVersion read
        (a kind served through /scale: the three writes of the module doc).

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
        if read.pause.paused:
            raise NotAllowed(f"{what}: it is paused ({KUBERNETES_PREFIX}{PAUSED}=true)")

        annotations = encode_state(state, KUBERNETES_PREFIX)
        annotations.pop(KUBERNETES_PREFIX + PAUSED, None)  # the operator's switch, never ours
        if self._scale_kind is not None:
            try:
                self._scale_through_subresource(read, replicas, annotations)
            finally:
                self._read = None
            return
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

    def _scale_through_subresource(self, read: _Read, replicas: int,
                                   annotations: dict[str, str]) -> None:
        """The pending count, the /scale update, the state: in that order (module doc)."""
        resource = self._scale_resource()
        path = resource.path(self.namespace, self.name)
        pending = {"metadata": {"resourceVersion": read.resource_version,
                                "annotations": {KUBERNETES_PREFIX + PENDING: str(replicas)}}}
        written = self._api.request("patch", self._ref, "PATCH", path, pending, _MERGE_PATCH)
        try:
            version = str(written["metadata"]["resourceVersion"])
        except (KeyError, TypeError) as exc:
            raise ActuatorError(f"patch {self._ref.resource} {self.namespace}/{self.name}: "
                                f"unexpected answer ({exc!r})") from exc
        scale = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                 "metadata": {"name": self.name, "namespace": self.namespace,
                              "resourceVersion": version},
                 "spec": {"replicas": replicas}}
        self._api.request("update", self._scale_ref(), "PUT",
                          resource.path(self.namespace, self.name, "scale"), scale)
        # The count is written. The state follows without a version: the count above is
        # ours whatever happened since, and an operator's later scale still differs from it.
        state: dict[str, str | None] = {**annotations, KUBERNETES_PREFIX + PENDING: None}
        try:
            self._api.request("patch", self._ref, "PATCH", path,
                              {"metadata": {"annotations": state}}, _MERGE_PATCH)
        except TargetMissing:
            raise
        except ActuatorError as exc:
            log.warning("%s: scaled to %d, but its state annotations were not written (%s); "
                        "%s%s=%d keeps the count from reading as an operator's scale",
                        self.description, replicas, exc, KUBERNETES_PREFIX, PENDING, replicas)
            self.record_event("FailedStateWrite",
                              f"scaled to {replicas}; the state annotations were not written: "
                              f"{exc}", "Warning")

    def record_event(self, reason: str, message: str, type_: str = "Normal") -> None:
        """A core/v1 Event on the workload, as the HPA records SuccessfulRescale/FailedRescale.

        Events are a courtesy to `kubectl describe`: a failure is logged, never raised, so it
        can never fail a tick whose write already happened.
        """
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved: dict[str, str] = {"apiVersion": self.api_version, "kind": self._kind.kind,
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
        hpa = conflicting_hpa(hpas, api_version=self.api_version, kind=self._kind.kind,
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


def discovery_fetcher(api_client: kubernetes.client.ApiClient,
                      timeout: float) -> Callable[[str], dict[str, Any]]:
    """`fetch` for an ApiDiscovery: the APIResourceList of a group/version
    (`/apis/GROUP/VERSION`, `/api/v1` for the core group)."""
    api = KubeApi(api_client, timeout)

    def fetch(api_version: str) -> dict[str, Any]:
        path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        ref = Ref(f"API discovery {path}", "", api_version, "group/version")
        try:
            found = api.request("get", ref, "GET", path)
        except TargetMissing as exc:
            raise DiscoveryError(f"the API server does not serve {api_version} (is its "
                                 "CustomResourceDefinition installed?)") from exc
        if not isinstance(found, dict):
            raise ActuatorError(f"get {path}: unexpected answer")
        return found

    return fetch

