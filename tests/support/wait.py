"""Polling for something the real components do in their own time.

Generous deadlines only: a wait fails a test when something never happens, it does not
measure how fast it happens (figures come from the benchmarks).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

__all__ = ["free_port", "wait_until"]

T = TypeVar("T")


@overload
def wait_until(what: str, probe: Callable[..., bool], timeout: float, every: float = 0.25,
               ignoring: tuple[type[Exception], ...] = ()) -> Literal[True]: ...
@overload
def wait_until(what: str, probe: Callable[..., T | bool | None], timeout: float,
               every: float = 0.25, ignoring: tuple[type[Exception], ...] = ()) -> T: ...
def wait_until(what: str, probe: Callable[..., Any], timeout: float, every: float = 0.25,
               ignoring: tuple[type[Exception], ...] = ()) -> Any:
    """Poll `probe` until it returns something truthy and return that; fail after `timeout` s.

    `ignoring`: exceptions that mean "not yet" (a component still starting), kept as the
    last value for the failure message.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except ignoring as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(every)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
