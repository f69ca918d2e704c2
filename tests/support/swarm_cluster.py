"""A throwaway Docker Swarm of three real managers, each in its own network namespace.

As ../shared/TEST-ENV.md ("Several managers") describes: a bridge `asfo-br0` (10.213.77.1/24
on the host side) and, per manager N, a namespace `asfo-swN` holding one end of a veth pair
(`eth0`, 10.213.77.1N/24, loopback up, NO default route: nothing can leave the /24). A dockerd
runs in each namespace, started with `nsenter --net=...` (`ip netns exec` remounts /sys and
dockerd then fails), with its own data-root, exec-root, pidfile and unix socket under
`/tmp/asfo-swarm` (short: socket paths are limited to 108 bytes). Only the network namespace
differs, so the host reaches every engine through its socket file. The swarm's overlay pool
(the `ingress` network) is the upper half of the same /24, so every address this swarm uses
is one the test assigned itself.

Everything is named `asfo-*` and lives under one fixed directory, so `cleanup()` finds and
removes what a crashed earlier run left behind before a new cluster is built, and the same
function tears the cluster down afterwards. Processes are ended only by the pids this module
recorded or found in its own namespaces, pidfiles and containers, never by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests

from tests.support.wait import wait_until

PREFIX = "asfo"
BRIDGE = f"{PREFIX}-br0"
SUBNET = "10.213.77"
HOST_ADDRESS = f"{SUBNET}.1"
ADDRESS_POOL = f"{SUBNET}.128/25"  # overlay networks (ingress) get /26s from here
BASE = Path("/tmp/asfo-swarm")
LOCK = Path("/tmp/asfo-swarm.lock")  # outside BASE: cleanup() removes BASE
API_VERSION = "1.41"  # dockerd 20.10
SWARM_PORT = 2377
# An engine still starting, or a swarm without a leader for now:
NOT_YET = (docker.errors.DockerException, requests.RequestException, OSError)
# dockerd's log times: RFC 3339 with nanoseconds, which datetime cannot parse whole.
_LOG_TIME = re.compile(r'time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)"')


def _run(*args: str, check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# --------------------------------------------------------------------------- cleanup


def namespaces() -> list[str]:
    """This module's network namespaces that exist now."""
    names = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line]
    return sorted(n for n in names if n.startswith(f"{PREFIX}-"))


def links() -> list[str]:
    """This module's links (bridge, host ends of the veths) in the host namespace."""
    out = []
    for line in _run("ip", "-o", "link", "show").splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        if name.startswith(f"{PREFIX}-"):
            out.append(name)
    return sorted(out)


