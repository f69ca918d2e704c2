"""Queue depth from Stalwart's management API (#11 item 10), against the emulator process.

The emulator serves `GET /api/queue/messages?limit=N` as Stalwart does (`data.total`, Basic
auth as an admin); a plant that starts with a standing backlog and runs at exactly its
capacity keeps it flat: the community edition's "not growing" case that nothing drained.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from autoscaler.cli import _engine
from autoscaler.config import load_config_data
from autoscaler.model import SignalRequest, SignalState
from autoscaler.sources.stalwart_api import StalwartQueueSource
from tests.support.processes import emulator_process
from tests.support.realenv import RealEnv
from tests.support.wait import wait_until

SECRET = "adm1n-" + uuid.uuid4().hex[:8]
BACKLOG = 50_000


@contextmanager
def emulator(tmp_path: Path, *args: str) -> Iterator[str]:
    """`python -m tools.emulator` with a standing backlog, at exactly its capacity."""
    secret = tmp_path / "admin-secret"
    secret.write_text(SECRET + "\n")
    with emulator_process(
            ["--replicas", "2", "--demand", "20000", "--capacity-per-instance", "10000",
             "--initial-queue", str(BACKLOG), "--admin-secret-file", str(secret), "--poll", "0.2",
             *args], tmp_path / "emulator.log") as url:
        yield url


def calls(url: str) -> int:
    with urllib.request.urlopen(url + "/control/state", timeout=10) as response:
        state: dict[str, Any] = json.loads(response.read())
    return int(state["queue_api_calls"])


def spec(url: str, password_file: Path, every: str = "2s") -> str:
    return (f"stalwart_queue_total url={url} user=admin password_file={password_file} "
            f"every={every} timeout=5s")


def test_reads_data_total_at_most_once_per_interval(tmp_path: Path) -> None:
    with emulator(tmp_path) as url:
        source = StalwartQueueSource()
        query = spec(url, tmp_path / "admin-secret", every="2s")
        try:
            read = [source.read([SignalRequest("q", query, 600.0)], time.time(),
                                time.monotonic() + 5)["q"] for _ in range(3)]
            assert [r.state for r in read] == [SignalState.OK] * 3
            assert all(len(r.samples) == 1 for r in read)
            assert abs((read[0].latest or 0) - BACKLOG) <= 50, "flat at the backlog"
            assert (source.calls, calls(url)) == (1, 1), "one call per interval"
            time.sleep(2.2)
            later = source.read([SignalRequest("q", query, 600.0)], time.time(),
                                time.monotonic() + 5)["q"]
            assert (source.calls, calls(url)) == (2, 2)
            assert len(later.samples) == 2, "the window sees the values read so far"
            latest = source.read([SignalRequest("q", query, 0.0)], time.time(),
                                 time.monotonic() + 5)["q"]
            assert len(latest.samples) == 1 and source.calls == 2
        finally:
            source.close()


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        pytest.param("wrong", "HTTP 401: the admin credential was refused", id="wrong-password"),
        pytest.param(None, "cannot read password_file", id="missing-file"),
    ],
)
def test_a_refused_or_unreadable_credential_is_an_error_naming_the_endpoint(
        tmp_path: Path, password: str | None, fragment: str) -> None:
    with emulator(tmp_path) as url:
        password_file = tmp_path / "other-secret"
        if password is not None:
            password_file.write_text(password)
        source = StalwartQueueSource()
        try:
            got = source.read([SignalRequest("q", spec(url, password_file), 0.0)],
                              time.time(), time.monotonic() + 5)["q"]
        finally:
            source.close()
    assert got.state is SignalState.ERROR
    assert got.detail.startswith(f"{url}/api/queue/messages: "), got.detail
    assert fragment in got.detail
    assert "wrong" not in got.detail and SECRET not in got.detail


def test_community_preset_drains_a_flat_backlog_read_from_the_api(
        realenv: RealEnv, docker_client: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A flat 50,000-message backlog asks for ceil(50,000 / 15 min / 10,000/h) = 20 more
    instances (it was "not growing": no opinion, and nothing drained it)."""
    import docker.types

    monkeypatch.setenv("DOCKER_HOST", realenv.docker_host)
    service = docker_client.services.create(
        realenv.busybox_image, ["sleep", "100000"], name=f"queue-{uuid.uuid4().hex[:6]}",
        mode=docker.types.ServiceMode("replicated", replicas=2))
    try:
        with emulator(tmp_path) as url:
            settings = load_config_data({
                "evaluation_interval": "1s", "dry_run": True,
                "prometheus": {"url": realenv.prometheus_url, "timeout": "3s",
                               "scrape_interval": "1s"},
                "targets": [{
                    "name": "smtp", "backend": "swarm", "service": service.name,
                    "min_replicas": 2, "max_replicas": 30, "preset": "stalwart-smtp",
                    "preset_options": {"edition": "community", "queue_api": {
                        "url": url, "password_file": str(tmp_path / "admin-secret"),
                        "every": "1s"}}}]}, environ={})
            engine = _engine(settings, dry_run=True, everything_dry=True)
            try:
                def standing() -> Any:
                    (outcome,) = engine.tick()
                    d = outcome.decision
                    queue = next(p for p in d.policies if p.name == "queue") if d else None
                    return (d, queue) if queue is not None and queue.replicas else None

                decision, queue = wait_until("the queue policy to see a trend", standing, 30,
                                             every=1.1)
            finally:
                engine.close()
            assert calls(url) <= 30
    finally:
        service.remove()
    assert queue.state == SignalState.OK
    assert "standing" in queue.reason, queue.reason
    assert queue.replicas == 2 + 20
    assert decision.recommended == 22  # the HPA's default rate limit paces the steps to it
    assert decision.desired > 2 and decision.outcome == "scale_up"
