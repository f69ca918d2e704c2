"""The whole loop on real components: emulator → Prometheus → autoscaler → Swarm/Kubernetes.

Deadlines are generous multiples of the expected time (scrape + evaluation + 2 s); the
figures themselves are measured by the reaction-time benchmark, not asserted here.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from autoscaler.cli import _engine
from tests.support.e2e import (
    FAST_BEHAVIOR,
    OwnPrometheus,
    inflow_capacity,
    prom_value,
    registered,
    running,
    settings_for,
    spec_replicas,
    swarm_service,
)
from tests.support.kube import namespace_with_deployment
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until
from tools.emulator import Emulator, KubernetesReplicas, SwarmTasks

EXPECTED_REACTION = 1 + 1 + 2  # scrape 1 s + evaluation 1 s + 2 s
DEADLINE = 5 * EXPECTED_REACTION + 10  # + the rate window filling up


@pytest.fixture
def docker_env(realenv: RealEnv, monkeypatch: pytest.MonkeyPatch) -> RealEnv:
    monkeypatch.setenv("DOCKER_HOST", realenv.docker_host)
    monkeypatch.setenv("KUBECONFIG", str(realenv.kubeconfig))
    return realenv


def swarm_target(service: str, cluster: str, **extra: Any) -> dict[str, Any]:
    return {"name": "smtp", "backend": "swarm", "service": service, "min_replicas": 1,
            "max_replicas": 8, "cooldown": {"up": "0s", "down": "0s"},
            "behavior": FAST_BEHAVIOR, "policies": [inflow_capacity(cluster)], **extra}


def wait_inflow(url: str, at_least: float, cluster: str = "") -> None:
    query = inflow_capacity(cluster)["query"]
    wait_until(f"inflow >= {at_least:g}/h in Prometheus",
               lambda: (prom_value(url, query) or 0) >= at_least, 60)


def test_demand_step_scales_swarm_up_then_down_after_stabilization(
        docker_env: RealEnv, docker_client: Any) -> None:
    with swarm_service(docker_client, docker_env.busybox_image) as service, \
            Emulator(SwarmTasks(service.name, client=docker_client), demand=5000,
                     startup_delay=1, poll=0.5) as emulator, \
            registered(docker_env, emulator) as cluster:
        wait_inflow(docker_env.prometheus_url, 1000, cluster)
        settings = settings_for(docker_env.prometheus_url, swarm_target(service.name, cluster))
        engine = _engine(settings, dry_run=False, everything_dry=False)
        with running(engine, settings.evaluation_interval):
            time.sleep(3)
            assert spec_replicas(docker_client, service.name) == 1  # 5,000/h needs one
            emulator.set_demand(40000)  # ceil(4 x 1.5) = 6 (the measured rate is noisy)
            wait_until("scale-up to 6 or more",
                       lambda: spec_replicas(docker_client, service.name) >= 6, DEADLINE)
            emulator.set_demand(5000)
            dropped = time.monotonic()
            wait_until("scale-down after the drop",
                       lambda: spec_replicas(docker_client, service.name) <= 2, 60)
            # scaleDown.stabilizationWindowSeconds is 10: never earlier than that.
            assert time.monotonic() - dropped >= 10
            labels = docker_client.api.inspect_service(service.name)["Spec"]["Labels"]
            assert labels["autoscaler.last-scale-direction"] == "down"


def test_dry_run_leaves_the_service_byte_for_byte_unchanged(
        docker_env: RealEnv, docker_client: Any) -> None:
    with swarm_service(docker_client, docker_env.busybox_image,
                       labels={"com.docker.stack.namespace": "mail"}) as service, \
            Emulator(SwarmTasks(service.name, client=docker_client), demand=40000,
                     startup_delay=1, poll=0.5) as emulator, \
            registered(docker_env, emulator) as cluster:
        wait_inflow(docker_env.prometheus_url, 30000, cluster)
        before = docker_client.api.inspect_service(service.name)
        settings = settings_for(docker_env.prometheus_url, swarm_target(service.name, cluster),
                                dry_run=True)
        engine = _engine(settings, dry_run=False, everything_dry=False)
        outcomes = [engine.tick() for _ in range(4)]
        engine.close()
        after = docker_client.api.inspect_service(service.name)
        assert json.dumps(after["Spec"], sort_keys=True) == \
            json.dumps(before["Spec"], sort_keys=True)
        assert after["Version"] == before["Version"]
        decisions = [o[0].decision for o in outcomes]
        assert all(d is not None and d.outcome == "scale_up" and d.dry_run for d in decisions)
        assert not any(o[0].written for o in outcomes)


def test_manual_scale_is_respected_not_reverted(
        docker_env: RealEnv, docker_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    with swarm_service(docker_client, docker_env.busybox_image) as service, \
            Emulator(SwarmTasks(service.name, client=docker_client), demand=5000,
                     startup_delay=1, poll=0.5) as emulator, \
            registered(docker_env, emulator) as cluster:
        wait_inflow(docker_env.prometheus_url, 1000, cluster)
        target = swarm_target(service.name, cluster, cooldown={"up": "0s", "down": "60s"})
        settings = settings_for(docker_env.prometheus_url, target)
        engine = _engine(settings, dry_run=False, everything_dry=False)
        engine.tick()  # adopts the service at 1
        docker_client.services.get(service.name).scale(4)  # an operator's scale-up
        caplog.set_level(logging.INFO, logger="autoscaler.decision")
        outcomes = [engine.tick() for _ in range(5)]
        engine.close()
        assert spec_replicas(docker_client, service.name) == 4
        clips = [c.kind for o in outcomes for c in (o[0].decision.clips if o[0].decision
                                                     else ())]
        assert "manual_override" in clips
        assert any('"manual_override"' in r.getMessage() for r in caplog.records)


def test_prometheus_outage_never_scales_down_and_recovers(
        docker_env: RealEnv, docker_client: Any, tmp_path: Path) -> None:
    with swarm_service(docker_client, docker_env.busybox_image, replicas=4) as service, \
            Emulator(SwarmTasks(service.name, client=docker_client), demand=5000,
                     startup_delay=1, poll=0.5) as emulator:
        prom = OwnPrometheus(tmp_path, emulator.address)
        prom.start()
        try:
            wait_inflow(prom.url, 1000)
            prom.stop()  # down mid-run: every signal is `error`
            settings = settings_for(prom.url, swarm_target(service.name, ""))
            engine = _engine(settings, dry_run=False, everything_dry=False)
            outages = [engine.tick() for _ in range(3)]
            assert spec_replicas(docker_client, service.name) == 4
            decision = outages[-1][0].decision
            assert decision is not None and decision.policies[0].state == "error"
            assert decision.desired == 4  # nothing reported: hold
            ready, body = engine.health.ready()
            assert ready, "a Prometheus outage leaves the daemon ready (a rollout completes)"
            ok, body = engine.health.status()
            assert not ok and "prometheus" in body["problems"]
            prom.start()  # it returns: demand of 5,000/h needs 1 instance
            wait_inflow(prom.url, 1000)
            with running(engine, settings.evaluation_interval):
                wait_until("scale-down once data is back",
                           lambda: spec_replicas(docker_client, service.name) == 1, 60)
        finally:
            prom.stop()


def test_demand_step_scales_a_kubernetes_deployment(
        docker_env: RealEnv, kube_api: Any) -> None:
    import kubernetes.client as k

    core, apps = k.CoreV1Api(kube_api), k.AppsV1Api(kube_api)
    with namespace_with_deployment(kube_api, "e2e") as ns:
        source = KubernetesReplicas(ns, "deployment", "smtp", api_client=kube_api)
        with Emulator(source, demand=5000, startup_delay=1, poll=0.5) as emulator, \
                registered(docker_env, emulator) as cluster:
            wait_inflow(docker_env.prometheus_url, 1000, cluster)
            target = {"name": "smtp", "backend": "kubernetes", "namespace": ns,
                      "deployment": "smtp", "min_replicas": 1, "max_replicas": 8,
                      "cooldown": {"up": "0s", "down": "0s"}, "behavior": FAST_BEHAVIOR,
                      "policies": [inflow_capacity(cluster)]}
            settings = settings_for(docker_env.prometheus_url, target)
            engine = _engine(settings, dry_run=False, everything_dry=False)

            def replicas() -> int:
                return int(apps.read_namespaced_deployment("smtp", ns).spec.replicas or 0)

            with running(engine, settings.evaluation_interval):
                emulator.set_demand(40000)
                wait_until("deployment at 6 or more", lambda: replicas() >= 6, DEADLINE)
            dep = apps.read_namespaced_deployment("smtp", ns)
            written = dep.metadata.annotations["autoscaler.stalwart.io/last-replicas"]  # type: ignore[index, union-attr]
            assert int(written) == dep.spec.replicas
            events = core.list_namespaced_event(ns).items
            assert any(e.reason == "SuccessfulRescale" for e in events)
