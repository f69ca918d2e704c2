"""The Stalwart metrics emulator against real components: Prometheus, Swarm, kube-apiserver.

The loop under test is the one the autoscaler runs in: a backend's instance count → the
emulator → a real Prometheus scrape (file_sd, 1 s) → the presets' own queries. Each emulator
gets a metric prefix of its own, so runs sharing one Prometheus never read each other's series.
Deadlines are generous: they say whether a thing happens, not how fast.

`rate(x[5m])` divides by the whole 5 minutes, so a counter Prometheus has known for less than
that reads low; the inflow check therefore waits for the window to fill. The flow emulator is
started by the first test so the window fills while the others run.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import docker
import kubernetes.client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.presets import (
    PresetOptions,
    default_cpu_query,
    default_scope,
    net_inflow_per_hour,
    preset_guards,
    preset_policies,
)
from tests.support.e2e import prom_value
from tests.support.kube import delete_namespace
from tests.support.processes import emulator_process
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until
from tools.emulator import COUNTERS, Emulator, FixedInstances, KubernetesReplicas, Workload

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
DEMAND = 30000.0  # emails/hour: above the 2 x 10000/h the flow cluster delivers, so a queue grows
CAPACITY = 10000.0
FLOW_REPLICAS = 2
WINDOW_FILLED = 300.0 + 60.0  # a 5m rate window (net inflow), full, plus a margin


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def state(url: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(get(url + "/control/state"))
    return result


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _exposes(url: str, names: set[str]) -> bool:
    return names <= set(families(get(url + "/metrics/prometheus")))


def node_labels(text: str, metric: str) -> set[str]:
    """The `node` label values of one Stalwart metric in an exposition."""
    return {s.labels["node"] for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == metric}


def query(prom: str, promql: str) -> float | None:
    """The value of a one-element instant result at Prometheus `prom`; None for no result
    (or NaN)."""
    value = prom_value(prom, promql)
    return None if value is None or math.isnan(value) else value


@pytest.fixture(scope="module")
def prom(prometheus_url: str) -> str:
    return prometheus_url


@contextmanager
def scraped(realenv: RealEnv, address: str, run: str) -> Iterator[None]:
    """Register both endpoints of an emulator as file_sd targets; remove them afterwards.

    The two targets share an address, so a label of their own keeps their `up` apart.
    """
    groups = [
        {"targets": [address],
         "labels": {"__metrics_path__": "/metrics/prometheus", "endpoint": "stalwart",
                    "emulator_run": run}},
        {"targets": [address],
         "labels": {"__metrics_path__": "/metrics", "endpoint": "cadvisor",
                    "emulator_run": run}},
    ]
    target_file = realenv.prometheus_file_sd_dir / f"emulator-{run}.json"
    tmp = target_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    tmp.rename(target_file)  # atomic: Prometheus never reads a half-written file
    try:
        yield
    finally:
        target_file.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def flow(realenv: RealEnv) -> Iterator[tuple[Emulator, str, str, float]]:
    """Two fixed warm instances at DEMAND, scraped by Prometheus: (emulator, prefix, service,
    monotonic start)."""
    run = unique("e")
    prefix, service = f"{run}_", f"flow_{run}"
    emulator = Emulator(FixedInstances(FLOW_REPLICAS, Workload("swarm", service)),
                        demand=DEMAND, capacity_per_instance=CAPACITY, startup_delay=10.0,
                        prefix=prefix)
    with emulator, scraped(realenv, emulator.address, run):
        yield emulator, prefix, service, time.monotonic()


def preset_queries(prefix: str, service: str) -> dict[str, str]:
    """The stalwart-smtp preset's own queries for a Swarm service, by policy/guard name."""
    options = PresetOptions()
    policies = preset_policies("stalwart-smtp", prefix=prefix, backend="swarm",
                               workload=service, namespace=None, options=options)
    guards = preset_guards("stalwart-smtp", prefix=prefix, options=options)
    queries = {str(p["name"]): str(p["query"]) for p in [*policies, *guards]}
    assert queries["cpu"] == default_cpu_query("swarm", service, None)
    return queries


