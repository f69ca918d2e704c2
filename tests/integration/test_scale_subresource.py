"""#11 item 13 on the real kube-apiserver: any kind with a scale subresource.

A CustomResourceDefinition of this module's own (a unique API group, deleted at the end)
declares `MailPool` with a scale subresource (`.spec.replicas`, `.status.replicas`) and
`MailBox` without one. The actuator finds the resource through API discovery, reads and
writes replicas through `/scale` with the resourceVersion read, and the state annotations by
a merge patch of the object's metadata; the engine scales one end to end through
`scale_target_ref`. The fault test fails the state write after the scale through
kube_fault_proxy.py and shows that no later reader (this process, or a fresh one after a
restart or failover) takes the count for an operator's scale, and that the state converges.
No controller runs: `.status` is whatever a test writes through the status subresource.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from autoscaler.actuators.base import ConflictError, NotAllowed
from autoscaler.actuators.discovery import DiscoveryError
from autoscaler.actuators.factory import BackendClients, make_actuator
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.config import load_config_data
from autoscaler.loop import Engine, TargetOutcome
from autoscaler.model import TargetState
from autoscaler.sources.prometheus import PrometheusSource
from autoscaler.state import KUBERNETES_PREFIX, PENDING, encode_state
from tests.support.kube import fresh_namespace
from tests.support.kube_faults import FaultProxy, proxy_in_front
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(300)

GROUP = f"s{uuid.uuid4().hex[:8]}.scale.test.stalwart.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND, PLURAL = "MailPool", "mailpools"
NO_SCALE_KIND, NO_SCALE_PLURAL = "MailBox", "mailboxes"
MERGE = "application/merge-patch+json"
PENDING_KEY = KUBERNETES_PREFIX + PENDING

STATE = TargetState(last_scale_time=1_700_000_000.25, last_scale_direction=1, last_written=4,
                    recommendations=((1_699_999_990.0, 4), (1_700_000_000.0, 4)),
                    events=((1_700_000_000.25, 1),))


def crd(kind: str, plural: str, *, scale: bool) -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = {"specReplicasPath": ".spec.replicas",
                                 "statusReplicasPath": ".status.replicas"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": subresources,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                             "properties": {"replicas": count}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                               "properties": {"replicas": count, "readyReplicas": count}},
                }}},
            }],
        },
    }


@pytest.fixture(scope="module")
def crds(kube_api: kubernetes.client.ApiClient) -> Iterator[None]:
    """The module's two CRDs, served (discovery lists both) before any test runs."""
    ext = kubernetes.client.ApiextensionsV1Api(kube_api)
    made = []
    try:
        for kind, plural, scale in ((KIND, PLURAL, True), (NO_SCALE_KIND, NO_SCALE_PLURAL,
                                                           False)):
            ext.create_custom_resource_definition(
                kubernetes.client.V1CustomResourceDefinition.model_validate(
                    crd(kind, plural, scale=scale)))
            made.append(f"{plural}.{GROUP}")
        custom = kubernetes.client.CustomObjectsApi(kube_api)

        def served() -> bool:
            try:
                found = custom.get_api_resources(GROUP, VERSION)
            except kubernetes.client.ApiException:
                return False
            names = {r.name for r in found.resources}
            return {PLURAL, f"{PLURAL}/scale", NO_SCALE_PLURAL} <= names

        wait_until("the CRDs served", served, 60)
        yield
    finally:
        for name in made:
            with contextlib.suppress(kubernetes.client.ApiException):
                ext.delete_custom_resource_definition(name)


@pytest.fixture(scope="module")
def ns(kube_api: kubernetes.client.ApiClient, crds: None) -> Iterator[str]:
    with fresh_namespace(kube_api, "kscale") as name:
        yield name


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def create_pool(api: kubernetes.client.ApiClient, ns: str, name: str, replicas: int,
                annotations: dict[str, str] | None = None, kind: str = KIND,
                plural: str = PLURAL) -> dict[str, Any]:
    body = {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name, "labels": {"team": "mail"},
                         "annotations": {"owner": "ops@example.org", **(annotations or {})}},
            "spec": {"replicas": replicas, "image": "stalwart:local", "role": "smtp"}}
    response: Any = kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, plural, body, _preload_content=False)
    created: dict[str, Any] = json.loads(response.data)
    return created


def raw(api: kubernetes.client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    response: Any = kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, _preload_content=False)
    found: dict[str, Any] = json.loads(response.data)
    return found


