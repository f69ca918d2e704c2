"""The shipped Prometheus scrape examples give the labels the presets' default selectors
match (#11 item 2), on a real Prometheus.

Swarm: the example's `stalwart` job as shipped, its `dockerswarm_sd_configs` pointed at the
test environment's dockerd, discovers a real task of a real service on a network the test
made; one rule appended by the test sends the scrape to the emulator on loopback (a task's
overlay address is not loopback). Kubernetes: Debian's Prometheus is built without
`kubernetes_sd_configs`, so its `promtool` cannot check that block; the test replaces it
with a static target carrying the `__meta_kubernetes_*` labels pod discovery gives a pod, so
`promtool check config` checks everything else and a real Prometheus runs the relabeling.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from autoscaler.presets import default_scope, while_scraped
from tests.support.e2e import OwnPrometheus, prom_value
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until
from tools.emulator import Emulator, FixedInstances, Workload

REPO = Path(__file__).resolve().parents[2]
SWARM_EXAMPLE = REPO / "deploy" / "prometheus" / "stalwart-swarm.yml"
KUBERNETES_EXAMPLE = REPO / "deploy" / "prometheus" / "stalwart-kubernetes.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def job(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(j for j in config["scrape_configs"] if j["job_name"] == name)
    return found


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def fast(config: dict[str, Any]) -> dict[str, Any]:
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    return config


@pytest.fixture
def own_prometheus(tmp_path: Path) -> Iterator[list[OwnPrometheus]]:
    """Prometheus processes a test starts; each is stopped after it."""
    started: list[OwnPrometheus] = []
    yield started
    for prom in started:
        prom.stop()


def start_prometheus(started: list[OwnPrometheus], workdir: Path,
                     config: dict[str, Any]) -> OwnPrometheus:
    workdir.mkdir(parents=True, exist_ok=True)
    prom = OwnPrometheus(workdir, config_text=yaml.safe_dump(config, sort_keys=False))
    check = promtool_check(prom.config)
    assert check.returncode == 0, check.stdout + check.stderr
    prom.start()
    started.append(prom)
    return prom


def active_targets(url: str) -> list[dict[str, Any]]:
    body = requests.get(f"{url}/api/v1/targets", timeout=5).json()
    targets: list[dict[str, Any]] = body["data"]["activeTargets"]
    return targets


def test_swarm_example_passes_promtool_as_shipped() -> None:
    done = promtool_check(SWARM_EXAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def overlay_service(realenv: RealEnv, docker_client: Any) -> Iterator[tuple[str, str]]:
    """(service, network): one task of a service marked for scraping, on a network of its
    own (`dockerswarm_sd_configs` makes a target per network attachment)."""
    import docker.types

    run = uuid.uuid4().hex[:8]
    network = docker_client.networks.create(f"scrape-{run}", driver="overlay")
    service = docker_client.services.create(
        realenv.busybox_image, ["sleep", "100000"], name=f"scrape-smtp-{run}",
        labels={"stalwart.metrics": "true"}, networks=[network.name],
        mode=docker.types.ServiceMode("replicated", replicas=1))
    try:
        yield service.name, network.name
    finally:
        service.remove()
        wait_until("the network to be removable once the task is gone",
                   lambda: _remove(network), 60)


def _remove(network: Any) -> bool:
    import docker.errors

    try:
        network.remove()
    except docker.errors.APIError:
        return False
    return True


def test_swarm_example_labels_match_the_default_selector(
        realenv: RealEnv, overlay_service: tuple[str, str], tmp_path: Path,
        own_prometheus: list[OwnPrometheus]) -> None:
    service, network = overlay_service
    # The emulator writes no discovery labels here: `service` must come from the example.
    with Emulator(FixedInstances(1, Workload("swarm", service)), demand=3600.0, poll=0.2,
                  discovery_labels=False) as emulator:
        config = yaml.safe_load(SWARM_EXAMPLE.read_text(encoding="utf-8"))
        stalwart = job(config, "stalwart")
        stalwart["dockerswarm_sd_configs"][0]["host"] = realenv.docker_host
        stalwart["dockerswarm_sd_configs"][0]["refresh_interval"] = "1s"
        for rule in stalwart["relabel_configs"]:
            if rule.get("source_labels") == ["__meta_dockerswarm_network_name"]:
                rule["regex"] = network  # the one value an operator edits
        # Test-only: scrape the emulator on loopback instead of the task's overlay address.
        stalwart["relabel_configs"].append(
            {"target_label": "__address__", "replacement": emulator.address})
        config["scrape_configs"] = [stalwart]
        prom = start_prometheus(own_prometheus, tmp_path / "swarm", fast(config))

        targets = wait_until("the task discovered", lambda: active_targets(prom.url), 60)
        assert len(targets) == 1, targets
        labels = targets[0]["labels"]
        assert labels["service"] == service
        assert labels["slot"] == "1"
        assert targets[0]["discoveredLabels"]["__meta_dockerswarm_network_name"] == network

        scope = default_scope("swarm", service, None)
        gate = while_scraped("", "vector(1)", scope)  # the presets' "a node is scraped"
        assert wait_until("the presets' selector to match a scraped node",
                          lambda: prom_value(prom.url, gate), 60) == 1.0
        sessions = f"count({scope.stalwart('', 'imap_active_connections')})"
        assert prom_value(prom.url, sessions) == 1.0


def pod_discovery_labels(namespace: str, pod: str) -> dict[str, str]:
    """What `kubernetes_sd_configs` (role: pod) gives a Stalwart pod's port 8080."""
    return {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "stalwart",
        "__meta_kubernetes_pod_container_port_number": "8080",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_node_name": "node-1",
    }