# --- tests ----------------------------------------------------------------------------------


def test_prometheus_scrapes_both_endpoints(
    flow: tuple[Emulator, str, str, float], prom: str
) -> None:
    emulator, prefix, service, _ = flow
    for endpoint in ("stalwart", "cadvisor"):
        up_query = f'up{{job="file_sd",instance="{emulator.address}",endpoint="{endpoint}"}}'
        up = wait_until(f"the {endpoint} endpoint to be up", partial(query, prom, up_query), 60)
        assert up == 1.0
    nodes = wait_until("two node series of server_memory",
                       lambda: query(prom, f"count({prefix}server_memory)"), 60)
    assert nodes == FLOW_REPLICAS
    cpu_series = wait_until(
        "the cAdvisor CPU series of the service",
        lambda: query(prom, "count(container_cpu_usage_seconds_total"
                            f'{{container_label_com_docker_swarm_service_name="{service}"}})'),
        60)
    assert cpu_series == FLOW_REPLICAS


def test_exposition_parses_with_real_names_and_prefix() -> None:
    with Emulator(FixedInstances(2), demand=0.0, poll=0.1) as quiet:
        time.sleep(0.5)
        text = get(quiet.url + "/metrics/prometheus")
    found = families(text)
    # A quiet node has exported no counter yet (absent until the first event), only gauges.
    assert not set(COUNTERS) & set(found), text
    assert {"server_memory", "delivery_active_connections", "smtp_active_connections",
            "imap_active_connections"} <= set(found)
    assert "queue_count" not in found  # Enterprise only

    for prefix in ("", "stalwart_"):
        with Emulator(FixedInstances(2), demand=36000.0, poll=0.1, prefix=prefix,
                      edition="enterprise") as busy:
            expected = {prefix + n for n in [
                *COUNTERS, "server_memory", "queue_count", "delivery_active_connections",
                "smtp_active_connections", "imap_active_connections", "delivery_attempt_time"]}
            wait_until("every counter and the attempt-time histogram to appear",
                       partial(_exposes, busy.url, expected), 30, every=0.2)
            text = get(busy.url + "/metrics/prometheus")
            cadvisor = get(busy.url + "/metrics")
        parsed = list(text_string_to_metric_families(text))
        assert expected <= {f.name for f in parsed}
        for family in parsed:
            assert family.name.startswith(prefix), family.name
            assert {s.labels["node"] for s in family.samples} <= {"1", "2"}
        # The names as written: the parser itself appends `_total` to counter samples.
        written = {re.split(r"[{ ]", line, maxsplit=1)[0]
                   for line in text.splitlines() if line and not line.startswith("#")}
        assert prefix + "queue_queue_message" in written
        for name in written:
            assert not name.endswith("_total"), name
            assert name.startswith(prefix), name
        for family in parsed:
            if family.type == "counter":
                assert {s.labels["node"] for s in family.samples} == {"1", "2"}
        # Stalwart's histogram style: non-cumulative buckets ending in le="inf", holding
        # the observed values (so they add up to _sum), in milliseconds.
        attempt = next(f for f in parsed if f.name == prefix + "delivery_attempt_time")
        node1 = [s for s in attempt.samples if s.labels["node"] == "1"]
        buckets = [s for s in node1 if s.name.endswith("_bucket")]
        assert buckets[-1].labels["le"] == "inf"
        assert [s.labels["le"] for s in buckets[:3]] == ["250", "500", "1000"]
        total = next(s.value for s in node1 if s.name.endswith("_sum"))
        count = next(s.value for s in node1 if s.name.endswith("_count"))
        assert sum(s.value for s in buckets) == total
        assert 500 < total / count < 20000  # a few seconds per attempt, in ms
        # cAdvisor keeps its own `_total` name and carries the Swarm service label.
        cpu = families(cadvisor)["container_cpu_usage_seconds"]
        assert {s.name for s in cpu.samples} == {"container_cpu_usage_seconds_total"}
        assert {s.labels["container_label_com_docker_swarm_service_name"]
                for s in cpu.samples} == {"stalwart"}


