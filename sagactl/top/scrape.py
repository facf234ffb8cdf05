"""Reading the processes' ``/metrics`` directly, when no Prometheus runs: each refresh scrapes
every target; counters' rates come from the last two scrapes, histograms' from the oldest
scrape of the last five minutes, as Prometheus would compute them from its own samples.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sagactl.top.readings import Readings, Sample

__all__ = ["Scrape", "ScrapeSource", "ScrapeUnanswered", "parse_exposition", "readings_between"]

# A counter series: its metric name and its labels (the target's ``job`` among them).
SeriesKey = tuple[str, frozenset[tuple[str, str]]]
QUANTILE_WINDOW_S = 300.0


@dataclass
class TargetScrape:
    """What one target exposed: counters (``_total``, ``_bucket``, ``_count``, ``_sum``)
    and gauges, with the target's name as label ``job``."""

    counters: dict[SeriesKey, float] = field(default_factory=dict)
    gauges: list[Sample] = field(default_factory=list)


@dataclass
class Scrape:
    """Every target's exposition at one moment (``None``: the target did not answer)."""

    at: float
    targets: dict[str, TargetScrape | None]


def parse_exposition(text: str, job: str) -> TargetScrape:
    """The ``saga_*`` series of one ``/metrics`` answer (Prometheus's text format)."""
    parsed = TargetScrape()
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("saga_"):
            continue  # the client's process_* and python_* series: not ours to show
        for sample in family.samples:
            labels = {**sample.labels, "job": job}
            if family.type == "gauge":
                parsed.gauges.append(Sample(sample.name, labels, sample.value))
            elif family.type in ("counter", "histogram") and not sample.name.endswith("_created"):
                parsed.counters[(sample.name, frozenset(labels.items()))] = sample.value
    return parsed


def _increase(later: float, earlier: float | None) -> float:
    # A counter that went down was reset (its process restarted): all it shows is new.
    if earlier is None:
        return later  # a labelled series appears at its first increment, from 0
    return later - earlier if later >= earlier else later


def _rates(earlier: Scrape, later: Scrape, *, keep: Callable[[str], bool]) -> list[Sample]:
    seconds = later.at - earlier.at
    if seconds <= 0:
        return []
    rates: list[Sample] = []
    for job, now in later.targets.items():
        before = earlier.targets.get(job)
        if now is None or before is None:
            continue  # no rate over a window the target was not seen at both ends of
        for (name, labels), value in now.counters.items():
            if keep(name):
                increase = _increase(value, before.counters.get((name, labels)))
                rates.append(Sample(name, dict(labels), increase / seconds))
    return rates


def readings_between(earlier: Scrape, later: Scrape, baseline: Scrape | None = None) -> Readings:
    """Readings from two scrapes: gauges and totals from ``later``, counters' rates over
    ``earlier``..``later`` and histogram buckets' rates over ``baseline``..``later``
    (``baseline`` defaults to ``earlier``)."""
    baseline = baseline or earlier
    readings = Readings(
        rates=[
            *_rates(earlier, later, keep=lambda name: not name.endswith("_bucket")),
            *_rates(baseline, later, keep=lambda name: name.endswith("_bucket")),
        ],
        targets={job: scraped is not None for job, scraped in later.targets.items()},
        rate_window_s=later.at - earlier.at,
        quantile_window_s=later.at - baseline.at,
    )
    for scraped in later.targets.values():
        if scraped is None:
            continue
        readings.gauges.extend(scraped.gauges)
        readings.totals.extend(
            Sample(name, dict(labels), value) for (name, labels), value in scraped.counters.items()
        )
    return readings


class ScrapeUnanswered(Exception):
    """No target answered ``/metrics``."""


class ScrapeSource:
    """The processes' ``/metrics`` (``targets``: name -> ``host:port``), scraped on each read."""

    def __init__(self, targets: Mapping[str, str], *, timeout: float = 2.0) -> None:
        self.targets = dict(targets)
        self._client = httpx.Client(timeout=timeout)
        self._history: deque[Scrape] = deque()

    @property
    def description(self) -> str:
        return f"/metrics of {len(self.targets)} processes"

    def scrape(self) -> Scrape:
        """Every target's ``/metrics`` now; raises ``ScrapeUnanswered`` if none answers."""
        found: dict[str, TargetScrape | None] = {}
        errors: list[str] = []
        for job, address in self.targets.items():
            try:
                response = self._client.get(f"http://{address}/metrics")
                response.raise_for_status()
                found[job] = parse_exposition(response.text, job)
            except (httpx.HTTPError, ValueError) as exc:
                found[job] = None
                errors.append(f"{address}: {type(exc).__name__}")
        if all(scraped is None for scraped in found.values()):
            raise ScrapeUnanswered(
                f"no /metrics endpoint answers ({', '.join(errors) or 'no targets'})"
            )
        return Scrape(at=time.monotonic(), targets=found)

    def read(self, interval: float) -> Readings:
        """Readings over the last two scrapes; the first call scrapes twice, ``interval``
        seconds apart, as a rate needs two."""
        if not self._history:
            self._history.append(self.scrape())
            time.sleep(interval)
        self._history.append(self.scrape())
        while (
            len(self._history) > 2
            and self._history[-1].at - self._history[0].at > QUANTILE_WINDOW_S
        ):
            self._history.popleft()
        return readings_between(self._history[-2], self._history[-1], self._history[0])

    def close(self) -> None:
        self._client.close()
