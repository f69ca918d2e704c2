"""The Docker API proxy of deploy/swarm/docker-api-proxy/ in front of the real test dockerd.

Each test starts its own haproxy (Debian's package) with the SHIPPED haproxy.cfg (checked:
the running process's -f argument is that tracked file, not a copy), listening on a socket in
the test's directory and forwarding to the shared engine's socket. Then:
- the daemon (`autoscaler run`, DOCKER_HOST = the proxy) elects itself leader in swarm mode,
  scales a real Swarm service and reads its state back, and the proxy's log shows that it
  used every allowed route and was never refused one;
- every call outside the allow-list (containers, exec, images, secrets, swarm, nodes, service
  create/delete, method and path tricks) is answered 403 by the proxy itself (its log shows
  no server for any of them) and leaves the engine unchanged. The probes are built so that
  even a forwarded one could only touch the test's own objects or be refused by the engine.
"""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker
import docker.errors
import docker.types
import pytest
import yaml

from tests.support.daemon import daemon, daemon_env
from tests.support.e2e import FAST_BEHAVIOR, spec_replicas
from tests.support.realenv import RealEnv
from tests.support.swarm import container_ids
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
PROXY_DIR = REPO / "deploy" / "swarm" / "docker-api-proxy"
PROXY_CONFIG = PROXY_DIR / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
DENIED = "denied by the docker API proxy of stalwart-autoscaler"
START = 60.0  # deadlines are generous: other tests share the machine
SCALED = 3  # the capacity policy below: ceil(20000 / 10000 x 1.5)



def engine_socket(realenv: RealEnv) -> str:
    assert realenv.docker_host.startswith("unix://"), realenv.docker_host
    return realenv.docker_host[len("unix://"):]


# --------------------------------------------------------------------------- the proxy


class Proxy:
    """haproxy in the foreground with the shipped config; its log (one line per request) in
    a file; stopped by its own pid."""

    def __init__(self, workdir: Path, engine: str) -> None:
        assert Path(HAPROXY).exists(), \
            "haproxy missing: `scripts/testenv up` installs it (Debian's haproxy package)"
        self.socket = workdir / "proxy" / "docker.sock"
        self.socket.parent.mkdir()
        self.log_path = workdir / "haproxy.log"
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "DOCKER_API_PROXY_SOCKET": str(self.socket),
               "DOCKER_API_PROXY_GROUP": grp.getgrgid(os.getgid()).gr_name,
               "DOCKER_SOCKET": engine}
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(PROXY_CONFIG)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wait_until(f"haproxy listening on {self.socket}", self._up, START)

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log_text()
        try:
            return raw(self.socket, "GET", "/_ping").status == 200
        except OSError:
            return False

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def log_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if '"' in line]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def proxy(tmp_path: Path, realenv: RealEnv) -> Iterator[Proxy]:
    started = Proxy(tmp_path, engine_socket(realenv))
    try:
        yield started
    finally:
        started.close()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw(sock: Path, method: str, target: str, body: Any = None,
        headers: dict[str, str] | None = None, timeout: float = 30) -> Answer:
    """One HTTP/1.1 request written byte for byte (no client normalizes the path)."""
    data = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {target} HTTP/1.1", "Host: docker", "Connection: close",
            *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    status_line, _, rest = reply.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return Answer(int(status_line.split()[1]), payload)


# --------------------------------------------------------------------------- the config


def test_the_proxy_runs_the_shipped_config(proxy: Proxy) -> None:
    """The process serving these tests reads deploy/swarm/docker-api-proxy/haproxy.cfg, as
    tracked in git: a copy that drifted from it could not pass here."""
    argv = Path(f"/proc/{proxy.proc.pid}/cmdline").read_bytes().split(b"\0")
    config = Path(argv[argv.index(b"-f") + 1].decode())
    assert config.resolve() == PROXY_CONFIG.resolve()
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(PROXY_CONFIG)],
                             cwd=REPO, capture_output=True, text=True, check=False)
    assert tracked.returncode == 0, tracked.stderr