@pytest.fixture
def swarm_service(realenv: RealEnv, docker_client: docker.DockerClient) -> Iterator[Any]:
    name = unique("emu-")
    service = docker_client.services.create(
        realenv.busybox_image, command=["sleep", "100000"], name=name,
        mode=docker.types.ServiceMode("replicated", replicas=1))
    try:
        yield service
    finally:
        service.remove()
        wait_until("the service to be gone",
                   lambda: not any(s.name == name for s in docker_client.services.list()), 60)


def test_follows_a_real_swarm_service(
    realenv: RealEnv, swarm_service: Any, prom: str, tmp_path: Path
) -> None:
    run = unique("s")
    prefix = f"{run}_"
    args = ["--swarm-service", swarm_service.name, "--prefix", prefix, "--demand", "36000",
            "--poll", "1s", "--startup-delay", "5s"]
    with emulator_process(args, tmp_path / "emulator.log",
                          {"DOCKER_HOST": realenv.docker_host}) as url:
        address = url.removeprefix("http://")
        with scraped(realenv, address, run):
            wait_until("one running task", lambda: state(url)["running"] == 1, 120)
            assert swarm_service.scale(3)

            def three_nodes() -> bool:
                text = get(url + "/metrics/prometheus")
                return (state(url)["running"] == 3
                        and node_labels(text, prefix + "server_memory") == {"1", "2", "3"})

            wait_until("3 running instances and 3 node series", three_nodes, 120)
            assert state(url)["backend"] == f"swarm service {swarm_service.name}"
            assert wait_until("Prometheus to see 3 nodes",
                              lambda: query(prom, f"count({prefix}server_memory)") == 3, 60)
            # The new instances serve after the start-up delay; then all three deliver.
            wait_until("3 serving instances", lambda: state(url)["serving"] == 3, 60)

            swarm_service.reload()  # scale() sends the version it last read
            assert swarm_service.scale(1)
            wait_until(
                "the removed nodes' series to go",
                lambda: node_labels(get(url + "/metrics/prometheus"),
                                    prefix + "server_memory") == {"1"},
                120)
            assert state(url)["running"] == 1


@pytest.fixture
def kube_deployment(kube_api: kubernetes.client.ApiClient) -> Iterator[tuple[str, str]]:
    """(namespace, name) of a Deployment with spec.replicas 1 in a namespace of its own."""
    core = kubernetes.client.CoreV1Api(kube_api)
    apps = kubernetes.client.AppsV1Api(kube_api)
    meta = kubernetes.client.V1ObjectMeta
    ns, labels = unique("emu-"), {"app": "stalwart"}
    core.create_namespace(kubernetes.client.V1Namespace(metadata=meta(name=ns)))
    try:
        apps.create_namespaced_deployment(ns, kubernetes.client.V1Deployment(
            metadata=meta(name="mail", labels=labels),
            spec=kubernetes.client.V1DeploymentSpec(
                replicas=1,
                selector=kubernetes.client.V1LabelSelector(match_labels=labels),
                template=kubernetes.client.V1PodTemplateSpec(
                    metadata=meta(labels=labels),
                    spec=kubernetes.client.V1PodSpec(containers=[kubernetes.client.V1Container(
                        name="stalwart", image="busybox:local",
                        command=["sleep", "100000"])])))))
        yield ns, "mail"
    finally:
        delete_namespace(core, ns)


