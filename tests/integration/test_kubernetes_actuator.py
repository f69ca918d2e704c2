"""KubernetesActuator against a real kube-apiserver (1.20, no controllers).

Every object lives in one namespace per module (deleted for real at the end). No controller
runs, so `.status` is empty unless a test writes it through the status subresource; readiness
must then read as unknown (None), not 0. Objects are read back as raw JSON, so "nothing else
changed" is checked on exactly what the API server stores.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal, TypeVar

import kubernetes.client
import kubernetes.config.incluster_config
import pytest

from autoscaler import kube
from autoscaler.actuators.base import ActuatorError, ConflictError, NotAllowed, TargetMissing
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.kube import kubernetes_api_client
from autoscaler.model import TargetState, TargetStatus
from autoscaler.state import KUBERNETES_PREFIX, encode_state
from tests.support.kube import fresh_namespace
from tests.support.loopback import served
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until

Kind = Literal["deployment", "statefulset"]
KINDS: tuple[Kind, ...] = ("deployment", "statefulset")
MERGE = "application/merge-patch+json"
USER_A = "rbac-user-a"
T = TypeVar("T")

STATE = TargetState(
    last_scale_time=1_700_000_000.25,
    last_scale_direction=1,
    last_written=4,
    recommendations=((1_699_999_990.0, 4), (1_700_000_000.0, 4)),
    events=((1_700_000_000.25, 1),),
)

# What a patch of ours may change; everything else must come back byte-for-byte the same.
_MAY_CHANGE = (("metadata", "resourceVersion"), ("metadata", "generation"),
               ("metadata", "managedFields"), ("spec", "replicas"))


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ns(kube_api: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace for this module, deleted for real afterwards."""
    with fresh_namespace(kube_api, "ka") as name:
        yield name


@pytest.fixture
def own_client(realenv: RealEnv) -> Iterator[kubernetes.client.ApiClient]:
    """An admin client of the test's own, made the way the daemon makes one."""
    with kubernetes_api_client(str(realenv.kubeconfig)) as client:
        yield client


def create_workload(api: kubernetes.client.ApiClient, kind: Kind, ns: str, name: str,
                    replicas: int = 3, annotations: dict[str, str] | None = None) -> None:
    labels = {"app": name}
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment" if kind == "deployment" else "StatefulSet",
        "metadata": {"name": name, "labels": {**labels, "team": "mail"},
                     "annotations": {"owner": "ops@example.org", **(annotations or {})}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "mail", "image": "busybox:local",
                                         "command": ["sleep", "100000"]}]},
            },
        },
    }
    apps = kubernetes.client.AppsV1Api(api)
    if kind == "deployment":
        apps.create_namespaced_deployment(ns, kubernetes.client.V1Deployment.model_validate(body))
    else:
        body["spec"]["serviceName"] = name
        apps.create_namespaced_stateful_set(
            ns, kubernetes.client.V1StatefulSet.model_validate(body))


def _method(kind: Kind, verb: str) -> str:
    return f"{verb}_namespaced_{'deployment' if kind == 'deployment' else 'stateful_set'}"


def raw(api: kubernetes.client.ApiClient, kind: Kind, ns: str, name: str) -> dict[str, Any]:
    """The object exactly as the API server returns it."""
    apps = kubernetes.client.AppsV1Api(api)
    response = getattr(apps, _method(kind, "read"))(name, ns, _preload_content=False)
    data: dict[str, Any] = json.loads(response.data)
    return data


def merge_patch(api: kubernetes.client.ApiClient, kind: Kind, ns: str, name: str,
                body: dict[str, Any], *, status: bool = False) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    method = _method(kind, "patch") + ("_status" if status else "")
    getattr(apps, method)(name, ns, body, _content_type=MERGE, _preload_content=False)


def writes_since(api: kubernetes.client.ApiClient, kind: Kind, ns: str, name: str,
                 resource_version: str) -> list[dict[str, Any]]:
    """Every MODIFIED event of the object after `resource_version` (a 1 s watch)."""
    apps = kubernetes.client.AppsV1Api(api)
    response = getattr(apps, _method(kind, "list"))(
        ns, field_selector=f"metadata.name={name}", resource_version=resource_version,
        watch=True, timeout_seconds=1, _preload_content=False)
    events = [json.loads(line) for line in response.data.splitlines() if line.strip()]
    return [e["object"] for e in events if e["type"] == "MODIFIED"]


