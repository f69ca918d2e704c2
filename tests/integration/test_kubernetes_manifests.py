"""deploy/kubernetes and deploy/staging, rendered by `kubectl kustomize` and applied to the real
kube-apiserver (1.20, RBAC on, no controllers).

What is proved here:
- both kustomizations (and the optional ServiceMonitor one) render, carry the fields the issue
  asks for, and their config files pass `autoscaler check-config`;
- applied with kubectl into a fresh namespace, every object is created and stored with every
  field as written (a field the API server does not know would be dropped silently);
- with a token of the ServiceAccount, the Role allows exactly the daemon's job (read and patch
  the named Deployment and StatefulSet, list HPAs, create events, get, create and update its
  Lease) and the API server answers 403 to everything else: by hand-written tables, and by a
  matrix computed from the Role itself (every verb on every resource the daemon touches and
  on the sensitive others, in its namespace and another: granted ones pass the authorizer,
  all others 403), for the base and the staging account;
- the real daemon, with only those rights, scales a Deployment and a StatefulSet, writes its
  annotations and records Events, and hits a 403 as soon as any single grant of the Role is
  withdrawn (so the Role holds nothing it does not use); the staging copy, with read-only
  rights, decides and writes nothing, and its Role would refuse a write even with dry-run off.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from autoscaler import __version__
from tests.support.kube import delete_namespace
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "kubernetes"
SERVICEMONITOR = BASE / "servicemonitor"
STAGING = REPO / "deploy" / "staging"
SA = "stalwart-autoscaler"
SA_STAGING = "stalwart-autoscaler-staging"
LEASE = "stalwart-autoscaler"
SMTP = "stalwart-smtp"  # a StatefulSet, as in the base config
IMAP = "stalwart-imap"  # a Deployment
OTHER = "other"  # a Deployment the Role does not name
CONFIG_PATH = "/etc/stalwart-autoscaler/config.yaml"
ANNOTATION = "autoscaler.stalwart.io/"
CLI_TIMEOUT = 120.0
KUBECTL_TIMEOUT = 60.0

Doc = dict[str, Any]


# --------------------------------------------------------------------------- kubectl


@pytest.fixture(scope="module")
def kubectl(realenv: RealEnv) -> str:
    found = realenv.kubectl or shutil.which("kubectl")
    if not found:
        pytest.fail("no kubectl: `scripts/testenv up` records one in env.json")
    return found


def run_kubectl(kubectl: str, *args: str, kubeconfig: Path | None = None,
                stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HTTPS_PROXY", "https_proxy")}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    done = subprocess.run([kubectl, *args], input=stdin, env=env, capture_output=True,
                          text=True, timeout=KUBECTL_TIMEOUT, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


@functools.cache
def _kustomize(kubectl: str, directory: Path) -> str:
    return run_kubectl(kubectl, "kustomize", str(directory)).stdout


def render(kubectl: str, directory: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(_kustomize(kubectl, directory)) if doc]


def overlay(kubectl: str, directory: Path, namespace: str, workdir: Path) -> list[Doc]:
    """`directory` rendered into `namespace` through an overlay, as an operator installs it."""
    workdir.mkdir(parents=True, exist_ok=True)
    # kustomize takes only relative paths to other kustomizations
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace, "resources": [os.path.relpath(directory, workdir)]}))
    return render(kubectl, workdir)


def one(docs: list[Doc], kind: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def container(docs: list[Doc]) -> Doc:
    [c] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def rendered_config(docs: list[Doc]) -> Doc:
    config: Doc = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    return config


def dig(doc: Any, path: str) -> Any:
    """`spec.template.spec.containers.0.name` → the value; KeyError/IndexError when absent."""
    for key in path.split("."):
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize(("directory", "kinds"), [
    (BASE, {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service"}),
    (SERVICEMONITOR, {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment",
                      "Service", "ServiceMonitor"}),
    (STAGING, {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service"}),
], ids=["base", "servicemonitor", "staging"])
def test_kustomizations_render(kubectl: str, directory: Path, kinds: set[str]) -> None:
    docs = render(kubectl, directory)
    assert sorted(d["kind"] for d in docs) == sorted(kinds)  # each kind exactly once
    # namespace-agnostic: the namespace comes from the operator's overlay
    assert [d["metadata"]["name"] for d in docs if "namespace" in d["metadata"]] == []
    assert "namespace" not in one(docs, "RoleBinding")["subjects"][0]


@pytest.mark.parametrize(("path", "expected"), [
    ("spec.replicas", 2),
    ("spec.template.spec.serviceAccountName", SA),
    ("spec.template.spec.securityContext.runAsNonRoot", True),
    ("spec.template.spec.securityContext.runAsUser", 10001),
    ("spec.template.spec.securityContext.seccompProfile.type", "RuntimeDefault"),
    ("spec.template.spec.containers.0.image", f"stalwart-autoscaler:{__version__}"),
    ("spec.template.spec.containers.0.args", ["run", "--config", CONFIG_PATH]),
    ("spec.template.spec.containers.0.env.0",
     {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
    ("spec.template.spec.containers.0.ports.0", {"name": "metrics", "containerPort": 9464,
                                                 "protocol": "TCP"}),
    ("spec.template.spec.containers.0.livenessProbe.httpGet",
     {"path": "/healthz", "port": "metrics"}),
    ("spec.template.spec.containers.0.readinessProbe.httpGet",
     {"path": "/readyz", "port": "metrics"}),
    ("spec.template.spec.containers.0.securityContext.runAsNonRoot", True),
    ("spec.template.spec.containers.0.securityContext.runAsUser", 10001),
    ("spec.template.spec.containers.0.securityContext.readOnlyRootFilesystem", True),
    ("spec.template.spec.containers.0.securityContext.allowPrivilegeEscalation", False),
    ("spec.template.spec.containers.0.securityContext.capabilities", {"drop": ["ALL"]}),
    ("spec.template.spec.containers.0.securityContext.seccompProfile.type", "RuntimeDefault"),
    ("spec.template.spec.containers.0.resources", {"requests": {"cpu": "50m", "memory": "64Mi"},
                                                   "limits": {"cpu": "500m",
                                                              "memory": "256Mi"}}),
    ("spec.template.spec.containers.0.volumeMounts.0",
     {"name": "config", "mountPath": "/etc/stalwart-autoscaler", "readOnly": True}),
])
def test_base_deployment(kubectl: str, path: str, expected: Any) -> None:
    assert dig(one(render(kubectl, BASE), "Deployment"), path) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("spec.replicas", 1),
    ("spec.template.spec.serviceAccountName", SA_STAGING),
    ("spec.template.spec.containers.0.args", ["run", "--config", CONFIG_PATH, "--dry-run"]),
    ("spec.template.spec.containers.0.securityContext.readOnlyRootFilesystem", True),
    ("spec.template.spec.containers.0.readinessProbe.httpGet",
     {"path": "/readyz", "port": "metrics"}),
])
def test_staging_deployment(kubectl: str, path: str, expected: Any) -> None:
    assert dig(one(render(kubectl, STAGING), "Deployment"), path) == expected


@pytest.mark.parametrize(("directory", "facts"), [
    (BASE, {"dry_run": False, "listen": "0.0.0.0:9464", "leader_election.mode": "kubernetes",
            "leader_election.lease_name": LEASE}),
    (STAGING, {"dry_run": True, "listen": "0.0.0.0:9464", "leader_election.mode": "none"}),
], ids=["base", "staging"])
def test_config_in_the_configmap_is_valid(kubectl: str, directory: Path, facts: dict[str, Any],
                                          tmp_path: Path) -> None:
    docs = render(kubectl, directory)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    checked = subprocess.run([sys.executable, "-m", "autoscaler.cli", "check-config",
                              str(config_file)], capture_output=True, text=True,
                             timeout=CLI_TIMEOUT, check=False, env=cli_env())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = rendered_config(docs)
    assert {key: dig(config, key) for key in facts} == facts
    targets = {(t.get("statefulset"), t.get("deployment")) for t in config["targets"]}
    assert targets == {(SMTP, None), (None, IMAP)}
    assert len({t["namespace"] for t in config["targets"]}) == 1  # one namespace, one Role


@pytest.mark.parametrize("directory", [BASE, STAGING], ids=["base", "staging"])
def test_role_names_what_the_config_names(kubectl: str, directory: Path) -> None:
    """resourceNames must follow the config: a renamed target would be forbidden, and
    kustomize rewrites names it thinks refer to its own objects (a generated ConfigMap
    once turned the Lease's name into its own hashed name)."""
    docs = render(kubectl, directory)
    config = rendered_config(docs)
    workloads = {t.get("deployment") or t.get("statefulset") for t in config["targets"]}
    rules = one(docs, "Role")["rules"]
    for rule in rules:
        if rule["apiGroups"] == ["apps"]:
            assert set(rule["resourceNames"]) == workloads
    lease_rules = [r for r in rules if r["apiGroups"] == ["coordination.k8s.io"]]
    if config["leader_election"]["mode"] == "kubernetes":
        named = [r for r in lease_rules if "resourceNames" in r]
        assert [r["resourceNames"] for r in named] == [[config["leader_election"]["lease_name"]]]
    else:
        assert lease_rules == []


def test_deployment_mounts_the_generated_configmap(kubectl: str) -> None:
    for directory in (BASE, STAGING):
        docs = render(kubectl, directory)
        spec = one(docs, "Deployment")["spec"]["template"]["spec"]
        [volume] = [v for v in spec["volumes"] if v["name"] == "config"]
        assert volume["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
        assert re.fullmatch(r"stalwart-autoscaler-config(-staging)?-[a-z0-9]{10}",
                            volume["configMap"]["name"])  # hashed: a new config rolls out
        args = container(docs)["args"]
        [mount] = [m for m in container(docs)["volumeMounts"] if m["name"] == "config"]
        assert args[args.index("--config") + 1] == mount["mountPath"] + "/config.yaml"


def test_services_select_their_own_pods(kubectl: str) -> None:
    base, staging = render(kubectl, SERVICEMONITOR), render(kubectl, STAGING)

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    base_pods = one(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    staging_pods = one(staging, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(one(base, "Service")["spec"]["selector"], base_pods)
    assert not selects(one(base, "Service")["spec"]["selector"], staging_pods)
    assert selects(one(staging, "Service")["spec"]["selector"], staging_pods)
    assert not selects(one(staging, "Service")["spec"]["selector"], base_pods)
    monitor = one(base, "ServiceMonitor")["spec"]
    assert selects(monitor["selector"]["matchLabels"], one(base, "Service")["metadata"]["labels"])
    assert [e["port"] for e in monitor["endpoints"]] == \
        [p["name"] for p in one(base, "Service")["spec"]["ports"]] == ["metrics"]


# --------------------------------------------------------------------------- on the API server


@dataclass(frozen=True)
class Installed:
    ns: str
    other_ns: str  # a namespace the Role does not reach
    base: list[Doc]
    staging: list[Doc]
    files: dict[str, Path]  # "base"/"staging" → the rendered file that was applied
    token: str  # of the ServiceAccount
    staging_token: str


def workload(kind: str, name: str, replicas: int = 1) -> Doc:
    labels = {"app": name}
    body: Doc = {
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "annotations": {"owner": "ops@example.org"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "mail",
                                                       "image": "busybox:local"}]}}},
    }
    if kind == "StatefulSet":
        body["spec"]["serviceName"] = name
    return body


