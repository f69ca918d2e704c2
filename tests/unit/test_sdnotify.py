"""The sd_notify client: addresses, datagrams on a test-owned unix socket, the watchdog
interval from the environment, and the warning for a watchdog shorter than two ticks."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoscaler import sdnotify

DEADLINE = 10.0


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A unix datagram socket standing in for systemd, named in $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(DEADLINE)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.mark.parametrize(("value", "expected"), [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@abstract/notify", "\0abstract/notify"),
    ("", None),
    ("vsock:2:1234", None),  # systemd >= 254 in a VM: not supported, hence no message
    ("relative/path", None),
])
def test_socket_address(value: str, expected: str | None) -> None:
    assert sdnotify.socket_address({"NOTIFY_SOCKET": value}) == expected


def test_without_notify_socket_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False


@pytest.mark.parametrize(("send", "expected_lines"), [
    (sdnotify.ready, ["READY=1"]),
    (lambda: sdnotify.ready("2 target(s)"), ["READY=1", "STATUS=2 target(s)"]),
    (lambda: sdnotify.watchdog("ok"), ["WATCHDOG=1", "STATUS=ok"]),
    (sdnotify.stopping, ["STOPPING=1"]),
    (lambda: sdnotify.notify("STATUS=a", "STATUS=b"), ["STATUS=a", "STATUS=b"]),
])
def test_messages_arrive_as_one_datagram(listener: socket.socket, send: Callable[[], bool],
                                         expected_lines: list[str]) -> None:
    assert send() is True
    assert received(listener).split("\n") == expected_lines


def test_reloading_carries_the_monotonic_clock(listener: socket.socket) -> None:
    before = sdnotify.monotonic_usec()
    assert sdnotify.reloading() is True
    lines = received(listener).split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= sdnotify.monotonic_usec()


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"autoscaler-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(DEADLINE)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1") is True
        assert received(sock) == "READY=1"


def test_an_unreachable_socket_is_logged_not_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.notify("WATCHDOG=1") is False
    assert "cannot notify the service manager (WATCHDOG)" in caplog.text


PID = 4242


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "120000000"}, 120.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(PID)}, 0.5),
    ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(PID + 1)}, None),  # inherited
    ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "2m"}, None),
])
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(environ, pid=PID) == expected


def test_watchdog_interval_defaults_to_this_process() -> None:
    environ = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert sdnotify.watchdog_interval(environ) == 1.0


@pytest.mark.parametrize(("watchdog", "budget", "warns"), [
    (None, 15.0, False),  # no watchdog configured
    (120.0, 15.0, False),  # the unit's default against the default interval
    (30.0, 15.0, False),  # exactly two ticks
    (29.0, 15.0, True),
    (10.0, 15.0, True),  # shorter than one interval: restarts a healthy daemon
    (120.0, 61.0, True),  # an interval of a minute needs more than 120 s
])
def test_watchdog_problem(watchdog: float | None, budget: float, warns: bool) -> None:
    problem = sdnotify.watchdog_problem(watchdog, budget)
    assert (problem is not None) is warns
    if problem:
        assert "WatchdogSec" in problem