def without(obj: dict[str, Any], *paths: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(obj))
    for path in paths:
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        parent.pop(path[-1], None)
    return out


def user_client(realenv: RealEnv, token: str) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration(
        host=realenv.kube_api_url, api_key={"authorization": "Bearer " + token})
    config.ssl_ca_cert = str(realenv.kube_ca_file)
    return kubernetes.client.ApiClient(config)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def record_requests(client: kubernetes.client.ApiClient,
                    monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """(method, Content-Type, body) of every request `client` sends; each still goes through."""
    sent: list[tuple[str, str, Any]] = []
    rest: Any = client.rest_client  # untyped
    forward = rest.request

    def spy(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        headers = kwargs.get("headers") or {}
        sent.append((method, str(headers.get("Content-Type", "")), kwargs.get("body")))
        return forward(method, url, *args, **kwargs)

    monkeypatch.setattr(rest, "request", spy)
    return sent


# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_status_of_a_fresh_workload(kube_api: kubernetes.client.ApiClient, ns: str,
                                    kind: Kind, caplog: pytest.LogCaptureFixture) -> None:
    name = unique("fresh")
    create_workload(kube_api, kind, ns, name, replicas=3)
    actuator = KubernetesActuator(kube_api, kind, ns, name)

    with caplog.at_level(logging.WARNING):
        status = actuator.status()

    # No controller has reported: readiness is unknown, not zero. No state: adopted as it is.
    assert status == TargetStatus(current=3, ready=None, state=TargetState(), paused=False)
    assert caplog.records == []
    assert actuator.description == f"kubernetes {kind} {ns}/{name}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("reported", "ready"),
    [
        ({"replicas": 3, "readyReplicas": 2, "observedGeneration": 1}, 2),
        ({"replicas": 3, "observedGeneration": 1}, 0),  # reported, none ready (omitempty)
        ({"replicas": 3, "readyReplicas": 3, "observedGeneration": 1}, 3),
    ],
)
def test_ready_once_a_status_is_reported(kube_api: kubernetes.client.ApiClient, ns: str,
                                         kind: Kind, reported: dict[str, int],
                                         ready: int) -> None:
    name = unique("ready")
    create_workload(kube_api, kind, ns, name, replicas=3)
    merge_patch(kube_api, kind, ns, name, {"status": reported}, status=True)

    status = KubernetesActuator(kube_api, kind, ns, name).status()

    assert (status.current, status.ready) == (3, ready)


@pytest.mark.parametrize(
    ("value", "paused"),
    [("true", True), ("True", True), (" true ", True), ("false", False), ("yes", False),
     (None, False)],
)
def test_pause_annotation(kube_api: kubernetes.client.ApiClient, ns: str, value: str | None,
                          paused: bool) -> None:
    name = unique("pause")
    annotations = {} if value is None else {KUBERNETES_PREFIX + "paused": value}
    create_workload(kube_api, "deployment", ns, name, replicas=2, annotations=annotations)
    actuator = KubernetesActuator(kube_api, "deployment", ns, name)

    assert actuator.status().paused is paused


def test_a_paused_workload_is_never_written(kube_api: kubernetes.client.ApiClient,
                                            ns: str) -> None:
    name = unique("paused")
    create_workload(kube_api, "deployment", ns, name, replicas=2,
                    annotations={KUBERNETES_PREFIX + "paused": "true"})
    actuator = KubernetesActuator(kube_api, "deployment", ns, name)
    actuator.status()
    before = raw(kube_api, "deployment", ns, name)

    with pytest.raises(NotAllowed, match="paused"):
        actuator.scale(3, STATE, expected_current=2)

    assert raw(kube_api, "deployment", ns, name) == before