def lease_body(name: str, holder: str) -> Doc:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}


def event_body(ns: str, name: str) -> Doc:
    return {"metadata": {"name": f"{name}.{uuid.uuid4().hex[:12]}", "namespace": ns},
            "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                               "namespace": ns},
            "reason": "ManifestTest", "message": "RBAC check", "type": "Normal",
            "source": {"component": "stalwart-autoscaler"}}


def service_account_token(kubectl: str, kubeconfig: Path, api: kubernetes.client.ApiClient,
                          name: str, ns: str) -> str:
    """`kubectl create token` (kubectl >= 1.24); the TokenRequest API itself otherwise."""
    done = run_kubectl(kubectl, "create", "token", name, "-n", ns, "--duration", "1h",
                       kubeconfig=kubeconfig, check=False)
    if done.returncode == 0:
        return done.stdout.strip()
    if "unknown command" not in done.stderr:
        pytest.fail(f"kubectl create token {name}: {done.stderr}")
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": [], "expirationSeconds": 3600}}
    response = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(
        name, ns, request, _preload_content=False)  # type: ignore[arg-type]
    return str(json.loads(response.data)["status"]["token"])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def installed(realenv: RealEnv, kube_api: kubernetes.client.ApiClient, kubectl: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The base and the staging overlay applied with kubectl into a fresh namespace, next to
    the workloads they name (made as admin), and a second namespace they do not reach."""
    suffix = uuid.uuid4().hex[:8]
    ns, other_ns = f"manifests-{suffix}", f"manifests-other-{suffix}"
    work = tmp_path_factory.mktemp("manifests")
    core = kubernetes.client.CoreV1Api(kube_api)
    apps = kubernetes.client.AppsV1Api(kube_api)
    admin = realenv.kubeconfig
    files: dict[str, Path] = {}
    for name in (ns, other_ns):
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace",  # type: ignore[arg-type]
                               "metadata": {"name": name}})
    try:
        rendered = {"base": overlay(kubectl, BASE, ns, work / "base"),
                    "staging": overlay(kubectl, STAGING, ns, work / "staging")}
        for name, docs in rendered.items():
            files[name] = work / f"{name}.yaml"
            files[name].write_text(yaml.safe_dump_all(docs))
            run_kubectl(kubectl, "apply", "-f", str(files[name]), kubeconfig=admin)
        apps.create_namespaced_stateful_set(ns, workload("StatefulSet", SMTP))  # type: ignore[arg-type]
        apps.create_namespaced_deployment(ns, workload("Deployment", IMAP))  # type: ignore[arg-type]
        apps.create_namespaced_deployment(ns, workload("Deployment", OTHER))  # type: ignore[arg-type]
        apps.create_namespaced_deployment(other_ns, workload("Deployment", IMAP))  # type: ignore[arg-type]
        kubernetes.client.CoordinationV1Api(kube_api).create_namespaced_lease(
            other_ns, lease_body(LEASE, "someone-else"))  # type: ignore[arg-type]
        yield Installed(
            ns=ns, other_ns=other_ns, base=rendered["base"], staging=rendered["staging"],
            files=files,
            token=service_account_token(kubectl, admin, kube_api, SA, ns),
            staging_token=service_account_token(kubectl, admin, kube_api, SA_STAGING, ns))
    finally:
        for path in files.values():
            run_kubectl(kubectl, "delete", "--ignore-not-found", "--wait=false", "-f",
                        str(path), kubeconfig=admin, check=False)
        for name in (ns, other_ns):
            delete_namespace(kube_api, name)


def missing_fields(rendered: Any, stored: Any, path: str = "") -> list[str]:
    """Where `stored` lacks or differs from what `rendered` says (extra stored keys are fine:
    defaults, status, metadata the server adds)."""
    if isinstance(rendered, dict):
        if not isinstance(stored, dict):
            return [f"{path}: {stored!r} is not a mapping"]
        return [problem for key, value in rendered.items()
                for problem in ([f"{path}.{key}: dropped"] if key not in stored
                                else missing_fields(value, stored[key], f"{path}.{key}"))]
    if isinstance(rendered, list):
        if not isinstance(stored, list) or len(stored) != len(rendered):
            return [f"{path}: {stored!r} != {rendered!r}"]
        return [problem for i, (r, s) in enumerate(zip(rendered, stored, strict=True))
                for problem in missing_fields(r, s, f"{path}.{i}")]
    return [] if rendered == stored else [f"{path}: stored {stored!r}, rendered {rendered!r}"]


@pytest.mark.parametrize("which", ["base", "staging"])
def test_every_object_is_created_as_written(installed: Installed, kubectl: str,
                                            realenv: RealEnv, which: str) -> None:
    rendered = installed.base if which == "base" else installed.staging
    got = run_kubectl(kubectl, "get", "-f", str(installed.files[which]), "-o", "json",
                      kubeconfig=realenv.kubeconfig).stdout
    stored = {(o["kind"], o["metadata"]["name"]): o for o in json.loads(got)["items"]}
    assert set(stored) == {(d["kind"], d["metadata"]["name"]) for d in rendered}
    for doc in rendered:
        obj = stored[(doc["kind"], doc["metadata"]["name"])]
        assert obj["metadata"]["namespace"] == installed.ns
        assert obj["metadata"]["uid"]
        # kubectl validates against the server's schema, but what the server does not keep
        # (a field of a newer API, a defaulting surprise) would otherwise vanish silently
        assert missing_fields(doc, obj) == [], doc["kind"]
    assert one(rendered, "RoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": SA if which == "base" else SA_STAGING,
         "namespace": installed.ns}]


def user_client(realenv: RealEnv, token: str) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration(
        host=realenv.kube_api_url, api_key={"authorization": "Bearer " + token})
    config.ssl_ca_cert = str(realenv.kube_ca_file)
    return kubernetes.client.ApiClient(config)


@dataclass(frozen=True)
class Apis:
    ns: str
    other_ns: str
    apps: Any
    core: Any
    rbac: Any
    leases: Any
    autoscaling: Any


@pytest.fixture
def as_sa(realenv: RealEnv, installed: Installed) -> Iterator[Apis]:
    with user_client(realenv, installed.token) as client:
        yield apis(client, installed)


@pytest.fixture
def as_staging(realenv: RealEnv, installed: Installed) -> Iterator[Apis]:
    with user_client(realenv, installed.staging_token) as client:
        yield apis(client, installed)


def apis(client: kubernetes.client.ApiClient, installed: Installed) -> Apis:
    return Apis(installed.ns, installed.other_ns, kubernetes.client.AppsV1Api(client),
                kubernetes.client.CoreV1Api(client),
                kubernetes.client.RbacAuthorizationV1Api(client),
                kubernetes.client.CoordinationV1Api(client),
                kubernetes.client.AutoscalingV1Api(client))


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Doc]:
    """(HTTP status, JSON body) of one API call; errors are answers too."""
    try:
        response = fn(*args, _preload_content=False, **kwargs)
    except ApiException as exc:
        return int(exc.status or 0), json.loads(exc.body or "{}")
    return int(response.status), json.loads(response.data or b"{}")


MERGE = "application/merge-patch+json"


def touch(key: str) -> Doc:
    return {"metadata": {"annotations": {f"example.org/{key}": uuid.uuid4().hex[:8]}}}


# What the daemon does, as its ServiceAccount: each call must succeed.
ALLOWED: list[tuple[str, Callable[[Apis], tuple[int, Doc]]]] = [
    ("get deployment", lambda a: call(a.apps.read_namespaced_deployment, IMAP, a.ns)),
    ("get statefulset", lambda a: call(a.apps.read_namespaced_stateful_set, SMTP, a.ns)),
    ("patch deployment", lambda a: call(a.apps.patch_namespaced_deployment, IMAP, a.ns,
                                        touch("rbac"), _content_type=MERGE)),
    ("patch statefulset", lambda a: call(a.apps.patch_namespaced_stateful_set, SMTP, a.ns,
                                         touch("rbac"), _content_type=MERGE)),
    ("list horizontalpodautoscalers",
     lambda a: call(a.autoscaling.list_namespaced_horizontal_pod_autoscaler, a.ns)),
    ("create event", lambda a: call(a.core.create_namespaced_event, a.ns,
                                    event_body(a.ns, IMAP))),
]


@pytest.mark.parametrize("action", [fn for _, fn in ALLOWED], ids=[n for n, _ in ALLOWED])
def test_service_account_can_do_its_job(as_sa: Apis,
                                        action: Callable[[Apis], tuple[int, Doc]]) -> None:
    status, body = action(as_sa)
    assert status in (200, 201), body
    assert body["metadata"].get("name") or body["kind"].endswith("List")


def test_service_account_can_patch_and_read_back(as_sa: Apis, kube_api: Any) -> None:
    body = touch("read-back")
    status, _ = call(as_sa.apps.patch_namespaced_deployment, IMAP, as_sa.ns, body,
                     _content_type=MERGE)
    assert status == 200
    stored = kubernetes.client.AppsV1Api(kube_api).read_namespaced_deployment(IMAP, as_sa.ns)
    assert body["metadata"]["annotations"].items() <= stored.metadata.annotations.items()  # type: ignore[union-attr]


def test_service_account_can_hold_its_lease(as_sa: Apis, kube_api: Any) -> None:
    """get (404), create, get, update: a leader election round, in its own namespace."""
    delete_lease(kube_api, as_sa.ns)
    status, _ = call(as_sa.leases.read_namespaced_lease, LEASE, as_sa.ns)
    assert status == 404
    status, created = call(as_sa.leases.create_namespaced_lease, as_sa.ns,
                           lease_body(LEASE, "pod-a"))
    assert status == 201, created
    status, lease = call(as_sa.leases.read_namespaced_lease, LEASE, as_sa.ns)
    assert status == 200 and lease["spec"]["holderIdentity"] == "pod-a"
    lease["spec"]["holderIdentity"] = "pod-b"
    status, updated = call(as_sa.leases.replace_namespaced_lease, LEASE, as_sa.ns, lease)
    assert status == 200, updated
    assert updated["spec"]["holderIdentity"] == "pod-b"


def delete_lease(api: Any, ns: str) -> None:
    """As admin: no Lease of ours left by an earlier test."""
    try:
        kubernetes.client.CoordinationV1Api(api).delete_namespaced_lease(LEASE, ns)
    except ApiException as exc:
        assert exc.status == 404


def pod_body() -> Doc:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder"},
            "spec": {"containers": [{"name": "c", "image": "busybox:local"}]}}


def hpa_body() -> Doc:
    return {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "hpa"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": IMAP}, "maxReplicas": 3}}


def role_body() -> Doc:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": SA},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}


def binding_body() -> Doc:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "escalate"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": SA}]}


SCALE_5 = {"spec": {"replicas": 5}}

# Everything else: the API server must answer 403 Forbidden.
FORBIDDEN: list[tuple[str, Callable[[Apis], tuple[int, Doc]]]] = [
    ("delete deployments", lambda a: call(a.apps.delete_namespaced_deployment, IMAP, a.ns)),
    ("create deployments", lambda a: call(a.apps.create_namespaced_deployment, a.ns,
                                          workload("Deployment", "new"))),
    ("update (PUT) deployments", lambda a: call(a.apps.replace_namespaced_deployment, IMAP,
                                                a.ns, workload("Deployment", IMAP))),
    ("list deployments", lambda a: call(a.apps.list_namespaced_deployment, a.ns)),
    ("get a deployment the Role does not name",
     lambda a: call(a.apps.read_namespaced_deployment, OTHER, a.ns)),
    ("patch a deployment the Role does not name",
     lambda a: call(a.apps.patch_namespaced_deployment, OTHER, a.ns, SCALE_5,
                    _content_type=MERGE)),
    ("patch its own Deployment (image, args)",
     lambda a: call(a.apps.patch_namespaced_deployment, SA, a.ns, SCALE_5,
                    _content_type=MERGE)),
    ("patch deployments in another namespace",
     lambda a: call(a.apps.patch_namespaced_deployment, IMAP, a.other_ns, SCALE_5,
                    _content_type=MERGE)),
    ("get deployments in another namespace",
     lambda a: call(a.apps.read_namespaced_deployment, IMAP, a.other_ns)),
    ("get deployments/scale (the daemon reads the workload itself)",
     lambda a: call(a.apps.read_namespaced_deployment_scale, IMAP, a.ns)),
    ("patch deployments/scale", lambda a: call(a.apps.patch_namespaced_deployment_scale, IMAP,
                                               a.ns, SCALE_5, _content_type=MERGE)),
    ("patch statefulsets/scale", lambda a: call(a.apps.patch_namespaced_stateful_set_scale,
                                                SMTP, a.ns, SCALE_5, _content_type=MERGE)),
    ("delete statefulsets", lambda a: call(a.apps.delete_namespaced_stateful_set, SMTP, a.ns)),
    ("list secrets", lambda a: call(a.core.list_namespaced_secret, a.ns)),
    ("get secrets", lambda a: call(a.core.read_namespaced_secret, SA, a.ns)),
    ("get configmaps", lambda a: call(a.core.list_namespaced_config_map, a.ns)),
    ("list pods", lambda a: call(a.core.list_namespaced_pod, a.ns)),
    ("create pods", lambda a: call(a.core.create_namespaced_pod, a.ns, pod_body())),
    ("patch nodes", lambda a: call(a.core.patch_node, "node-1",
                                   {"spec": {"unschedulable": True}}, _content_type=MERGE)),
    ("list namespaces", lambda a: call(a.core.list_namespace)),
    ("create serviceaccounts/token",
     lambda a: call(a.core.create_namespaced_service_account_token, SA, a.ns,
                    {"spec": {"audiences": []}})),
    ("update roles", lambda a: call(a.rbac.replace_namespaced_role, SA, a.ns, role_body())),
    ("create rolebindings", lambda a: call(a.rbac.create_namespaced_role_binding, a.ns,
                                           binding_body())),
    ("delete leases", lambda a: call(a.leases.delete_namespaced_lease, LEASE, a.ns)),
    ("list leases", lambda a: call(a.leases.list_namespaced_lease, a.ns)),
    ("get another lease", lambda a: call(a.leases.read_namespaced_lease, "kube-scheduler",
                                         a.ns)),
    ("update another lease", lambda a: call(a.leases.replace_namespaced_lease,
                                            "kube-scheduler", a.ns,
                                            lease_body("kube-scheduler", "me"))),
    ("get leases in another namespace",
     lambda a: call(a.leases.read_namespaced_lease, LEASE, a.other_ns)),
    ("update leases in another namespace",
     lambda a: call(a.leases.replace_namespaced_lease, LEASE, a.other_ns,
                    lease_body(LEASE, "me"))),
    ("create horizontalpodautoscalers",
     lambda a: call(a.autoscaling.create_namespaced_horizontal_pod_autoscaler, a.ns,
                    hpa_body())),
    ("list horizontalpodautoscalers in another namespace",
     lambda a: call(a.autoscaling.list_namespaced_horizontal_pod_autoscaler, a.other_ns)),
    ("list events", lambda a: call(a.core.list_namespaced_event, a.ns)),
    ("delete events", lambda a: call(a.core.delete_collection_namespaced_event, a.ns)),
    ("create events in another namespace",
     lambda a: call(a.core.create_namespaced_event, a.other_ns,
                    event_body(a.other_ns, IMAP))),
]


@pytest.mark.parametrize("action", [fn for _, fn in FORBIDDEN], ids=[n for n, _ in FORBIDDEN])
def test_service_account_is_forbidden_everything_else(
        as_sa: Apis, action: Callable[[Apis], tuple[int, Doc]]) -> None:
    status, body = action(as_sa)
    assert status == 403, body
    assert body.get("reason") == "Forbidden"


# The staging copy only reads: its Role has no write at all.
STAGING_RIGHTS: list[tuple[str, Callable[[Apis], tuple[int, Doc]], int]] = [
    ("get deployment", lambda a: call(a.apps.read_namespaced_deployment, IMAP, a.ns), 200),
    ("get statefulset", lambda a: call(a.apps.read_namespaced_stateful_set, SMTP, a.ns), 200),
    ("get deployments/scale",
     lambda a: call(a.apps.read_namespaced_deployment_scale, IMAP, a.ns), 403),
    ("list horizontalpodautoscalers",
     lambda a: call(a.autoscaling.list_namespaced_horizontal_pod_autoscaler, a.ns), 200),
    ("patch deployment", lambda a: call(a.apps.patch_namespaced_deployment, IMAP, a.ns,
                                        touch("staging"), _content_type=MERGE), 403),
    ("patch statefulset", lambda a: call(a.apps.patch_namespaced_stateful_set, SMTP, a.ns,
                                         touch("staging"), _content_type=MERGE), 403),
    ("patch deployments/scale", lambda a: call(a.apps.patch_namespaced_deployment_scale, IMAP,
                                               a.ns, SCALE_5, _content_type=MERGE), 403),
    ("create event", lambda a: call(a.core.create_namespaced_event, a.ns,
                                    event_body(a.ns, IMAP)), 403),
    ("get lease", lambda a: call(a.leases.read_namespaced_lease, LEASE, a.ns), 403),
    ("create lease", lambda a: call(a.leases.create_namespaced_lease, a.ns,
                                    lease_body("staging", "me")), 403),
    ("get a deployment the Role does not name",
     lambda a: call(a.apps.read_namespaced_deployment, OTHER, a.ns), 403),
]


@pytest.mark.parametrize(("action", "expected"), [(fn, s) for _, fn, s in STAGING_RIGHTS],
                         ids=[n for n, _, _ in STAGING_RIGHTS])
def test_staging_service_account_only_reads(
        as_staging: Apis, action: Callable[[Apis], tuple[int, Doc]], expected: int) -> None:
    status, body = action(as_staging)
    assert status == expected, body


_CAN_I_ROW = re.compile(r"^(\S+)\s+\[[^\]]*\]\s+\[([^\]]*)\]\s+\[([^\]]*)\]\s*$")


def can_i(kubectl: str, kubeconfig: Path, user: str, ns: str) -> set[tuple[str, str, str]]:
    """(resource, resource name or "", verb) of `kubectl auth can-i --list` resource rows."""
    out = run_kubectl(kubectl, "auth", "can-i", "--list", f"--as={user}", "-n", ns,
                      kubeconfig=kubeconfig).stdout
    rows: set[tuple[str, str, str]] = set()
    for line in out.splitlines()[1:]:
        match = _CAN_I_ROW.match(line)
        if match is None:  # non-resource URLs (first column empty)
            continue
        resource, names, verbs = match.groups()
        for name in names.split() or [""]:
            rows |= {(resource, name, verb) for verb in verbs.split()}
    return rows


EXPECTED_RIGHTS = {
    *((f"{kind}.apps", name, verb) for kind in ("deployments", "statefulsets")
      for name in (SMTP, IMAP) for verb in ("get", "patch")),
    ("horizontalpodautoscalers.autoscaling", "", "list"),
    ("events", "", "create"),
    ("leases.coordination.k8s.io", "", "create"),
    ("leases.coordination.k8s.io", LEASE, "get"),
    ("leases.coordination.k8s.io", LEASE, "update"),
}
EXPECTED_STAGING_RIGHTS = {
    *((f"{kind}.apps", name, "get") for kind in ("deployments", "statefulsets")
      for name in (SMTP, IMAP)),
    ("horizontalpodautoscalers.autoscaling", "", "list"),
}


@pytest.mark.parametrize(("account", "expected"), [(SA, EXPECTED_RIGHTS),
                                                   (SA_STAGING, EXPECTED_STAGING_RIGHTS)])
def test_can_i_list_shows_exactly_the_role(installed: Installed, kubectl: str,
                                           realenv: RealEnv, account: str,
                                           expected: set[tuple[str, str, str]]) -> None:
    """The second view: what the authorizer says the account may do, beyond what every
    authenticated user may (measured on an account with no bindings)."""
    def rights(user: str, ns: str) -> set[tuple[str, str, str]]:
        return can_i(kubectl, realenv.kubeconfig, f"system:serviceaccount:{installed.ns}:{user}",
                     ns)

    everyone = rights("nobody", installed.ns)
    assert rights(account, installed.ns) - everyone == expected
    assert rights(account, installed.other_ns) - everyone == set()


# --------------------------------------------------------------------------- the real daemon


def cli_env(kubeconfig: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster account of a CI pod
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def token_kubeconfig(path: Path, realenv: RealEnv, token: str, ns: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": realenv.kube_api_url,
            "certificate-authority": str(realenv.kube_ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": "sa",
                                                "namespace": ns}}],
        "current-context": "sa"}))
    path.chmod(0o600)
    return path


FIXED = {"type": "capacity", "name": "fixed", "query": "vector(30000)",
         "per_instance": 10000, "headroom": 1}  # ceil(30000 / 10000 x 1) = 3


def daemon_config(path: Path, realenv: RealEnv, ns: str, workloads: dict[str, str],
                  **extra: Any) -> Path:
    targets = [{"name": name, "backend": "kubernetes", "namespace": ns, kind: name,
                "min_replicas": 1, "max_replicas": 10, "cooldown": {"up": "0s", "down": "0s"},
                "policies": [FIXED]} for name, kind in workloads.items()]
    path.write_text(yaml.safe_dump({
        "evaluation_interval": "5s",
        "prometheus": {"url": realenv.prometheus_url, "timeout": "5s"},
        "listen": f"127.0.0.1:{free_port()}",
        "leader_election": {"mode": "none"},
        "targets": targets, **extra}))
    return path


def run_daemon(args: list[str], config: Path, kubeconfig: Path, cwd: Path,
               **env: str) -> subprocess.CompletedProcess[str]:
    argv = [config.as_posix() if a == CONFIG_PATH else a for a in args]
    assert str(config) in argv, argv  # the manifest's args name the mounted config file
    return subprocess.run([sys.executable, "-m", "autoscaler.cli", *argv, "--once"],
                          env={**cli_env(kubeconfig), **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=CLI_TIMEOUT, check=False)


def decisions(stderr: str) -> dict[str, Doc]:
    out: dict[str, Doc] = {}
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "decision":
            out[record["target"]] = record
    return out


WORKLOADS = {SMTP: "statefulset", IMAP: "deployment"}


def read_raw(api: Any, kind: str, name: str, ns: str) -> Doc:
    apps = kubernetes.client.AppsV1Api(api)
    method = apps.read_namespaced_deployment if kind == "deployment" \
        else apps.read_namespaced_stateful_set
    data: Doc = json.loads(method(name, ns, _preload_content=False).data)  # type: ignore[union-attr]
    return data


@pytest.fixture
def one_replica(kube_api: Any, installed: Installed) -> dict[str, Doc]:
    """Both named workloads at 1 replica with no autoscaler state (as admin); as read."""
    apps = kubernetes.client.AppsV1Api(kube_api)
    for name, kind in WORKLOADS.items():
        current = read_raw(kube_api, kind, name, installed.ns)
        annotations = current["metadata"].get("annotations") or {}
        body = {"spec": {"replicas": 1}, "metadata": {"annotations": {
            key: None for key in annotations if key.startswith(ANNOTATION)}}}
        patch = apps.patch_namespaced_deployment if kind == "deployment" \
            else apps.patch_namespaced_stateful_set
        patch(name, installed.ns, body, _content_type=MERGE, _preload_content=False)
    return {name: read_raw(kube_api, kind, name, installed.ns)
            for name, kind in WORKLOADS.items()}


def events_for(api: Any, ns: str, name: str, reason: str | None = None) -> list[Doc]:
    selector = f"involvedObject.name={name}" + (f",reason={reason}" if reason else "")
    response = kubernetes.client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector=selector, _preload_content=False)
    items: list[Doc] = json.loads(response.data)["items"]  # type: ignore[attr-defined]
    return items


def event_names(api: Any, ns: str) -> set[str]:
    return {e["metadata"]["name"] for name in WORKLOADS for e in events_for(api, ns, name)}


def test_daemon_does_its_whole_job_with_only_the_role(
        realenv: RealEnv, kube_api: Any, installed: Installed, one_replica: dict[str, Doc],
        tmp_path: Path) -> None:
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", realenv, installed.token,
                                  installed.ns)
    config = daemon_config(tmp_path / "config.yaml", realenv, installed.ns, WORKLOADS)
    events_before = event_names(kube_api, installed.ns)
    done = run_daemon(container(installed.base)["args"], config, kubeconfig, tmp_path)
    assert done.returncode == 0, done.stderr
    records = decisions(done.stderr)
    for name, kind in WORKLOADS.items():
        assert records[name]["desired"] == 3 and records[name]["written"] is True, records
        stored = read_raw(kube_api, kind, name, installed.ns)
        assert stored["spec"]["replicas"] == 3
        annotations = stored["metadata"]["annotations"]
        assert annotations[f"{ANNOTATION}last-replicas"] == "3"
        assert annotations[f"{ANNOTATION}last-scale-direction"] == "up"
        assert annotations["owner"] == "ops@example.org"  # the rest is kept
        [event] = [e for e in events_for(kube_api, installed.ns, name, "SuccessfulRescale")
                   if e["metadata"]["name"] not in events_before]
        assert event["source"]["component"] == "stalwart-autoscaler"
        assert event["involvedObject"]["uid"] == stored["metadata"]["uid"]
    assert "forbidden" not in done.stderr.lower()


def test_daemon_takes_and_releases_its_lease_with_only_the_role(
        realenv: RealEnv, kube_api: Any, installed: Installed, one_replica: dict[str, Doc],
        tmp_path: Path) -> None:
    """The base's own election (leader_election from its ConfigMap): the daemon creates the
    Lease the Role names, acts as its holder, and releases it on the way out."""
    leases = kubernetes.client.CoordinationV1Api(kube_api)
    delete_lease(kube_api, installed.ns)  # one held by someone else would make it wait
    election = {**rendered_config(installed.base)["leader_election"],
                "lease_namespace": installed.ns}  # in a pod: its own namespace
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", realenv, installed.token,
                                  installed.ns)
    config = daemon_config(tmp_path / "config.yaml", realenv, installed.ns, WORKLOADS,
                           leader_election=election)
    done = run_daemon(container(installed.base)["args"], config, kubeconfig, tmp_path,
                      POD_NAME="stalwart-autoscaler-test-pod")
    assert done.returncode == 0, done.stderr
    records = decisions(done.stderr)
    assert {name: (r["desired"], r["written"]) for name, r in records.items()} == \
        {SMTP: (3, True), IMAP: (3, True)}
    lease = json.loads(leases.read_namespaced_lease(LEASE, installed.ns,  # type: ignore[attr-defined]
                                                    _preload_content=False).data)
    # written (created, renewed) by the daemon alone, and released on its clean exit
    assert {f["manager"] for f in lease["metadata"]["managedFields"]} == {"stalwart-autoscaler"}
    assert lease["spec"]["holderIdentity"] in ("", None)
    assert lease["spec"]["renewTime"]


def test_daemon_is_refused_a_workload_the_role_does_not_name(
        realenv: RealEnv, kube_api: Any, installed: Installed, tmp_path: Path) -> None:
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", realenv, installed.token,
                                  installed.ns)
    before = read_raw(kube_api, "deployment", OTHER, installed.ns)
    config = daemon_config(tmp_path / "config.yaml", realenv, installed.ns,
                           {OTHER: "deployment"})
    done = run_daemon(container(installed.base)["args"], config, kubeconfig, tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"forbidden: get deployments.apps in namespace {installed.ns}" in done.stderr
    assert "Traceback" not in done.stderr
    after = read_raw(kube_api, "deployment", OTHER, installed.ns)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def staging_config(path: Path, realenv: RealEnv, installed: Installed, **override: Any) -> Path:
    """The staging manifest's own dry_run and leader_election, around the test's targets."""
    rendered = rendered_config(installed.staging)
    settings = {"dry_run": rendered["dry_run"], "leader_election": rendered["leader_election"]}
    return daemon_config(path, realenv, installed.ns, WORKLOADS, **{**settings, **override})


def test_staging_decides_and_writes_nothing_with_read_only_rights(
        realenv: RealEnv, kube_api: Any, installed: Installed, one_replica: dict[str, Doc],
        tmp_path: Path) -> None:
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", realenv, installed.staging_token,
                                  installed.ns)
    config = staging_config(tmp_path / "config.yaml", realenv, installed)
    events_before = event_names(kube_api, installed.ns)
    done = run_daemon(container(installed.staging)["args"], config, kubeconfig, tmp_path)
    assert done.returncode == 0, done.stderr
    records = decisions(done.stderr)
    for name, kind in WORKLOADS.items():
        assert records[name]["desired"] == 3, records  # decided and exported...
        assert records[name]["written"] is False and records[name]["dry_run"] is True
        after = read_raw(kube_api, kind, name, installed.ns)  # ...but nothing written
        assert after["metadata"]["resourceVersion"] == \
            one_replica[name]["metadata"]["resourceVersion"]
    assert event_names(kube_api, installed.ns) == events_before  # events are writes too


def test_staging_role_refuses_writes_even_with_dry_run_off(
        realenv: RealEnv, kube_api: Any, installed: Installed, one_replica: dict[str, Doc],
        tmp_path: Path) -> None:
    """The third lock: with dry-run off in the config AND the flag dropped from the command
    line, the staging account still cannot write: the API server refuses the daemon's patch."""
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", realenv, installed.staging_token,
                                  installed.ns)
    config = staging_config(tmp_path / "config.yaml", realenv, installed, dry_run=False)
    args = [a for a in container(installed.staging)["args"] if a != "--dry-run"]
    done = run_daemon(args, config, kubeconfig, tmp_path)
    assert done.returncode == 1, done.stderr
    for name, kind in WORKLOADS.items():
        assert f"forbidden: patch {kind}s.apps in namespace {installed.ns}" in done.stderr
        after = read_raw(kube_api, kind, name, installed.ns)
        assert after["spec"]["replicas"] == 1
        assert after["metadata"]["resourceVersion"] == \
            one_replica[name]["metadata"]["resourceVersion"]


