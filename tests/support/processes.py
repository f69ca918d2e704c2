"""Helper processes of a test: stopping one (SIGTERM, then SIGKILL if it lingers), and the
emulator started as `python -m`."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench._stack import stop_process  # one copy, shared with the benchmarks

__all__ = ["REPO", "emulator_process", "stop_process"]

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def emulator_process(args: list[str], log: Path, env: dict[str, str] | None = None
                     ) -> Iterator[str]:
    """`python -m tools.emulator ARGS` on a free port (its stderr in `log`); yields its URL,
    stops it after and checks that it exited 0."""
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.emulator", *args], cwd=REPO,
            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else ""
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if not match:
                proc.kill()
                pytest.fail(f"emulator did not start: {line!r}\n{log.read_text()}")
            yield match.group(0)
        finally:
            stop_process(proc, 20)
    assert proc.returncode == 0, log.read_text()
