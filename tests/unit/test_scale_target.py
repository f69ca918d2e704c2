"""Any kind with a scale subresource (#11 item 13): the `scale_target_ref` key, kind → resource
through API discovery, the pending count that keeps a half-written scale from reading as an
operator's, and the HPA match on such kinds. On the real kube-apiserver (a CRD with a scale
subresource): tests/integration/test_scale_subresource.py."""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.actuators.discovery import (
    ApiDiscovery,
    DiscoveryError,
    ScaleResource,
    scale_resource,
)
from autoscaler.actuators.hpa import conflicting_hpa
from autoscaler.config import ConfigError, config_schema, load_config_data
from autoscaler.decide import detect_manual_change
from autoscaler.model import TargetState, TargetStatus
from autoscaler.reload import workload_key
from autoscaler.state import KUBERNETES_PREFIX, PENDING, pending_replicas, with_pending

ROLLOUT = {"api_version": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "smtp"}


def target(**keys: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "smtp", "backend": "kubernetes", "namespace": "mail",
                            "max_replicas": 5,
                            "policies": [{"type": "capacity", "query": "x"}]}
    base.update(keys)
    return {key: value for key, value in base.items() if value is not None}


def errors(*targets: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config_data({"targets": list(targets)})
    return str(caught.value)


# --- config -----------------------------------------------------------------------------------


def test_scale_target_ref_loads_and_names_the_workload() -> None:
    t = load_config_data({"targets": [target(scale_target_ref=ROLLOUT)]}).targets[0]
    assert t.kube_workload() == ("argoproj.io/v1alpha1", "Rollout", "smtp")
    assert t.metric_identity() == ("mail", "Rollout", "smtp", "")
    assert t.workload == "smtp"
    assert t.workload_kind == "rollout"  # its pods: smtp-..., the default preset selector
    assert t.scale_target_ref is not None and t.scale_target_ref.group == "argoproj.io"


@pytest.mark.parametrize("api_version", ["v1", "apps/v1", "argoproj.io/v1alpha1",
                                         "example.com/v2beta3", "a-b.example.io/v10"])
def test_api_versions_as_the_hpa_writes_them(api_version: str) -> None:
    load_config_data({"targets": [target(scale_target_ref={**ROLLOUT,
                                                             "api_version": api_version})]})


@pytest.mark.parametrize(("key", "value", "said"), [
    ("api_version", "argoproj.io", "group/version"),
    ("api_version", "", "group/version"),
    ("api_version", "Argoproj.io/v1", "group/version"),
    ("api_version", "argoproj.io/alpha", "group/version"),
    ("kind", "", "a kind as the API names it"),
    ("kind", "Roll out", "a kind as the API names it"),
    ("name", "", "Kubernetes object name"),
    ("name", "SMTP", "Kubernetes object name"),
    ("name", "smtp-", "Kubernetes object name"),
])
def test_each_bad_field_is_named(key: str, value: str, said: str) -> None:
    text = errors(target(scale_target_ref={**ROLLOUT, key: value}))
    assert f"targets[0].scale_target_ref.{key}" in text and said in text


@pytest.mark.parametrize("missing", ["api_version", "kind", "name"])
def test_each_field_is_required(missing: str) -> None:
    ref = {k: v for k, v in ROLLOUT.items() if k != missing}
    text = errors(target(scale_target_ref=ref))
    assert f"targets[0].scale_target_ref.{missing}" in text


def test_unknown_key_in_the_ref_is_an_error() -> None:
    assert "scale_target_ref.apiVersion" in errors(
        target(scale_target_ref={**ROLLOUT, "apiVersion": "v1"}))


@pytest.mark.parametrize("keys", [
    {"deployment": "smtp", "scale_target_ref": ROLLOUT},
    {"statefulset": "smtp", "scale_target_ref": ROLLOUT},
    {"deployment": "a", "statefulset": "b", "scale_target_ref": ROLLOUT},
    {},
])
def test_exactly_one_workload_key(keys: dict[str, Any]) -> None:
    text = errors(target(**keys))
    assert "exactly one of `deployment`, `statefulset` or `scale_target_ref`" in text


def test_swarm_target_may_not_have_a_scale_target_ref() -> None:
    text = errors(target(backend="swarm", namespace=None, service="smtp",
                         scale_target_ref=ROLLOUT))
    assert "targets[0].scale_target_ref: `scale_target_ref` is for kubernetes targets" in text


def test_the_error_beside_an_invalid_sibling_is_still_reported() -> None:
    text = errors(target(scale_target_ref={**ROLLOUT, "kind": "!"}, min_replicas=9))
    assert "scale_target_ref.kind" in text and "must be <= max_replicas" in text


def test_schema_carries_the_single_field_rules() -> None:
    schema = config_schema()
    ref = schema["$defs"]["ScaleTargetRef"]
    assert ref["additionalProperties"] is False
    assert set(ref["required"]) == {"api_version", "kind", "name"}
    for key in ("api_version", "kind", "name"):
        assert "pattern" in ref["properties"][key]
    jsonschema = pytest.importorskip("jsonschema")
    ok = {"targets": [target(scale_target_ref=ROLLOUT)]}
    jsonschema.validate(ok, schema)
    for key, bad in (("api_version", "argoproj.io"), ("kind", ""), ("name", "SMTP")):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"targets": [target(scale_target_ref={**ROLLOUT, key: bad})]},
                                schema)