# --------------------------------------------------------------------------- every verb, both ways
#
# The tables above show the daemon's calls and some refusals by hand. Here the expectation is
# computed from the Role as rendered (RBAC's rule matching, below), and EVERY verb on every
# resource the daemon touches, and on the sensitive others, is sent to the API server with the
# account's token, in its namespace and in another one: a verb the Role grants must pass the
# authorizer (any answer but 403: mutations carry dryRun=All, so nothing changes, and an empty
# body is refused after authorization, as 400/422), every other one must be refused with 403.
# A rule for a resource or verb the matrix does not try fails the coverage test, so neither
# side can drift from the manifests.

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
ON_AN_OBJECT = {"get", "update", "patch", "delete"}  # requests that carry a name
NOT_IN_THE_ROLE = "not-in-the-role"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    resource: str  # "deployments", or with a subresource "deployments/scale"
    namespaced: bool = True
    verbs: tuple[str, ...] = VERBS

    @property
    def id(self) -> str:
        return f"{self.resource}.{self.group or 'core'}"


MATRIX = [
    # what the daemon touches
    Resource("apps", "v1", "deployments"),
    Resource("apps", "v1", "statefulsets"),
    Resource("apps", "v1", "deployments/scale", verbs=("get", "update", "patch")),
    Resource("apps", "v1", "statefulsets/scale", verbs=("get", "update", "patch")),
    Resource("autoscaling", "v1", "horizontalpodautoscalers"),
    Resource("coordination.k8s.io", "v1", "leases"),
    Resource("", "v1", "events"),
    Resource("events.k8s.io", "v1", "events"),
    # sensitive others
    Resource("", "v1", "secrets"),
    Resource("", "v1", "configmaps"),
    Resource("", "v1", "pods"),
    Resource("", "v1", "pods/exec", verbs=("get", "create")),
    Resource("", "v1", "pods/log", verbs=("get",)),
    Resource("", "v1", "services"),
    Resource("", "v1", "serviceaccounts"),
    Resource("", "v1", "serviceaccounts/token", verbs=("create",)),
    Resource("apps", "v1", "daemonsets"),
    Resource("apps", "v1", "deployments/status", verbs=("get", "update", "patch")),
    Resource("rbac.authorization.k8s.io", "v1", "roles"),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings"),
    Resource("", "v1", "namespaces", namespaced=False),
    Resource("", "v1", "nodes", namespaced=False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", namespaced=False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", namespaced=False),
    Resource("certificates.k8s.io", "v1", "certificatesigningrequests", namespaced=False),
    Resource("authentication.k8s.io", "v1", "tokenreviews", namespaced=False,
             verbs=("create",)),
    Resource("authorization.k8s.io", "v1", "subjectaccessreviews", namespaced=False,
             verbs=("create",)),
]