def test_the_shipped_config_is_valid_with_its_defaults(tmp_path: Path) -> None:
    """`haproxy -c` on the file as installed: default socket paths (the group named must exist
    where it runs, so the check uses this machine's own)."""
    env = {"PATH": os.environ.get("PATH", ""),
           "DOCKER_API_PROXY_GROUP": grp.getgrgid(os.getgid()).gr_name}
    done = subprocess.run([HAPROXY, "-c", "-f", str(PROXY_CONFIG)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- the daemon


def write_config(path: Path, prometheus_url: str, services: list[str]) -> Path:
    path.write_text(yaml.safe_dump({
        "evaluation_interval": "1s",
        "prometheus": {"url": prometheus_url, "timeout": "10s", "scrape_interval": "1s"},
        "leader_election": {"mode": "swarm"},
        "targets": [{
            "name": service, "backend": "swarm", "service": service,
            "min_replicas": 1, "max_replicas": 5, "cooldown": {"up": "0s", "down": "0s"},
            "behavior": FAST_BEHAVIOR,
            "policies": [{"type": "capacity", "name": "inflow", "query": "vector(20000)",
                          "per_instance": 10000, "headroom": 1.5}],
        } for service in services],
    }, sort_keys=False))
    return path


ROUTES = {  # the allow-list's routes, as the proxy logs them
    "GET /version": re.compile(r'"GET /version '),
    "GET /info": re.compile(r'"GET (/v[\d.]+)?/info '),
    "GET /nodes/{id}": re.compile(r'"GET (/v[\d.]+)?/nodes/\w+ '),
    "GET /services": re.compile(r'"GET (/v[\d.]+)?/services[ ?]'),
    "GET /services/{name}": re.compile(r'"GET (/v[\d.]+)?/services/[\w.-]+ '),
    "GET /tasks": re.compile(r'"GET (/v[\d.]+)?/tasks\?'),
    "POST /services/{id}/update": re.compile(r'"POST (/v[\d.]+)?/services/\w+/update\?version='),
}


def test_the_daemon_leads_and_scales_real_services_through_the_proxy(
        proxy: Proxy, realenv: RealEnv, docker_client: Any, tmp_path: Path) -> None:
    """Two targets, so the daemon both lists the services once per tick and (after its
    writes) inspects each by name: every read path it has goes through the proxy."""
    names = [f"proxy-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    services = [docker_client.services.create(
        realenv.busybox_image, ["sleep", "100000"], name=name,
        mode=docker.types.ServiceMode("replicated", replicas=1)) for name in names]
    try:
        config = write_config(tmp_path / "config.yaml", realenv.prometheus_url, names)
        port = free_port()
        env = daemon_env(DOCKER_HOST=proxy.host, AUTOSCALER_LISTEN=f"127.0.0.1:{port}")
        with daemon(config, env, tmp_path, port=port) as d:
            wait_until("the daemon to lead (swarm mode, through the proxy)",
                       lambda: d.metric("autoscaler_leader") == 1.0, START)
            for name in names:
                wait_until(f"{name} scaled to {SCALED} through the proxy",
                           lambda n=name: spec_replicas(docker_client, n) == SCALED, START)
                # later ticks read the new size and the state labels back through the proxy
                wait_until(f"a decision that read {name}'s new size",
                           lambda n=name: [r for r in d.decisions(n) if r.get("current") == SCALED
                                         and r.get("outcome") == "hold"], START)
                written = [r for r in d.decisions(name) if r.get("written")]
                assert [r["desired"] for r in written] == [SCALED], written
            ready = d.get("/readyz")
            assert ready is not None and ready.status_code == 200, ready and ready.text
            assert not d.records("target_error"), d.records("target_error")
            assert "refused" not in d.log_text(), d.log_text()[-3000:]
        for name in names:
            labels = docker_client.api.inspect_service(name)["Spec"]["Labels"]
            assert any(k.startswith("autoscaler.") for k in labels), labels
    finally:
        for service in services:
            service.remove()

    lines = proxy.log_lines()
    for route, pattern in ROUTES.items():
        assert any(pattern.search(line) for line in lines), f"{route} never used:\n{lines}"
    refused = [line for line in lines if "<NOSRV>" in line or " 403 " in line]
    assert refused == [], refused


# --------------------------------------------------------------------------- allowed


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/version"),
    ("GET", "/_ping"),
    ("HEAD", "/_ping"),
    ("GET", "/v1.41/_ping"),
    ("GET", "/info"),
    ("GET", "/v1.41/info"),
    ("GET", "/v1.41/nodes/{node}"),
    ("GET", "/v1.41/services/{service}"),
    ("GET", "/v1.41/services"),
    ("GET", "/services?filters={by_name}"),
    ("GET", "/services/{service}"),
    ("GET", "/v1.41/tasks?filters={filters}"),
])
def test_the_daemons_reads_pass(proxy: Proxy, docker_client: Any, method: str, path: str,
                                probe_service: Any) -> None:
    node = docker_client.info()["Swarm"]["NodeID"]
    filters = quote(json.dumps({"service": [probe_service.name]}))
    by_name = quote(json.dumps({"name": [probe_service.name]}))
    target = path.format(node=node, service=probe_service.name, filters=filters,
                         by_name=by_name)
    assert raw(proxy.socket, method, target).status == 200


