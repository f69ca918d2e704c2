"""`seasonal`: be ready before a recurring burst, learned from the query's own history.

Mail load is scheduled (a digest at 08:00, a job every hour, a weekly campaign); a reactive
policy pays the start-up delay plus the signal's lag at every such burst. This policy reads
the query's past (a `history` signal: days at a 60 s step, as compact arrays, extended each
tick with only the new points) and, for each candidate period (1h, 1d, 1w), forecasts the
value at now + `lead` from the same phase of the recent periods.

How, in one pass over the points and a little work per tick:
- Points fall into bins of `phase_window` (default 5m), each keeping its highest value: a
  bin is the jitter tolerated, and the forecast reads the bin of the target time and its
  two neighbours in each past period (a burst a few minutes early or late is still seen).
- The forecast for a period is the MEDIAN over the recent periods of those maxima: a missing
  day (a holiday, a gap in the data), a counter reset's dip or a one-off spike moves a median
  of several periods very little. Fewer than `min_periods` (default 1: a pattern seen once
  can be tried; the score decides) periods with data: no forecast.
- It scores itself, incrementally: whenever a bin completes, each period's forecast for that
  bin (made only from older periods) is compared with what came. A bin is a burst when its
  value is at least `burst_ratio` x the level (the median bin of the last day) and half an
  instance above it. Per period, with a memory as long as `history` (decayed): hits (a
  burst bin forecast at >= 80 % of its value), misses (a burst bin forecast lower) and
  false alarms (a burst forecast where none came, nor in a neighbouring bin).
  score = hits / (hits + misses + false alarms).
- THE BAR: the best-scoring period acts only when its score is at least `min_score`
  (default 0.6: most burst bins covered, few false alarms) and it saw at least
  `min_burst_bins` burst bins (decayed counts, rounded); and only when its forecast at
  now + lead is itself a burst, over the level AND over the value now (a jump the reactive
  policies cannot follow in time; a smooth day curve never is one, and during a burst they
  already see it). Otherwise: no opinion. Noise and trends are not recurring bursts: on
  them it never acts.
- A FIRST REPEAT need not wait for the bar: a period whose record is unblemished (it made
  forecasts, and since its history began never missed a burst nor forecast one that did not
  come) may act on a burst it has seen once, if that burst lasted at least `phase_window`
  (a spike waits for the bar). Its jitter is unknown, so it raises up to `phase_window`
  before the onset it saw. It answers beside the best proven period only where that one
  foresees no burst (a weekly campaign is invisible to a good daily period). A one-off burst
  after a period's history began is a miss in its record, so that period never acts on it;
  the cost: a pattern that stops may be forecast once more by a longer period whose history
  began after it (one false alarm, which then blemishes it).
- TIMING, from the points themselves (the bins find a burst; a bin is 5 minutes wide): it
  raises only once some recent past period was in a burst at the phase of now + lead
  (within a step): as late as the earliest onset the history shows allows, not a bin or
  two early. And it says when the burst is over (`Recommendation.until`: the first later
  phase at which no recent period was in one), so the engine lets the burst's asks stop
  holding the scale-down window once it has passed (`autoscaler.decide.forget_predicted`):
  after a predicted burst the count comes down promptly, not a window later.
- It sizes like `capacity`: ceil(forecast / per_instance x headroom), and only ever raises
  (max-wins with the reactive policies: it never pushes below what they ask).

It never sees the clock: "now" is the newest live sample's own timestamp, and only points up
to it are read (replay never shows it the future). While its history is still loading, has
failed or is cut short, the signal still carries the live sample and the policy says "no
opinion" with an `ok` state: a failing history read never blocks a scale-down.
`mode: observe` computes and records the forecast in the reason and counts for nothing.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Literal

from pydantic import Field, PrivateAttr

from autoscaler.model import History, PolicyContext, Recommendation, Signal
from autoscaler.units import Duration, PositiveDuration
from policies.base import Policy, ceil_exact

HOUR, DAY, WEEK = 3600.0, 86400.0, 604800.0
MAX_PERIODS = 14
COVERED = 0.8  # a burst bin counts as covered when forecast at 80 % of its value or more
TIMING_SLACK = 60.0  # s either side of a phase when timing a burst from the points


def period_name(seconds: float) -> str:
    for size, unit in ((WEEK, "w"), (DAY, "d"), (HOUR, "h"), (60.0, "m")):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def phase_forecast(bins: Mapping[int, float], target: int, period_bins: int,
                   max_periods: int, min_periods: int) -> tuple[float, int] | None:
    """(median over the past periods of the highest of bins target-1..target+1 one period,
    two periods... back, periods that had data); None with fewer than `min_periods`."""
    found: list[float] = []
    for k in range(1, max_periods + 1):
        at = target - k * period_bins
        near = [bins[i] for i in (at - 1, at, at + 1) if i in bins]
        if near:
            found.append(max(near))
    if len(found) < min_periods:
        return None
    return median(found), len(found)


def is_burst(value: float, level: float, ratio: float, per_instance: float) -> bool:
    """A value well above the usual level: `ratio` times it and half an instance over it."""
    return value >= ratio * level and value - level >= per_instance / 2


@dataclass
class PeriodScore:
    """Decayed counts of one period's self-evaluation, and how many bins it was scored on."""

    hits: float = 0.0
    misses: float = 0.0
    false_alarms: float = 0.0
    bins: int = 0

    def add(self, decay: float, hit: bool, miss: bool, false_alarm: bool) -> None:
        self.hits = self.hits * decay + hit
        self.misses = self.misses * decay + miss
        self.false_alarms = self.false_alarms * decay + false_alarm
        self.bins += 1

    @property
    def unblemished(self) -> bool:
        """Forecasts made, and since its history began never a burst it did not forecast nor
        one it forecast that did not come (a decayed count is exactly 0 only if it never
        counted anything)."""
        return self.bins > 0 and self.misses == 0 and self.false_alarms == 0

    @property
    def bursts(self) -> float:
        return self.hits + self.misses

    @property
    def score(self) -> float:
        total = self.hits + self.misses + self.false_alarms
        return self.hits / total if total > 0 else 0.0