def mounts(base: Path = BASE) -> list[str]:
    """Mount points under `base` (netns bind mounts, container shm) in this mount namespace."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(base) or point.startswith(f"{base}/"):
            out.append(point)
    return out


def our_pids(base: Path = BASE) -> list[int]:
    """Every live process this module started, directly or not: the dockerds and containerds
    by their pidfiles under `base`, whatever runs in our namespaces, and the processes of the
    containers our engines created (their cgroup names the container id)."""
    pids: set[int] = set()
    for pidfile in [*base.glob("sw*/docker.pid"), *base.glob("sw*/exec/containerd/*.pid")]:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if _alive(pid) and str(base) in _cmdline(pid):
                pids.add(pid)
    for ns in namespaces():
        pids.update(int(p) for p in _run("ip", "netns", "pids", ns, check=False).split())
    ids = {p.name for p in base.glob("sw*/data/containers/*") if len(p.name) == 64}
    if ids:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cgroup = (proc / "cgroup").read_text()
                if any(i in cgroup for i in ids):
                    pids.add(int(proc.name))
    return sorted(p for p in pids if p != os.getpid() and _alive(p))


def leftovers(base: Path = BASE) -> dict[str, list[Any]]:
    """What of ours still exists; empty lists when everything is gone."""
    return {"namespaces": namespaces(), "links": links(), "mounts": mounts(base),
            "processes": our_pids(base), "directory": [str(base)] if base.exists() else []}


def cleanup(base: Path = BASE, grace: float = 30.0) -> dict[str, list[Any]]:
    """Remove everything of ours (this run's or a crashed earlier one's); idempotent.

    dockerd first gets SIGTERM and `grace` seconds (it stops its containers and containerd),
    then whatever is still ours is SIGKILLed; mounts under `base` are unmounted, the
    namespaces, veths and bridge deleted and `base` removed. Returns what was found.
    """
    found = leftovers(base)
    dockerds = [p for p in found["processes"] if "dockerd" in _cmdline(p)]
    for pid in dockerds:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in dockerds) and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(3):
        pids = our_pids(base)
        if not pids:
            break
        for pid in pids:
            _kill(pid)
        time.sleep(0.5)
    for point in reversed(mounts(base)):
        _run("umount", "-l", point, check=False)
    for ns in namespaces():
        _run("ip", "netns", "delete", ns, check=False)
    for link in links():  # the veth ends vanish with their namespaces; the bridge stays
        _run("ip", "link", "delete", link, check=False)
    if base.exists():
        shutil.rmtree(base, ignore_errors=True)
    return found


# --------------------------------------------------------------------------- the cluster


@dataclass
class Manager:
    """One dockerd in its own network namespace."""

    index: int
    base: Path
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    _log: Any = field(default=None, repr=False)
    # Where it lives, from its index: set by __post_init__.
    name: str = field(init=False)
    address: str = field(init=False)
    root: Path = field(init=False, repr=False)
    socket: Path = field(init=False, repr=False)
    docker_host: str = field(init=False, repr=False)
    log_path: Path = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = f"{PREFIX}-sw{self.index}"
        self.address = f"{SUBNET}.{10 + self.index}"
        self.root = self.base / f"sw{self.index}"
        self.socket = self.root / "docker.sock"
        self.docker_host = f"unix://{self.socket}"
        self.log_path = self.log_dir / f"dockerd-{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, timeout: float = 30.0) -> docker.DockerClient:
        """A new client of this engine; the caller closes it (`engine()` does)."""
        return docker.DockerClient(base_url=self.docker_host, version=API_VERSION,
                                   timeout=timeout)

    @contextlib.contextmanager
    def engine(self, timeout: float = 30.0) -> Iterator[docker.DockerClient]:
        with contextlib.closing(self.client(timeout)) as c:
            yield c

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "daemon.json"
        config.write_text("{}\n")  # never the host's /etc/docker/daemon.json
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        # Tasks use the image loaded into every engine: never try a registry for it.
        env["DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"] = "1"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{self.name}", "dockerd",
             "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--storage-driver=vfs", "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--host", self.docker_host,
             "--pidfile", str(self.root / "docker.pid"), "--config-file", str(config)],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)

    def wait_up(self, timeout: float = 90.0) -> None:
        def answers() -> bool:
            if not self.running():
                raise RuntimeError(f"dockerd in {self.name} exited; see {self.log_path}")
            with self.engine(timeout=5) as c:
                return bool(c.ping())
        wait_until(f"dockerd in {self.name}", answers, timeout, 0.2, ignoring=NOT_YET)

    def send(self, sig: int) -> None:
        """Send `sig` to this dockerd, by its pid."""
        if self.running():
            _kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Signal dockerd by its pid and wait for it to exit; SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def log_times(self, needle: str) -> list[float]:
        """When this dockerd logged a line containing `needle` (epoch seconds, from the
        nanosecond times of its log), e.g. Raft's "became leader at term"."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            stamp = _LOG_TIME.match(line)
            if stamp and needle in line:
                head, frac, zone = stamp.groups()
                when = datetime.fromisoformat(head + ("+00:00" if zone == "Z" else zone))
                out.append(when.timestamp() + float(frac or 0))
        return out

    def is_leader(self, timeout: float = 5.0) -> bool | None:
        """This node as the swarm sees it: the Raft leader or not; None when it cannot say
        (its engine is down, or the managers have no leader to answer the question)."""
        try:
            with self.engine(timeout=timeout) as c:
                status = c.api.inspect_node(self.node_id).get("ManagerStatus") or {}
                return bool(status.get("Leader"))
        except (docker.errors.DockerException, requests.RequestException, OSError):
            return None