# --------------------------------------------------------------------------- refused


@pytest.fixture(scope="module")
def probe_service(realenv: RealEnv, docker_client: Any) -> Iterator[Any]:
    """A service of the test's own, the only one a forwarded probe could have touched."""
    service = docker_client.services.create(
        realenv.busybox_image, ["sleep", "100000"], name=f"probe-{uuid.uuid4().hex[:8]}",
        mode=docker.types.ServiceMode("replicated", replicas=1))
    try:
        yield service
    finally:
        service.remove()


def task_container(docker_client: Any, service: Any) -> str:
    def running() -> str | None:
        for task in docker_client.api.tasks(filters={"service": service.id}):
            cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
            if cid and task["Status"]["State"] == "running":
                return str(cid)
        return None
    return str(wait_until(f"a running task of {service.name}", running, START))


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()


# {probe}: a name unique to the test run; {service}/{sid}: the probe service's name and ID;
# {version}: its spec version; {node}: this engine's node ID; {cid}: a container of it;
# {filters}: a label filter (URL-encoded) that matches nothing but the probe's objects.
# Prunes carry a label filter nothing has; swarm and node writes lack what the engine
# requires (force, version), so even a forwarded one would be refused by the engine.
REFUSED = [
    # containers and exec: root on the node
    Probe("GET", "/containers/json"),
    Probe("GET", "/v1.41/containers/json?all=1"),
    Probe("POST", "/v1.41/containers/create?name={probe}",
          {"Image": "{image}", "Cmd": ["true"]}),
    Probe("GET", "/v1.41/containers/{cid}/json"),
    Probe("GET", "/v1.41/containers/{cid}/archive?path=/etc"),
    Probe("POST", "/v1.41/containers/{cid}/exec", {"Cmd": ["touch", "/tmp/{probe}"]}),
    Probe("POST", "/v1.41/containers/{cid}/kill?signal=SIGCONT"),
    Probe("POST", "/v1.41/containers/prune?filters={filters}"),
    # images, build, plugins, registries
    Probe("GET", "/v1.41/images/json"),
    Probe("POST", "/v1.41/images/{image}/tag?repo={probe}&tag=x"),
    Probe("POST", "/v1.41/images/prune?filters={filters}"),
    Probe("POST", "/v1.41/build?t={probe}"),
    Probe("POST", "/v1.41/plugins/pull?remote={probe}"),
    Probe("POST", "/v1.41/auth", {"username": "x", "password": "y"}),
    Probe("GET", "/v1.41/distribution/{image}/json"),
    # volumes, networks, secrets, configs
    Probe("POST", "/v1.41/volumes/create", {"Name": "{probe}"}),
    Probe("POST", "/v1.41/networks/create", {"Name": "{probe}"}),
    Probe("GET", "/v1.41/secrets"),
    Probe("POST", "/v1.41/secrets/create", {"Name": "{probe}", "Data": "eA=="}),
    Probe("GET", "/v1.41/configs"),
    Probe("POST", "/v1.41/configs/create", {"Name": "{probe}", "Data": "eA=="}),
    # the swarm itself: join tokens, init/join/leave/update/unlock
    Probe("GET", "/v1.41/swarm"),
    Probe("GET", "/v1.41/swarm/unlockkey"),
    Probe("POST", "/v1.41/swarm/leave"),
    Probe("POST", "/v1.41/swarm/init", {"ListenAddr": "127.0.0.1:1"}),
    Probe("POST", "/v1.41/swarm/join", {"RemoteAddrs": ["127.0.0.1:1"], "JoinToken": "x"}),
    Probe("POST", "/v1.41/swarm/update", {}),
    # nodes: listing, promotion, removal
    Probe("GET", "/v1.41/nodes"),
    Probe("POST", "/v1.41/nodes/{node}/update", {"Role": "worker"}),
    Probe("DELETE", "/v1.41/nodes/{node}"),
    # services: other methods on the list, create, delete, logs, other update parameters
    Probe("POST", "/v1.41/services"),
    Probe("DELETE", "/v1.41/services"),
    Probe("POST", "/v1.41/services/create",
          {"Name": "{probe}", "TaskTemplate": {"ContainerSpec": {"Image": "{image}"}}}),
    Probe("POST", "/services/create",
          {"Name": "{probe}", "TaskTemplate": {"ContainerSpec": {"Image": "{image}"}}}),
    Probe("DELETE", "/v1.41/services/{sid}"),
    Probe("DELETE", "/services/{service}"),
    Probe("GET", "/v1.41/services/{sid}/logs?stdout=1"),
    Probe("GET", "/v1.41/tasks/x/logs?stdout=1"),
    Probe("POST", "/v1.41/services/{sid}/update?version={version}&rollback=previous", "{spec}"),
    Probe("POST", "/v1.41/services/{sid}/update?version={version}"
          "&registryAuthFrom=previous-spec", "{spec}"),
    Probe("POST", "/v1.41/services/{sid}/update?version={version}", "{spec}",
          (("X-Registry-Auth", "e30="),)),
    Probe("POST", "/v1.41/services/{sid}/update", "{spec}"),
    # the update path with other methods; other methods on allowed reads
    Probe("GET", "/v1.41/services/{sid}/update?version={version}"),
    Probe("PUT", "/v1.41/services/{sid}/update?version={version}", "{spec}"),
    Probe("DELETE", "/v1.41/services/{sid}/update"),
    Probe("post", "/v1.41/services/{sid}/update?version={version}", "{spec}"),
    Probe("POST", "/v1.41/info"),
    Probe("HEAD", "/v1.41/services/{sid}"),
    Probe("OPTIONS", "/v1.41/services/{sid}/update"),
    Probe("PATCH", "/v1.41/services/{sid}", "{spec}"),
    # path tricks: dot segments, encodings, extra slashes, absolute form, case
    Probe("GET", "/v1.41/../containers/json"),
    Probe("GET", "/v1.41/services/../containers/json"),
    Probe("GET", "/v1.41/info/../containers/json"),
    Probe("GET", "/_ping/../containers/json"),
    Probe("POST", "/v1.41/services/{sid}/update/../../../containers/create?name={probe}",
          {"Image": "{image}"}),
    Probe("GET", "/v1.41/services/%2e%2e/containers/json"),
    Probe("GET", "/v1.41/%63ontainers/json"),
    Probe("POST", "/v1.41/services/{sid}%2Fupdate?version={version}", "{spec}"),
    Probe("GET", "//containers/json"),
    Probe("GET", "/v1.41//containers/json"),
    Probe("GET", "http://docker/v1.41/containers/json"),
    Probe("GET", "/v1.41/Containers/json"),
    Probe("GET", "/v1.41/services/{sid}/../../containers/json"),
    Probe("GET", "/v1.41/services/{sid};/containers/json"),
]


