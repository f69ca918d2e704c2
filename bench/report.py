"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections alone."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Every figure here is written by a command (see the README, "Benchmarks"); rerun it to
refresh its section. Figures are the median with min-max over repeated runs.
"""


def spread(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    """`median (min-max)` of repeated measurements."""
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
            f"Python {platform.python_version()}")


def doc_path() -> Path:
    """docs/benchmarks.md, or the file $BENCH_DOC names (smoke tests write there, so a test
    run never rewrites the recorded figures)."""
    other = os.environ.get("BENCH_DOC")
    return Path(other) if other else DOC


def write_section(name: str, body: str, doc: Path | None = None, header: str = HEADER) -> None:
    """Replace (or append) the section between this benchmark's markers in `doc` (default
    `doc_path()`), leaving the rest of the file alone."""
    path = doc or doc_path()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else header
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