def test_a_reload_that_changes_the_ref_is_another_workload() -> None:
    one = load_config_data({"targets": [target(scale_target_ref=ROLLOUT)]}).targets[0]
    two = load_config_data({"targets": [target(scale_target_ref={**ROLLOUT,
                                                                   "kind": "Other"})]}).targets[0]
    assert workload_key(one) != workload_key(two)


def test_preset_scope_of_another_kind_selects_its_pods_by_name() -> None:
    t = load_config_data({"targets": [target(scale_target_ref=ROLLOUT,
                                             preset="stalwart-smtp")]}).targets[0]
    assert t.preset_scope().selector == 'namespace="mail",pod=~"smtp-.+"'


# --- discovery --------------------------------------------------------------------------------

ARGO = {"kind": "APIResourceList", "groupVersion": "argoproj.io/v1alpha1", "resources": [
    {"name": "rollouts", "singularName": "rollout", "namespaced": True, "kind": "Rollout"},
    {"name": "rollouts/status", "namespaced": True, "kind": "Rollout"},
    {"name": "rollouts/scale", "namespaced": True, "group": "autoscaling", "version": "v1",
     "kind": "Scale"},
    {"name": "analysisruns", "namespaced": True, "kind": "AnalysisRun"},
    {"name": "clusteranalysistemplates", "namespaced": False,
     "kind": "ClusterAnalysisTemplate"},
]}
CORE = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
    {"name": "replicationcontrollers", "namespaced": True, "kind": "ReplicationController"},
    {"name": "replicationcontrollers/scale", "namespaced": True, "kind": "Scale"},
    {"name": "pods", "namespaced": True, "kind": "Pod"},
]}


@pytest.mark.parametrize(("listing", "api_version", "kind", "plural", "rbac", "path"), [
    (ARGO, "argoproj.io/v1alpha1", "Rollout", "rollouts", "rollouts.argoproj.io",
     "/apis/argoproj.io/v1alpha1/namespaces/mail/rollouts/smtp/scale"),
    (CORE, "v1", "ReplicationController", "replicationcontrollers", "replicationcontrollers",
     "/api/v1/namespaces/mail/replicationcontrollers/smtp/scale"),
])
def test_kind_maps_to_its_resource(listing: dict[str, Any], api_version: str, kind: str,
                                   plural: str, rbac: str, path: str) -> None:
    found = scale_resource(listing, api_version, kind)
    assert found == ScaleResource(api_version, kind, plural)
    assert found.rbac_resource == rbac
    assert found.path("mail", "smtp", "scale") == path


@pytest.mark.parametrize(("kind", "said"), [
    ("Rolout", "serves no kind Rolout in argoproj.io/v1alpha1 (it serves: AnalysisRun, "
               "ClusterAnalysisTemplate, Rollout)"),
    ("Scale", "serves no kind Scale"),  # only a subresource's kind
    ("AnalysisRun", "AnalysisRun (analysisruns) in argoproj.io/v1alpha1 has no scale "
                    "subresource"),
    ("ClusterAnalysisTemplate", "is cluster-scoped"),
])
def test_unusable_kinds_are_said_plainly(kind: str, said: str) -> None:
    with pytest.raises(DiscoveryError, match=None) as caught:
        scale_resource(ARGO, "argoproj.io/v1alpha1", kind)
    assert said in str(caught.value)


