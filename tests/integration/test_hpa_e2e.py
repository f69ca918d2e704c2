"""#11 item 4 on the real stack: a HorizontalPodAutoscaler created while the daemon runs stops
its writes within one tick, and writes resume at the first tick after the HPA is deleted.

The daemon (a real `autoscaler run` process) scales a Deployment on the test environment's
kube-apiserver from a constant Prometheus query asking for 3 replicas; an "operator" scales
it back to 1 while the HPA exists: the daemon must leave that alone until the HPA is gone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kubernetes.client as k

from tests.support.daemon import daemon, daemon_env, statusz, write_yaml, writes
from tests.support.kube import namespace_with_deployment
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

INTERVAL = 1.0
DEADLINE = 60.0  # generous: a few ticks are expected


def replicas(api: Any, ns: str, name: str) -> int:
    return int(k.AppsV1Api(api).read_namespaced_deployment(name, ns).spec.replicas or 0)


def scale_by_hand(api: Any, ns: str, name: str, count: int) -> None:
    k.AppsV1Api(api).patch_namespaced_deployment(name, ns, {"spec": {"replicas": count}})


def create_hpa(api: Any, ns: str, target: str) -> str:
    name = f"{target}-hpa"
    body = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": target},
                     "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}}
    k.AutoscalingV1Api(api).create_namespaced_horizontal_pod_autoscaler(
        ns, k.V1HorizontalPodAutoscaler.model_validate(body))
    return name


def skipped(decision: dict[str, Any]) -> str:
    return str(decision.get("skipped") or "")


def events(api: Any, ns: str, reason: str) -> list[Any]:
    return [e for e in k.CoreV1Api(api).list_namespaced_event(ns).items if e.reason == reason]


def test_an_hpa_created_mid_run_stops_writes_and_its_deletion_resumes_them(
        realenv: RealEnv, kube_api: Any, tmp_path: Path) -> None:
    name = "smtp"
    with namespace_with_deployment(kube_api, "hpa-e2e", name, replicas=1) as ns:
        port = free_port()
        config = write_yaml(tmp_path / "c.yaml", {
            "evaluation_interval": f"{INTERVAL:g}s",
            "prometheus": {"url": realenv.prometheus_url, "timeout": "3s",
                           "scrape_interval": "1s"},
            "listen": f"127.0.0.1:{port}",
            "targets": [{"name": name, "backend": "kubernetes", "namespace": ns,
                         "deployment": name, "min_replicas": 1, "max_replicas": 5,
                         "cooldown": {"up": "0s", "down": "0s"},
                         "policies": [{"type": "capacity", "query": "vector(20000)",
                                       "per_instance": 10000, "headroom": 1.5}]}],
        })
        env = daemon_env(drop=("KUBECONFIG", "KUBERNETES_", "POD_"),
                         KUBECONFIG=str(realenv.kubeconfig))
        with daemon(config, env, tmp_path, port=port, label="hpa") as d:
            wait_until("the daemon scaling to 3", lambda: replicas(kube_api, ns, name) == 3,
                       DEADLINE)

            # An HPA appears (as KEDA would make one); then an operator scales back to 1.
            created_at = time.time()
            hpa = create_hpa(kube_api, ns, name)
            scale_by_hand(kube_api, ns, name, 1)

            def refused_since_hpa() -> list[dict[str, Any]] | None:
                """Decisions of ticks begun after the HPA appeared that wanted to write."""
                found = [x for x in d.decisions(name)
                         if x["time"] > created_at and x["desired"] != x["current"]]
                return found if len(found) >= 3 else None

            refused = wait_until("three refused decisions after the HPA appeared",
                                 refused_since_hpa, DEADLINE)
            assert writes(d, since=created_at) == [], writes(d, since=created_at)
            assert all(f"HorizontalPodAutoscaler {ns}/{hpa}" in skipped(r) for r in refused)
            assert replicas(kube_api, ns, name) == 1
            status = statusz(d)
            assert status is not None and status[0] == 503, status
            assert f"HorizontalPodAutoscaler {ns}/{hpa}" in status[1]["problems"][name]
            assert d.metric("autoscaler_target_hpa_conflict", target=name) == 1
            assert len(events(kube_api, ns, "HPAConflict")) == 1  # once, not per tick

            # The HPA is deleted: the first tick begun after that writes 3 again.
            k.AutoscalingV1Api(kube_api).delete_namespaced_horizontal_pod_autoscaler(hpa, ns)
            deleted_at = time.time()
            [resumed, *_] = wait_until("the daemon writing again",
                                       lambda: writes(d, since=created_at), DEADLINE)
            assert resumed["desired"] == 3 and replicas(kube_api, ns, name) == 3
            # The write came from the tick running at the deletion or the next one, and no
            # tick begun after the deletion was refused.
            assert resumed["time"] > deleted_at - 2 * INTERVAL, (resumed, deleted_at)
            assert [r for r in d.decisions(name)
                    if r["time"] > deleted_at and "HorizontalPodAutoscaler" in skipped(r)] == []
            assert d.metric("autoscaler_target_hpa_conflict", target=name) == 0
            assert events(kube_api, ns, "HPAConflictResolved")
            assert d.stop() == 0
