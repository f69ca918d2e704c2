"""Write the bundled demand traces into `autoscaler/data/traces/`.

The traces are synthetic but shaped like a mid-size provider's mail (peaks of roughly
30,000-60,000 emails/hour, i.e. 5-10 instances at 10,000 emails/hour each), so `simulate`
exercises the policies on day cycles, bursts, ramps and noise without shipping anyone's logs.
Deterministic: every trace draws from its own `random.Random` seeded from SEED and its name, so
rerunning reproduces the committed files byte for byte and editing one trace leaves the others
alone. Stdlib only.

    python scripts/make_traces.py
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path

SEED = 20240611
OUT_DIR = Path(__file__).resolve().parents[1] / "autoscaler" / "data" / "traces"

HOUR = 3600
DAY = 24 * HOUR

Row = tuple[int, float]


def gauss_bump(x: float, center: float, width: float) -> float:
    return math.exp(-((x - center) ** 2) / (2 * width**2))


class AR1:
    """Slowly wandering multiplicative noise: real load drifts, it does not jitter per sample."""

    def __init__(self, rng: random.Random, phi: float, sigma: float) -> None:
        self.rng, self.phi, self.sigma = rng, phi, sigma
        self.value = 0.0

    def step(self) -> float:
        self.value = self.phi * self.value + self.rng.gauss(0.0, self.sigma)
        return self.value


def diurnal_week(rng: random.Random) -> Iterator[Row]:
    """Mon 00:00 to Sun 23:59 at 60 s: weekday double peak, quiet nights, weekends at ~45 %."""
    peak = 50_000.0
    night = 0.12  # automated mail, notifications, other time zones
    drift = AR1(rng, 0.95, 0.008)
    day_scale = (1.05, 1.0, 1.0, 0.98, 0.92)  # Monday backlog, Friday wind-down
    for t in range(0, 7 * DAY, 60):
        day, hour = divmod(t / HOUR, 24)
        # Morning peak around 10:00, lunch dip, second peak around 14:30, evening tail.
        work = (
            0.88 * gauss_bump(hour, 10.0, 1.5)
            + 0.78 * gauss_bump(hour, 14.5, 1.7)
            + 0.18 * gauss_bump(hour, 20.0, 2.0)
        )
        if day < 5:
            level = night + work * day_scale[int(day)]
        else:
            # Weekends: a broad, late-morning hump at ~45 % of a weekday; nights stay as they are.
            level = max(night, 0.45 * (night + 0.9 * gauss_bump(hour, 12.0, 3.0)))
        noise = 1.0 + drift.step() + rng.gauss(0.0, 0.02)
        yield t, peak * level * noise


def newsletter_burst(rng: random.Random) -> Iterator[Row]:
    """6 h at 15 s: a 15,000/h base and two campaigns that jump to ~4-5x within a minute."""
    base = 15_000.0
    # (start, extra demand as a multiple of base, decay time constant): the first campaign
    # fades over ~60 min, the second, smaller list over ~30 min.
    campaigns = ((1.5 * HOUR, 3.5, 15 * 60.0), (4.0 * HOUR, 3.0, 9 * 60.0))
    rise = 45.0  # the sender's MTA opens its connections over the first minute
    drift = AR1(rng, 0.98, 0.005)
    for t in range(0, 6 * HOUR, 15):
        extra = 0.0
        for start, height, tau in campaigns:
            since = t - start
            if 0 <= since < rise:
                extra += height * (since + 15) / (rise + 15)
            elif since >= rise:
                extra += height * math.exp(-(since - rise) / tau)
        noise = 1.0 + drift.step() + rng.gauss(0.0, 0.03)
        yield t, base * (1.0 + extra) * noise


def slow_ramp(rng: random.Random) -> Iterator[Row]:
    """12 h at 60 s: 5,000/h rising linearly to 50,000/h over 8 h, then flat."""
    low, high, ramp = 5_000.0, 50_000.0, 8 * HOUR
    drift = AR1(rng, 0.9, 0.01)
    for t in range(0, 12 * HOUR, 60):
        level = low + (high - low) * min(t / ramp, 1.0)
        yield t, level * (1.0 + drift.step() + rng.gauss(0.0, 0.015))


def noisy_flat(rng: random.Random) -> Iterator[Row]:
    """6 h at 15 s: 25,000/h with +/-20-30 % noise and short spikes, no trend."""
    base = 25_000.0
    drift = AR1(rng, 0.9, 0.06)  # stationary sd ~14 %
    spike_left, spike_height = 0, 1.0
    for t in range(0, 6 * HOUR, 15):
        if spike_left == 0 and rng.random() < 1 / 60:  # about one spike every 15 minutes
            spike_left, spike_height = rng.randint(1, 4), rng.uniform(1.5, 2.1)
        spike = spike_height if spike_left else 1.0
        spike_left = max(spike_left - 1, 0)
        noise = max(0.5, 1.0 + drift.step() + rng.gauss(0.0, 0.10))
        yield t, base * noise * spike


def daily_digest(rng: random.Random) -> Iterator[Row]:
    """7 days at 60 s: a quiet base and a digest sent at 08:00 give or take a few minutes."""
    base = 8_000.0
    drift = AR1(rng, 0.95, 0.01)
    offsets = [rng.uniform(-240.0, 240.0) for _ in range(7)]  # the sender's cron jitter
    for t in range(0, 7 * DAY, 60):
        day, into = divmod(t, DAY)
        since = into - (8 * HOUR + offsets[day])
        extra = 6.0 * math.exp(-since / (12 * 60.0)) if since >= 0 else 0.0
        yield t, base * (1.0 + extra) * (1.0 + drift.step() + rng.gauss(0.0, 0.02))


def hourly_job(rng: random.Random) -> Iterator[Row]:
    """2 days at 30 s: a notification run at 20 past every hour, on the dot, for 10 minutes."""
    base = 12_000.0
    drift = AR1(rng, 0.95, 0.01)
    for t in range(0, 2 * DAY, 30):
        job = 3.0 if 20 * 60 <= t % HOUR < 30 * 60 else 0.0
        yield t, base * (1.0 + job) * (1.0 + drift.step() + rng.gauss(0.0, 0.02))


def weekly_campaign(rng: random.Random) -> Iterator[Row]:
    """14 days at 60 s from Monday 00:00: a day cycle and a campaign every Monday at 10:00."""
    drift = AR1(rng, 0.95, 0.01)
    for t in range(0, 14 * DAY, 60):
        day, hour = divmod(t / HOUR, 24)
        level = 6_000.0 + 10_000.0 * gauss_bump(hour, 13.0, 3.0)
        since = t - (int(day) * DAY + 10 * HOUR)
        if int(day) % 7 == 0 and since >= 0:
            level += 45_000.0 * math.exp(-since / (25 * 60.0))
        yield t, level * (1.0 + drift.step() + rng.gauss(0.0, 0.02))


TRACES: dict[str, tuple[Callable[[random.Random], Iterator[Row]], str]] = {
    "diurnal-week": (
        diurnal_week,
        "One week of a mid-size provider, Monday 00:00 to Sunday 23:59, 60 s steps.\n"
        "Weekdays: morning peak ~10:00 and a second ~14:30 (~50,000/h), lunch dip, nights at\n"
        "~12 % of peak. Weekends: one broad hump at ~45 % of a weekday.\n"
        "Noise: slow AR(1) drift (~2-3 %) times ~2 % white noise.",
    ),
    "newsletter-burst": (
        newsletter_burst,
        "Six hours at 15 s steps: a steady base of ~15,000/h and two newsletter campaigns\n"
        "(at 1h30 and 4h00) that reach ~4.5x and ~4x base within a minute, then decay\n"
        "exponentially (time constants 15 min and 9 min). ~3 % noise.",
    ),
    "slow-ramp": (
        slow_ramp,
        "Twelve hours at 60 s steps: a linear ramp from ~5,000/h to ~50,000/h over the first\n"
        "8 hours (e.g. a migration onboarding users), then flat. ~2 % noise.",
    ),
    "noisy-flat": (
        noisy_flat,
        "Six hours at 15 s steps: ~25,000/h with no trend but heavy noise (AR(1) drift plus\n"
        "white noise, roughly +/-20-30 %) and short spikes of 1.5-2.1x lasting 15-60 s.",
    ),
    "daily-digest": (
        daily_digest,
        "Seven days at 60 s steps: ~8,000/h and a daily digest at 08:00 give or take up to\n"
        "4 minutes (a different offset each day) that jumps to ~7x and decays over ~12 min.",
    ),
    "hourly-job": (
        hourly_job,
        "Two days at 30 s steps: ~12,000/h and a notification job at 20 past every hour,\n"
        "exactly on schedule, that quadruples the load for 10 minutes.",
    ),
    "weekly-campaign": (
        weekly_campaign,
        "Fourteen days at 60 s steps from Monday 00:00: a day cycle (6,000-16,000/h) and a\n"
        "campaign every Monday at 10:00 adding ~45,000/h that decays over ~25 min.",
    ),
}


def write_trace(name: str) -> Path:
    make, description = TRACES[name]
    rng = random.Random(f"{SEED}:{name}")  # str seeds hash with SHA-512: stable everywhere
    lines = [f"# {name}: synthetic mail demand for `autoscaler simulate`."]
    lines += [f"# {line}" for line in description.splitlines()]
    lines += [
        "# Columns: t = seconds from start, demand = emails/hour arriving (rounded).",
        f"# Generated by scripts/make_traces.py (seed {SEED}); edit the script, not this file.",
        "t,demand",
    ]
    lines += [f"{t},{max(round(demand), 0)}" for t, demand in make(rng)]
    path = OUT_DIR / f"{name}.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return path


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in TRACES:
        path = write_trace(name)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