def patch(api: kubernetes.client.ApiClient, ns: str, name: str, body: dict[str, Any], *,
          status: bool = False) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    method = (custom.patch_namespaced_custom_object_status if status
              else custom.patch_namespaced_custom_object)
    method(GROUP, VERSION, ns, PLURAL, name, body, _content_type=MERGE,
           _preload_content=False)


def annotations_of(doc: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = doc["metadata"].get("annotations") or {}
    return found


def actuator(api: kubernetes.client.ApiClient, ns: str, name: str,
             kind: str = KIND, api_version: str = API_VERSION) -> KubernetesActuator:
    return KubernetesActuator(api, kind, ns, name, api_version=api_version, timeout=10)


# --- the actuator -----------------------------------------------------------------------------


def test_reads_and_scales_through_the_scale_subresource(
        kube_api: kubernetes.client.ApiClient, ns: str) -> None:
    name = unique("pool")
    created = create_pool(kube_api, ns, name, 3)
    a = actuator(kube_api, ns, name)
    assert a.description == f"kubernetes {KIND} {ns}/{name}"
    status = a.status()
    assert (status.current, status.ready, status.paused) == (3, None, False)
    assert status.uid == created["metadata"]["uid"]
    assert status.state == TargetState()

    # Readiness where the kind reports it (its status, written as a controller would).
    patch(kube_api, ns, name, {"status": {"replicas": 3, "readyReplicas": 2}}, status=True)
    status = a.status()
    assert status.ready == 2

    before = raw(kube_api, ns, name)
    a.scale(4, STATE, expected_current=3)
    after = raw(kube_api, ns, name)
    assert after["spec"]["replicas"] == 4
    notes = annotations_of(after)
    for key, value in encode_state(STATE, KUBERNETES_PREFIX).items():
        assert notes[key] == value, key
    assert PENDING_KEY not in notes  # the state write removed it
    assert notes["owner"] == "ops@example.org"
    # Nothing else of the object changed.
    assert after["spec"] == {**before["spec"], "replicas": 4}
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["status"] == before["status"]

    # The next read sees our count as ours: not an operator's scale.
    status = a.status()
    assert status.current == 4 and status.state.last_written == 4


def test_a_change_after_the_read_is_a_conflict_and_nothing_is_written(
        kube_api: kubernetes.client.ApiClient, ns: str) -> None:
    name = unique("race")
    create_pool(kube_api, ns, name, 2)
    a = actuator(kube_api, ns, name)
    assert a.status().current == 2
    patch(kube_api, ns, name, {"metadata": {"annotations": {"touched": "yes"}}})
    with pytest.raises(ConflictError, match="changed since it was read"):
        a.scale(3, STATE, expected_current=2)
    doc = raw(kube_api, ns, name)
    assert doc["spec"]["replicas"] == 2
    assert PENDING_KEY not in annotations_of(doc)
    # Re-read, decide again: the write goes through.
    assert a.status().current == 2
    a.scale(3, STATE, expected_current=2)
    assert raw(kube_api, ns, name)["spec"]["replicas"] == 3


def test_the_pause_annotation_works_as_on_a_deployment(
        kube_api: kubernetes.client.ApiClient, ns: str) -> None:
    name = unique("paused")
    create_pool(kube_api, ns, name, 2, {KUBERNETES_PREFIX + "paused": "true"})
    status = actuator(kube_api, ns, name).status()
    assert status.paused and status.current == 2


@pytest.mark.parametrize(("kind", "api_version", "said"), [
    ("MailPoool", API_VERSION, f"serves no kind MailPoool in {API_VERSION}"),
    (NO_SCALE_KIND, API_VERSION, "has no scale subresource"),
    (KIND, "nowhere.example.com/v1", "does not serve nowhere.example.com/v1"),
], ids=["unknown-kind", "no-scale-subresource", "group-not-served"])  # GROUP is random: xdist
# workers must collect the same ids
def test_unusable_references_are_said_with_the_ref(
        kube_api: kubernetes.client.ApiClient, ns: str, kind: str, api_version: str,
        said: str) -> None:
    a = actuator(kube_api, ns, "smtp", kind=kind, api_version=api_version)
    with pytest.raises(DiscoveryError) as caught:
        a.status()
    text = str(caught.value)
    assert said in text, text
    assert f"scale_target_ref {{api_version: {api_version}, kind: {kind}, name: smtp}}" in text


def test_an_hpa_on_the_same_kind_and_name_is_a_conflict(
        kube_api: kubernetes.client.ApiClient, ns: str) -> None:
    name = unique("hpa")
    create_pool(kube_api, ns, name, 1)
    a = actuator(kube_api, ns, name)
    autoscaling = kubernetes.client.AutoscalingV1Api(kube_api)

    def hpa(hpa_name: str, api_version: str, kind: str) -> None:
        autoscaling.create_namespaced_horizontal_pod_autoscaler(
            ns, kubernetes.client.V1HorizontalPodAutoscaler.model_validate({
                "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": hpa_name},
                "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind,
                                            "name": name},
                         "minReplicas": 1, "maxReplicas": 3}}))

    hpa(f"{name}-deploy", "apps/v1", "Deployment")  # the same name, another kind
    assert a.hpa_conflict() is None
    hpa(f"{name}-pool", API_VERSION, KIND)
    conflict = a.hpa_conflict()
    assert conflict is not None and f"{ns}/{name}-pool" in conflict, conflict
    assert f"{KIND} {ns}/{name}" in conflict


