"""State on the target: TargetState <-> Swarm labels / Kubernetes annotations. Pure.

What must survive a restart or a failover (last scale time and direction, last replicas
written, recent recommendations and scale events, an operator's scale) is kept on the
workload itself, written in the same update as the replica count. Unreadable values are
reported and dropped, never fatal: the target is then adopted as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from autoscaler.model import TargetState

SWARM_PREFIX = "autoscaler."
KUBERNETES_PREFIX = "autoscaler.stalwart.io/"
KEYS = ("last-scale-time", "last-scale-direction", "last-replicas", "recommendations",
        "events", "manual-time", "manual-direction", "pause-applied")
# The operator's switches: read, never written by us.
PAUSED = "paused"
PAUSED_REPLICAS = "paused-replicas"
SWITCHES = (PAUSED, PAUSED_REPLICAS)


@dataclass(frozen=True, slots=True)
class Pause:
    """The operator's pause as the target carries it.

    `paused`: never written (`paused: "true"`, or a paused-replicas value that is not a
    count: then `problem` says so). `replicas`: paused at this count (scaled to it once,
    then held); None without one, or when `paused` wins.
    """

    paused: bool = False
    replicas: int | None = None
    problem: str = ""


def read_pause(labels: Mapping[str, str] | None, prefix: str) -> Pause:
    """The pause switches in `labels`: `paused` wins over `paused-replicas`; a
    paused-replicas value that is not a whole number >= 0 (empty, negative, "3.5", "two")
    means paused, with a warning."""
    labels = labels or {}
    paused = labels.get(prefix + PAUSED, "").strip().lower() == "true"
    raw = labels.get(prefix + PAUSED_REPLICAS)
    if raw is None:
        return Pause(paused)
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        return Pause(True, None, f"{prefix}{PAUSED_REPLICAS}={raw[:60]!r} is not a replica "
                                 "count (a whole number >= 0): paused, nothing is written")
    if paused:
        return Pause(True)
    return Pause(False, int(text))


# A scale through /scale is two writes (the count, then the state annotations); the count
# about to be written is recorded first, so a failure between them never reads as an
# operator's scale. Not part of TargetState: only the reader of the target needs it.
PENDING = "pending-replicas"


@dataclass(frozen=True, slots=True)
class DecodedState:
    state: TargetState
    paused: bool
    problems: tuple[str, ...] = ()
    pause: Pause = Pause()


def _direction(value: int) -> str:
    return "up" if value > 0 else "down" if value < 0 else ""


def _pairs(pairs: tuple[tuple[float, int], ...]) -> str:
    return json.dumps([[round(t, 3), v] for t, v in pairs], separators=(",", ":"))


def encode_state(state: TargetState, prefix: str) -> dict[str, str]:
    """Labels/annotations for `state`; keys that do not apply are written empty."""
    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}"

    values = {
        "last-scale-time": num(state.last_scale_time),
        "last-scale-direction": _direction(state.last_scale_direction),
        "last-replicas": "" if state.last_written is None else str(state.last_written),
        "recommendations": _pairs(state.recommendations),
        "events": _pairs(state.events),
        "manual-time": num(state.manual_time),
        "manual-direction": _direction(state.manual_direction),
        "pause-applied": "" if state.pause_applied is None else str(state.pause_applied),
    }
    return {prefix + key: value for key, value in values.items()}


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _parse_pairs(text: str, *, signed: bool) -> tuple[tuple[float, int], ...]:
    """[[time, value], ...]; times are numbers, values integers (>= 0 unless `signed`)."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("not a list")
    out = []
    for item in data:
        if not (isinstance(item, list) and len(item) == 2):
            raise ValueError("items must be [time, value]")
        t, v = item
        if isinstance(v, bool) or not isinstance(v, int) or isinstance(t, bool) \
                or not isinstance(t, int | float):
            raise ValueError("items must be [time, integer]")
        if v < 0 and not signed:
            raise ValueError("a replica count is never negative")
        out.append((_parse_float(str(t)), v))
    return tuple(out)


def _parse_direction(text: str) -> int:
    return {"up": 1, "down": -1, "": 0}[text]