def test_follows_a_real_kubernetes_deployment(
    realenv: RealEnv, kube_api: kubernetes.client.ApiClient,
    kube_deployment: tuple[str, str], prom: str,
) -> None:
    ns, name = kube_deployment
    run = unique("k")
    prefix = f"{run}_"
    source = KubernetesReplicas(ns, "deployment", name, kubeconfig=str(realenv.kubeconfig))
    with Emulator(source, demand=36000.0, prefix=prefix, startup_delay=5.0) as emulator, \
            scraped(realenv, emulator.address, run):
        assert emulator.state()["running"] == 1
        apps = kubernetes.client.AppsV1Api(kube_api)
        apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": 3}})

        def three_nodes() -> bool:
            text = emulator.stalwart_metrics()
            return (emulator.state()["running"] == 3
                    and node_labels(text, prefix + "server_memory") == {"1", "2", "3"})

        wait_until("3 running instances and 3 node series", three_nodes, 60)
        assert emulator.state()["backend"] == f"kubernetes deployment {ns}/{name}"
        assert wait_until("Prometheus to see 3 nodes",
                          lambda: query(prom, f"count({prefix}server_memory)") == 3, 60)
        # The cAdvisor series carry the pod labels the kubernetes CPU preset selects on; the
        # pod-level cgroup (container="") is exported too, and the preset leaves it out.
        cpu_query = default_cpu_query("kubernetes", name, ns)
        selector = "{" + default_scope("kubernetes", name, ns).container_selector + "}"
        assert wait_until(
            "3 container CPU series for the preset",
            lambda: query(prom, f"count(container_cpu_usage_seconds_total{selector})") == 3, 60)
        pods = query(prom, f'count(container_cpu_usage_seconds_total{{namespace="{ns}"}})')
        assert pods == 6
        assert wait_until("the preset's CPU query to answer",
                          lambda: query(prom, cpu_query) is not None, 90)


def test_preset_queries_read_plausible_values(
    flow: tuple[Emulator, str, str, float], prom: str
) -> None:
    emulator, prefix, service, started = flow
    queries = preset_queries(prefix, service)

    # Early on the rate reads low (Prometheus divides by the whole window), never high.
    inflow = wait_until("an inflow reading", lambda: query(prom, queries["inflow"]), 60)
    assert 0 < inflow <= 1.2 * DEMAND

    def settled() -> float | None:
        value = query(prom, queries["inflow"])
        if value is None or time.monotonic() - started < 240:
            return None
        return value if abs(value - DEMAND) <= 0.2 * DEMAND else None

    inflow = wait_until("inflow within 20 % of the demand", settled, WINDOW_FILLED + 180, 5)
    state_now = emulator.state()
    assert state_now["serving"] == FLOW_REPLICAS
    delivered = FLOW_REPLICAS * CAPACITY  # the cluster is saturated: it delivers its capacity
    # The community net inflow (no longer in the preset; kept for explicit queue policies).
    net = query(prom, net_inflow_per_hour(prefix))
    assert net is not None
    assert abs(net - (DEMAND - delivered)) <= 0.2 * DEMAND, (net, inflow)
    assert state_now["queue"] > 0  # and the plant's queue grows, as the net inflow says

    cpu = query(prom, queries["cpu"])  # saturated: idle 5 % + busy 90 % of a core
    assert cpu is not None and 85.0 <= cpu <= 100.0, cpu

    # Little's law: 20000/h delivered x 3 s per delivery ≈ 16.7 in flight, rounded per node.
    total = query(prom, f"sum({prefix}delivery_active_connections) or vector(0)")
    assert total is not None and 12 <= total <= 20, total
    # The preset's guard reads the same gauge, per node (avg) or cluster-wide (sum).
    guard = query(prom, queries["active_deliveries"])
    assert guard in (total, total / FLOW_REPLICAS), (guard, queries["active_deliveries"])


def test_demand_step_raises_the_inflow_seen_through_prometheus(
    flow: tuple[Emulator, str, str, float], prom: str
) -> None:
    emulator, prefix, service, started = flow
    inflow_query = preset_queries(prefix, service)["inflow"]

    def settled() -> float | None:
        value = query(prom, inflow_query)
        if value is None or time.monotonic() - started < 240:
            return None
        return value if abs(value - DEMAND) <= 0.2 * DEMAND else None

    before = wait_until("the inflow to settle at the demand", settled, WINDOW_FILLED + 180, 5)
    request = urllib.request.Request(emulator.url + "/control/demand", data=b"90000",
                                     method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {"demand": 90000.0}
    assert emulator.state()["demand"] == 90000.0

    # Settled readings stay within 20 % of DEMAND: 1.5x can only come from the step.
    after = wait_until(
        "the inflow to rise well above the old demand",
        lambda: (v if (v := query(prom, inflow_query)) is not None and v > 1.5 * DEMAND
                 else None),
        240, 2)
    assert after > before
