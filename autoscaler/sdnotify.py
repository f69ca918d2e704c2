"""A tiny sd_notify(3) client: no libsystemd, one unix datagram per message.

Under systemd (`Type=notify`) the daemon says READY=1 once it serves, pings WATCHDOG=1 from
the loop after every completed tick (a stuck loop stops pinging and systemd restarts it),
RELOADING=1 ... READY=1 around a SIGHUP reload and STOPPING=1 on SIGTERM. Without
$NOTIFY_SOCKET (a terminal, a container, a test) every call is a no-op, and a socket that
cannot be reached is logged, never raised: the service manager's absence must not stop the
autoscaler.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("autoscaler.sdnotify")


def socket_address(environ: Mapping[str, str] | None = None) -> str | None:
    """$NOTIFY_SOCKET as an AF_UNIX address: a path, or '@name' for the abstract namespace."""
    value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:
        log.warning("NOTIFY_SOCKET=%r is not a unix socket path; not notifying", value)
    return None


def notify(*assignments: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `assignments` (e.g. "READY=1", "STATUS=...") in one datagram.

    Returns whether a message was sent; False when not under systemd or on failure.
    """
    address = socket_address(environ)
    if address is None or not assignments:
        return False
    payload = "\n".join(assignments).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError as exc:
        log.warning("cannot notify the service manager (%s): %s",
                    assignments[0].split("=", 1)[0], exc)
        return False
    return True


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in µs: systemd pairs RELOADING=1 with it (MONOTONIC_USEC=)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def ready(status: str = "") -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    return notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog(status: str = "") -> bool:
    return notify("WATCHDOG=1", *([f"STATUS={status}"] if status else []))


def watchdog_interval(environ: Mapping[str, str] | None = None,
                      pid: int | None = None) -> float | None:
    """Seconds within which systemd expects WATCHDOG=1, or None when it expects none.

    $WATCHDOG_PID, when set, names the process meant (sd_watchdog_enabled(3)): another pid
    means the variable was inherited and is not ours.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != (os.getpid() if pid is None else pid)):
        return None
    return int(usec) / 1_000_000


def watchdog_problem(watchdog_seconds: float | None, tick_budget: float) -> str | None:
    """Why this watchdog would restart a healthy daemon, or None.

    Pings come after completed ticks only; two completions can be up to two tick budgets
    apart (a tick that uses its whole deadline, then the next one), so the watchdog must
    allow at least that.
    """
    if watchdog_seconds is None:
        return None
    if watchdog_seconds < 2 * tick_budget:
        return (f"the systemd watchdog ({watchdog_seconds:g}s) is shorter than two ticks "
                f"({2 * tick_budget:g}s, from evaluation_interval and prometheus.timeout): "
                "a healthy daemon could be restarted; set WatchdogSec= well above the interval")
    return None