def fill(value: Any, names: dict[str, str], spec: dict[str, Any]) -> Any:
    """Substitute the placeholders in a probe's path and body."""
    if value == "{spec}":
        return spec
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [fill(v, names, spec) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, names, spec) for k, v in value.items()}
    return value


def test_everything_else_is_refused_by_the_proxy_and_nothing_changes(
        proxy: Proxy, realenv: RealEnv, docker_client: Any, probe_service: Any) -> None:
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    before = docker_client.api.inspect_service(probe_service.id)
    cid = task_container(docker_client, probe_service)
    names = {"probe": probe, "image": realenv.busybox_image, "service": probe_service.name,
             "sid": probe_service.id, "version": str(before["Version"]["Index"]),
             "node": docker_client.info()["Swarm"]["NodeID"], "cid": cid,
             "filters": quote(json.dumps({"label": [probe]}))}
    spec = json.loads(json.dumps(before["Spec"]))
    spec["Mode"]["Replicated"]["Replicas"] = 2

    wrong = {}
    for case in REFUSED:
        path = fill(case.path, names, spec)
        answer = raw(proxy.socket, case.method, path, fill(case.body, names, spec),
                     dict(case.headers))
        if answer.status != 403 or (case.method != "HEAD" and DENIED.encode() not in answer.body):
            wrong[f"{case.method} {path}"] = (answer.status, answer.body[:200])
    assert wrong == {}

    # The proxy answered every probe itself: no request reached a server. (haproxy writes
    # its log a little after the answer: wait for all of it.)
    wait_until("the proxy's log of every probe",
               lambda: sum("<NOSRV>" in line for line in proxy.log_lines()) >= len(REFUSED), START)
    served = [line for line in proxy.log_lines() if "<NOSRV>" not in line]
    assert all('"GET /_ping ' in line for line in served), served  # the readiness checks
    # And the engine is as it was.
    after = docker_client.api.inspect_service(probe_service.id)
    assert after["Version"] == before["Version"] and after["Spec"] == before["Spec"]
    assert docker_client.api.inspect_container(cid)["ExecIDs"] in (None, [])
    assert docker_client.info()["Swarm"]["LocalNodeState"] == "active"
    # Containers through the one listing call (docker-py's containers.list inspects each one
    # and fails when another test's container goes away meanwhile); the name filter matches
    # a part of the name, as `probe in name` does for the other kinds.
    assert not container_ids(docker_client, name=probe)
    for kind in ("services", "networks", "volumes", "secrets", "configs"):
        listed = getattr(docker_client, kind).list()
        assert not [o for o in listed if probe in str(getattr(o, "name", ""))], kind
    assert not docker_client.images.list(name=probe)


