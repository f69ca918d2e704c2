"""Demand traces for `simulate`: a CSV of `t` (seconds) and `demand` (emails/hour).

A trace is the only input a replay takes from the outside world, so `load_trace` checks it
once, up front, and every problem becomes a `TraceError` naming the file and line: a bad row
should read as a typo to fix, never as a traceback from deep inside the simulator.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_right
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

TIME_COLUMN = "t"
DEMAND_COLUMN = "demand"


@dataclass(frozen=True)
class Trace:
    """Demand (emails/hour) over time (seconds); `t` is strictly increasing."""

    name: str
    t: tuple[float, ...]
    demand: tuple[float, ...]

    def __post_init__(self) -> None:
        # demand_at bisects `t`, so an unsorted trace would answer wrongly without a word.
        if not self.t or len(self.t) != len(self.demand):
            raise ValueError(
                f"trace {self.name!r}: needs as many demand values as times, at least one "
                f"(got {len(self.t)} times, {len(self.demand)} demand values)"
            )
        if any(b <= a for a, b in zip(self.t, self.t[1:], strict=False)):
            raise ValueError(f"trace {self.name!r}: t must be strictly increasing")

    @property
    def duration(self) -> float:
        """Seconds from the first row to the last."""
        return self.t[-1] - self.t[0]

    @property
    def peak(self) -> float:
        """The highest demand, which static sizing (the guide's formula) is based on."""
        return max(self.demand)


class TraceError(ValueError):
    """A trace that cannot be used, with the file and (when known) the 1-based line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        super().__init__(str(path), line, message)
        self.path = str(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path} line {self.line}"
        return f"{where}: {self.message}"


def load_trace(path: str | Path) -> Trace:
    """Read and validate a trace CSV; raises TraceError (only) for anything wrong with it."""
    text = _read_text(path)
    header: tuple[int, dict[str, int]] | None = None
    times: list[float] = []
    demands: list[float] = []
    prev_line, prev_text = 0, ""
    # Split on line ends only (str.splitlines also splits on \f, \x1c...): numbers must match
    # what an editor shows.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            fields = [f.strip() for f in next(csv.reader([stripped]))]
        except csv.Error as exc:
            raise TraceError(path, lineno, f"not a CSV row ({exc})") from None
        if header is None:
            header = (lineno, _columns(path, lineno, fields))
            continue
        columns = header[1]
        ti, di = columns[TIME_COLUMN], columns[DEMAND_COLUMN]
        if len(fields) <= max(ti, di):
            raise TraceError(
                path,
                lineno,
                f"row has {len(fields)} field(s), the header on line {header[0]} needs at "
                f"least {max(ti, di) + 1} to reach '{TIME_COLUMN}' and '{DEMAND_COLUMN}'",
            )
        t = _number(path, lineno, TIME_COLUMN, fields[ti])
        demand = _number(path, lineno, DEMAND_COLUMN, fields[di])
        if t < 0:
            raise TraceError(path, lineno, f"t '{fields[ti]}' is negative")
        if demand < 0:
            raise TraceError(path, lineno, f"demand '{fields[di]}' is negative")
        if times and t <= times[-1]:
            raise TraceError(
                path,
                lineno,
                f"t {fields[ti]} is not after t {prev_text} on line {prev_line} "
                "(t must be strictly increasing)",
            )
        times.append(t)
        demands.append(demand)
        prev_line, prev_text = lineno, fields[ti]
    if header is None:
        raise TraceError(path, None, "file is empty (expected a header with 't,demand' and rows)")
    if len(times) < 2:
        raise TraceError(path, None, f"has {len(times)} data row(s); a trace needs at least 2")
    return Trace(name=Path(path).stem, t=tuple(times), demand=tuple(demands))


def _read_text(path: str | Path) -> str:
    """The file as text; open and decode failures become TraceError, decode ones with a line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TraceError(path, None, "no such file") from None
    except IsADirectoryError:
        raise TraceError(path, None, "is a directory, not a CSV file") from None
    except OSError as exc:
        raise TraceError(path, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(path, line, f"not UTF-8 text ({exc.reason})") from None


def _columns(path: str | Path, lineno: int, fields: list[str]) -> dict[str, int]:
    """Column positions from the header; extra columns are allowed and ignored."""
    positions: dict[str, int] = {}
    for i, name in enumerate(fields):
        positions.setdefault(name, i)
    missing = [c for c in (TIME_COLUMN, DEMAND_COLUMN) if c not in positions]
    if missing:
        names = " and ".join(f"'{c}'" for c in missing)
        raise TraceError(
            path,
            lineno,
            f"header has no {names} column (found: {', '.join(fields)}); "
            f"expected a header like 't,demand'",
        )
    return positions


def _number(path: str | Path, lineno: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(path, lineno, f"{column} '{text}' is not a number") from None
    if not math.isfinite(value):
        raise TraceError(path, lineno, f"{column} '{text}' is not a finite number")
    return value


def bundled_traces() -> dict[str, Path]:
    """The traces shipped in `autoscaler/data/traces/`, by name (file stem)."""
    directory = Path(str(files("autoscaler") / "data" / "traces"))
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.csv"))}


def resolve_trace(name_or_path: str) -> Path:
    """A file path as given, else a bundled trace name such as `diurnal-week`."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_traces()
    if name_or_path in bundled:
        return bundled[name_or_path]
    names = ", ".join(bundled) or "none"
    raise TraceError(
        name_or_path, None, f"no such file and no bundled trace of that name (bundled: {names})"
    )


def demand_at(trace: Trace, t: float) -> float:
    """Step-hold: the last row at or before `t`; before the first row, the first value."""
    index = bisect_right(trace.t, t) - 1
    return trace.demand[max(index, 0)]