def test_unreadable_state_is_logged_and_dropped(kube_api: kubernetes.client.ApiClient, ns: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    name = unique("garbled")
    annotations = {KUBERNETES_PREFIX + "last-replicas": "four",
                   KUBERNETES_PREFIX + "last-scale-direction": "up",
                   KUBERNETES_PREFIX + "recommendations": "[[1, 2"}
    create_workload(kube_api, "deployment", ns, name, replicas=2, annotations=annotations)

    with caplog.at_level(logging.WARNING, logger="autoscaler.actuators.kubernetes"):
        status = KubernetesActuator(kube_api, "deployment", ns, name).status()

    assert status.state == TargetState(last_scale_direction=1)
    warned = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "last-replicas" in warned
    assert "recommendations" in warned
    assert f"{ns}/{name}" in warned


@pytest.mark.parametrize("kind", KINDS)
def test_missing_workload(kube_api: kubernetes.client.ApiClient, ns: str, kind: Kind) -> None:
    name = unique("ghost")
    label = "Deployment" if kind == "deployment" else "StatefulSet"

    with pytest.raises(TargetMissing, match=f"{label} {ns}/{name} not found"):
        KubernetesActuator(kube_api, kind, ns, name).status()


@pytest.mark.parametrize("kind", KINDS)
def test_workload_deleted_between_read_and_write(kube_api: kubernetes.client.ApiClient,
                                                 ns: str, kind: Kind) -> None:
    name = unique("gone")
    create_workload(kube_api, kind, ns, name, replicas=2)
    actuator = KubernetesActuator(kube_api, kind, ns, name)
    actuator.status()
    getattr(kubernetes.client.AppsV1Api(kube_api), _method(kind, "delete"))(name, ns)

    with pytest.raises(TargetMissing, match=f"{ns}/{name}"):
        actuator.scale(3, STATE, expected_current=2)


# --- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_scale_writes_replicas_and_state_in_one_patch(
    kube_api: kubernetes.client.ApiClient, own_client: kubernetes.client.ApiClient, ns: str,
    kind: Kind, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("scale")
    create_workload(kube_api, kind, ns, name, replicas=3)
    # A status as a controller would have written it: the patch must leave it alone too.
    merge_patch(kube_api, kind, ns, name,
                {"status": {"replicas": 3, "readyReplicas": 3, "observedGeneration": 1}},
                status=True)
    client = own_client
    actuator = KubernetesActuator(client, kind, ns, name)
    assert actuator.status().current == 3
    before = raw(kube_api, kind, ns, name)
    sent = record_requests(client, monkeypatch)

    actuator.scale(4, STATE, expected_current=3)

    # ONE request: a JSON merge patch carrying the version read, the state and the count.
    ours = encode_state(STATE, KUBERNETES_PREFIX)
    assert sent == [("PATCH", MERGE, {
        "metadata": {"resourceVersion": before["metadata"]["resourceVersion"],
                     "annotations": ours},
        "spec": {"replicas": 4},
    })]

    after = raw(kube_api, kind, ns, name)
    assert after["spec"]["replicas"] == 4
    assert after["metadata"]["annotations"] == {**before["metadata"]["annotations"], **ours}
    assert after["metadata"]["annotations"]["owner"] == "ops@example.org"
    assert after["metadata"]["labels"] == before["metadata"]["labels"] == {"app": name,
                                                                            "team": "mail"}
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    managers = {f["manager"] for f in after["metadata"]["managedFields"]}
    assert kube.FIELD_MANAGER in managers

    # Apart from what the patch is for, the object is byte-for-byte what it was.
    annotations = ("metadata", "annotations")
    unchanged_before = without(before, *_MAY_CHANGE, annotations)
    unchanged_after = without(after, *_MAY_CHANGE, annotations)
    assert json.dumps(unchanged_after) == json.dumps(unchanged_before)

    # ONE write: the replica count and the state arrived together.
    writes = writes_since(kube_api, kind, ns, name, before["metadata"]["resourceVersion"])
    assert len(writes) == 1
    assert writes[0]["spec"]["replicas"] == 4
    assert writes[0]["metadata"]["annotations"][KUBERNETES_PREFIX + "last-replicas"] == "4"

    # What was written reads back as the same state.
    status = actuator.status()
    assert status == TargetStatus(current=4, ready=3, state=STATE, paused=False)


@pytest.mark.parametrize("kind", KINDS)
def test_scale_after_another_client_changed_it_conflicts(
    kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str, kind: Kind
) -> None:
    name = unique("race")
    create_workload(kube_api, kind, ns, name, replicas=3)
    actuator = KubernetesActuator(kube_api, kind, ns, name)
    assert actuator.status().current == 3

    with kubernetes_api_client(str(realenv.kubeconfig)) as other:
        merge_patch(other, kind, ns, name, {"spec": {"replicas": 7}})
    with pytest.raises(ConflictError, match="changed since it was read"):
        actuator.scale(4, STATE, expected_current=3)

    after = raw(kube_api, kind, ns, name)
    assert after["spec"]["replicas"] == 7
    assert not any(k.startswith(KUBERNETES_PREFIX) for k in after["metadata"]["annotations"])
    # Re-reading (as the loop does after a conflict) sees the operator's count and may write.
    assert actuator.status().current == 7
    actuator.scale(8, STATE, expected_current=7)
    assert raw(kube_api, kind, ns, name)["spec"]["replicas"] == 8


def test_scale_refuses_a_count_other_than_expected(kube_api: kubernetes.client.ApiClient,
                                                  ns: str) -> None:
    name = unique("expect")
    create_workload(kube_api, "deployment", ns, name, replicas=3)
    actuator = KubernetesActuator(kube_api, "deployment", ns, name)
    actuator.status()
    before = raw(kube_api, "deployment", ns, name)

    with pytest.raises(ConflictError, match="has 3 replicas, not the 2"):
        actuator.scale(5, STATE, expected_current=2)

    assert raw(kube_api, "deployment", ns, name) == before


def test_scale_without_a_prior_status_reads_first(kube_api: kubernetes.client.ApiClient,
                                                 ns: str) -> None:
    name = unique("cold")
    create_workload(kube_api, "deployment", ns, name, replicas=2)
    actuator = KubernetesActuator(kube_api, "deployment", ns, name)

    actuator.scale(3, STATE, expected_current=2)

    assert actuator.status() == TargetStatus(current=3, ready=None, state=STATE)


# --- HPA conflict ---------------------------------------------------------------------------


def test_hpa_conflict_names_the_hpa_that_scales_the_workload(
    kube_api: kubernetes.client.ApiClient, ns: str
) -> None:
    hpa_ns = ns
    name, other = unique("hpa-web"), unique("hpa-other")
    create_workload(kube_api, "deployment", hpa_ns, name)
    create_workload(kube_api, "deployment", hpa_ns, other)
    create_workload(kube_api, "statefulset", hpa_ns, name)  # same name, other kind
    hpa = unique("web-hpa")
    body = {
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": hpa},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70},
    }
    kubernetes.client.AutoscalingV1Api(kube_api).create_namespaced_horizontal_pod_autoscaler(
        hpa_ns, kubernetes.client.V1HorizontalPodAutoscaler.model_validate(body))

    cases: list[tuple[Kind, str, bool]] = [
        ("deployment", name, True),
        ("deployment", other, False),
        ("statefulset", name, False),
    ]
    for kind, target, conflict in cases:
        message = KubernetesActuator(kube_api, kind, hpa_ns, target).hpa_conflict()
        if conflict:
            assert message is not None
            assert f"HorizontalPodAutoscaler {hpa_ns}/{hpa}" in message
            assert f"Deployment {hpa_ns}/{name}" in message
        else:
            assert message is None, (kind, target)


# --- events ---------------------------------------------------------------------------------


def test_record_event_is_visible_through_the_api(kube_api: kubernetes.client.ApiClient,
                                                 ns: str) -> None:
    name = unique("event")
    create_workload(kube_api, "deployment", ns, name, replicas=2)
    actuator = KubernetesActuator(kube_api, "deployment", ns, name)
    actuator.status()
    actuator.scale(3, STATE, expected_current=2)  # the event follows a write, as in the loop
    uid = raw(kube_api, "deployment", ns, name)["metadata"]["uid"]

    actuator.record_event("SuccessfulRescale", "New size: 3; reason: capacity above target")
    actuator.record_event("FailedRescale", "conflict; will retry", type_="Warning")

    core: Any = kubernetes.client.CoreV1Api(kube_api)  # raw JSON: typed as the model
    response = core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name}", _preload_content=False)
    events = sorted(json.loads(response.data)["items"], key=lambda e: e["reason"])
    assert [(e["reason"], e["type"], e["message"]) for e in events] == [
        ("FailedRescale", "Warning", "conflict; will retry"),
        ("SuccessfulRescale", "Normal", "New size: 3; reason: capacity above target"),
    ]
    for event in events:
        assert event["source"] == {"component": "stalwart-autoscaler"}
        assert event["involvedObject"]["kind"] == "Deployment"
        assert event["involvedObject"]["apiVersion"] == "apps/v1"
        assert event["involvedObject"]["namespace"] == ns
        assert event["involvedObject"]["uid"] == uid
        assert event["count"] == 1