def role_rules(docs: list[Doc]) -> list[Doc]:
    rules: list[Doc] = one(docs, "Role")["rules"]
    return rules


def role_allows(rules: list[Doc], res: Resource, verb: str, name: str | None) -> bool:
    """RBAC's rule matching (k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac): a rule
    with resourceNames matches only a request that names one of them (so never a list,
    watch, create of a collection or deletecollection); "*" matches anything."""
    def has(values: list[str], value: str) -> bool:
        return value in values or "*" in values
    return res.namespaced and any(
        has(rule["apiGroups"], res.group) and has(rule["resources"], res.resource)
        and has(rule["verbs"], verb)
        and (not rule.get("resourceNames") or (name is not None and name in rule["resourceNames"]))
        for rule in rules)


def names_to_try(rules: list[Doc], res: Resource) -> list[str]:
    """Every name the Role names for this resource, and one it does not."""
    named = {n for rule in rules if res.resource in rule["resources"]
             for n in rule.get("resourceNames") or ()}
    return [*sorted(named), NOT_IN_THE_ROLE]


def verb_request(res: Resource, verb: str, ns: str, name: str | None
                 ) -> tuple[str, str, dict[str, str], Doc | None]:
    """(method, path, query, body) of one verb, as kubectl and client-go send it."""
    prefix = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
    base, _, sub = res.resource.partition("/")
    collection = f"{prefix}/namespaces/{ns}/{base}" if res.namespaced else f"{prefix}/{base}"
    item = f"{collection}/{name}" + (f"/{sub}" if sub else "")
    dry = {"dryRun": "All"}
    return {
        "get": ("GET", item, {}, None),
        "list": ("GET", collection, {}, None),
        "watch": ("GET", collection, {"watch": "true", "timeoutSeconds": "1"}, None),
        "create": ("POST", item if sub else collection, dry, {}),
        "update": ("PUT", item, dry, {}),
        "patch": ("PATCH", item, dry, {}),
        "delete": ("DELETE", item, dry, None),
        "deletecollection": ("DELETE", collection, dry, None),
    }[verb]


