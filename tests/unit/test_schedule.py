"""`schedule`: crontab weekdays, windows in time zones, DST changes, and bad input as config
errors that name key and line. Times are written as wall-clock times in a zone and turned into
the sample timestamp the policy reads as "now"."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from autoscaler.config import ConfigError, load_config
from autoscaler.model import PolicyContext, Sample, Signal
from policies.schedule import SchedulePolicy, crontab_weekdays


def at(wall: str, zone: str = "UTC") -> float:
    """Epoch seconds of a wall-clock time in `zone` (the first one when it is shown twice)."""
    return datetime.fromisoformat(wall).replace(tzinfo=ZoneInfo(zone)).timestamp()


def utc(moment: str) -> float:
    return datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()


def asked(policy: SchedulePolicy, t: float, current: int = 2) -> int | None:
    return policy.recommend(Signal.ok((Sample(t, 1.0),)), PolicyContext(current)).replicas


def one_window(cron: str, duration: str = "30m", replicas: int = 8,
               timezone: str = "UTC") -> SchedulePolicy:
    return SchedulePolicy.model_validate({"windows": [
        {"cron": cron, "duration": duration, "replicas": replicas, "timezone": timezone}]})


@pytest.mark.parametrize(("crontab", "apscheduler"), [
    ("1-5", "mon,tue,wed,thu,fri"),
    ("0", "sun"),
    ("7", "sun"),
    ("0,6", "sun,sat"),
    ("6-7", "sat,sun"),
    ("*", "*"),
    ("*/2", "sun,tue,thu,sat"),      # crontab's 0, 2, 4, 6 (APScheduler's */2 is mon, wed...)
    ("1-5/2", "mon,wed,fri"),
    ("mon-fri", "mon-fri"),          # names read the same in both
    ("MON,wed", "mon,wed"),
])
def test_crontab_weekday_numbers_become_apschedulers_names(crontab: str,
                                                           apscheduler: str) -> None:
    assert crontab_weekdays(crontab) == apscheduler


@pytest.mark.parametrize("field", ["8", "3-9", "5-1"])
def test_weekday_numbers_outside_crontabs_range_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match="day of week"):
        crontab_weekdays(field)


# 2026-12-07 is a Monday; the week runs to Sunday 2026-12-13.
WEEK = [("2026-12-07", "Mon"), ("2026-12-08", "Tue"), ("2026-12-09", "Wed"),
        ("2026-12-10", "Thu"), ("2026-12-11", "Fri"), ("2026-12-12", "Sat"),
        ("2026-12-13", "Sun")]


@pytest.mark.parametrize(("cron", "days_open"), [
    ("55 7 * * 1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
    ("55 7 * * 0", {"Sun"}),
    ("55 7 * * 7", {"Sun"}),
    ("55 7 * * 6,0", {"Sat", "Sun"}),
    ("55 7 * * mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
    ("55 7 * * *", {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}),
    ("55 7 11 12 *", {"Fri"}),
])
def test_weekdays_are_numbered_as_crontab_numbers_them(cron: str, days_open: set[str]) -> None:
    policy = one_window(cron, timezone="Europe/Berlin")
    opened = {name for day, name in WEEK if asked(policy, at(f"{day} 08:00", "Europe/Berlin"))}
    assert opened == days_open


@pytest.mark.parametrize(("wall", "zone", "replicas"), [
    ("2026-12-07 07:54:59", "Europe/Berlin", None),   # a second before the window
    ("2026-12-07 07:55:00", "Europe/Berlin", 8),      # it opens on the fire time
    ("2026-12-07 08:24:59", "Europe/Berlin", 8),
    ("2026-12-07 08:25:00", "Europe/Berlin", None),   # duration 30m: closed at 08:25
    ("2026-12-07 07:55:00", "UTC", None),             # 07:55 UTC is 08:55 in Berlin
    ("2026-12-07 06:55:00", "UTC", 8),
    ("2026-12-07 01:55:00", "America/New_York", 8),   # 06:55 UTC, UTC-5 in December
])
def test_the_window_is_read_in_its_own_time_zone(wall: str, zone: str,
                                                 replicas: int | None) -> None:
    policy = one_window("55 7 * * 1-5", timezone="Europe/Berlin")
    assert asked(policy, at(wall, zone)) == replicas


def test_without_a_time_zone_the_window_is_utc_whatever_the_hosts() -> None:
    policy = SchedulePolicy.model_validate(
        {"windows": [{"cron": "0 8 * * *", "duration": "1h", "replicas": 4}]})
    assert asked(policy, utc("2026-07-01T08:30")) == 4
    assert asked(policy, utc("2026-07-01T07:30")) is None


# Europe/Berlin: clocks go forward 2026-03-29 02:00 CET -> 03:00 CEST, back 2026-10-25
# 03:00 CEST -> 02:00 CET.
@pytest.mark.parametrize(("cron", "duration", "moment", "replicas"), [
    # 08:00 local is 07:00 UTC in winter, 06:00 UTC in summer: the window follows the clock.
    ("0 8 * * *", "1h", "2026-03-28T07:30", 5),
    ("0 8 * * *", "1h", "2026-03-28T06:30", None),
    ("0 8 * * *", "1h", "2026-03-29T06:30", 5),
    ("0 8 * * *", "1h", "2026-03-29T07:30", None),
    ("0 8 * * *", "1h", "2026-10-25T07:30", 5),
    ("0 8 * * *", "1h", "2026-10-24T06:30", 5),
    # Durations are elapsed time: 01:30 CET + 1h spans the jump and ends 03:30 CEST.
    ("30 1 * * *", "1h", "2026-03-29T01:15", 5),      # 03:15 CEST
    ("30 1 * * *", "1h", "2026-03-29T01:31", None),   # 03:31 CEST
    # 02:30 does not exist on 2026-03-29: no window that day (APScheduler's rule) ...
    ("30 2 * * *", "10m", "2026-03-29T00:35", None),
    ("30 2 * * *", "10m", "2026-03-29T01:05", None),
    ("30 2 * * *", "10m", "2026-03-28T01:35", 5),      # ... the day before it does
    # ... and 02:30 is shown twice on 2026-10-25: the window opens at each.
    ("30 2 * * *", "10m", "2026-10-25T00:35", 5),      # 02:35 CEST
    ("30 2 * * *", "10m", "2026-10-25T00:45", None),
    ("30 2 * * *", "10m", "2026-10-25T01:35", 5),      # 02:35 CET
])
def test_windows_across_dst_changes(cron: str, duration: str, moment: str,
                                    replicas: int | None) -> None:
    policy = one_window(cron, duration, 5, "Europe/Berlin")
    assert asked(policy, utc(moment)) == replicas


def test_overlapping_windows_ask_for_the_largest_count() -> None:
    policy = SchedulePolicy.model_validate({"windows": [
        {"cron": "0 8 * * *", "duration": "2h", "replicas": 4},
        {"cron": "30 8 * * *", "duration": "30m", "replicas": 9},
    ]})
    assert [asked(policy, utc(f"2026-07-01T{hm}")) for hm in
            ("08:10", "08:40", "09:10", "10:10")] == [4, 9, 4, None]


def test_the_reason_names_the_window_and_its_local_times() -> None:
    policy = one_window("55 7 * * 1-5", timezone="Europe/Berlin")
    rec = policy.recommend(Signal.ok((Sample(at("2026-12-07 08:00", "Europe/Berlin"), 1.0),)),
                           PolicyContext(2))
    assert rec.reason == ("window '55 7 * * 1-5' Europe/Berlin open since 2026-12-07 07:55 CET "
                          "(until 08:25 CET): at least 8")


def test_outside_every_window_it_has_no_opinion_whatever_the_size() -> None:
    policy = one_window("0 8 * * *")
    assert asked(policy, utc("2026-07-01T12:00"), current=20) is None


def test_a_long_window_with_a_frequent_cron_is_open_throughout() -> None:
    policy = one_window("*/5 * * * *", duration="7d", replicas=3)
    assert asked(policy, utc("2026-07-01T12:02:30")) == 3


BAD_SCHEDULE = """\
targets:
  - name: smtp
    backend: swarm
    service: stalwart_smtp
    max_replicas: 10
    policies:
      - type: schedule
        windows:
          - {cron: "55 7 * * 1-5", duration: 30m, replicas: 8, timezone: Europe/Berlin}
          - cron: "61 7 * * *"
            duration: 30m
            replicas: 8
          - cron: "0 8 * * 9"
            duration: 30m
            replicas: 8
          - cron: "0 8 * *"
            duration: 30m
            replicas: 8
          - cron: "0 8 * * *"
            duration: half an hour
            replicas: 8
          - cron: "0 8 * * *"
            duration: 30m
            replicas: 8
            timezone: Europe/Atlantis
"""


@pytest.mark.parametrize(("key", "needle", "fragment"), [
    ("targets[0].policies[0].windows[1].cron", '"61 7 * * *"', "invalid cron line"),
    ("targets[0].policies[0].windows[2].cron", '"0 8 * * 9"', "day of week"),
    ("targets[0].policies[0].windows[3].cron", '"0 8 * *"', "5 fields"),
    ("targets[0].policies[0].windows[4].duration", "half an hour", "invalid duration"),
    ("targets[0].policies[0].windows[5].timezone", "Atlantis", "unknown time zone"),
])
def test_invalid_windows_are_config_errors_naming_key_and_line(
    tmp_path: Path, key: str, needle: str, fragment: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BAD_SCHEDULE, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    found = [i for i in info.value.issues if i.key == key]
    assert found, "\n".join(map(str, info.value.issues))
    [line] = [n for n, text in enumerate(BAD_SCHEDULE.splitlines(), 1) if needle in text]
    assert found[0].line == line
    assert fragment in found[0].message
    assert len(info.value.issues) == 5, "the valid first window is no error"