def test_record_event_failure_is_logged_not_raised(kube_api: kubernetes.client.ApiClient,
                                                   ns: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    missing_ns = unique("no-such-ns")
    actuator = KubernetesActuator(kube_api, "deployment", missing_ns, "smtp")

    with caplog.at_level(logging.WARNING, logger="autoscaler.actuators.kubernetes"):
        actuator.record_event("SuccessfulRescale", "New size: 3")

    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "SuccessfulRescale" in warned[0]
    assert "create events" in warned[0]


# --- RBAC, credentials and failures ---------------------------------------------------------


def test_rbac_refusals_name_the_missing_rule(kube_api: kubernetes.client.ApiClient,
                                             realenv: RealEnv, ns: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    name = unique("rbac")
    create_workload(kube_api, "deployment", ns, name, replicas=2)
    token = realenv.kube_user_a_token

    with user_client(realenv, token) as user_a:
        actuator = KubernetesActuator(user_a, "deployment", ns, name)

        # No rights at all: even the read is refused, and says which rule is missing.
        with pytest.raises(NotAllowed) as read_refused:
            actuator.status()
        assert f"forbidden: get deployments.apps in namespace {ns}" in str(read_refused.value)
        assert token not in str(read_refused.value)

        hpa_message = actuator.hpa_conflict()
        assert hpa_message is not None
        assert "list on horizontalpodautoscalers" in hpa_message
        assert token not in hpa_message

        with caplog.at_level(logging.WARNING, logger="autoscaler.actuators.kubernetes"):
            actuator.record_event("SuccessfulRescale", "New size: 3")
        assert any("forbidden: create events" in r.getMessage() for r in caplog.records)

        # Grant get only: the read works, the write is refused and names `patch`.
        rbac = kubernetes.client.RbacAuthorizationV1Api(kube_api)
        role = unique("get-deployments")
        rbac.create_namespaced_role(ns, kubernetes.client.V1Role.model_validate({
            "metadata": {"name": role},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
        }))
        rbac.create_namespaced_role_binding(ns, kubernetes.client.V1RoleBinding.model_validate({
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": USER_A}],
        }))

        def readable() -> TargetStatus | None:
            try:
                return actuator.status()
            except NotAllowed:
                return None  # the authorizer's cache has not seen the binding yet

        assert wait_until("the RoleBinding to take effect", readable, 30.0).current == 2
        with pytest.raises(NotAllowed) as write_refused:
            actuator.scale(3, STATE, expected_current=2)
        message = str(write_refused.value)
        assert f"forbidden: patch deployments.apps in namespace {ns}" in message
        assert "grant it in the Role" in message
        assert token not in message
        assert raw(kube_api, "deployment", ns, name)["spec"]["replicas"] == 2


class _Refusing(BaseHTTPRequestHandler):
    """Answers every request with `status` and a Kubernetes Status body, as an overloaded or
    broken API server (or a proxy in front of it) would; the real one cannot be made to."""

    status = 503

    def _answer(self) -> None:
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": f"stub says {self.status}", "code": self.status}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def endpoint(case: str, realenv: RealEnv) -> Iterator[str]:
    """A URL on 127.0.0.1 that fails the way `case` says."""
    if case == "bad token":
        yield realenv.kube_api_url
    elif case == "closed port":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        yield f"https://127.0.0.1:{port}"
    elif case == "silent":  # accepts connections (backlog), never answers
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            yield f"https://127.0.0.1:{silent.getsockname()[1]}"
    else:
        handler = type("Handler", (_Refusing,), {"status": int(case.split()[1])})
        with served(handler) as server:
            yield f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad token", "unauthorized: the API server rejected the credentials"),
        ("closed port", "cannot reach the API server at https://127.0.0.1:"),
        ("silent", "did not answer within 1s"),
        ("HTTP 429", "HTTP 429 Too Many Requests: stub says 429"),
        ("HTTP 500", "HTTP 500 Internal Server Error: stub says 500"),
        ("HTTP 503", "HTTP 503 Service Unavailable: stub says 503"),
    ],
)
def test_failures_are_actuator_errors_naming_verb_and_object(
    realenv: RealEnv, case: str, expected: str
) -> None:
    token = "not-a-valid-token-" + uuid.uuid4().hex
    with endpoint(case, realenv) as url:
        config = kubernetes.client.Configuration(
            host=url, api_key={"authorization": "Bearer " + token})
        config.ssl_ca_cert = str(realenv.kube_ca_file)
        config.retries = 0
        with kubernetes.client.ApiClient(config) as client:
            actuator = KubernetesActuator(client, "deployment", "mail", "smtp", timeout=1)
            with pytest.raises(ActuatorError) as read_failed:
                actuator.status()
            with pytest.raises(ActuatorError) as write_failed:
                actuator.scale(3, STATE, expected_current=2)  # reads first: no status() yet
            with pytest.raises(ActuatorError) as list_failed:
                actuator.hpa_conflict()

    for error, names in [(read_failed.value, "get deployments.apps mail/smtp"),
                         (write_failed.value, "get deployments.apps mail/smtp"),
                         (list_failed.value,
                          "list horizontalpodautoscalers.autoscaling in namespace mail")]:
        assert type(error) is ActuatorError  # not NotAllowed/TargetMissing/ConflictError
        assert str(error).startswith(names + ": "), str(error)
        assert expected in str(error)
        assert token not in str(error)