def test_the_docker_sdk_sees_the_refusal_as_an_api_error(proxy: Proxy, realenv: RealEnv,
                                                          docker_client: Any) -> None:
    """What an operator or a compromised daemon gets from the SDK: 403 with the proxy's
    message, for the calls that matter most."""
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    client = docker.DockerClient(base_url=proxy.host, version="auto", timeout=30)
    try:
        assert client.version()["ApiVersion"]  # negotiation passes
        attempts = {
            "run a container": lambda: client.containers.run(
                realenv.busybox_image, ["true"], name=probe, detach=True),
            "create a service": lambda: client.services.create(
                realenv.busybox_image, ["true"], name=probe),
            "list nodes": client.nodes.list,
            "read join tokens": client.api.inspect_swarm,
            "leave the swarm": client.api.leave_swarm,
            "create a secret": lambda: client.secrets.create(name=probe, data=b"x"),
            "list images": client.images.list,
        }
        refused = {}
        for what, attempt in attempts.items():
            with pytest.raises(docker.errors.APIError) as caught:
                attempt()
            refused[what] = (caught.value.status_code, DENIED in str(caught.value))
        assert refused == dict.fromkeys(attempts, (403, True))
    finally:
        client.close()
    assert not container_ids(docker_client, name=probe)
    assert not [s for s in docker_client.services.list() if s.name == probe]


# --------------------------------------------------------------------------- how it is installed

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
DOCKER_CLI = "/usr/bin/docker"  # Debian's docker.io, as the test environment installs it
DAEMON_UNIT = REPO / "deploy" / "systemd" / "stalwart-autoscaler.service"
DAEMON_EXEC = "/opt/stalwart-autoscaler/venv/bin/autoscaler"
UNIT = PROXY_DIR / "docker-api-proxy.service"
SOCKET_UNIT = PROXY_DIR / "docker-api-proxy.socket"
DROP_IN = PROXY_DIR / "stalwart-autoscaler-via-proxy.conf"
STACK_FILE = REPO / "deploy" / "swarm" / "stack.yml"
SOCKET = "/run/docker-api-proxy/docker.sock"  # where the installed proxy listens
GROUP = "docker-api-proxy"


def config_default(variable: str) -> str:
    """The default haproxy.cfg gives an environment variable: "${NAME-default}"."""
    found = re.findall(r'"\$\{' + variable + r'-([^}"]*)\}"', PROXY_CONFIG.read_text())
    assert found, variable
    return str(found[0])