def send(realenv: RealEnv, token: str, method: str, path: str, query: dict[str, str],
         body: Doc | None, headers: dict[str, str] | None = None) -> tuple[int, Doc]:
    import requests

    with requests.Session() as session:
        session.trust_env = False
        response = session.request(
            method, realenv.kube_api_url + path, params=query, json=body, stream=True,
            verify=str(realenv.kube_ca_file), timeout=30,
            headers={"Authorization": f"Bearer {token}",
                     "Content-Type": "application/merge-patch+json" if method == "PATCH"
                     else "application/json", **(headers or {})})
        with response:
            if response.status_code == 200 and query.get("watch"):
                return 200, {}  # a watch that was let in streams until timeoutSeconds
            try:
                return response.status_code, response.json()
            except ValueError:
                return response.status_code, {"text": response.text[:200]}


def matrix_cases(rules: list[Doc], res: Resource, installed: Installed
                 ) -> list[tuple[str, str, str | None, bool]]:
    """(namespace, verb, name, allowed) for one resource: its own namespace, then another
    one where nothing is bound (cluster-scoped resources once)."""
    spaces = [installed.ns, installed.other_ns] if res.namespaced else [""]
    cases = []
    for ns in spaces:
        for verb in res.verbs:
            named = verb in ON_AN_OBJECT or "/" in res.resource  # subresources: always named
            for name in (names_to_try(rules, res) if named else [None]):
                allowed = ns == installed.ns and role_allows(rules, res, verb, name)
                cases.append((ns, verb, name, allowed))
    return cases


