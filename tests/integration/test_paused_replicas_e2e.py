"""#11 item 15 on real components: pause at a count (paused-replicas N) on a real Swarm
service and a real Deployment, with the emulator's load read through the shared Prometheus.

The load asks for 6 or more replicas throughout: the target is scaled to N once, held at N
(no further write: the service's version / the Deployment's resourceVersion do not move),
and scales with the load at the first ticks after the label/annotation is removed (our write
to N started no cooldown and is not taken for an operator's scale). The pure rules:
tests/unit/test_paused_replicas.py; the engine's write paths: tests/unit/test_write.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from autoscaler.cli import _engine
from autoscaler.loop import Engine, TargetOutcome
from autoscaler.model import ClipKind, Outcome
from tests.integration.test_loop_e2e import swarm_target, wait_inflow
from tests.support.e2e import registered, settings_for, spec_replicas, swarm_service
from tests.support.kube import namespace_with_deployment
from tests.support.realenv import RealEnv
from tools.emulator import Emulator, KubernetesReplicas, SwarmTasks

K = "autoscaler.stalwart.io/"
BUSY = 40000  # messages/hour: ceil(4 x 1.5) = 6 replicas (the measured rate is noisy: >= 5)


@pytest.fixture
def docker_env(realenv: RealEnv, monkeypatch: pytest.MonkeyPatch) -> RealEnv:
    monkeypatch.setenv("DOCKER_HOST", realenv.docker_host)
    monkeypatch.setenv("KUBECONFIG", str(realenv.kubeconfig))
    return realenv


def paused_reason(outcome: TargetOutcome) -> str:
    assert outcome.decision is not None, outcome.error
    return next((c.reason for c in outcome.decision.clips if c.kind is ClipKind.PAUSED), "")


def held(engine: Engine, n: int, replicas: Callable[[], int], version: Callable[[], Any],
         at: int) -> None:
    """`n` ticks on a busy target paused at `at`: no write, no change of any kind."""
    before = version()
    for _ in range(n):
        outcome = engine.tick()[0]
        assert outcome.decision is not None, outcome.error
        assert outcome.decision.recommended >= 5  # the load says otherwise
        assert (outcome.written, outcome.decision.outcome) == (False, Outcome.PAUSED)
        assert paused_reason(outcome) == f"paused at {at}: held"
        time.sleep(0.3)
    assert (replicas(), version()) == (at, before)
    assert engine.health.status()[1]["paused"] == {"smtp": f"paused at {at}: held"}


def resumes(engine: Engine, replicas: Callable[[], int]) -> None:
    """Scaling with the load again within a few ticks after the pause is removed."""
    for _ in range(10):
        outcome = engine.tick()[0]
        assert outcome.decision is not None, outcome.error
        assert outcome.decision.outcome is not Outcome.PAUSED
        if replicas() >= 5:
            assert not [c for c in outcome.decision.clips if c.kind in ("cooldown",
                                                                         "manual_override")]
            return
        time.sleep(0.5)
    raise AssertionError(f"no scale-up after the pause was removed: {replicas()} replicas")


def test_swarm_label_scales_to_n_once_holds_and_resumes_when_removed(
        docker_env: RealEnv, docker_client: Any) -> None:
    with swarm_service(docker_client, docker_env.busybox_image,
                       labels={"autoscaler.paused-replicas": "2",
                               "com.docker.stack.namespace": "mail"}) as service, \
            Emulator(SwarmTasks(service.name, client=docker_client), demand=BUSY,
                     startup_delay=1, poll=0.5) as emulator, \
            registered(docker_env, emulator) as cluster:
        wait_inflow(docker_env.prometheus_url, 30000, cluster)
        settings = settings_for(docker_env.prometheus_url, swarm_target(service.name, cluster,
                                cooldown={"up": "600s", "down": "600s"}))
        engine = _engine(settings, dry_run=False, everything_dry=False)

        def replicas() -> int:
            return spec_replicas(docker_client, service.name)

        def version() -> int:
            return int(docker_client.api.inspect_service(service.name)["Version"]["Index"])

        try:
            dry = _engine(settings, dry_run=True, everything_dry=True)
            try:
                before = version()
                would = dry.tick()[0]  # a dry run says what it would write, writes nothing
                assert would.decision is not None and would.decision.desired == 2
                assert (would.written, would.skipped, replicas(), version()) == (
                    False, "dry-run", 1, before)
            finally:
                dry.close()
            first = engine.tick()[0]
            assert first.written and replicas() == 2, first
            assert paused_reason(first) == "paused at 2: scaling 1 -> 2 once, then held"
            labels = docker_client.api.inspect_service(service.name)["Spec"]["Labels"]
            assert labels["autoscaler.paused-replicas"] == "2"  # the operator's, untouched
            assert labels["com.docker.stack.namespace"] == "mail"
            assert (labels["autoscaler.last-replicas"], labels["autoscaler.pause-applied"],
                    labels["autoscaler.last-scale-time"]) == ("2", "2", "")  # no cooldown
            held(engine, 3, replicas, version, 2)

            subprocess.run(["docker", "service", "update", "--detach", "--label-rm",
                            "autoscaler.paused-replicas", service.name], check=True,
                           capture_output=True, timeout=60)
            resumes(engine, replicas)  # no 600 s cooldown from the write to 2
            labels = docker_client.api.inspect_service(service.name)["Spec"]["Labels"]
            assert labels["autoscaler.pause-applied"] == ""
        finally:
            engine.close()


def test_kubernetes_annotation_scales_to_n_once_holds_and_resumes_when_removed(
        docker_env: RealEnv, kube_api: Any) -> None:
    """Also: an unreadable N means paused, with a Warning event; nothing is written."""
    import kubernetes.client as k

    core, apps = k.CoreV1Api(kube_api), k.AppsV1Api(kube_api)
    with namespace_with_deployment(kube_api, "paused-replicas",
                                   annotations={K + "paused-replicas": "two"}) as ns:
        source = KubernetesReplicas(ns, "deployment", "smtp", api_client=kube_api)
        with Emulator(source, demand=BUSY, startup_delay=1, poll=0.5) as emulator, \
                registered(docker_env, emulator) as cluster:
            wait_inflow(docker_env.prometheus_url, 30000, cluster)
            target = {**swarm_target("", cluster, cooldown={"up": "600s", "down": "600s"}),
                      "backend": "kubernetes", "namespace": ns, "deployment": "smtp"}
            del target["service"]
            settings = settings_for(docker_env.prometheus_url, target)
            engine = _engine(settings, dry_run=False, everything_dry=False)

            def replicas() -> int:
                return int(apps.read_namespaced_deployment("smtp", ns).spec.replicas or 0)

            def version() -> str:
                meta = apps.read_namespaced_deployment("smtp", ns).metadata
                return str(meta.resource_version)  # type: ignore[union-attr]

            def annotate(value: str | None) -> None:
                apps.patch_namespaced_deployment(
                    "smtp", ns, {"metadata": {"annotations": {K + "paused-replicas": value}}})

            try:
                before = version()
                bad = engine.tick()[0]
                assert (bad.written, replicas(), version()) == (False, 1, before)
                assert paused_reason(bad).endswith(
                    "paused-replicas='two' is not a replica count (a whole number >= 0): "
                    "paused, nothing is written")
                events = core.list_namespaced_event(ns).items
                assert [(e.reason, e.type) for e in events
                        if e.reason == "InvalidPausedReplicas"] == [
                    ("InvalidPausedReplicas", "Warning")]

                annotate("2")
                first = engine.tick()[0]
                assert first.written and replicas() == 2, first
                dep = apps.read_namespaced_deployment("smtp", ns)
                notes: dict[str, str] = dep.metadata.annotations or {}  # type: ignore[union-attr]
                assert notes[K + "paused-replicas"] == "2"  # the operator's, untouched
                assert (notes[K + "last-replicas"], notes[K + "pause-applied"],
                        notes[K + "last-scale-time"]) == ("2", "2", "")
                assert any(e.reason == "SuccessfulRescale" and "paused at 2" in (e.message or "")
                           for e in core.list_namespaced_event(ns).items)
                held(engine, 3, replicas, version, 2)

                annotate(None)
                resumes(engine, replicas)
            finally:
                engine.close()
