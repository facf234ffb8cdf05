"""``sagactl top``: a live view of the running system, read from Prometheus's HTTP API or
straight from the processes' ``/metrics``.

``readings`` is what a source reads; ``scrape`` and ``prometheus`` the two sources;
``snapshot`` the numbers computed from a reading; ``render`` one frame on screen.
"""

from sagactl.top.prometheus import PrometheusError, PrometheusSource, PrometheusUnreachable
from sagactl.top.readings import Readings, Sample, histogram_quantile
from sagactl.top.render import frame
from sagactl.top.scrape import ScrapeSource, ScrapeUnanswered, parse_exposition, readings_between
from sagactl.top.snapshot import Snapshot, build_snapshot
from sagactl.top.targets import DEV_UP_TARGETS, default_prometheus_url, parse_target

__all__ = [
    "DEV_UP_TARGETS",
    "PrometheusError",
    "PrometheusSource",
    "PrometheusUnreachable",
    "Readings",
    "Sample",
    "ScrapeSource",
    "ScrapeUnanswered",
    "Snapshot",
    "build_snapshot",
    "default_prometheus_url",
    "frame",
    "histogram_quantile",
    "parse_exposition",
    "parse_target",
    "readings_between",
]