@pytest.mark.parametrize(
    ("kind", "pod"),
    [
        pytest.param("deployment", "smtp-7d9c8b6f5d-x2k4q", id="deployment"),
        pytest.param("statefulset", "smtp-0", id="statefulset"),
    ],
)
def test_kubernetes_example_labels_match_the_default_selector(
        tmp_path: Path, own_prometheus: list[OwnPrometheus], kind: str, pod: str) -> None:
    namespace = f"mail-{uuid.uuid4().hex[:6]}"
    with Emulator(FixedInstances(1, Workload("kubernetes", "smtp", namespace)), demand=3600.0,
                  poll=0.2, discovery_labels=False) as emulator:
        config = yaml.safe_load(KUBERNETES_EXAMPLE.read_text(encoding="utf-8"))
        stalwart = job(config, "stalwart")
        assert stalwart["kubernetes_sd_configs"][0]["role"] == "pod"
        del stalwart["kubernetes_sd_configs"]
        # A pod that is not Stalwart's and one on another port: the example drops both.
        other_app = {**pod_discovery_labels(namespace, "web-0"),
                     "__meta_kubernetes_pod_label_app_kubernetes_io_name": "web"}
        other_port = {**pod_discovery_labels(namespace, pod),
                      "__meta_kubernetes_pod_container_port_number": "25"}
        stalwart["static_configs"] = [
            {"targets": [emulator.address], "labels": labels}
            for labels in (pod_discovery_labels(namespace, pod), other_app, other_port)]
        config["scrape_configs"] = [stalwart]
        prom = start_prometheus(own_prometheus, tmp_path / kind, fast(config))

        targets = wait_until("the pod's target", lambda: active_targets(prom.url), 60)
        assert [(t["labels"]["namespace"], t["labels"]["pod"]) for t in targets] == [
            (namespace, pod)]
        scope = default_scope("kubernetes", "smtp", namespace, kind)
        gate = while_scraped("", "vector(1)", scope)
        assert wait_until("the presets' selector to match the pod's series",
                          lambda: prom_value(prom.url, gate), 60) == 1.0
        other_kind = "statefulset" if kind == "deployment" else "deployment"
        other = while_scraped("", "vector(1)", default_scope("kubernetes", "smtp", namespace,
                                                              other_kind))
        assert prom_value(prom.url, other) is None, "the other kind's pod names do not match"