def unit_values(path: Path, key: str) -> list[str]:
    return [line.partition("=")[2] for line in path.read_text().splitlines()
            if line.startswith(f"{key}=")]


def test_the_files_agree_on_the_socket_and_its_group() -> None:
    assert config_default("DOCKER_API_PROXY_SOCKET") == SOCKET
    assert config_default("DOCKER_API_PROXY_GROUP") == GROUP
    assert config_default("DOCKER_SOCKET") == "/var/run/docker.sock"
    # systemd makes the socket and hands it to haproxy as fd 3
    assert unit_values(SOCKET_UNIT, "ListenStream") == [SOCKET]
    assert unit_values(SOCKET_UNIT, "SocketGroup") == [GROUP]
    assert unit_values(SOCKET_UNIT, "SocketMode") == ["0660"]
    assert set(unit_values(UNIT, "Environment")) == {
        "DOCKER_API_PROXY_SOCKET=fd@3", "DOCKER_SOCKET=/var/run/docker.sock"}
    assert unit_values(UNIT, "Requires") == [SOCKET_UNIT.name]
    assert unit_values(UNIT, "SupplementaryGroups") == ["docker"]
    assert unit_values(UNIT, "ExecStart") == ["/usr/sbin/haproxy -Ws -f "
                                              "/etc/docker-api-proxy/haproxy.cfg"]
    # the daemon: the proxy's socket, and its docker group replaced by the proxy's group
    assert unit_values(DROP_IN, "Environment") == [f"DOCKER_HOST=unix://{SOCKET}"]
    assert unit_values(DROP_IN, "SupplementaryGroups") == ["", GROUP]
    assert unit_values(DROP_IN, "Requires") == [SOCKET_UNIT.name]


def verify(*units: Path) -> list[str]:
    """Every line `systemd-analyze verify` prints (it only warns about an unknown key)."""
    if SYSTEMD_ANALYZE is None:
        pytest.fail("systemd-analyze missing: `scripts/testenv up` installs systemd")
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", *map(str, units)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=units[0].parent)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return problems + ([f"exit status {done.returncode}"] if done.returncode else [])


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy's socket and service, and the daemon's unit with the drop-in in place (a
    typo in the drop-in is reported, so verify did read it)."""
    for unit in (UNIT, SOCKET_UNIT):
        shutil.copy(unit, tmp_path / unit.name)
    # verify wants ExecStart to exist: the daemon's unit names the venv install.sh makes.
    daemon_unit = tmp_path / DAEMON_UNIT.name
    venv = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv"))
    daemon_unit.write_text(DAEMON_UNIT.read_text().replace(
        f"ExecStart={DAEMON_EXEC} ", f"ExecStart={venv / 'bin' / 'autoscaler'} "))
    drop_in = tmp_path / f"{daemon_unit.name}.d" / "docker-api-proxy.conf"
    drop_in.parent.mkdir()
    monkeypatch.setenv("SYSTEMD_UNIT_PATH", f"{tmp_path}:")  # and the default path
    assert verify(tmp_path / SOCKET_UNIT.name, tmp_path / UNIT.name) == []
    drop_in.write_text(DROP_IN.read_text())
    assert verify(daemon_unit) == []
    drop_in.write_text(DROP_IN.read_text().replace("\nEnvironment=", "\nEnvironmnt="))
    assert any("Environmnt" in p for p in verify(daemon_unit))


def test_the_proxy_unit_is_hardened(tmp_path: Path) -> None:
    """`systemd-analyze security` exposure at most 2.0 ("OK"), as for the daemon's unit."""
    assert SYSTEMD_ANALYZE is not None
    unit = tmp_path / UNIT.name
    shutil.copy(UNIT, unit)
    done = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20",
                           str(unit)], capture_output=True, text=True, timeout=120,
                          check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_socket_activation_keeps_one_socket_through_reload_and_restart(
        tmp_path: Path, realenv: RealEnv) -> None:
    """As docker-api-proxy.socket runs it: a listening socket made outside haproxy, passed as
    fd 3 (DOCKER_API_PROXY_SOCKET=fd@3), master-worker mode. A reload (SIGUSR2, what
    `systemctl reload` sends) and a restart keep serving the same socket file, which is what
    a bind mount of it into the stack's container needs."""
    path = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    inode = path.stat().st_ino
    fd = listener.fileno()
    env = {"PATH": os.environ.get("PATH", ""), "DOCKER_API_PROXY_SOCKET": "fd@3",
           "DOCKER_SOCKET": engine_socket(realenv),
           # named by the bind line; systemd sets the socket's group, this one must exist
           "DOCKER_API_PROXY_GROUP": grp.getgrgid(os.getgid()).gr_name}
    log = (tmp_path / "haproxy.log").open("w")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # bash moves the socket to fd 3 alone, as systemd passes it
            ["/bin/bash", "-c", f'exec "$0" -W -db -f "$1" 3<&{fd} {fd}<&-', HAPROXY,
             str(PROXY_CONFIG)],
            env=env, pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)

    def serves() -> bool:
        # the socket accepts into its backlog even with no haproxy: check it runs first
        assert procs[-1].poll() is None, (tmp_path / "haproxy.log").read_text()
        try:
            return (raw(path, "GET", "/version", timeout=5).status,
                    raw(path, "GET", "/containers/json", timeout=5).status) == (200, 403)
        except TimeoutError:
            return False

    procs = [start()]
    try:
        wait_until("haproxy serving fd 3", serves, START)
        def reloaded() -> bool:
            # the master drops a USR2 that comes before its loop runs: send until it reloads
            if "Reloading HAProxy" in (tmp_path / "haproxy.log").read_text():
                return (tmp_path / "haproxy.log").read_text().count("Loading success") >= 2
            procs[0].send_signal(signal.SIGUSR2)
            return False

        wait_until("the reload", reloaded, START, 1)
        assert serves()
        procs[0].terminate()
        assert procs[0].wait(timeout=30) == 0
        procs.append(start())
        wait_until("a restarted haproxy serving the same socket", serves, START)
        assert path.stat().st_ino == inode
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        listener.close()
        log.close()