@dataclass
class Learned:
    """What the policy has learned from one history so far (memoized between ticks)."""

    source: int = 0  # id() of the History's arrays: another series starts afresh
    read: int = 0  # points read
    bins: dict[int, float] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)  # completed bins with data, in order
    open: int | None = None  # the bin being filled
    scores: dict[float, PeriodScore] = field(default_factory=dict)
    level: float = 0.0
    # What ticks computed from the bins, kept until the next bin completes (they change
    # only then, so `memo_at` is len(done) when these were made): the periods that may act,
    # and the forecasts of (period, target bin).
    memo_at: int = -1
    acting: list[Acting] = field(default_factory=list)
    forecasts: dict[tuple[float, int], tuple[float, int] | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Acting:
    """A period that may act: `proven` passed the bar (the best such); the others are
    unblemished, so may act on a burst's first repeat (see `SeasonalPolicy.period_answer`)."""

    period: float
    score: PeriodScore
    proven: bool


class SeasonalPolicy(Policy):
    """At least the instances a recurring burst will need `lead` from now, when history
    shows one reliably; no opinion otherwise."""

    type: Literal["seasonal"] = "seasonal"
    per_instance: float = Field(10000.0, gt=0, description="emails/hour one instance handles")
    headroom: float = Field(1.1, ge=1.0, description="safety factor over the forecast")
    periods: list[Duration] = Field(
        default_factory=lambda: [HOUR, DAY, WEEK], min_length=1,
        description="candidate periods; the best-scoring one that passes the bar acts")
    history: PositiveDuration | None = Field(
        None, description="how far back to learn from; default 8d, 15d when a period "
                                "is a week or longer")
    lead: Duration = Field(90.0, ge=0, description="how far ahead to be ready: start-up delay "
                                                   "+ signal lag (the preset's lead)")
    phase_window: Duration = Field(300.0, gt=0, description="jitter tolerated around a phase")
    mode: Literal["active", "observe"] = Field(
        "active", description="observe: forecast and record only, counts for nothing")
    min_periods: int = Field(1, ge=1, le=2**31 - 1,
                             description="past periods with data needed to forecast")
    min_score: float = Field(0.6, gt=0, le=1, description="the bar a period's score must pass")
    min_burst_bins: int = Field(3, ge=1, le=2**31 - 1,
                                description="burst bins a period must have seen")
    burst_ratio: float = Field(1.5, gt=1, description="a burst: this many times the level")

    _learned: Learned = PrivateAttr(default_factory=Learned)

    def cross_field_errors(self) -> list[tuple[str, str]]:
        """Each period against phase_window and lead: a rule of several keys, so the config
        schema does not carry it and check-config names it."""
        return [("periods", f"period {period_name(p)} must be over twice phase_window "
                            "and over lead")
                for p in self.periods if p < 2 * self.phase_window or p <= self.lead]

    def history_seconds(self) -> float:
        """How much history to read (the source's `history` request)."""
        if self.history is not None:
            return self.history
        return 15 * DAY if max(self.periods) >= WEEK else 8 * DAY

    def max_periods(self, period: float) -> int:
        """Past periods a forecast reads: those in `history`, the latest MAX_PERIODS at most
        (an hourly pattern has 192 hours in 8 days; the last 14 say as much, 14x cheaper)."""
        return max(1, min(MAX_PERIODS, int(self.history_seconds() // period)))

    # ------------------------------------------------------------------ learning

    def learn(self, history: History, now: float) -> Learned:
        """Read the points up to `now` not read yet; score each bin that completed."""
        st = self._learned
        if st.source != id(history.t) or st.read > len(history.t):
            st = self._learned = Learned(source=id(history.t))
        end = bisect_right(history.t, now, lo=st.read)
        width = self.phase_window
        for i in range(st.read, end):
            value = history.v[i]
            if not math.isfinite(value):
                continue
            b = math.floor(history.t[i] / width)
            if st.open is None or b > st.open:
                if st.open is not None:
                    self._complete(st, st.open)
                st.open = b
                st.bins[b] = max(value, 0.0)
            elif b == st.open:
                st.bins[b] = max(st.bins[b], value)
            # else: a late point for a bin already scored; left out
        st.read = end
        return st

    def _complete(self, st: Learned, b: int) -> None:
        """Bin `b` is over: update the level, and score every period's forecast of the bin
        before it (whose neighbours are both known now: a burst forecast one bin early or
        late is within the jitter tolerated, not a false alarm)."""
        st.done.append(b)
        per_day = max(1, round(DAY / self.phase_window))
        st.level = median([st.bins[i] for i in st.done[-per_day:]])
        c = b - 1
        if c not in st.bins:
            return
        actual = st.bins[c]
        burst = self._burst(actual, st.level)
        near_burst = burst or any(self._burst(st.bins[i], st.level)
                                  for i in (c - 1, b) if i in st.bins)
        decay = 1.0 - self.phase_window / self.history_seconds()
        for period in self.periods:
            pb = round(period / self.phase_window)
            got = phase_forecast(st.bins, c, pb, self.max_periods(period), self.min_periods)
            if got is None:
                continue
            f = got[0]
            st.scores.setdefault(period, PeriodScore()).add(
                decay, hit=burst and f >= COVERED * actual,
                miss=burst and f < COVERED * actual,
                false_alarm=self._burst(f, st.level) and not near_burst)

    def _burst(self, value: float, level: float) -> bool:
        return is_burst(value, level, self.burst_ratio, self.per_instance)

    def best_period(self, st: Learned) -> tuple[float, PeriodScore] | None:
        """The period with the highest score that passes the bar (shorter wins a tie)."""
        best: tuple[float, PeriodScore] | None = None
        for period in sorted(self.periods):
            s = st.scores.get(period)
            if s is None or round(s.bursts) < self.min_burst_bins or s.score < self.min_score:
                continue
            if best is None or s.score > best[1].score + 1e-9:
                best = (period, s)
        return best

    def explain_scores(self, st: Learned) -> str:
        return ", ".join(f"{period_name(p)} {st.scores[p].score:.2f}"
                         for p in sorted(self.periods) if p in st.scores) or "none yet"

    # ------------------------------------------------------------------ which periods act

    def acting_periods(self, st: Learned) -> list[Acting]:
        """The best period that passes the bar first, then every other unblemished one."""
        best = self.best_period(st)
        out = [] if best is None else [Acting(best[0], best[1], proven=True)]
        for period in sorted(self.periods):
            score = st.scores.get(period)
            if score is not None and score.unblemished and (best is None or period != best[0]):
                out.append(Acting(period, score, proven=False))
        return out

    def forecast_at(self, st: Learned, period: float, target: int) -> tuple[float, int] | None:
        """`phase_forecast` for (period, target bin), memoized until the next bin completes
        (`recommend` empties the memo then)."""
        key = (period, target)
        if key not in st.forecasts:
            st.forecasts[key] = phase_forecast(st.bins, target, round(period / self.phase_window),
                                               self.max_periods(period), self.min_periods)
        return st.forecasts[key]

    # ------------------------------------------------------------------ recommend

    def recommend(self, signal: Signal, ctx: PolicyContext) -> Recommendation:
        if not signal.samples:
            return Recommendation(None, "no sample")
        if signal.history is None or not signal.history.t:
            detail = signal.history_detail or "history loading"
            return Recommendation(None, f"{detail}: no opinion")
        now = signal.samples[-1].t
        st = self.learn(signal.history, now)
        if st.memo_at != len(st.done):  # a bin completed: what depends on the bins is new
            st.memo_at, st.acting, st.forecasts = len(st.done), self.acting_periods(st), {}
        acting = st.acting
        if not acting:
            return Recommendation(None, f"no recurring pattern passes the bar {self.min_score:g} "
                                        f"(scores: {self.explain_scores(st)}): no opinion")
        answers: list[Recommendation] = []
        for a in acting:
            rec, foresees = self.period_answer(a, signal, st, now)
            if a.proven and foresees:
                return rec  # a proven period that sees a burst coming times it alone
            answers.append(rec)
        raised = [r for r in answers if r.replicas is not None]
        if not raised:
            return answers[0]
        return max(raised, key=lambda r: r.replicas or 0)

    def period_answer(self, a: Acting, signal: Signal, st: Learned,
                      now: float) -> tuple[Recommendation, bool]:
        """One period's answer, and whether it foresees a burst (raising now or later).

        A proven period raises once some recent past period was in a burst at the phase of
        now + lead (within a step). An unblemished one acts on a burst it saw once (its
        first repeat), if that burst lasted at least `phase_window` (a spike waits for the
        bar); its jitter is unknown, so it raises up to `phase_window` before the onset it
        saw, sized for the burst at that onset."""
        history = signal.history
        assert history is not None
        period = a.period
        target = math.floor((now + self.lead) / self.phase_window)
        got = self.forecast_at(st, period, target)
        name = period_name(period)
        if got is None:
            return Recommendation(None, f"period {name}: too little history for the phase "
                                        f"in {self.lead:g}s: no opinion"), False
        forecast, seen = got
        standing = (f"score {a.score.score:.2f}" if a.proven
                    else "first repeat (no miss, no false alarm yet)")
        about = (f"period {name} {standing}: forecast {forecast:.0f}/h in "
                 f"{self.lead:g}s (median of {seen} periods, level {st.level:.0f}/h)")
        now_value = max(signal.samples[-1].value, 0.0)
        if not (self._burst(forecast, st.level) and self._burst(forecast, now_value)):
            # Only a jump the reactive policies cannot follow in time: a burst over the
            # usual level AND over the value now (a smooth day curve rises too slowly to be
            # one; during a burst the reactive policies already see it).
            return Recommendation(None, f"{about}: no burst ahead of {now_value:.0f}/h now, "
                                        "no opinion", forecast=forecast), False
        before = self.phase_value(history, st, now, period)
        if before is None or not self._burst(forecast, before):
            # The jump must be in the pattern itself: the past periods went from `before`
            # at this phase to the burst `lead` later. A day curve is smooth in every past
            # period, however today differs from it (a weekend under weekday history).
            was = "none" if before is None else f"{before:.0f}/h"
            return Recommendation(None, f"{about}: no jump in the past periods (they were at "
                                        f"{was} at this phase), no opinion",
                                  forecast=forecast), False
        due = now + self.lead
        slack = TIMING_SLACK if a.proven else self.phase_window
        onset = self.onset(history, st, due, period, slack)
        if onset is None:
            # The phase bins say a burst is near; the points say when: in no past period
            # had it begun by this phase (+- a step). Raising now would only pay for idle
            # instances: wait until the earliest onset the history shows is `lead` away.
            return Recommendation(None, f"{about}: not due yet (no past period in a burst "
                                        f"at this phase), no opinion", forecast=forecast), True
        until = self.burst_end(history, st, max(due, onset), period)
        if not a.proven:
            if until - onset - TIMING_SLACK < self.phase_window:
                return Recommendation(None, f"{about}: a burst shorter than phase_window "
                                            "waits for the bar, no opinion",
                                      forecast=forecast), True
            at_onset = self.forecast_at(st, period, math.floor(onset / self.phase_window))
            if onset > due and at_onset is not None:
                forecast = max(forecast, at_onset[0])
        wanted = ceil_exact(forecast / self.per_instance * self.headroom)
        formula = f"{about}: ceil({forecast:.0f} / {self.per_instance:g} x {self.headroom:g}) " \
                  f"= {wanted}, burst over in {until - now:.0f}s"
        if self.mode == "observe":
            return Recommendation(None, f"observe: {formula}", forecast=forecast), True
        return Recommendation(wanted, formula, until=until, forecast=forecast), True

    def onset(self, history: History, st: Learned, t: float, period: float,
              slack: float) -> float | None:
        """The earliest moment (in today's time) at which a recent past period was in a
        burst at a phase from `t` - TIMING_SLACK to `t` + `slack`, read from the points
        themselves (the phase bins find a burst; this times it); None if none was. Any
        period counts, so a burst whose time jitters is met at its earliest."""
        first: float | None = None
        for k in range(1, self.max_periods(period) + 1):
            back = k * period
            lo = bisect_left(history.t, t - back - TIMING_SLACK, 0, st.read)
            hi = bisect_right(history.t, t - back + slack, lo, st.read)
            for i in range(lo, hi):
                if self._burst(history.v[i], st.level):
                    if first is None or history.t[i] + back < first:
                        first = history.t[i] + back
                    break
        return first

    def _at_phase(self, history: History, st: Learned, t: float,
                  period: float) -> Iterator[tuple[int, int]]:
        """For each recent past period (one back, two back, ...), the index range [lo, hi)
        of its points read so far at the phase of `t`, within TIMING_SLACK either side."""
        for k in range(1, self.max_periods(period) + 1):
            at = t - k * period
            lo = bisect_left(history.t, at - TIMING_SLACK, 0, st.read)
            yield lo, bisect_right(history.t, at + TIMING_SLACK, lo, st.read)

    def phase_value(self, history: History, st: Learned, t: float,
                    period: float) -> float | None:
        """The median over the recent past periods of their lowest point at the phase of
        `t` (within a step either side); None with no point there."""
        found: list[float] = []
        for lo, hi in self._at_phase(history, st, t, period):
            near = [v for v in history.v[lo:hi] if math.isfinite(v)]
            if near:
                found.append(max(min(near), 0.0))
        return median(found) if len(found) >= self.min_periods else None

    def burst_end(self, history: History, st: Learned, start: float, period: float) -> float:
        """When the burst under way at `start` is over, as the history says: the first later
        phase (in steps of TIMING_SLACK) at which no recent past period was in a burst; at
        most half a period on. A burst that jitters ends at its latest."""
        t, last = start, start + period / 2
        while t < last:
            t += TIMING_SLACK
            if self.onset(history, st, t, period, TIMING_SLACK) is None:
                return t
        return last


def history_of(points: Sequence[tuple[float, float]]) -> History:
    """A History from (t, value) pairs (tests, tools)."""
    from array import array

    return History(array("d", [t for t, _ in points]), array("d", [v for _, v in points]))


POLICY = SeasonalPolicy
