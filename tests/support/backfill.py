"""Days of Prometheus history for the seasonal tests: a recurring burst of Stalwart inflow,
written as OpenMetrics and turned into TSDB blocks by `promtool tsdb create-blocks-from
openmetrics` (Debian's Prometheus 2.42), then served by a Prometheus of the test's own that
also scrapes the same series live from a loopback exporter (one series, no seam).

Stalwart's names are kept as it exports them, without `_total`: OpenMetrics would want that
suffix on a `counter`, so the family is declared `unknown` (rate() does not care).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.e2e import OwnPrometheus
from tests.support.loopback import servers

METRIC = "queue_queue_message"  # Stalwart's inbound-queued counter (no _total)
QUERY = f"sum(rate({METRIC}[5m])) * 3600"  # emails/hour


@dataclass(frozen=True)
class Bursts:
    """Inflow of `base` emails/hour plus `extra` during `duration` s every `period` s, the
    bursts starting at `origin` (and every period before and after it)."""

    base: float
    extra: float
    period: float
    duration: float
    origin: float

    def rate(self, t: float) -> float:
        return self.base + (self.extra if (t - self.origin) % self.period < self.duration
                            else 0.0)

    def counter(self, t: float, since: float) -> float:
        """Emails counted from `since` to `t`: the integral of the rate."""
        return self._integral(t) - self._integral(since)

    def _integral(self, t: float) -> float:
        full, phase = divmod(t - self.origin, self.period)
        burst_seconds = full * self.duration + min(phase, self.duration)
        return (self.base * t + self.extra * burst_seconds) / 3600.0


def write_openmetrics(path: Path, bursts: Bursts, start: float, end: float, every: float,
                      labels: dict[str, str]) -> int:
    """The counter from `start` to `end` every `every` s as an OpenMetrics file; samples."""
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    n = 0
    with path.open("w") as out:
        out.write(f"# HELP {METRIC} Inbound messages queued (Stalwart)\n")
        out.write(f"# TYPE {METRIC} unknown\n")
        t = start
        while t <= end:
            out.write(f"{METRIC}{{{shown}}} {bursts.counter(t, start):.3f} {t:.3f}\n")
            t += every
            n += 1
        out.write("# EOF\n")
    return n


def create_blocks(openmetrics: Path, data_dir: Path) -> float:
    """promtool's blocks from the file into `data_dir`; the seconds it took."""
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics),
                    str(data_dir)], check=True, capture_output=True, timeout=300)
    return time.monotonic() - started


@dataclass
class SeasonalPrometheus:
    """A Prometheus of the test's own holding days of `bursts`, scraping them live."""

    url: str
    bursts: Bursts
    since: float  # where the counter starts
    prometheus: OwnPrometheus
    samples: int
    backfill_seconds: float

    def query_range_count(self) -> float:
        """How many /api/v1/query_range requests this Prometheus has answered (its own
        `prometheus_http_requests_total`, read from its /metrics: it does not scrape itself)."""
        import requests
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "prometheus_http_requests_total"
                   and s.labels.get("handler") == "/api/v1/query_range")


@contextmanager
def seasonal_prometheus(workdir: Path, bursts: Bursts, days: float, *,
                        every: float = 30.0, scrape: float = 1.0) -> Iterator[SeasonalPrometheus]:
    """Backfill `days` of `bursts` up to now, start Prometheus on it (retention 30d, longer
    than the history), scraping the same series live from a loopback exporter."""
    now = time.time()
    since = math.floor((now - days * 86400) / every) * every
    with servers() as start:
        exporter = start(lambda path, query, headers: (
            200, "text/plain; version=0.0.4",
            f"# TYPE {METRIC} counter\n{METRIC} {bursts.counter(time.time(), since):.3f}\n"
            .encode()))
        address = exporter.url.removeprefix("http://")
        labels = {"job": "stalwart", "instance": address}
        text = workdir / "history.om"
        last = math.floor((time.time() - 1) / every) * every
        samples = write_openmetrics(text, bursts, since, last, every, labels)
        took = create_blocks(text, workdir / "data")
        text.unlink()
        prometheus = OwnPrometheus(workdir, config_text=(
            f"global: {{scrape_interval: {scrape:g}s, evaluation_interval: {scrape:g}s}}\n"
            "scrape_configs:\n"
            "  - job_name: stalwart\n"
            f"    static_configs: [{{targets: ['{address}']}}]\n"),
            extra_args=("--storage.tsdb.retention.time=30d",))
        prometheus.start()
        try:
            yield SeasonalPrometheus(prometheus.url, bursts, since, prometheus, samples, took)
        finally:
            prometheus.stop()
