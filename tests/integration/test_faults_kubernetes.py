"""Kubernetes faults on real processes: the API server stopped and restarted, frozen past the
client timeout, answering 409, 403, 404, 429 and 500, and the Lease stolen.

- Stop, restart and freeze hit a kube-apiserver this module starts itself from the cached
  binary, with the shared one's flags but its own port and cert dir, against the shared
  etcd and its prefix (a second API server of the same cluster, as in an HA control plane):
  the shared API server is never touched, and what one writes the other serves.
- 409, 403 and 404 are real: a concurrent write between the daemon's read and its patch, a
  ServiceAccount token whose Role lacks `patch`, a deleted Deployment.
- 429 (with Retry-After) and 500 come from kube_fault_proxy.py, a process of this module's
  own in front of the shared API server, serving its certificate.

Prometheus is the shared one, asked only for `vector(30000)`: a fixed wish of 3 replicas.
No controller runs, so a Deployment's `spec.replicas` is all there is to watch. Every wait is
a generous deadline; how long a recovery took is printed and recorded as a test property,
never asserted (docs/reliability.md, "Fault matrix: Kubernetes", has the figures).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import requests
import yaml
from kubernetes.client.exceptions import ApiException

from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.config import load_config_data
from autoscaler.loop import Engine
from autoscaler.model import TargetStatus
from autoscaler.sources.prometheus import PrometheusSource
from autoscaler.telemetry import Telemetry
from tests.support.daemon import (
    DaemonProcess,
    daemon,
    daemon_env,
    errors_after,
    readyz,
    registry_sample,
    statusz,
    writes,
)
from tests.support.e2e import FAST_BEHAVIOR
from tests.support.kube import fresh_namespace
from tests.support.kube_faults import FaultProxy, proxy_in_front
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(600)

INTERVAL = 1.0  # evaluation_interval of every daemon here
DEADLINE = 90.0  # for anything to happen: generous, many times the expected time
MIN, MAX = 1, 5
WANTED = 3  # what the policy asks for: ceil(30000 / 10000 x 1)
ANNOTATION = "autoscaler.stalwart.io/"
ERRORS = "autoscaler_actuation_errors_total"
MERGE = "application/merge-patch+json"
LEASE, RENEW, RETRY = 3.0, 2.0, 0.5
THIEF = "thief"


# --------------------------------------------------------------------------- processes


class OwnApiserver:
    """A second kube-apiserver of the shared cluster: the shared one's flags, its own port
    and cert dir. Started, stopped, frozen and thawed only by its own pid."""

    def __init__(self, realenv: RealEnv, workdir: Path) -> None:
        assert realenv.testenv_dir is not None, "env.json lacks TESTENV_DIR"
        pid = int((realenv.testenv_dir / "pids" / "kube-apiserver.pid").read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        assert "kube-apiserver" in Path(argv[0]).name, argv[0]
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        certs = workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        own = {"--secure-port": str(self.port), "--cert-dir": str(certs)}
        self.argv = [argv[0]] + [
            f"{a.split('=', 1)[0]}={own[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in own
            else a for a in argv[1:]]
        assert all(f"{k}={v}" in self.argv for k, v in own.items()), self.argv
        self.log_path = workdir / "kube-apiserver.log"
        self.ca = str(realenv.kube_ca_file)
        self.token = realenv.kube_admin_token
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it and wait until /readyz says ok; returns when it did."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log)
        wait_until("the test's own kube-apiserver ready", self.ready, DEADLINE, 0.2)
        return time.time()

    def ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()
        try:
            response = requests.get(f"{self.url}/readyz", verify=self.ca, timeout=2,
                                    headers={"Authorization": f"Bearer {self.token}"})
        except requests.RequestException:
            return False
        return response.status_code == 200

    def send(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None
        os.kill(self.proc.pid, sig)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=60)
        return self.proc.returncode


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ns(kube_api: kubernetes.client.ApiClient) -> Iterator[str]:
    with fresh_namespace(kube_api, "kf") as name:
        yield name


@pytest.fixture(scope="module")
def own_apiserver(realenv: RealEnv, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[OwnApiserver]:
    server = OwnApiserver(realenv, tmp_path_factory.mktemp("own-apiserver"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy(realenv: RealEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultProxy]:
    yield from proxy_in_front(realenv, tmp_path_factory.mktemp("kube-proxy"))


# --------------------------------------------------------------------------- helpers


def apps(api: kubernetes.client.ApiClient) -> Any:
    return kubernetes.client.AppsV1Api(api)


def create_deployment(api: kubernetes.client.ApiClient, ns: str, name: str,
                      replicas: int) -> str:
    """A Deployment nobody runs (no controllers here); returns its uid."""
    body = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "mail",
                                                           "image": "busybox:local"}]}}}}
    raw = apps(api).create_namespaced_deployment(ns, body, _preload_content=False)
    return str(json.loads(raw.data)["metadata"]["uid"])


def read_deployment(api: kubernetes.client.ApiClient, ns: str, name: str
                    ) -> dict[str, Any] | None:
    try:
        raw = apps(api).read_namespaced_deployment(name, ns, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    doc: dict[str, Any] = json.loads(raw.data)
    return doc


def replicas(api: kubernetes.client.ApiClient, ns: str, name: str) -> int | None:
    doc = read_deployment(api, ns, name)
    return None if doc is None else int(doc["spec"]["replicas"])


def scale_by_hand(api: kubernetes.client.ApiClient, ns: str, name: str, count: int) -> None:
    apps(api).patch_namespaced_deployment(name, ns, {"spec": {"replicas": count}},
                                          _content_type=MERGE, _preload_content=False)


def kubeconfig(path: Path, server: str, ca: Path, token: str, ns: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                                "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": ns}}],
        "current-context": "c"}))
    path.chmod(0o600)
    return path


def target(ns: str, name: str, *, cooldown: str = "0s") -> dict[str, Any]:
    return {"name": name, "backend": "kubernetes", "namespace": ns, "deployment": name,
            "min_replicas": MIN, "max_replicas": MAX,
            "cooldown": {"up": cooldown, "down": cooldown}, "behavior": FAST_BEHAVIOR,
            "policies": [{"type": "capacity", "name": "fixed", "query": "vector(30000)",
                          "per_instance": 10000, "headroom": 1}]}


def start_daemon(stack: ExitStack, workdir: Path, realenv: RealEnv, ns: str, name: str, *,
                 server: str, token: str, cooldown: str = "0s",
                 election: dict[str, Any] | None = None) -> DaemonProcess:
    """`autoscaler run` for one Deployment, talking to `server` with `token`."""
    port = free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "evaluation_interval": INTERVAL,
        "prometheus": {"url": realenv.prometheus_url, "timeout": "3s",
                       "scrape_interval": "1s"},
        "listen": f"127.0.0.1:{port}",
        "leader_election": election or {"mode": "none"},
        "targets": [target(ns, name, cooldown=cooldown)],
    }, sort_keys=False))
    kube = kubeconfig(workdir / f"{name}.kubeconfig", server, realenv.kube_ca_file, token, ns)
    env = daemon_env(drop=("KUBECONFIG", "KUBERNETES_", "POD_"), KUBECONFIG=str(kube),
                     POD_NAME=f"daemon-{name}")
    return stack.enter_context(daemon(config, env, workdir, port=port, label=name))


def assert_held_and_visible(d: DaemonProcess, name: str, since: float, verb: str,
                            words: str) -> None:
    """During a fault: the daemon runs, /healthz is fine, /statusz names the problem, the
    error counter and the log say what failed, and nothing was written."""
    assert d.alive()
    health = d.get("/healthz")
    assert health is not None and health.status_code == 200
    ready = statusz(d)
    assert ready is not None and ready[0] == 503 and words in ready[1]["problems"][name], ready
    assert (d.metric(ERRORS, target=name, verb=verb) or 0.0) >= 1
    messages = errors_after(d, since)
    assert messages and all(words in m and "holding its size" in m for m in messages), messages
    assert writes(d, since) == []


def assert_never_outside_bounds_nor_down_on_error(d: DaemonProcess) -> None:
    for r in d.decisions():
        assert MIN <= r["desired"] <= MAX, r
        if r["written"]:  # the only wish here is 3: nothing is ever written below it
            assert r["desired"] == WANTED, r
    assert "Traceback" not in d.log_text()


def recovered(d: DaemonProcess, api: kubernetes.client.ApiClient, ns: str, name: str,
              since: float, fault: float) -> tuple[float, float]:
    """Wait for the count restored and ready again: (first decision after `since`, the
    restoring write's tick, the first write after the `fault` began: that tick may have
    begun just before the test saw the fault clear)."""
    wait_until("the count restored", lambda: replicas(api, ns, name) == WANTED, DEADLINE)
    first = min(wait_until("a decision after the fault cleared",
                           lambda: [r["time"] for r in d.decisions() if r["time"] > since],
                           DEADLINE))
    restored = min(wait_until("the restoring write's record",
                              lambda: [r["time"] for r in writes(d, fault)], DEADLINE))
    wait_until("ready again", lambda: (statusz(d) or (0,))[0] == 200, DEADLINE)
    return first, restored


def record_figures(title: str, figures: dict[str, float],
                   record_property: Callable[[str, object], None]) -> None:
    print(f"\n{title}, seconds:")
    for what, value in figures.items():
        print(f"  {what:<60} {value:6.2f}")
        record_property(what, round(value, 3))


# --------------------------------------------------------------------------- API server


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_apiserver_stopped_or_frozen_then_back(
        fault: str, own_apiserver: OwnApiserver, kube_api: kubernetes.client.ApiClient,
        realenv: RealEnv, ns: str, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    """The daemon's API server is stopped (then started again) or frozen with SIGSTOP past
    the client's 3 s timeout (then thawed); an operator scales down meanwhile through the
    other API server. The daemon holds, says why, and restores the count once it is back."""
    name = f"api-{fault}-{uuid.uuid4().hex[:6]}"
    create_deployment(kube_api, ns, name, 1)
    with ExitStack() as stack:
        d = start_daemon(stack, tmp_path, realenv, ns, name, server=own_apiserver.url,
                         token=realenv.kube_admin_token)
        wait_until("the first scale", lambda: replicas(kube_api, ns, name) == WANTED, DEADLINE)
        wait_until("the daemon ready", lambda: (statusz(d) or (0,))[0] == 200, DEADLINE)

        began = time.time()
        if fault == "stopped":
            own_apiserver.stop()
        else:
            own_apiserver.send(signal.SIGSTOP)
        words = f"the API server at {own_apiserver.url}"
        try:
            scale_by_hand(kube_api, ns, name, 2)  # through the shared API server
            wait_until("three ticks reporting the API server",
                       lambda: len(errors_after(d, began)) >= 3, DEADLINE)
            assert_held_and_visible(d, name, began, "status", words)
            assert replicas(kube_api, ns, name) == 2
            said = errors_after(d, began)
            if fault == "frozen":  # a read that hangs ends at the client's timeout
                assert any("did not answer within 3s" in m or "timed out" in m
                           for m in said), said
            else:
                assert any("cannot reach the API server" in m for m in said), said
        finally:
            cleared = time.time()
            if fault == "stopped":
                back = own_apiserver.start()
            else:
                own_apiserver.send(signal.SIGCONT)
                back = time.time()
        first, restored = recovered(d, kube_api, ns, name, cleared, began)
        assert_never_outside_bounds_nor_down_on_error(d)
        assert d.stop() == 0

    record_figures(f"API server {fault}", {
        "fault lasted (to the restart or the SIGCONT)": cleared - began,
        "/statusz ok (the test's poll), after the restart or SIGCONT": back - cleared,
        "first decision, after the restart or SIGCONT": first - cleared,
        "the restoring write's tick, after the restart or SIGCONT": restored - cleared,
        "evaluation interval": INTERVAL,
    }, record_property)


# --------------------------------------------------------------------------- 409


class RacingActuator(KubernetesActuator):
    """The real actuator; after its first read, an operator changes the Deployment through
    another client, so the patch that follows carries a stale resourceVersion."""

    def __init__(self, api: kubernetes.client.ApiClient, ns: str, name: str,
                 race: Callable[[], None]) -> None:
        super().__init__(api, "deployment", ns, name, timeout=10)
        self.race, self.reads = race, 0

    def status(self) -> TargetStatus:
        status = super().status()
        self.reads += 1
        if self.reads == 1:
            self.race()
        return status


@pytest.mark.parametrize(("hand", "written"), [(2, True), (WANTED, False)],
                         ids=["redecided-and-written", "redecided-no-write"])
def test_409_a_write_between_read_and_patch_is_refused_then_redecided(
        kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str, hand: int,
        written: bool, caplog: pytest.LogCaptureFixture) -> None:
    name = f"c409-{uuid.uuid4().hex[:6]}"
    create_deployment(kube_api, ns, name, 1)
    versions: list[str] = []

    def race() -> None:
        scale_by_hand(kube_api, ns, name, hand)
        doc = read_deployment(kube_api, ns, name)
        assert doc is not None
        versions.append(doc["metadata"]["resourceVersion"])

    settings = load_config_data({
        "evaluation_interval": INTERVAL,
        "prometheus": {"url": realenv.prometheus_url, "timeout": "3s",
                       "scrape_interval": "1s"},
        "targets": [target(ns, name)],
    }, environ={})
    telemetry = Telemetry()
    actuator = RacingActuator(kube_api, ns, name, race)
    engine = Engine(settings, source=PrometheusSource(settings.prometheus),
                    actuator_factory=lambda _: actuator, telemetry=telemetry)
    try:
        [outcome] = engine.tick()
    finally:
        engine.close()
    assert outcome.error is None, outcome.error
    assert outcome.written is written
    assert actuator.reads == 2  # the first read and one after the 409
    [warning] = [r.getMessage() for r in caplog.records if r.name == "autoscaler.loop"
                 and r.levelname == "WARNING"]
    assert "it changed since it was read" in warning and "re-reading (attempt 1)" in warning
    # the refused patch, counted
    assert registry_sample(telemetry.registry, ERRORS, target=name, verb="scale") == 1
    decision = outcome.decision
    assert decision is not None and decision.current == hand  # decided from the re-read
    doc = read_deployment(kube_api, ns, name)
    assert doc is not None and doc["spec"]["replicas"] == (WANTED if written else hand)
    annotations = doc["metadata"].get("annotations") or {}
    if written:
        assert doc["metadata"]["resourceVersion"] != versions[-1]
        assert annotations[ANNOTATION + "last-replicas"] == str(WANTED)
    else:  # nothing of ours landed
        assert doc["metadata"]["resourceVersion"] == versions[-1]
        assert ANNOTATION + "last-replicas" not in annotations


# --------------------------------------------------------------------------- 403


def rbac(api: kubernetes.client.ApiClient, ns: str, sa: str, verbs: list[str]) -> None:
    """The Role of `sa` on Deployments: `verbs`; list on HPAs and create on events always."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": sa, "namespace": ns},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": verbs},
                      {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
                       "verbs": ["list"]},
                      {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]}
    roles: Any = kubernetes.client.RbacAuthorizationV1Api(api)
    try:
        roles.replace_namespaced_role(sa, ns, role, _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:
            raise
        roles.create_namespaced_role(ns, role, _preload_content=False)


def service_account_token(api: kubernetes.client.ApiClient, ns: str, sa: str) -> str:
    core: Any = kubernetes.client.CoreV1Api(api)  # raw JSON: the API's own words
    core.create_namespaced_service_account(ns, {"metadata": {"name": sa}},
                                           _preload_content=False)
    roles: Any = kubernetes.client.RbacAuthorizationV1Api(api)
    roles.create_namespaced_role_binding(ns, {
        "metadata": {"name": sa, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]},
        _preload_content=False)
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": [], "expirationSeconds": 3600}}
    response = core.create_namespaced_service_account_token(sa, ns, request,
                                                            _preload_content=False)
    return str(json.loads(response.data)["status"]["token"])


def events(api: kubernetes.client.ApiClient, ns: str, name: str, reason: str
           ) -> list[dict[str, Any]]:
    core: Any = kubernetes.client.CoreV1Api(api)
    response = core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name},reason={reason}",
        _preload_content=False)
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def test_403_a_token_without_patch_holds_then_writes_once_granted(
        kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    name = f"f403-{uuid.uuid4().hex[:6]}"
    create_deployment(kube_api, ns, name, 1)
    rbac(kube_api, ns, name, ["get"])  # reads, but may not patch
    token = service_account_token(kube_api, ns, name)
    with ExitStack() as stack:
        began = time.time()
        d = start_daemon(stack, tmp_path, realenv, ns, name, server=realenv.kube_api_url,
                         token=token)
        wait_until("three refused writes", lambda: len(errors_after(d, began)) >= 3, DEADLINE)
        assert_held_and_visible(d, name, began, "scale",
                                f"forbidden: patch deployments.apps in namespace {ns}")
        assert token not in d.log_text()
        refused = [r for r in d.decisions() if not r["written"]]
        assert refused and all(r["desired"] == WANTED and r["current"] == 1
                               for r in refused), refused[-1]
        assert replicas(kube_api, ns, name) == 1
        assert events(kube_api, ns, name, "FailedRescale")  # the refusal, seen by kubectl

        rbac(kube_api, ns, name, ["get", "patch"])
        granted = time.time()
        _, restored = recovered(d, kube_api, ns, name, granted, began)
        assert_never_outside_bounds_nor_down_on_error(d)
        assert d.stop() == 0

    record_figures("403 until patch is granted", {
        "the write's tick, after the Role was granted patch": restored - granted,
        "evaluation interval": INTERVAL,
    }, record_property)


# --------------------------------------------------------------------------- 404


def test_404_a_deleted_deployment_is_an_error_and_a_recreated_one_adopted_as_it_is(
        kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    """Deleted: an error of that target, never a scale. Recreated under the same name (a new
    uid): adopted as it is, nothing remembered of the old one applied (its last scale would
    start a 10-minute cooldown, its last count make the new size look like an operator's)."""
    name = f"f404-{uuid.uuid4().hex[:6]}"
    old_uid = create_deployment(kube_api, ns, name, 1)
    with ExitStack() as stack:
        d = start_daemon(stack, tmp_path, realenv, ns, name, server=realenv.kube_api_url,
                         token=realenv.kube_admin_token, cooldown="10m")
        wait_until("the first scale", lambda: replicas(kube_api, ns, name) == WANTED, DEADLINE)
        apps(kube_api).delete_namespaced_deployment(name, ns, _preload_content=False)
        deleted = time.time()
        wait_until("three ticks reporting the Deployment missing",
                   lambda: len(errors_after(d, deleted)) >= 3, DEADLINE)
        assert_held_and_visible(d, name, deleted, "status", "not found")
        assert read_deployment(kube_api, ns, name) is None  # nothing recreated it

        new_uid = create_deployment(kube_api, ns, name, 1)
        recreated = time.time()
        assert new_uid != old_uid
        _, restored = recovered(d, kube_api, ns, name, recreated, deleted)
        after = [r for r in d.decisions() if r["time"] > recreated]
        assert after[0]["current"] == 1  # the new one's own count
        doc = read_deployment(kube_api, ns, name)
        assert doc is not None and doc["metadata"]["uid"] == new_uid
        annotations = doc["metadata"]["annotations"]
        assert json.loads(annotations[ANNOTATION + "events"])[0][0] > recreated  # none old
        assert annotations.get(ANNOTATION + "manual-time", "") == ""
        assert_never_outside_bounds_nor_down_on_error(d)
        assert d.stop() == 0

    record_figures("Deployment deleted and recreated", {
        "the adopting write's tick, after the new Deployment was created":
            restored - recreated,
        "evaluation interval": INTERVAL,
    }, record_property)


# --------------------------------------------------------------------------- 429, 500


@pytest.mark.parametrize(("status", "method", "retry_after", "verb", "words"), [
    (429, "", 1, "status", "HTTP 429"),  # every call on the Deployment: reads fail
    # (the message names the Retry-After; the loop tries once a tick, see below)
    (500, "PATCH", None, "scale", "HTTP 500"),  # reads work, the write fails
], ids=["429-everything", "500-on-patch"])
def test_429_and_500_from_a_proxy_hold_then_recover(
        status: int, method: str, retry_after: int | None, verb: str, words: str,
        proxy: FaultProxy, kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str,
        tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    name = f"f{status}-{uuid.uuid4().hex[:6]}"
    create_deployment(kube_api, ns, name, 1)
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/{name}$"
    with ExitStack() as stack:
        stack.callback(proxy.fault, 0)
        d = start_daemon(stack, tmp_path, realenv, ns, name, server=proxy.url,
                         token=realenv.kube_admin_token)
        wait_until("the first scale through the proxy",
                   lambda: replicas(kube_api, ns, name) == WANTED, DEADLINE)
        wait_until("the daemon ready", lambda: (statusz(d) or (0,))[0] == 200, DEADLINE)

        proxy.fault(status, method, path, retry_after)
        began = time.time()
        faulted_before = proxy.state()["faulted"]
        scale_by_hand(kube_api, ns, name, 1)  # straight to the API server
        wait_until(f"three ticks answered {status}", lambda: len(errors_after(d, began)) >= 3,
                   DEADLINE)
        assert_held_and_visible(d, name, began, verb, words)
        assert replicas(kube_api, ns, name) == 1
        answered = proxy.state()["faulted"] - faulted_before
        ticks = len(errors_after(d, began))
        assert answered >= ticks  # every tick really asked (and was answered the fault)
        if status == 500:
            assert events(kube_api, ns, name, "FailedRescale")
        if retry_after is not None:
            assert all(f"(Retry-After: {retry_after}s)" in m
                       for m in errors_after(d, began)), errors_after(d, began)

        proxy.fault(0)
        cleared = time.time()
        first, restored = recovered(d, kube_api, ns, name, cleared, began)
        assert_never_outside_bounds_nor_down_on_error(d)
        assert d.stop() == 0

    record_figures(f"{status} answers", {
        "requests answered the fault per tick that reported it": answered / ticks,
        "first decision, after the fault cleared": first - cleared,
        "the restoring write's tick, after the fault cleared": restored - cleared,
        "evaluation interval": INTERVAL,
    }, record_property)


# --------------------------------------------------------------------------- Lease


def lease_spec(api: kubernetes.client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    leases: Any = kubernetes.client.CoordinationV1Api(api)
    raw = leases.read_namespaced_lease(name, ns, _preload_content=False)
    spec: dict[str, Any] = json.loads(raw.data)["spec"]
    return spec


def micro_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class Thief:
    """Writes the Lease as another identity every RETRY seconds until stopped, as a second
    elector with the same name would (or an operator's `kubectl apply`)."""

    def __init__(self, api: kubernetes.client.ApiClient, ns: str, name: str) -> None:
        self.api, self.ns, self.name = api, ns, name
        self.stop = threading.Event()
        self.writes: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        leases = kubernetes.client.CoordinationV1Api(self.api)
        while not self.stop.is_set():
            now = time.time()
            try:
                leases.patch_namespaced_lease(self.name, self.ns, {"spec": {
                    "holderIdentity": THIEF, "leaseDurationSeconds": int(LEASE),
                    "acquireTime": micro_time(now), "renewTime": micro_time(now)}},
                    _content_type=MERGE, _preload_content=False)
                self.writes.append(now)
            except ApiException:
                pass
            self.stop.wait(RETRY)

    def __enter__(self) -> Thief:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_lease_stolen_the_daemon_stops_writing_then_takes_it_back(
        kube_api: kubernetes.client.ApiClient, realenv: RealEnv, ns: str, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    create_deployment(kube_api, ns, name, 1)
    election = {"mode": "kubernetes", "lease_name": name, "lease_namespace": ns,
                "lease_duration": f"{LEASE:g}s", "renew_deadline": f"{RENEW:g}s",
                "retry_period": f"{RETRY:g}s"}
    with ExitStack() as stack:
        d = start_daemon(stack, tmp_path, realenv, ns, name, server=realenv.kube_api_url,
                         token=realenv.kube_admin_token, election=election)
        wait_until("leading", lambda: d.metric("autoscaler_leader") == 1.0, DEADLINE)
        wait_until("the first scale", lambda: replicas(kube_api, ns, name) == WANTED, DEADLINE)
        assert lease_spec(kube_api, ns, name)["holderIdentity"] == f"daemon-{name}"

        with Thief(kube_api, ns, name) as thief:
            wait_until("the first theft", lambda: thief.writes, DEADLINE)
            stolen = thief.writes[0]
            wait_until("the daemon standing by", lambda: d.metric("autoscaler_leader") == 0.0,
                       DEADLINE)
            wait_until("its role", lambda: (readyz(d) or (0, {}))[1].get("role")
                     == f"standby (lease held by {THIEF})", DEADLINE)
            lost = [float(r["time"]) for r in d.records()
                    if r.get("logger") == "autoscaler.leader"
                    and "lost lease" in r.get("message", "") and r["time"] > stolen - 1]
            assert lost, "no 'lost lease' warning in the JSON log"
            scale_by_hand(kube_api, ns, name, 1)  # a change it would undo if it could
            changed = time.time()
            wait_until("three standby ticks seeing the change",
                       lambda: len([r for r in d.decisions() if r["time"] > changed
                                  and r["current"] == 1]) >= 3, DEADLINE)
            assert writes(d, stolen) == []
            assert replicas(kube_api, ns, name) == 1
            standby = [r for r in d.decisions() if r["time"] > changed]
            assert all(r["skipped"] == "standby (not the leader)" for r in standby), standby
            assert lease_spec(kube_api, ns, name)["holderIdentity"] == THIEF
        returned = thief.writes[-1]  # the thief's last renewal: expiry runs from here

        _, restored = recovered(d, kube_api, ns, name, returned, stolen)
        assert lease_spec(kube_api, ns, name)["holderIdentity"] == f"daemon-{name}"
        assert d.metric("autoscaler_leader") == 1.0
        assert_never_outside_bounds_nor_down_on_error(d)
        assert d.stop() == 0

    figures = {
        "the takeover write's tick, after the thief's last renewal": restored - returned,
        "lease duration": LEASE,
        "renew deadline": RENEW,
    }
    figures["'lost lease' logged, after the first theft"] = lost[0] - stolen
    record_figures("Lease stolen", figures, record_property)
