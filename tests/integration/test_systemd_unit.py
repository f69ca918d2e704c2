"""The systemd deployment: the unit passes `systemd-analyze verify` (and a broken one does
not), its hardening scores OK in `systemd-analyze security`, install.sh parses and its dry run
says what it would do and changes nothing; and the sd_notify protocol of a real `autoscaler
run` process, read on a test-owned unix datagram socket standing in for systemd: READY=1 once
it serves, WATCHDOG=1 after every completed tick (also while Prometheus is down),
RELOADING=1 ... READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.

No systemd runs as PID 1 here; `systemd-analyze verify` and `security --offline` need none.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from autoscaler import sdnotify
from autoscaler.cli import bundled_config_path
from autoscaler.config import load_config
from tests.support.daemon import DaemonProcess, config_data, daemon, daemon_env, write_yaml
from tests.support.e2e import swarm_service
from tests.support.realenv import RealEnv
from tests.support.wait import free_port, wait_until

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "systemd"
UNIT = DEPLOY / "stalwart-autoscaler.service"
INSTALL = DEPLOY / "install.sh"
EXEC_START = "/opt/stalwart-autoscaler/venv/bin/autoscaler"
CONFIG = "/etc/stalwart-autoscaler/config.yaml"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
START = 60.0  # deadline for the daemon to serve and tick (generous)
SETTLE = 60.0
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze missing: apt-get install systemd (Debian's package ships it)")


# --------------------------------------------------------------------------- the unit


def unit_settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every setting; keys may repeat, as systemd allows."""
    section, out = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def runnable_copy(tmp: Path, text: str) -> Path:
    """The unit with ExecStart pointed at this venv's real `autoscaler`.

    verify fails a unit whose ExecStart binary does not exist, and /opt/stalwart-autoscaler
    exists only where install.sh ran. Nothing else changes: User= stays (systemd 252's verify
    does not resolve users), so this checks the unit as shipped.
    """
    real = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "autoscaler"
    if not real.exists():
        real = REPO / ".venv" / "bin" / "autoscaler"
    assert real.exists(), f"no autoscaler entry point at {real}: install the package"
    assert text.count(f"ExecStart={EXEC_START} ") == 1
    path = tmp / UNIT.name
    path.write_text(text.replace(f"ExecStart={EXEC_START} ", f"ExecStart={real} "))
    return path


def verify(unit: Path) -> list[str]:
    """Every problem `systemd-analyze verify` reports, an empty list for a clean unit.

    Strict on purpose: systemd 252 only warns (exit 0) about an unknown directive or a value
    it cannot parse, and ignores the line, so any output counts as a failure.
    """
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=unit.parent)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0:
        problems.append(f"exit status {done.returncode}")
    return problems


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    assert verify(runnable_copy(tmp_path, UNIT.read_text())) == []


@needs_analyze
@pytest.mark.parametrize(("edit", "expected"), [
    (("WatchdogSec=120s", "WatchdgSec=120s"), "Unknown key 'WatchdgSec'"),  # a typo
    (("NoNewPrivileges=yes", "NoNewPrivilege=yes"), "Unknown key 'NoNewPrivilege'"),
    (("WatchdogSec=120s", "WatchdogSec=two minutes"), "Failed to parse sec value"),
    (("Type=notify", "Type=notfy"), "notfy"),
    (("ProtectSystem=strict", "ProtectSystem=very"), "Failed to parse protect system value"),
    (("[Service]", "[Servce]"), "Servce"),
])
def test_systemd_analyze_verify_catches_a_broken_unit(
        tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    old, new = (f"\n{line}\n" for line in edit)
    text = UNIT.read_text()
    assert text.count(old) == 1
    problems = verify(runnable_copy(tmp_path, text.replace(old, new)))
    assert any(expected in p for p in problems), problems


@needs_analyze
def test_verify_needs_the_executable_that_install_sh_provides(tmp_path: Path) -> None:
    """As shipped, ExecStart names the venv install.sh creates; without it verify fails."""
    if Path(EXEC_START).exists():
        pytest.skip(f"{EXEC_START} is installed on this machine")
    shipped = tmp_path / UNIT.name
    shipped.write_text(UNIT.read_text())
    assert any("is not executable" in p for p in verify(shipped))


@needs_analyze
@pytest.mark.parametrize(("strip", "passes"), [
    (False, True),
    (True, False),  # the control: the same unit without its hardening scores worse
])
def test_hardening_scores_ok(tmp_path: Path, strip: bool, passes: bool) -> None:
    """`systemd-analyze security` exposure at most 2.0 ("OK"; 10 is a unit with none)."""
    assert SYSTEMD_ANALYZE is not None
    text = UNIT.read_text()
    if strip:
        start = text.index("# Hardening:")
        text = text[:start] + text[text.index("[Install]"):]
    unit = runnable_copy(tmp_path, text)
    done = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20",
                           str(unit)], capture_output=True, text=True, timeout=120,
                          check=False, cwd=tmp_path)
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout + done.stderr)
    assert level, done.stdout + done.stderr
    assert (done.returncode == 0) is passes, (level.group(1), done.stderr)