# --- the engine -------------------------------------------------------------------------------


def settings_for(realenv: RealEnv, ns: str, name: str, wish: int,
                 **extra: Any) -> Any:
    return load_config_data({
        "evaluation_interval": "1s",
        "prometheus": {"url": realenv.prometheus_url, "timeout": "3s",
                       "scrape_interval": "1s"},
        "targets": [{"name": name, "backend": "kubernetes", "namespace": ns,
                     "scale_target_ref": {"api_version": API_VERSION, "kind": KIND,
                                          "name": name},
                     "min_replicas": 1, "max_replicas": 5,
                     "policies": [{"type": "capacity", "query": f"vector({wish * 10000})",
                                   "per_instance": 10000, "headroom": 1}],
                     **extra}],
    }, environ={})


def one_tick(settings: Any, factory: Any) -> TargetOutcome:
    engine = Engine(settings, source=PrometheusSource(settings.prometheus),
                    actuator_factory=factory)
    try:
        [outcome] = engine.tick()
    finally:
        engine.close()
    return outcome


def test_the_engine_scales_a_custom_resource_in_one_tick(
        kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Config → factory → discovery → /scale, as the daemon builds them."""
    name = unique("e2e")
    create_pool(kube_api, ns, name, 1)
    monkeypatch.setenv("KUBECONFIG", str(realenv.kubeconfig))
    settings = settings_for(realenv, ns, name, 3)
    clients = BackendClients(timeout=10)
    try:
        outcome = one_tick(settings, lambda target: make_actuator(target, clients))
    finally:
        clients.close()
    assert outcome.error is None, outcome.error
    assert outcome.written and outcome.decision is not None
    assert (outcome.decision.current, outcome.decision.desired) == (1, 3)
    doc = raw(kube_api, ns, name)
    assert doc["spec"]["replicas"] == 3
    notes = annotations_of(doc)
    assert notes[KUBERNETES_PREFIX + "last-replicas"] == "3"
    assert PENDING_KEY not in notes
    events = kubernetes.client.CoreV1Api(kube_api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name}").items
    [rescale] = [e for e in events if e.reason == "SuccessfulRescale"]
    assert rescale.involved_object.api_version == API_VERSION
    assert rescale.involved_object.kind == KIND


def test_an_apps_v1_deployment_named_by_ref_keeps_the_single_merge_patch(
        kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("deploy")
    apps = kubernetes.client.AppsV1Api(kube_api)
    body = kubernetes.client.V1Deployment.model_validate({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "mail",
                                                       "image": "busybox:local"}]}}}})
    created: Any = apps.create_namespaced_deployment(ns, body)
    version = created.metadata.resource_version
    monkeypatch.setenv("KUBECONFIG", str(realenv.kubeconfig))
    settings = load_config_data({
        "prometheus": {"url": realenv.prometheus_url, "timeout": "3s"},
        "targets": [{"name": name, "backend": "kubernetes", "namespace": ns,
                     "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment",
                                          "name": name},
                     "max_replicas": 5,
                     "policies": [{"type": "capacity", "query": "vector(30000)",
                                   "per_instance": 10000, "headroom": 1}]}],
    }, environ={})
    clients = BackendClients(timeout=10)
    try:
        outcome = one_tick(settings, lambda target: make_actuator(target, clients))
    finally:
        clients.close()
    assert outcome.error is None and outcome.written, outcome
    response: Any = apps.list_namespaced_deployment(
        ns, field_selector=f"metadata.name={name}", resource_version=version, watch=True,
        timeout_seconds=1, _preload_content=False)
    changes = [json.loads(line) for line in response.data.splitlines() if line.strip()]
    [write] = [c["object"] for c in changes if c["type"] == "MODIFIED"]  # ONE write
    assert write["spec"]["replicas"] == 3
    notes = write["metadata"]["annotations"]
    assert notes[KUBERNETES_PREFIX + "last-replicas"] == "3" and PENDING_KEY not in notes


# --- the fault between the two writes ---------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(realenv: RealEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultProxy]:
    yield from proxy_in_front(realenv, tmp_path_factory.mktemp("kscale-proxy"))


def proxied_client(realenv: RealEnv, url: str) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration(
        host=url, api_key={"authorization": "Bearer " + realenv.kube_admin_token})
    config.ssl_ca_cert = str(realenv.kube_ca_file)
    return kubernetes.client.ApiClient(config)


def test_a_failed_state_write_after_the_scale_never_reads_as_a_manual_scale(
        kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str, proxy: FaultProxy,
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """The scale lands, the state annotations after it do not (the proxy fails the second
    PATCH of the object). The pending count recorded before the scale makes that count ours
    for every later reader: this process's next tick and a fresh process (a restart or a
    failover), which then scales down at once (an operator's scale-up would block that for
    cooldown.down) and brings the annotations up to date."""
    name = unique("fault")
    long_ago = time.time() - 3600
    create_pool(kube_api, ns, name, 1, encode_state(
        TargetState(last_scale_time=long_ago, last_scale_direction=-1, last_written=1),
        KUBERNETES_PREFIX))
    object_path = f"/namespaces/{ns}/{PLURAL}/{name}$"
    through_proxy = proxied_client(realenv, proxy.url)
    try:
        # 1. The pending PATCH passes, the /scale PUT passes, the state PATCH fails.
        proxy.fault(500, "PATCH", object_path, skip=1)
        settings = settings_for(realenv, ns, name, 3, cooldown={"up": "0s", "down": "300s"},
                                behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
        writer = actuator(through_proxy, ns, name)
        engine = Engine(settings, source=PrometheusSource(settings.prometheus),
                        actuator_factory=lambda _: writer)
        try:
            with caplog.at_level(logging.WARNING):
                [first] = engine.tick()
            assert proxy.state()["faulted"] == 1, proxy.state()
            proxy.fault(0)
            assert first.error is None and first.written, first
            doc = raw(kube_api, ns, name)
            notes = annotations_of(doc)
            assert doc["spec"]["replicas"] == 3
            assert notes[PENDING_KEY] == "3"
            assert notes[KUBERNETES_PREFIX + "last-replicas"] == "1"  # the state did not land
            assert any("state annotations were not written" in r.getMessage()
                       for r in caplog.records), [r.getMessage() for r in caplog.records]

            # 2. This process's next tick: nothing manual, nothing to write.
            [second] = engine.tick()
            assert second.error is None and not second.written
            assert second.decision is not None
            assert second.decision.state.manual_time is None
        finally:
            engine.close()

        # 3. A fresh process (restart, failover) that wants 2: not an operator's scale-up,
        # so no cooldown.down blocks the scale-down; its write completes the state.
        fresh_settings = settings_for(realenv, ns, name, 2,
                                      cooldown={"up": "0s", "down": "300s"},
                                      behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
        outcome = one_tick(fresh_settings, lambda _: actuator(kube_api, ns, name))
        assert outcome.error is None, outcome.error
        decision = outcome.decision
        assert decision is not None and decision.current == 3
        assert decision.state.manual_time is None, decision
        assert outcome.written and decision.desired == 2, decision
        doc = raw(kube_api, ns, name)
        notes = annotations_of(doc)
        assert doc["spec"]["replicas"] == 2
        assert notes[KUBERNETES_PREFIX + "last-replicas"] == "2"
        assert PENDING_KEY not in notes
        assert notes[KUBERNETES_PREFIX + "manual-time"] == ""
    finally:
        proxy.fault(0)
        through_proxy.close()


def test_a_failed_scale_after_the_pending_write_leaves_the_count_and_the_state(
        kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str,
        proxy: FaultProxy) -> None:
    """The pending count lands, the /scale PUT fails: the count stays, the stale pending
    count (which the spec does not hold) is ignored, and the next tick writes again."""
    name = unique("nosc")
    create_pool(kube_api, ns, name, 1, encode_state(TargetState(last_written=1),
                                                    KUBERNETES_PREFIX))
    through_proxy = proxied_client(realenv, proxy.url)
    try:
        proxy.fault(500, "PUT", f"/namespaces/{ns}/{PLURAL}/{name}/scale$")
        settings = settings_for(realenv, ns, name, 3, cooldown={"up": "0s", "down": "300s"})
        writer = actuator(through_proxy, ns, name)
        engine = Engine(settings, source=PrometheusSource(settings.prometheus),
                        actuator_factory=lambda _: writer)
        try:
            [first] = engine.tick()
            assert first.error is not None and "500" in first.error, first
            doc = raw(kube_api, ns, name)
            assert doc["spec"]["replicas"] == 1
            assert annotations_of(doc)[PENDING_KEY] == "3"
            proxy.fault(0)
            [second] = engine.tick()
            assert second.error is None and second.written, second
            assert second.decision is not None
            assert second.decision.state.manual_time is None
        finally:
            engine.close()
        doc = raw(kube_api, ns, name)
        assert doc["spec"]["replicas"] == 3
        assert annotations_of(doc)[KUBERNETES_PREFIX + "last-replicas"] == "3"
        assert PENDING_KEY not in annotations_of(doc)
    finally:
        proxy.fault(0)
        through_proxy.close()


# --- RBAC per kind ----------------------------------------------------------------------------


def test_the_documented_rules_are_exactly_what_a_kind_needs(
        kube_api: kubernetes.client.ApiClient, realenv: RealEnv, crds: None) -> None:
    """docs/operations.md, "Other kinds": get and patch on the resource, get and update on
    its /scale. Granted one by one to a user with no other right, each missing one is named
    in the refusal; with all four the scale goes through (discovery needs none: every
    authenticated user may read it)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_api)
    config = kubernetes.client.Configuration(
        host=realenv.kube_api_url,
        api_key={"authorization": "Bearer " + realenv.kube_user_a_token})
    config.ssl_ca_cert = str(realenv.kube_ca_file)
    with fresh_namespace(kube_api, "kscale-rbac") as ns, \
            kubernetes.client.ApiClient(config) as user_api:
        name = unique("rbac")
        create_pool(kube_api, ns, name, 2)
        a = actuator(user_api, ns, name)
        resource = f"{PLURAL}.{GROUP}"
        with pytest.raises(NotAllowed, match=f"forbidden: get {resource}/scale in namespace"):
            a.status()

        def role(verbs: list[str], scale_verbs: list[str]) -> dict[str, Any]:
            return {"metadata": {"name": "kscale"}, "rules": [
                {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": verbs},
                {"apiGroups": [GROUP], "resources": [f"{PLURAL}/scale"], "verbs": scale_verbs}]}

        rbac.create_namespaced_role(ns, kubernetes.client.V1Role.model_validate(
            role(["get"], ["get"])))
        rbac.create_namespaced_role_binding(ns, kubernetes.client.V1RoleBinding.model_validate({
            "metadata": {"name": "kscale"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "kscale"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": "rbac-user-a"}]}))

        def refusal() -> str | None:
            """The refusal of a scale to 3 (None once it went through)."""
            try:
                a.status()
                a.scale(3, STATE, expected_current=2)
            except NotAllowed as exc:
                return str(exc)
            return None

        def refused_for(what: str) -> Callable[[], str | None]:
            def check() -> str | None:
                found = refusal()
                return found if found is not None and what in found else None
            return check

        wait_until("refused for patch", refused_for(f"forbidden: patch {resource} in"), 30)
        assert raw(kube_api, ns, name)["spec"]["replicas"] == 2
        rbac.replace_namespaced_role("kscale", ns, kubernetes.client.V1Role.model_validate(
            role(["get", "patch"], ["get"])))
        wait_until("refused for update on /scale",
                   refused_for(f"forbidden: update {resource}/scale in"), 30)
        assert raw(kube_api, ns, name)["spec"]["replicas"] == 2
        rbac.replace_namespaced_role("kscale", ns, kubernetes.client.V1Role.model_validate(
            role(["get", "patch"], ["get", "update"])))
        wait_until("the scale going through", lambda: refusal() is None, 30)
        doc = raw(kube_api, ns, name)
        assert doc["spec"]["replicas"] == 3
        assert PENDING_KEY not in annotations_of(doc)