def test_discovery_is_cached_and_an_unknown_kind_refetched_only_after_refresh() -> None:
    calls: list[str] = []
    now = [0.0]
    listing: dict[str, Any] = {"resources": []}

    def fetch(api_version: str) -> dict[str, Any]:
        calls.append(api_version)
        return listing

    discovery = ApiDiscovery(fetch, refresh=60.0, clock=lambda: now[0])
    with pytest.raises(DiscoveryError):
        discovery.resolve("argoproj.io/v1alpha1", "Rollout")
    with pytest.raises(DiscoveryError):  # within the refresh: from the cache
        discovery.resolve("argoproj.io/v1alpha1", "Rollout")
    assert calls == ["argoproj.io/v1alpha1"]
    listing = ARGO  # the CRD is installed
    now[0] = 61.0
    assert discovery.resolve("argoproj.io/v1alpha1", "Rollout").plural == "rollouts"
    assert discovery.resolve("argoproj.io/v1alpha1", "Rollout").plural == "rollouts"
    assert len(calls) == 2


def test_a_failed_fetch_is_not_cached() -> None:
    answers: list[Any] = [DiscoveryError("not served"), ARGO]

    def fetch(api_version: str) -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    discovery = ApiDiscovery(fetch)
    with pytest.raises(DiscoveryError, match="not served"):
        discovery.resolve("argoproj.io/v1alpha1", "Rollout")
    assert discovery.resolve("argoproj.io/v1alpha1", "Rollout").plural == "rollouts"


# --- the pending count ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [("4", 4), (" 0 ", 0), ("", None), ("x", None),
                                            ("-1", None), (None, None)])
def test_pending_replicas_is_read_leniently(raw: str | None, value: int | None) -> None:
    labels = {} if raw is None else {KUBERNETES_PREFIX + PENDING: raw}
    assert pending_replicas(labels, KUBERNETES_PREFIX) == value


OLD = TargetState(last_scale_time=100.0, last_scale_direction=1, last_written=2)


@pytest.mark.parametrize(("pending", "current", "last_written", "manual"), [
    (4, 4, 4, False),  # the scale landed, its state write did not: ours, not manual
    (4, 2, 2, False),  # the scale itself failed: the state read is right
    (4, 5, 2, True),  # an operator scaled after our pending count: manual
    (None, 4, 2, True),  # no pending count: the count differs from the last written
    (2, 2, 2, False),  # a stale pending count equal to the state
])
def test_a_half_written_scale_is_ours(pending: int | None, current: int, last_written: int,
                                      manual: bool) -> None:
    state = with_pending(OLD, pending, current)
    assert state.last_written == last_written
    after = detect_manual_change(TargetStatus(current=current, ready=None, state=state),
                                now=200.0)
    assert (after.manual_time is not None) is manual


# --- HPA conflict on any kind -----------------------------------------------------------------


def hpa(name: str, api_version: str, kind: str, ref_name: str) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind,
                                        "name": ref_name}}}


def test_hpa_matches_a_crd_target_on_group_kind_and_name() -> None:
    hpas = [hpa("a", "apps/v1", "Deployment", "smtp"),  # same name, another kind
            hpa("b", "other.io/v1alpha1", "Rollout", "smtp"),  # same kind, another group
            hpa("c", "argoproj.io/v1alpha1", "Rollout", "imap")]
    assert conflicting_hpa(hpas, api_version="argoproj.io/v1alpha1", kind="Rollout",
                           name="smtp") is None
    hpas.append(hpa("d", "argoproj.io/v1", "Rollout", "smtp"))  # another version: same object
    assert conflicting_hpa(hpas, api_version="argoproj.io/v1alpha1", kind="Rollout",
                           name="smtp") == "d"


# --- the actuator's choice of path ------------------------------------------------------------


@pytest.mark.parametrize(("kind", "api_version", "path_kind", "through_scale"), [
    ("Deployment", "apps/v1", "deployment", False),  # the shorthand's single merge patch
    ("StatefulSet", "apps/v1", "statefulset", False),
    ("deployment", None, "deployment", False),
    ("Rollout", "argoproj.io/v1alpha1", "Rollout", True),
    ("Deployment", "apps/v1beta2", "Deployment", True),  # not apps/v1: as any other kind
])
def test_apps_v1_workloads_keep_the_single_patch(kind: str, api_version: str | None,
                                                  path_kind: str, through_scale: bool) -> None:
    import kubernetes.client

    from autoscaler.actuators.kubernetes import KubernetesActuator

    with kubernetes.client.ApiClient() as client:
        a = KubernetesActuator(client, kind, "mail", "smtp", api_version=api_version)
    assert a.kind == path_kind
    assert (a._scale_kind is not None) is through_scale


def test_another_kind_needs_its_api_version() -> None:
    import kubernetes.client

    from autoscaler.actuators.kubernetes import KubernetesActuator

    with kubernetes.client.ApiClient() as client, pytest.raises(ValueError, match="api_version"):
        KubernetesActuator(client, "Rollout", "mail", "smtp")
