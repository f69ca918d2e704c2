"""`schedule`: at least N instances during cron windows, as KEDA's cron scaler does.

Mail load is scheduled (a digest at 07:55 on weekdays, a campaign on Mondays): a window asks
for at least `replicas` from each start for `duration`; outside every window it has no
opinion, so it never holds the size up and never blocks a scale-down.

The cron arithmetic is APScheduler 3's `CronTrigger` (already a dependency), never a parser of
our own. `apscheduler.triggers.cron` is plain date arithmetic, the one library a policy may
use (tests/unit/test_purity.py names it): it starts no scheduler or thread and does no I/O
given a time zone, and it is imported on first use, so `import policies` loads none of it.
Two of its defaults differ from crontab and are handled here: it numbers weekdays from
0 = Monday where crontab uses 0 (and 7) = Sunday (`crontab_weekdays` converts), and it falls
back to the host's time zone (every trigger here gets the window's own zone, UTC by default).

The policy never sees the clock: "now" is the newest sample's own timestamp. Its query only
has to return a fresh sample (default `vector(1)`); in `simulate` any plant signal does.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autoscaler.model import PolicyContext, Recommendation, Signal
from autoscaler.units import Duration
from policies.base import PlantSignal, Policy

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

# Crontab's day-of-week numbers (0 and 7 are Sunday) as the names APScheduler reads.
CRON_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
# One part of a numeric day-of-week list: `*`, `N`, `N-M`, each with an optional `/step`.
_NUMERIC_PART = re.compile(r"(?:(?P<all>\*)|(?P<first>\d+)(?:-(?P<last>\d+))?)(?:/(?P<step>\d+))?")


def _numbers(lo: int, hi: int) -> str:
    values = [str(n) for n in range(lo, hi + 1)] + [f"0{n}" for n in range(lo, min(hi, 9) + 1)]
    return "|".join(sorted(values, key=len, reverse=True))


def _cron_field(lo: int, hi: int, names: tuple[str, ...] = ()) -> str:
    value = "|".join([_numbers(lo, hi), *names])
    part = rf"(?:\*|(?:{value})(?:-(?:{value}))?)(?:/[1-9][0-9]?)?"
    return rf"{part}(?:,{part})*"


# The crontab syntax and each field's bounds, as ONE pattern: the validator matches it and the
# config's JSON Schema carries it. What a pattern cannot say (a range's start after its end, a
# step longer than the field's range) is this policy's cross-field rule.
CRON_FIELDS = (
    ("minute", _cron_field(0, 59)),
    ("hour", _cron_field(0, 23)),
    ("day", _cron_field(1, 31)),
    ("month", _cron_field(1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                                   "sep", "oct", "nov", "dec"))),
    ("day of week", _cron_field(0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))),
)
CRON_PATTERN = "^[ \t]*" + "[ \t]+".join(f"(?:{f})" for _, f in CRON_FIELDS) + "[ \t]*$"
# IANA zones known here, as the schema's enum and the validator's set.
TIME_ZONES = tuple(sorted(available_timezones()))


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field in APScheduler's spelling.

    Numbers are crontab's (0 or 7 = Sunday, 1 = Monday ... 6 = Saturday) and become names,
    which both read the same way; names (`mon-fri`) pass through. `*/2` is crontab's Sunday,
    Tuesday, Thursday, Saturday. Raises ValueError on a number outside 0-7.
    """
    out: list[str] = []
    for part in field.lower().split(","):
        match = _NUMERIC_PART.fullmatch(part)
        if match is None:
            out.append(part)  # a name, a name range, or garbage APScheduler will reject
            continue
        if match["all"] and not match["step"]:
            out.append("*")
            continue
        first = 0 if match["all"] else int(match["first"])
        last = 6 if match["all"] else int(match["last"] or (7 if match["step"] else first))
        step = int(match["step"] or 1)
        if not 0 <= first <= 7 or not 0 <= last <= 7:
            raise ValueError(f"day of week {part!r}: crontab numbers days 0-7 (0 and 7: Sunday)")
        if first > last or step < 1:
            raise ValueError(f"day of week {part!r}: an empty range")
        out.extend(CRON_WEEKDAY_NAMES[n] for n in range(first, last + 1, step))
    return ",".join(dict.fromkeys(out))


def cron_trigger(cron: str, timezone: ZoneInfo) -> CronTrigger:
    """APScheduler's trigger for a five-field crontab line, weekdays as crontab numbers them."""
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"{cron!r}: a cron line has 5 fields (minute hour day month weekday), "
                         f"not {len(fields)}")
    minute, hour, day, month, weekday = fields
    # Imported here, not with the module: `import policies` must load no library with
    # threads or sockets in it (apscheduler.util imports asyncio), and only this call needs it.
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                       day_of_week=crontab_weekdays(weekday), timezone=timezone)