def decode_state(labels: Mapping[str, str] | None, prefix: str) -> DecodedState:
    """The state kept in `labels`; anything unreadable is dropped and named in `problems`."""
    labels = labels or {}
    problems: list[str] = []
    fields: dict[str, object] = {}
    parsers = {
        "last-scale-time": ("last_scale_time", _parse_float),
        "last-scale-direction": ("last_scale_direction", _parse_direction),
        "last-replicas": ("last_written", int),
        "recommendations": ("recommendations", lambda s: _parse_pairs(s, signed=False)),
        "events": ("events", lambda s: _parse_pairs(s, signed=True)),
        "manual-time": ("manual_time", _parse_float),
        "manual-direction": ("manual_direction", _parse_direction),
        "pause-applied": ("pause_applied", int),
    }
    for key, (name, parse) in parsers.items():
        raw = labels.get(prefix + key)
        if raw is None or (raw == "" and name not in ("last_scale_direction",
                                                       "manual_direction")):
            continue
        try:
            fields[name] = parse(raw)  # type: ignore[operator]
        except (ValueError, KeyError, TypeError, RecursionError):
            problems.append(f"{prefix}{key}={raw[:60]!r} is unreadable; ignored")
    for name, key in (("last_written", "last-replicas"), ("pause_applied", "pause-applied")):
        if isinstance(fields.get(name), int) and fields[name] < 0:  # type: ignore[operator]
            problems.append(f"{prefix}{key} is negative; ignored")
            del fields[name]
    pause = read_pause(labels, prefix)
    return DecodedState(TargetState(**fields), pause.paused, tuple(problems),  # type: ignore[arg-type]
                        pause)


def pending_replicas(labels: Mapping[str, str] | None, prefix: str) -> int | None:
    """The count recorded before a two-write scale (`pending-replicas`), if readable."""
    raw = (labels or {}).get(prefix + PENDING, "").strip()
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def with_pending(state: TargetState, pending: int | None, current: int) -> TargetState:
    """The state of a target whose last scale of ours may have been half written.

    `pending` is the count recorded before the scale. When the spec holds exactly that count
    and the state annotations do not (the scale landed, its state write did not), the count
    is ours: it becomes the last one written, so it never reads as an operator's scale. A
    pending count the spec does not hold (the scale itself failed, or an operator changed
    it since) says nothing: the state read decides, as without it.
    """
    if pending is None or pending != current or state.last_written == current:
        return state
    return replace(state, last_written=pending)


def _union(a: tuple[tuple[float, int], ...],
           b: tuple[tuple[float, int], ...]) -> tuple[tuple[float, int], ...]:
    return tuple(sorted(set(a) | set(b)))


def remembered_for(in_memory: TargetState | None, remembered_uid: str,
                   uid: str) -> TargetState | None:
    """What this process remembers, if it is about the object just read.

    A workload deleted and recreated under the same name is another object (a new Swarm
    service ID, a new Kubernetes uid): nothing remembered of the old one may be applied to
    it (its last scale would start a cooldown, its last count would make the new one's size
    look like an operator's scale), so it is adopted as it is. An unknown uid changes nothing.
    """
    if remembered_uid and uid and remembered_uid != uid:
        return None
    return in_memory


def first_sight(on_target: TargetState, now: float, current: int) -> TargetState:
    """What a process remembers of a target it sees for the first time (after a start, a
    restart, a failover, or the object's re-creation): the target's own state, with (now,
    current) added to its stabilization history, as the HPA seeds it. Recommendations are
    stored on the target only with a scale, so without this a restart would forget the ones
    made since and could scale down early; with it a restart may delay a scale-down by one
    window, never shorten it. Nothing is written for this."""
    return replace(on_target, recommendations=(*on_target.recommendations, (now, current)))


def merge_states(on_target: TargetState, in_memory: TargetState | None) -> TargetState:
    """Combine what the target says with what this process remembers.

    The target is the truth for writes (another daemon may have scaled it after a
    failover): its last scale wins when it is newer. Recommendations and events are the
    union of both, so a restart keeps stabilization and a failover keeps what either saw.
    """
    if in_memory is None:
        return on_target
    # Ties go to memory: it also knows what was adopted without a write.
    newer = in_memory
    if (on_target.last_scale_time or 0.0) > (in_memory.last_scale_time or 0.0):
        newer = on_target
    manual = in_memory if in_memory.manual_time is not None else on_target
    # A pause at a count applied by either side stays applied: never a second write to it.
    applied = (in_memory.pause_applied if in_memory.pause_applied is not None
               else on_target.pause_applied)
    return TargetState(
        last_scale_time=newer.last_scale_time,
        last_scale_direction=newer.last_scale_direction,
        last_written=newer.last_written,
        recommendations=_union(on_target.recommendations, in_memory.recommendations),
        events=_union(on_target.events, in_memory.events),
        manual_time=manual.manual_time,
        manual_direction=manual.manual_direction,
        pause_applied=applied,
        predicted=in_memory.predicted,  # never on the target: memory only
    )