def test_a_failed_patch_names_patch(kube_api: kubernetes.client.ApiClient, ns: str) -> None:
    """The API server's own refusal of the write (422: invalid) reaches the message."""
    name = unique("invalid")
    create_workload(kube_api, "deployment", ns, name, replicas=2)
    actuator = KubernetesActuator(kube_api, "deployment", ns, name)
    actuator.status()
    too_many = 2**31  # spec.replicas is an int32

    with pytest.raises(ActuatorError) as excinfo:
        actuator.scale(too_many, STATE, expected_current=2)

    assert type(excinfo.value) is ActuatorError
    message = str(excinfo.value)
    assert message.startswith(f"patch deployments.apps {ns}/{name}: HTTP 422 ")
    assert len(message) < 500  # the API server echoes the whole object; not into our logs
    assert raw(kube_api, "deployment", ns, name)["spec"]["replicas"] == 2


# --- configuration --------------------------------------------------------------------------


def test_client_from_kubeconfig_env_and_explicit_path(
    kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("config")
    create_workload(kube_api, "deployment", ns, name, replicas=2)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(realenv.kubeconfig))

    for kubeconfig in (None, str(realenv.kubeconfig)):
        with kubernetes_api_client(kubeconfig) as client:
            assert client.configuration.host == realenv.kube_api_url
            assert KubernetesActuator(client, "deployment", ns, name).status().current == 2

    with pytest.raises(ActuatorError, match="no-such-kubeconfig"):
        kubernetes_api_client("/nonexistent/no-such-kubeconfig")


def test_client_in_a_pod_uses_the_service_account(
    kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod's mounted token and CA, faked on disk, reach the real API server."""
    name = unique("incluster")
    create_workload(kube_api, "deployment", ns, name, replicas=5)
    token_file = tmp_path / "token"
    token_file.write_text(realenv.kube_admin_token)
    incluster = kubernetes.config.incluster_config
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(token_file))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(realenv.kube_ca_file))
    port = realenv.kube_api_url.rsplit(":", 1)[1]
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")  # must not be consulted

    with kubernetes_api_client() as client:
        assert client.configuration.host == f"https://127.0.0.1:{port}"
        assert KubernetesActuator(client, "deployment", ns, name).status().current == 5
