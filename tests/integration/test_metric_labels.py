"""The daemon's per-target series join with kube-state-metrics on a real Prometheus.

Each per-target series carries `namespace`, `workload_kind` and `workload` (Swarm: `service`) beside
`target`. Scraped with honor_labels (the ServiceMonitor's `honorLabels: true`) they keep the
target workload's namespace and join with kube-state-metrics' series of that workload; scraped
without it, Prometheus renames the clashing label to `exported_namespace` and the join finds
nothing (which is why the ServiceMonitor sets it).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from autoscaler.decide import TargetRules
from autoscaler.evaluate import evaluate
from autoscaler.model import TargetStatus
from autoscaler.telemetry import Health, Telemetry, TelemetryServer
from tests.support.e2e import prom_result
from tests.support.loopback import exposition, served
from tests.support.processes import stop_process
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(300)


@contextmanager
def serving(body: bytes) -> Iterator[str]:
    """A /metrics endpoint with a fixed exposition (a kube-state-metrics stand-in)."""
    with served(exposition(body)) as server:
        yield f"127.0.0.1:{server.server_address[1]}"


@contextmanager
def daemon_metrics(namespace: str) -> Iterator[str]:
    """The daemon's own /metrics with one decision of a Deployment target in `namespace`."""
    telemetry = Telemetry()
    telemetry.identify({"smtp": (namespace, "Deployment", "stalwart-smtp", "")})
    decision = evaluate(target="smtp", now=1000.0, status=TargetStatus(current=4, ready=4),
                        policies=[], policy_signals={}, guards=[], guard_signals={},
                        rules=TargetRules(min_replicas=1, max_replicas=10))
    telemetry.record_decision(decision, 1, 10, False)
    server = TelemetryServer(f"127.0.0.1:{free_port()}", telemetry, Health(15.0))
    server.start()
    try:
        yield server.address
    finally:
        server.stop()


@contextmanager
def prometheus(tmp_path: Path, ours: str, ksm: str) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    # Both jobs give the scraped target a `namespace` label, as Kubernetes service discovery
    # does (the daemon's own pod namespace).
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: honor, honor_labels: true, static_configs: [{{targets: ['{ours}'],"
        " labels: {namespace: monitoring}}]}\n"
        f"  - {{job_name: plain, static_configs: [{{targets: ['{ours}'],"
        " labels: {namespace: monitoring}}]}\n"
        f"  - {{job_name: ksm, honor_labels: true, static_configs: [{{targets: ['{ksm}']}}]}}\n")
    argv = [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"]
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, 30)


JOIN = ('autoscaler_target_current_replicas{{job="{job}"}} * on(namespace, workload) '
        'group_left() label_replace(kube_deployment_spec_replicas{{job="ksm"}}, "workload", '
        '"$1", "deployment", "(.*)")')


def test_our_series_join_kube_state_metrics_on_namespace_and_workload(tmp_path: Path) -> None:
    ns = f"mail-{uuid.uuid4().hex[:6]}"
    ksm = (f'kube_deployment_spec_replicas{{namespace="{ns}",deployment="stalwart-smtp"}} 4\n'
           f'kube_deployment_spec_replicas{{namespace="{ns}",deployment="other"}} 9\n').encode()
    with daemon_metrics(ns) as ours, serving(ksm) as ksm_address, \
            prometheus(tmp_path, ours, ksm_address) as url:
        [joined] = wait_until("the join", lambda: prom_result(url, JOIN.format(job="honor")), 60)
        assert joined["metric"]["namespace"] == ns
        assert joined["metric"]["workload"] == "stalwart-smtp"
        assert joined["metric"]["workload_kind"] == "Deployment"
        assert joined["metric"]["target"] == "smtp"
        assert float(joined["value"][1]) == 16.0  # 4 current × 4 in the spec
        [plain] = wait_until("the plain job", lambda: prom_result(
            url, 'autoscaler_target_current_replicas{job="plain"}'), 60)
        assert plain["metric"]["namespace"] == "monitoring"
        assert plain["metric"]["exported_namespace"] == ns
        assert prom_result(url, JOIN.format(job="plain")) == []