@functools.lru_cache(maxsize=256)
def zoned_trigger(cron: str, timezone: str) -> CronTrigger:
    """The trigger of a validated window, built once per (line, zone)."""
    return cron_trigger(cron, ZoneInfo(timezone))


def window_start(trigger: CronTrigger, duration: float, at: float) -> datetime | None:
    """The earliest start of a window still open at epoch second `at` (a fire time in
    (at - duration, at]), or None. The arithmetic is on epoch seconds, so a 30m window that
    spans a DST change lasts 30 real minutes; the fire times are APScheduler's wall-clock
    ones: a start inside the hour the clocks skip does not happen that day, a start inside
    the hour they repeat happens twice."""
    # From epoch seconds, never `aware + timedelta`: that drops the fold of a time the
    # clocks show twice and lands an hour off.
    after = datetime.fromtimestamp(at - duration, UTC).astimezone(trigger.timezone)
    fire: datetime | None = trigger.get_next_fire_time(None, after)
    if fire is None or fire.timestamp() > at or fire.timestamp() <= at - duration:
        return None
    return fire


class ScheduleWindow(BaseModel):
    """One recurring window: from each time `cron` fires, for `duration`, at least `replicas`."""

    # strict numbers, no NaN/±Inf, as the Policy base (and the config schema) says
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    cron: str = Field(..., description="crontab line: minute hour day month weekday "
                                       "(weekday 0 or 7 = Sunday, 1-5 = Monday to Friday)",
                      json_schema_extra={"pattern": CRON_PATTERN})
    duration: Duration = Field(..., gt=0, description="how long each window lasts")
    replicas: int = Field(..., ge=0, le=2**31 - 1, description="the least count in the window")
    timezone: str = Field("UTC", description="IANA time zone the cron line is read in",
                          json_schema_extra={"enum": list(TIME_ZONES)})

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            if value not in TIME_ZONES:
                raise ZoneInfoNotFoundError(value)
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as "
                             "Europe/Berlin or UTC)") from exc
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        """The syntax and bounds of CRON_PATTERN; the rest is `cron_ranges`."""
        fields = value.split()
        if len(fields) != 5:
            raise ValueError(f"invalid cron line {value!r}: a cron line has 5 fields (minute "
                             f"hour day month weekday), not {len(fields)}")
        if re.fullmatch(CRON_PATTERN, value) is None:
            for (name, pattern), field in zip(CRON_FIELDS, fields, strict=True):
                if re.fullmatch(pattern, field) is None:
                    raise ValueError(f"invalid cron line {value!r}: {name} {field!r} is out of "
                                     "range or not crontab syntax")
            raise ValueError(f"invalid cron line {value!r}: separate the fields with spaces")
        return value

    def open_at(self, t: float) -> datetime | None:
        """When the window open at epoch second `t` started (in its zone), else None."""
        return window_start(zoned_trigger(self.cron, self.timezone), self.duration, t)

    def ends(self, start: datetime) -> datetime:
        """The end of the window that began at `start`, in its zone (elapsed time)."""
        return datetime.fromtimestamp(start.timestamp() + self.duration, start.tzinfo)


class SchedulePolicy(Policy):
    """At least `replicas` while a window is open; no opinion outside every window."""

    type: Literal["schedule"] = "schedule"
    query: str = Field("vector(1)", min_length=1,
                       description="any query with a fresh sample: its timestamp is 'now'")
    simulate_as: PlantSignal | None = Field(
        "arrival_rate", description="in `simulate` only the signal's timestamps count; the "
                                    "trace's t = 0 is 1970-01-01 00:00 UTC (a Thursday)")
    windows: list[ScheduleWindow] = Field(..., min_length=1)

    def cross_field_errors(self) -> list[tuple[str, str]]:
        """What the cron pattern cannot say: a range's start after its end (`5-3`), a step
        longer than the field's range; APScheduler's trigger decides."""
        errors = []
        for i, window in enumerate(self.windows):
            try:
                cron_trigger(window.cron, ZoneInfo(window.timezone))
            except ValueError as exc:
                errors.append((f"windows[{i}].cron", f"invalid cron line {window.cron!r}: {exc}"))
        return errors

    def recommend(self, signal: Signal, ctx: PolicyContext) -> Recommendation:
        if not signal.samples:
            return Recommendation(None, "no sample")
        now = signal.samples[-1].t
        best: tuple[int, str] | None = None
        for w in self.windows:
            start = w.open_at(now)
            if start is None:
                continue
            why = (f"window {w.cron!r} {w.timezone} open since {start:%Y-%m-%d %H:%M %Z} "
                   f"(until {w.ends(start):%H:%M %Z}): at least {w.replicas}")
            if best is None or w.replicas > best[0]:
                best = (w.replicas, why)
        if best is None:
            return Recommendation(None, "no window open: no opinion")
        return Recommendation(best[0], best[1])


POLICY = SchedulePolicy
