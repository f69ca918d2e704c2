"""A reload or a stop signal reaches the daemon's loop whichever thread the kernel hands it to.

CPython runs signal handlers in the main thread only; a signal delivered to another thread
(the scheduler's, the HTTP server's) does not interrupt the main thread's wait. The loop must
notice anyway: a `systemctl reload` that waits for some later signal reloads nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The daemon's own signal wiring and loop, with a ticker that does nothing; the process
# sends SIGHUP, then SIGTERM, to one of its non-main threads (the kernel's choice in the field).
SCRIPT = textwrap.dedent("""
    import signal, threading, time
    from autoscaler.cli import _on_signals
    from autoscaler.scheduler import run_forever

    class Idle:
        def tick(self):
            return None

    stop, wake, hangup = _on_signals()
    other = threading.Thread(target=time.sleep, args=(30,), daemon=True)
    other.start()

    def on_wake():
        if hangup.is_set():
            hangup.clear()
            print("reloaded", flush=True)
            signal.pthread_kill(other.ident, signal.SIGTERM)
        return 3600.0

    def send_hangup():
        time.sleep(0.3)
        signal.pthread_kill(other.ident, signal.SIGHUP)

    threading.Thread(target=send_hangup, daemon=True).start()
    run_forever(Idle(), 3600.0, stop, wake=wake, on_wake=on_wake)
    print("stopped", flush=True)
""")


def test_signals_sent_to_another_thread_reach_the_loop() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=20, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["reloaded", "stopped"], (done.stdout, done.stderr)