ACCOUNTS = {"base": "token", "staging": "staging_token"}


@pytest.mark.parametrize("res", MATRIX, ids=[r.id for r in MATRIX])
@pytest.mark.parametrize("which", list(ACCOUNTS))
def test_every_verb_the_role_grants_passes_and_every_other_is_refused(
        realenv: RealEnv, installed: Installed, which: str, res: Resource) -> None:
    docs = installed.base if which == "base" else installed.staging
    token = getattr(installed, ACCOUNTS[which])
    rules = role_rules(docs)
    wrong = {}
    for ns, verb, name, allowed in matrix_cases(rules, res, installed):
        method, path, query, body = verb_request(res, verb, ns, name)
        status, answer = send(realenv, token, method, path, query, body)
        refused = status == 403 and answer.get("reason") == "Forbidden" \
            and " cannot " in str(answer.get("message"))
        if refused == allowed or status == 401:
            wrong[f"{verb} {path}"] = (f"expected {'allowed' if allowed else '403'}", status,
                                       str(answer.get("message", answer))[:160])
    assert wrong == {}


@pytest.mark.parametrize("which", list(ACCOUNTS))
def test_the_matrix_covers_every_rule_of_the_role(installed: Installed, which: str) -> None:
    """Each (group, resource, verb, name) the Role grants is among the requests above, and
    the base account is granted something of each resource the daemon touches."""
    rules = role_rules(installed.base if which == "base" else installed.staging)
    tried = {(r.group, r.resource, v) for r in MATRIX for v in r.verbs}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert (group, resource, verb) in tried, (group, resource, verb)
                res = next(r for r in MATRIX if (r.group, r.resource) == (group, resource))
                assert set(rule.get("resourceNames") or ()) <= set(names_to_try(rules, res))
    assert "*" not in {v for rule in rules for k in ("apiGroups", "resources", "verbs")
                       for v in rule[k]}
    if which == "base":
        granted = {r.resource for r in MATRIX for v in r.verbs
                   for n in [*names_to_try(rules, r), None] if role_allows(rules, r, v, n)}
        assert granted == {"deployments", "statefulsets", "horizontalpodautoscalers",
                           "leases", "events"}


