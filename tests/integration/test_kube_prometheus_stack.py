"""deploy/kubernetes for kube-prometheus-stack users: the PrometheusRule (the same rules as the
plain rules file), the Grafana dashboard ConfigMap for the sidecar, the PodDisruptionBudget and
the ServiceMonitor, applied to the real kube-apiserver.

The API server has no Prometheus Operator: the test installs the PrometheusRule and
ServiceMonitor CRDs (tests/integration/crds/, real schemas for the fields used, so a wrong
manifest is refused) idempotently and leaves them (other runs may use them at the same time).
It serves Kubernetes 1.20, which has policy/v1beta1 only: the PodDisruptionBudget, shipped as
policy/v1 (same fields), is applied with that apiVersion rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube import fresh_namespace
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "kubernetes" / "kube-prometheus-stack"
COMPONENTS = REPO / "deploy" / "kubernetes" / "components"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "stalwart-autoscaler.json"
CRDS = Path(__file__).resolve().parent / "crds" / "monitoring.coreos.com.yaml"

Doc = dict[str, Any]


def kubectl_binary(realenv: RealEnv) -> str:
    found = realenv.kubectl or shutil.which("kubectl")
    if not found:
        pytest.fail("no kubectl: `scripts/testenv up` records one in env.json")
    return found


def kubectl(realenv: RealEnv, *args: str, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(realenv.kubeconfig)}
    return subprocess.run([kubectl_binary(realenv), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def render(realenv: RealEnv, namespace: str, workdir: Path) -> list[Doc]:
    """The kube-prometheus-stack kustomization through an overlay setting the namespace, as
    an operator installs it."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace, "resources": [os.path.relpath(STACK, workdir)]}))
    done = kubectl(realenv, "kustomize", str(workdir))
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def one(docs: list[Doc], kind: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.fixture(scope="module")
def crds(realenv: RealEnv) -> None:
    done = kubectl(realenv, "apply", "-f", str(CRDS))
    assert done.returncode == 0, done.stderr
    for name in ("prometheusrules.monitoring.coreos.com", "servicemonitors.monitoring.coreos.com"):
        done = kubectl(realenv, "wait", "--for=condition=Established", "--timeout=60s",
                       f"crd/{name}")
        assert done.returncode == 0, done.stderr
    # Discovery may lag the Established condition by a moment.
    wait_until("the CRDs in discovery", lambda: "PrometheusRule" in kubectl(
        realenv, "api-resources", "--api-group=monitoring.coreos.com").stdout, 60)


# --------------------------------------------------------------------------- the files


def test_prometheus_rule_has_exactly_the_rules_of_the_plain_file() -> None:
    rule = yaml.safe_load((COMPONENTS / "prometheus-rule" / "prometheusrule.yaml").read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_rendered_pieces(realenv: RealEnv, tmp_path: Path) -> None:
    docs = render(realenv, "mail", tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "ConfigMap",
                            "Service", "Deployment", "ServiceMonitor", "PrometheusRule",
                            "PodDisruptionBudget"])
    dashboards = [d for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    [dashboard] = dashboards
    assert json.loads(dashboard["data"]["stalwart-autoscaler.json"]) == json.loads(
        DASHBOARD.read_text())
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    pods = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pods.items()
    assert pdb["spec"]["minAvailable"] < one(docs, "Deployment")["spec"]["replicas"]
    assert all(d["metadata"].get("namespace") == "mail" for d in docs)


# --------------------------------------------------------------------------- the API server


def test_applied_to_the_real_api_server(realenv: RealEnv, kube_api: Any, crds: None,
                                        tmp_path: Path) -> None:
    """Every object is created, and stored as written (nothing pruned by the schemas)."""
    with fresh_namespace(kube_api, "kps") as ns:
        docs = render(realenv, ns, tmp_path)
        for doc in docs:
            if doc["kind"] == "PodDisruptionBudget":
                doc["apiVersion"] = "policy/v1beta1"  # the 1.20 test server has no policy/v1
        done = kubectl(realenv, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
        assert done.returncode == 0, done.stderr
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            got = kubectl(realenv, "get", "-n", ns, "-o", "json", f"{kind}/{name}")
            assert got.returncode == 0, got.stderr
            stored = json.loads(got.stdout)
            for key in ("spec", "data"):
                if key in doc and kind not in ("Deployment", "Service"):  # defaults added
                    assert stored[key] == doc[key], f"{kind} {name}: {key} not stored as written"
        assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0].get("honorLabels") is True


@pytest.mark.parametrize(("doc", "says"), [
    pytest.param({"kind": "PrometheusRule", "spec": {"groups": [
        {"name": "g", "rules": [{"alert": "NoExpr", "for": "5m"}]}]}}, "expr",
        id="rule-without-expr"),
    pytest.param({"kind": "PrometheusRule", "spec": {"groups": [
        {"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "five minutes"}]}]}},
        "for", id="for-not-a-duration"),
    pytest.param({"kind": "PrometheusRule", "spec": {"groups": {"name": "g"}}}, "groups",
                 id="groups-not-a-list"),
    pytest.param({"kind": "ServiceMonitor", "spec": {"selector": {}, "endpoints": [
        {"port": "metrics", "honorLabels": "yes"}]}}, "honorLabels",
        id="honorLabels-not-a-boolean"),
    pytest.param({"kind": "ServiceMonitor", "spec": {"endpoints": [{"port": "metrics"}]}},
                 "selector", id="servicemonitor-without-selector"),
])
def test_a_wrong_manifest_is_refused(realenv: RealEnv, kube_api: Any, crds: None,
                                     doc: Doc, says: str) -> None:
    """The CRDs' schemas are real: a wrong manifest fails to apply, naming the field."""
    with fresh_namespace(kube_api, "kps-bad") as ns:
        manifest = {"apiVersion": "monitoring.coreos.com/v1",
                    "metadata": {"name": "wrong", "namespace": ns}, **doc}
        done = kubectl(realenv, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    assert done.returncode != 0, done.stdout
    assert says in done.stderr
