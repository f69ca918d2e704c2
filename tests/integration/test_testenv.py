"""Smoke tests of the real test environment (`scripts/testenv up`).

Each test does something real against one component and cleans up after itself. Deadlines are
generous: they say whether a thing happens, not how fast.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import urlparse

import docker
import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.e2e import prom_result
from tests.support.kube import delete_namespace
from tests.support.realenv import RealEnv
from tests.support.swarm import container_ids
from tests.support.wait import wait_until

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_env_points_at_loopback_only(realenv: RealEnv) -> None:
    for url in (realenv.prometheus_url, realenv.kube_api_url):
        assert urlparse(url).hostname == "127.0.0.1", url
    assert realenv.docker_host.startswith("unix://")
    assert realenv.prometheus_file_sd_dir.is_dir()
    assert realenv.kubeconfig.is_file()
    assert realenv.kube_ca_file.is_file()


# --- Prometheus ---------------------------------------------------------------------------------


class _Exporter(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[tuple[str, str]]:
    """A tiny exporter on a free 127.0.0.1 port; yields (host:port, run id)."""
    run = uuid.uuid4().hex[:10]
    handler = type(
        "Handler",
        (_Exporter,),
        {"body": f'testenv_smoke_value{{run="{run}"}} 42\n'.encode()},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", run
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_prometheus_scrapes_a_file_sd_target(
    realenv: RealEnv, prometheus_url: str, exporter: tuple[str, str]
) -> None:
    address, run = exporter
    def query(promql: str) -> list[dict[str, Any]]:
        return prom_result(prometheus_url, promql)

    # Prometheus answers and scrapes itself.
    up = wait_until("Prometheus' own `up`", lambda: query('up{job="prometheus"}'), 60)
    assert up[0]["value"][1] == "1"

    target_file = realenv.prometheus_file_sd_dir / f"smoke-{run}.json"
    tmp = target_file.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [address], "labels": {"smoke_run": run}}]))
    tmp.rename(target_file)  # atomic: Prometheus never sees a half-written file
    try:
        result = wait_until(
            "the file_sd target to be scraped",
            lambda: query(f'testenv_smoke_value{{run="{run}",job="file_sd"}}'),
            60,
        )
        assert result[0]["value"][1] == "42"
        assert result[0]["metric"]["instance"] == address
        assert result[0]["metric"]["smoke_run"] == run
        target_up = query(f'up{{job="file_sd",instance="{address}"}}')
        assert target_up[0]["value"][1] == "1"
    finally:
        target_file.unlink(missing_ok=True)


# --- Docker swarm -------------------------------------------------------------------------------


def test_swarm_service_scales_to_two_running_tasks(
    realenv: RealEnv, docker_client: docker.DockerClient
) -> None:
    swarm = docker_client.info()["Swarm"]
    assert swarm["LocalNodeState"] == "active"
    assert swarm["ControlAvailable"] is True

    name = unique("smoke")
    service = docker_client.services.create(
        realenv.busybox_image,
        command=["sleep", "100000"],
        name=name,
        mode=docker.types.ServiceMode("replicated", replicas=1),
        stop_grace_period=1_000_000_000,  # ns; `sleep` as PID 1 ignores SIGTERM
    )
    try:
        service.reload()
        assert service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
        assert service.scale(2)
        service.reload()
        assert service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 2

        def running() -> list[dict[str, Any]] | None:
            tasks = service.tasks(filters={"desired-state": "running"})
            up = [t for t in tasks if t["Status"]["State"] == "running"]
            return up if len(up) == 2 else None

        tasks = wait_until("2 running tasks", running, 120)
        assert {t["Slot"] for t in tasks} == {1, 2}
    finally:
        service.remove()

    wait_until(
        "the service and its containers to be gone",
        lambda: (
            not docker_client.services.list(filters={"name": name})
            and not container_ids(docker_client,
                                  label=f"com.docker.swarm.service.name={name}")
        ),
        60,
    )


# --- kube-apiserver -----------------------------------------------------------------------------


def test_kube_deployment_scale_and_lease(kube_api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(kube_api)
    apps = kubernetes.client.AppsV1Api(kube_api)
    coordination = kubernetes.client.CoordinationV1Api(kube_api)
    ns = unique("smoke")
    meta = kubernetes.client.V1ObjectMeta

    core.create_namespace(kubernetes.client.V1Namespace(metadata=meta(name=ns)))
    try:
        labels = {"app": "smoke"}
        deployment = kubernetes.client.V1Deployment(
            metadata=meta(name="mail", labels=labels),
            spec=kubernetes.client.V1DeploymentSpec(
                replicas=1,
                selector=kubernetes.client.V1LabelSelector(match_labels=labels),
                template=kubernetes.client.V1PodTemplateSpec(
                    metadata=meta(labels=labels),
                    spec=kubernetes.client.V1PodSpec(
                        containers=[
                            kubernetes.client.V1Container(
                                name="mail", image="busybox:local", command=["sleep", "100000"]
                            )
                        ]
                    ),
                ),
            ),
        )
        apps.create_namespaced_deployment(ns, deployment)

        scale = apps.read_namespaced_deployment_scale("mail", ns)
        assert scale.spec is not None
        assert scale.spec.replicas == 1
        apps.patch_namespaced_deployment_scale("mail", ns, {"spec": {"replicas": 3}})
        scale = apps.read_namespaced_deployment_scale("mail", ns)
        assert scale.spec is not None
        assert scale.spec.replicas == 3
        read_back = apps.read_namespaced_deployment("mail", ns)
        assert read_back.spec is not None
        assert read_back.spec.replicas == 3

        lease = kubernetes.client.V1Lease(
            metadata=meta(name="autoscaler-smoke"),
            spec=kubernetes.client.V1LeaseSpec(
                holder_identity="smoke-holder", lease_duration_seconds=15
            ),
        )
        coordination.create_namespaced_lease(ns, lease)
        got = coordination.read_namespaced_lease("autoscaler-smoke", ns)
        assert got.spec is not None
        assert got.spec.holder_identity == "smoke-holder"
        assert got.spec.lease_duration_seconds == 15

        coordination.delete_namespaced_lease("autoscaler-smoke", ns)
        apps.delete_namespaced_deployment("mail", ns)
    finally:
        delete_namespace(core, ns)

    with pytest.raises(ApiException) as excinfo:
        core.read_namespace(ns)
    assert excinfo.value.status == 404


def test_kube_rbac_refuses_an_unprivileged_user(
    realenv: RealEnv, kube_api: kubernetes.client.ApiClient
) -> None:
    # The admin may list deployments in `default`...
    kubernetes.client.AppsV1Api(kube_api).list_namespaced_deployment("default")

    # ...user A, authenticated by its static token but bound to no role, may not.
    config = kubernetes.client.Configuration()
    config.host = realenv.kube_api_url
    config.ssl_ca_cert = str(realenv.kube_ca_file)
    config.api_key = {"BearerToken": realenv.kube_user_a_token}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    with kubernetes.client.ApiClient(config) as user_a, pytest.raises(ApiException) as excinfo:
        kubernetes.client.AppsV1Api(user_a).list_namespaced_deployment("default")
    assert excinfo.value.status == 403
    status = json.loads(excinfo.value.body or "{}")
    assert status["reason"] == "Forbidden"
    assert 'User "rbac-user-a"' in status["message"]  # authenticated as A, not anonymous