class SwarmCluster:
    """Three managers (a Raft quorum is two), the busybox image in every engine and a
    replicated service; `close()` leaves nothing behind."""

    def __init__(self, log_dir: Path, *, size: int = 3, base: Path = BASE) -> None:
        self.base = base
        self.log_dir = log_dir
        self.managers = [Manager(i, base, log_dir) for i in range(1, size + 1)]
        self.image = ""

    def __enter__(self) -> SwarmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- building ---------------------------------------------------------------------------

    def build_network(self) -> None:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for m in self.managers:
            host_end, ns_end = f"{PREFIX}-v{m.index}", f"{PREFIX}-v{m.index}p"
            _run("ip", "netns", "add", m.name)
            _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _run("ip", "link", "set", ns_end, "netns", m.name)
            _run("ip", "-n", m.name, "link", "set", ns_end, "name", "eth0")
            _run("ip", "-n", m.name, "addr", "add", f"{m.address}/24", "dev", "eth0")
            _run("ip", "-n", m.name, "link", "set", "eth0", "up")
            _run("ip", "-n", m.name, "link", "set", "lo", "up")
            _run("ip", "link", "set", host_end, "master", BRIDGE, "up")

    def start_engines(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        for m in self.managers:
            m.start()
        for m in self.managers:
            m.wait_up()

    def form_swarm(self) -> None:
        first, *others = self.managers
        with first.engine() as c:
            c.swarm.init(advertise_addr=first.address,
                         listen_addr=f"{first.address}:{SWARM_PORT}",
                         default_addr_pool=[ADDRESS_POOL], subnet_size=26)
            c.swarm.reload()
            token = c.swarm.attrs["JoinTokens"]["Manager"]
        for m in others:
            with m.engine() as c:
                c.swarm.join(remote_addrs=[f"{first.address}:{SWARM_PORT}"], join_token=token,
                             listen_addr=f"{m.address}:{SWARM_PORT}",
                             advertise_addr=m.address)
        for m in self.managers:
            with m.engine() as c:
                m.node_id = c.info()["Swarm"]["NodeID"]

        def all_reachable() -> bool:
            with first.engine(timeout=10) as c:
                nodes = c.api.nodes(filters={"role": "manager"})
            return len(nodes) == len(self.managers) and all(
                n["Status"]["State"] == "ready"
                and n["ManagerStatus"]["Reachability"] == "reachable" for n in nodes)
        wait_until("every manager ready and reachable", all_reachable, 90, 0.2, ignoring=NOT_YET)

    def load_image(self, source_docker_host: str, image: str) -> None:
        """`docker save` from the engine that has it, `docker load` into each of ours."""
        with contextlib.closing(docker.DockerClient(base_url=source_docker_host,
                                                    version=API_VERSION, timeout=120)) as src:
            data = b"".join(src.images.get(image).save(named=True))
        for m in self.managers:
            with m.engine(timeout=120) as c:
                c.images.load(data)
        self.image = image

    def up(self, source_docker_host: str, image: str) -> SwarmCluster:
        """Clean a crashed run's leftovers, then network, engines, swarm, image."""
        cleanup(self.base)
        self.base.mkdir(parents=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.build_network()
        self.start_engines()
        self.form_swarm()
        self.load_image(source_docker_host, image)
        return self

    def create_service(self, name: str, replicas: int) -> str:
        """A replicated busybox `sleep` (stopped within a second: dockerd shuts down fast)."""
        with self.managers[0].engine() as c:
            service = c.services.create(
                self.image, ["sleep", "100000"], name=name,
                mode=docker.types.ServiceMode("replicated", replicas=replicas),
                stop_grace_period=1_000_000_000)
            return str(service.id)

    # --- reading ----------------------------------------------------------------------------

    def running(self) -> list[Manager]:
        return [m for m in self.managers if m.running()]

    def manager(self, node_id: str) -> Manager:
        return next(m for m in self.managers if m.node_id == node_id)

    def leader(self, timeout: float = 5.0) -> Manager | None:
        """The manager the live managers agree leads Raft; None while they do not agree
        (an election, or an engine unable to answer)."""
        views = [m.is_leader(timeout) for m in self.running()]
        if None in views or views.count(True) != 1:
            return None
        return self.running()[views.index(True)]

    def close(self) -> None:
        """SIGTERM every engine at once (one by one, the last ones wait on a lost quorum),
        wait for them, then remove everything."""
        for m in self.running():
            m.send(signal.SIGTERM)
        for m in self.managers:
            with contextlib.suppress(Exception):
                m.stop(timeout=30)
        cleanup(self.base)


@contextlib.contextmanager
def swarm_cluster(log_dir: Path, source_docker_host: str, image: str) -> Iterator[SwarmCluster]:
    """A running three-manager swarm; torn down, and checked to be gone, on the way out.

    Every name and address here is fixed, so two test modules (or two pytest runs) that
    build one at the same time would tear each other's down: an exclusive lock on a file
    next to BASE makes the second wait until the first cluster is gone.
    """
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cluster = SwarmCluster(log_dir)
        try:
            yield cluster.up(source_docker_host, image)
        finally:
            cluster.close()
            left = {k: v for k, v in leftovers(cluster.base).items() if v}
            if left:
                raise AssertionError(f"the swarm cluster left things behind: {left}")
