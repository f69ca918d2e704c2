"""The tick schedule: APScheduler runs `tick()` every interval (max_instances=1, coalesce),
so ticks never overlap and a late one is not run twice; a reload may change the interval."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

log = logging.getLogger("autoscaler.loop")

# How often the main thread wakes while it waits for a stop or a reload. CPython runs signal
# handlers only in the main thread, between bytecodes; a signal the kernel delivered to one
# of the daemon's other threads (the scheduler's, the HTTP server's) does not interrupt a bare
# `Event.wait()` there, so a SIGHUP or SIGTERM could wait for some later signal.
SIGNAL_POLL = 0.5

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Ticker(Protocol[T_co]):
    """What is scheduled: the engine."""

    def tick(self) -> T_co: ...


def run_forever(
    engine: Ticker[T],
    interval: float,
    stop: threading.Event,
    *,
    wake: threading.Event | None = None,
    on_wake: Callable[[], float] | None = None,
    on_tick: Callable[[T], None] | None = None,
) -> None:
    """Tick every `interval` with APScheduler (max_instances=1, coalesce) until `stop`.

    `on_tick` runs in the scheduler's thread after every completed tick: the systemd watchdog
    ping lives there, so a loop that stops completing ticks stops pinging. Whenever `wake` is
    set, `on_wake` runs in the caller's thread (a SIGHUP reload: `Engine.reload` waits for the
    tick in flight) and returns the interval from then on; a change reschedules the job.
    On stop the scheduler finishes the tick in flight before returning.
    """
    from apscheduler.schedulers.background import BackgroundScheduler

    def job() -> None:
        outcomes = engine.tick()
        if on_tick is not None:
            try:
                on_tick(outcomes)
            except Exception:
                log.exception("after-tick hook failed")

    scheduler = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True,
                                                  "misfire_grace_time": None})
    scheduler.add_job(job, "interval", seconds=interval, id="tick",
                      next_run_time=_now_for_scheduler())
    scheduler.start()
    try:
        while not stop.is_set():
            if not (wake or stop).wait(SIGNAL_POLL):
                continue
            if stop.is_set() or wake is None:
                break
            wake.clear()
            if on_wake is None:
                continue
            new_interval = on_wake()
            if new_interval != interval:
                log.info("evaluation interval %gs -> %gs", interval, new_interval)
                scheduler.reschedule_job("tick", trigger="interval", seconds=new_interval)
                interval = new_interval
    finally:
        scheduler.shutdown(wait=True)


def _now_for_scheduler() -> datetime:
    return datetime.now(UTC)
