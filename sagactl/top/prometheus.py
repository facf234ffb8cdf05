"""Reading the metrics from Prometheus's HTTP API: a few instant queries per refresh, each
returning raw series (rates per series, no aggregation), so the dashboard's arithmetic is the
same as when it scrapes the processes itself."""

from __future__ import annotations

from typing import Any

import httpx

from sagactl.top.readings import Readings, Sample

__all__ = ["PrometheusError", "PrometheusSource", "PrometheusUnreachable"]

# Counters' rates over a minute (four scrapes at ./dev up's 5 s), histograms' over five, as the
# recording rules in deploy/prometheus/rules.yml.
RATE_WINDOW = "1m"
QUANTILE_WINDOW = "5m"
GAUGES = (
    "saga_outbox_pending_rows",
    "saga_outbox_oldest_pending_age_seconds",
    "saga_consumer_lag_messages",
    "saga_stuck_sagas",
    "saga_relay_active",
)
COUNTERS = ("saga_finished_total", "saga_consumer_events_total", "saga_effect_calls_total")
HISTOGRAMS = ("saga_duration_seconds_bucket", "saga_relay_publish_latency_seconds_bucket")
TOTALS = 'saga_consumer_events_total{outcome="dead_lettered"}'


class PrometheusUnreachable(Exception):
    """Prometheus does not answer at the URL."""


class PrometheusError(Exception):
    """Prometheus answered, but not with a result (a refused query, a server error)."""


def _seconds(window: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(window[:-1]) * units[window[-1]]


class PrometheusSource:
    """Prometheus's HTTP API at ``url`` (``http://host:9190``)."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    @property
    def description(self) -> str:
        return f"Prometheus {self.url}"

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector ``expression`` evaluates to now (``data.result``)."""
        try:
            response = self._client.get("/api/v1/query", params={"query": expression})
        except httpx.HTTPError as exc:
            raise PrometheusUnreachable(f"Prometheus at {self.url} does not answer: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError(
                f"{self.url} answered HTTP {response.status_code}, not Prometheus's API"
            ) from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"Prometheus refused {expression!r}: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def _samples(self, expression: str, name: str | None = None) -> list[Sample]:
        samples = []
        for series in self.query(expression):
            labels = dict(series["metric"])
            metric = name or labels.get("__name__", "")
            labels.pop("__name__", None)
            samples.append(Sample(metric, labels, float(series["value"][1])))
        return samples

    def reachable(self) -> bool:
        """Whether Prometheus answers its API here (for choosing a source, quietly)."""
        try:
            self.query("vector(1)")
        except (PrometheusUnreachable, PrometheusError):
            return False
        return True

    def read(self, interval: float) -> Readings:
        """The readings now (``interval`` is Prometheus's business: it scrapes on its own)."""
        del interval
        readings = Readings(
            gauges=self._samples('{__name__=~"' + "|".join(GAUGES) + '"}'),
            totals=self._samples(TOTALS),
            rate_window_s=_seconds(RATE_WINDOW),
            quantile_window_s=_seconds(QUANTILE_WINDOW),
        )
        for name in COUNTERS:
            readings.rates += self._samples(f"rate({name}[{RATE_WINDOW}])", name)
        for name in HISTOGRAMS:
            readings.rates += self._samples(f"rate({name}[{QUANTILE_WINDOW}])", name)
        readings.targets = {
            sample.labels.get("job", "?"): sample.value == 1 for sample in self._samples("up")
        }
        return readings

    def close(self) -> None:
        self._client.close()