@pytest.mark.parametrize(("headers", "what"), [
    ({"Impersonate-User": "admin"}, "a user"),
    ({"Impersonate-User": "admin", "Impersonate-Group": "system:masters"}, "a group"),
    ({"Impersonate-User": "system:serviceaccount:kube-system:default"}, "a service account"),
])
def test_service_account_cannot_impersonate(realenv: RealEnv, installed: Installed,
                                            headers: dict[str, str], what: str) -> None:
    status, answer = send(realenv, installed.token, "GET",
                          f"/api/v1/namespaces/{installed.ns}/secrets", {}, None, headers)
    assert status == 403 and "cannot impersonate" in str(answer.get("message")), answer


# The other direction: the daemon needs each grant. The Role, rewritten as one rule per
# (group, resource, verb), is applied without one of them; the real daemon (election on, both
# workloads to scale) then hits a 403 for exactly that verb and resource. The Role is put
# back afterwards, and each change is awaited through the authorizer (RBAC is cached).

Grant = tuple[str, str, str, tuple[str, ...]]  # group, resource, verb, resourceNames


def grants(rules: list[Doc]) -> list[Grant]:
    return [(group, resource, verb, tuple(rule.get("resourceNames") or ()))
            for rule in rules for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]]


def rules_of(kept: list[Grant]) -> list[Doc]:
    return [{"apiGroups": [g], "resources": [r], "verbs": [v],
             **({"resourceNames": list(n)} if n else {})} for g, r, v, n in kept]