def test_the_stack_takes_the_proxy_socket_instead_of_the_engines(
        tmp_path: Path, realenv: RealEnv, docker_client: Any) -> None:
    """stack.yml deployed by Debian's `docker stack deploy` as the README says, with
    DOCKER_SOCKET at the proxy's socket and DOCKER_GID its group: the service mounts the
    proxy's socket where the daemon looks for docker, and no other socket. (The spec only:
    the busybox image stands in for the daemon's, so its task does not run.)"""
    suffix = uuid.uuid4().hex[:8]
    name = f"proxy-stack-{suffix}"
    secret = docker_client.secrets.create(name=f"proxy-stack-token-{suffix}", data=b"x\n")
    proxy_socket = tmp_path / "docker.sock"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")},
           "DOCKER_HOST": realenv.docker_host, "DOCKER_GID": "4242",
           "DOCKER_SOCKET": str(proxy_socket), "AUTOSCALER_IMAGE": realenv.busybox_image,
           "CONFIG_VERSION": suffix, "PROMETHEUS_TOKEN_SECRET": secret.name,
           "MONITORING_NETWORK": "host"}

    def docker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER_CLI, *args], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=120, check=False)

    label = f"com.docker.stack.namespace={name}"
    try:
        done = docker("stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE),
                      name)
        assert done.returncode == 0, done.stdout + done.stderr
        [service] = docker_client.services.list(filters={"label": label})
        spec = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
        binds = [(m["Source"], m["Target"]) for m in spec["Mounts"] if m["Type"] == "bind"]
        assert binds == [(str(proxy_socket), "/var/run/docker.sock")]
        assert spec["User"] == "10001:4242"
        assert not any("DOCKER_HOST" in e for e in spec.get("Env") or [])  # the default path
    finally:
        docker("stack", "rm", name)
        wait_until(f"stack {name} removed",
                   lambda: not docker_client.services.list(filters={"label": label}), 120)
        wait_until(f"containers of {name} removed", lambda: not container_ids(
            docker_client, label=label), 120)
        wait_until("the stack's config removed", lambda: not docker_client.configs.list(
            filters={"name": f"stalwart-autoscaler-config-{suffix}"}), 120)
        secret.remove()