REQUIRED = [
    ("Service", "Type", "notify"),
    ("Service", "NotifyAccess", "main"),
    ("Service", "ExecStart", f"{EXEC_START} run --config {CONFIG}"),
    ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
    ("Service", "Restart", "on-failure"),
    ("Service", "EnvironmentFile", "-/etc/stalwart-autoscaler/autoscaler.env"),
    ("Service", "User", "stalwart-autoscaler"),
    ("Service", "Group", "stalwart-autoscaler"),
    ("Service", "SupplementaryGroups", "docker"),
    ("Service", "NoNewPrivileges", "yes"),
    ("Service", "ProtectSystem", "strict"),
    ("Service", "ProtectHome", "yes"),
    ("Service", "PrivateTmp", "yes"),
    ("Service", "PrivateDevices", "yes"),
    ("Service", "ProtectKernelTunables", "yes"),
    ("Service", "ProtectKernelModules", "yes"),
    ("Service", "ProtectKernelLogs", "yes"),
    ("Service", "ProtectControlGroups", "yes"),
    ("Service", "RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("Service", "RestrictNamespaces", "yes"),
    ("Service", "LockPersonality", "yes"),
    ("Service", "MemoryDenyWriteExecute", "yes"),
    ("Service", "RestrictRealtime", "yes"),
    ("Service", "SystemCallArchitectures", "native"),
    ("Service", "CapabilityBoundingSet", ""),
    ("Service", "ReadOnlyPaths", "/etc/stalwart-autoscaler"),
    ("Install", "WantedBy", "multi-user.target"),
]


@pytest.mark.parametrize(("section", "key", "value"), REQUIRED,
                         ids=[f"{k}={v}" for _, k, v in REQUIRED])
def test_the_unit_sets(section: str, key: str, value: str) -> None:
    assert (section, key, value) in unit_settings(UNIT.read_text())


def test_the_unit_writes_nowhere_and_its_watchdog_outlasts_the_example_ticks() -> None:
    settings = unit_settings(UNIT.read_text())
    assert not [s for s in settings if s[1] == "ReadWritePaths"]
    [watchdog] = [v for _, k, v in settings if k == "WatchdogSec"]
    seconds = float(watchdog.removesuffix("s"))
    example = load_config(bundled_config_path(), environ={})
    budget = max(example.evaluation_interval, example.prometheus.timeout + 1.0)
    assert sdnotify.watchdog_problem(seconds, budget) is None
    assert seconds >= 4 * example.evaluation_interval  # "a few intervals", as the unit says


def test_install_sh_and_the_unit_agree_on_paths() -> None:
    script = INSTALL.read_text()
    assert "PREFIX=/opt/stalwart-autoscaler\n" in script
    assert "ETC=/etc/stalwart-autoscaler\n" in script
    assert '"$PREFIX/venv/bin/autoscaler" check-config "$ETC/config.yaml"' in script
    assert "USER_NAME=stalwart-autoscaler\n" in script


# --------------------------------------------------------------------------- install.sh


def test_install_sh_parses() -> None:
    done = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert os.access(INSTALL, os.X_OK)


def machine_state() -> dict[str, Any]:
    """What a real install would change on this machine."""
    user = subprocess.run(["getent", "passwd", "stalwart-autoscaler"], capture_output=True,
                          check=False, timeout=30)
    return {"user": user.returncode == 0,
            **{p: Path(p).exists() for p in ("/opt/stalwart-autoscaler", "/etc/stalwart-autoscaler",
                                              "/etc/systemd/system/stalwart-autoscaler.service")}}


EXPECTED_STEPS = [  # in this order; each a regex on one printed command
    r"^\+ usermod --append --groups docker stalwart-autoscaler$",
    r"^\+ install -d -m 0755 -o root -g root /opt/stalwart-autoscaler$",
    r"^\+ /opt/stalwart-autoscaler/venv/bin/pip install --quiet --upgrade " + re.escape(str(REPO))
    + "$",
    r"^\+ install -d -m 0750 -o root -g stalwart-autoscaler /etc/stalwart-autoscaler$",
    r"^\+ runuser -u stalwart-autoscaler -- /opt/stalwart-autoscaler/venv/bin/autoscaler "
    r"check-config /etc/stalwart-autoscaler/config.yaml$",
    r"^\+ install -m 0644 -o root -g root \S+/deploy/systemd/stalwart-autoscaler\.service "
    r"/etc/systemd/system/stalwart-autoscaler\.service$",
    r"^\+ systemctl daemon-reload$",
    r"^\+ systemctl enable (--now )?stalwart-autoscaler\.service$",
]


def test_install_sh_dry_run_prints_every_step_and_changes_nothing() -> None:
    before = machine_state()
    done = subprocess.run([str(INSTALL), "--dry-run"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert machine_state() == before
    lines = done.stdout.splitlines()
    assert lines[0] == "== dry run: nothing is changed"
    positions = []
    for pattern in EXPECTED_STEPS:
        found = [i for i, line in enumerate(lines) if re.match(pattern, line)]
        assert len(found) == 1, (pattern, done.stdout)
        positions.append(found[0])
    assert positions == sorted(positions), done.stdout
    if not before["user"]:  # a fresh machine: the user and the files are created
        assert any(line.startswith("+ useradd --system --user-group") for line in lines)
    if not before["/etc/stalwart-autoscaler"]:
        # no --config: the bundled example, switched to dry_run: true (#11 item 12)
        assert "== no --config: installing the bundled example with dry_run: true " \
               "(see --print-config)" in lines
        assert any(re.match(r"^\+ install -m 0640 -o root -g stalwart-autoscaler "
                            r"\S+/stalwart-autoscaler-config\.\w+ "
                            r"/etc/stalwart-autoscaler/config\.yaml$", line) for line in lines)
        assert any(line.endswith(" /etc/stalwart-autoscaler/autoscaler.env") for line in lines)


def install_sh_config(tmp_path: Path, *args: str) -> tuple[str, Any]:
    """What `install.sh --print-config ARGS` would install, as text and as loaded settings."""
    done = subprocess.run([str(INSTALL), "--print-config", *args], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "printed.yaml"
    path.write_text(done.stdout)
    return done.stdout, load_config(path, environ={})


def test_install_sh_without_config_installs_the_example_in_dry_run(tmp_path: Path) -> None:
    example = load_config(bundled_config_path(), environ={})
    assert example.dry_run is False  # what it would have started with before
    _, installed = install_sh_config(tmp_path)
    assert installed.dry_run is True
    assert installed.model_dump(exclude={"dry_run"}) == example.model_dump(exclude={"dry_run"})


def test_install_sh_installs_a_given_config_as_it_is(tmp_path: Path) -> None:
    own = tmp_path / "own.yaml"
    own.write_text(bundled_config_path().read_text())
    text, installed = install_sh_config(tmp_path, "--config", str(own))
    assert text == own.read_text()
    assert installed.dry_run is False


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--bogus"], 2, "unknown argument: --bogus"),
    (["--dry-run", "--source", "/nonexistent/x.whl"], 1, "no such wheel"),
    (["--dry-run", "--source", "/tmp"], 1, "neither a wheel nor the repository"),
    (["--dry-run", "--config", "/nonexistent.yaml"], 1, "no such config"),
])
def test_install_sh_refuses_bad_arguments(args: list[str], code: int, message: str) -> None:
    done = subprocess.run([str(INSTALL), *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == code, done.stdout + done.stderr
    assert message in done.stderr


def test_install_sh_refuses_to_install_without_root() -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root to run the script as an unprivileged user")
    # A copy nobody can read: the checkout itself may sit in a private directory.
    readable = Path(tempfile.mkdtemp(prefix="install-sh-"))
    try:
        readable.chmod(0o755)
        script = readable / "install.sh"
        shutil.copy(INSTALL, script)
        script.chmod(0o755)
        done = subprocess.run(["runuser", "-u", "nobody", "--", "bash", str(script)],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        shutil.rmtree(readable, ignore_errors=True)
    assert done.returncode == 1
    assert "run as root" in done.stderr


# --------------------------------------------------------------------------- sd_notify


class NotifySocket:
    """A unix datagram socket in a short path (sun_path holds 108 bytes), as systemd's."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[list[str]] = []

    def drain(self, wait: float = 0.0) -> list[list[str]]:
        """Every datagram so far (waiting up to `wait` for the first new one)."""
        self.sock.settimeout(wait)  # 0: non-blocking
        try:
            while True:
                data = self.sock.recv(65536)
                self.messages.append(data.decode().split("\n"))
                self.sock.settimeout(0)
        except (BlockingIOError, TimeoutError):
            pass
        return self.messages

    def count(self, assignment: str) -> int:
        return sum(assignment in m for m in self.messages)

    def index(self, assignment: str, start: int = 0) -> int | None:
        return next((i for i, m in enumerate(self.messages) if i >= start and assignment in m),
                    None)

    def wait_for(self, assignment: str, start: int = 0, timeout: float = SETTLE) -> int:
        def seen() -> int | None:
            self.drain(0.2)
            return self.index(assignment, start)

        return int(wait_until(f"{assignment} from message {start}",
                              lambda: (i := seen()) is not None and i + 1, timeout)) - 1

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


def steady_target(service: str) -> dict[str, Any]:
    return {"name": "smtp", "backend": "swarm", "service": service, "min_replicas": 1,
            "max_replicas": 3, "policies": [{"type": "threshold", "name": "steady",
                                             "query": "vector(50)", "scale_up_above": 70,
                                             "scale_down_below": 35}]}


def ticks(d: DaemonProcess) -> float:
    return d.metrics().get(("autoscaler_ticks_total", ()), 0.0)


def serving(base: str) -> bool:
    session = requests.Session()
    session.trust_env = False
    with session:
        return session.get(f"{base}/metrics", timeout=5).status_code == 200


def test_notify_ready_watchdog_reload_and_stopping(
        realenv: RealEnv, docker_client: Any, tmp_path: Path,
        notify_socket: NotifySocket) -> None:
    port = free_port()
    with swarm_service(docker_client, realenv.busybox_image) as service:
        config = write_yaml(tmp_path / "autoscaler.yaml", config_data(
            realenv.prometheus_url, port, [steady_target(service.name)]))
        env = daemon_env(DOCKER_HOST=realenv.docker_host, NOTIFY_SOCKET=str(notify_socket.path),
                         WATCHDOG_USEC="120000000")
        with daemon(config, env, tmp_path, port=port) as d:
            ready = notify_socket.wait_for("READY=1", timeout=START)
            assert ready == 0, notify_socket.messages  # nothing before READY=1
            assert serving(d.base)  # READY=1 only once /metrics answers
            assert any(a.startswith("STATUS=1 target(s)") for a in notify_socket.messages[0])

            # WATCHDOG=1 comes from the loop, once per completed tick
            wait_until("three WATCHDOG=1",
                       lambda: notify_socket.drain(0.2) and notify_socket.count("WATCHDOG=1") >= 3,
                       START)
            pings_before = notify_socket.count("WATCHDOG=1")
            completed = ticks(d)
            pings = [m for m in notify_socket.drain(0.5) if "WATCHDOG=1" in m]
            assert pings_before <= completed <= len(pings) + 1, (pings_before, completed, pings)
            assert any("STATUS=1 target(s), every 1s; last tick: ok" in m for m in pings), pings

            d.signal(signal.SIGHUP)
            reloading = notify_socket.wait_for("RELOADING=1")
            assert any(a.startswith("MONOTONIC_USEC=") for a in notify_socket.messages[reloading])
            notify_socket.wait_for("READY=1", start=reloading + 1)
            mark = len(notify_socket.drain())
            wait_until("WATCHDOG=1 after the reload",
                       lambda: notify_socket.drain(0.2) and notify_socket.index("WATCHDOG=1", mark)
                     is not None, START)

            d.signal(signal.SIGTERM)
            notify_socket.wait_for("STOPPING=1")
            assert d.proc.wait(timeout=SETTLE) == 0
        log = d.log_text()
        assert "config reloaded from" in log
        assert "systemd watchdog" not in log  # 120 s is ample for 1 s ticks
        assert "Traceback" not in log


def test_watchdog_keeps_pinging_while_prometheus_is_down(
        realenv: RealEnv, docker_client: Any, tmp_path: Path,
        notify_socket: NotifySocket) -> None:
    """Ticks still complete (each has a deadline) when every query fails, so systemd does not
    restart a daemon that could do nothing about the outage. Also: a watchdog shorter than
    two ticks is warned about at start."""
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"  # bound then released: nobody listens
    with swarm_service(docker_client, realenv.busybox_image) as service:
        config = write_yaml(tmp_path / "autoscaler.yaml", config_data(
            dead, port, [steady_target(service.name)]))
        env = daemon_env(DOCKER_HOST=realenv.docker_host, NOTIFY_SOCKET=str(notify_socket.path),
                         WATCHDOG_USEC="1000000")
        with daemon(config, env, tmp_path, port=port) as d:
            notify_socket.wait_for("READY=1", timeout=START)
            wait_until("three WATCHDOG=1 while Prometheus is down",
                       lambda: notify_socket.drain(0.2) and notify_socket.count("WATCHDOG=1") >= 3,
                       START)
            pings = [m for m in notify_socket.messages if "WATCHDOG=1" in m]
            assert all(any(a.startswith("STATUS=") and "problems with prometheus" in a
                           for a in m) for m in pings), pings
            records = d.records()
            assert any(r.get("level") == "WARNING" and "systemd watchdog (1s)" in
                       str(r.get("message")) for r in records), d.log_text()
            decisions = [r for r in records if r.get("event") == "decision"]
            assert decisions and all(p["state"] == "error" for r in decisions
                                     for p in r["policies"])
            assert d.stop() == 0