def authorized(realenv: RealEnv, token: str, ns: str, grant: Grant) -> bool:
    group, resource, verb, names = grant
    res = next(r for r in MATRIX if (r.group, r.resource) == (group, resource))
    named = verb in ON_AN_OBJECT or "/" in resource
    method, path, query, body = verb_request(res, verb, ns, (names or ("x",))[0] if named
                                             else None)
    return send(realenv, token, method, path, query, body)[0] != 403


def set_role(kube_api: Any, installed: Installed, rules: list[Doc]) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_api)
    name = one(installed.base, "Role")["metadata"]["name"]
    role = rbac.read_namespaced_role(name, installed.ns)
    role.rules = rules  # type: ignore[assignment]
    rbac.replace_namespaced_role(name, installed.ns, role)


BASE_GRANTS = grants(yaml.safe_load((BASE / "base" / "role.yaml").read_text())["rules"])


@pytest.mark.parametrize("withdrawn", BASE_GRANTS, ids=[f"{v}-{r}" for _, r, v, _ in BASE_GRANTS])
def test_the_daemon_needs_every_grant_of_the_role(
        realenv: RealEnv, kube_api: Any, installed: Installed, one_replica: dict[str, Doc],
        tmp_path: Path, withdrawn: Grant) -> None:
    rules = role_rules(installed.base)
    assert sorted(grants(rules)) == sorted(BASE_GRANTS)  # the file is what was applied
    token = installed.token
    delete_lease(kube_api, installed.ns)  # so the election must get, create, then update
    set_role(kube_api, installed, rules_of([g for g in BASE_GRANTS if g != withdrawn]))
    try:
        wait_until(f"{withdrawn} withdrawn",
                   lambda: not authorized(realenv, token, installed.ns, withdrawn), 60)
        election = {**rendered_config(installed.base)["leader_election"],
                    "lease_namespace": installed.ns}
        kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", realenv, token, installed.ns)
        config = daemon_config(tmp_path / "config.yaml", realenv, installed.ns, WORKLOADS,
                               leader_election=election)
        done = run_daemon(container(installed.base)["args"], config, kubeconfig, tmp_path,
                          POD_NAME="stalwart-autoscaler-grant-test")
    finally:
        set_role(kube_api, installed, rules)
        wait_until(f"{withdrawn} granted again",
                   lambda: authorized(realenv, token, installed.ns, withdrawn), 60)
    group, resource, verb, _ = withdrawn
    qualified = f"{resource}.{group}" if group else resource
    refused = re.compile(rf'forbidden: {verb} {re.escape(qualified)} |'
                         rf'cannot {verb} resource \\?"{re.escape(resource)}\\?"')
    assert refused.search(done.stderr), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
