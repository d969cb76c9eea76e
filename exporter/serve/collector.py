"""The one prometheus_client Collector: every target's families merged by name, plus our own health.

It reads store snapshots only: it never awaits and never does I/O, so a scrape costs the same
whether a backend is healthy, slow or gone. `/metrics` goes through `render()`, which reuses each
family's text from the poll that made it (exporter.pipeline.exposition); `collect()` yields the same
families as prometheus_client Metrics for anything that wants a registry.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import PLATFORM_COLLECTOR, PROCESS_COLLECTOR
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as _Collector
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.format import accel
from exporter.pipeline.exposition import SeriesFamily, merge, render_openmetrics, render_text
from exporter.serve.store import Store

if TYPE_CHECKING:  # the listening side's module loads aiohttp's server, which `once` has no use for
    from exporter.serve.listener import Guard

SELF = "inference_exporter_"


class Collector(_Collector):
    def __init__(self, store: Store, *, process_metrics: bool = True, listener: Guard | None = None):
        self.store = store
        self.process_metrics = process_metrics
        #: The listening side's counts, when there is one (exporter.serve.listener).
        self.listener = listener

    def render(self, *, openmetrics: bool = False) -> bytes:
        """The whole exposition: every target's families (rendered once per poll) and our own metrics."""
        merged = self.merged()
        return render_openmetrics(merged) if openmetrics else render_text(merged)

    def merged(self) -> dict[str, list[SeriesFamily]]:
        """Every target's families and our own metrics by name, as the store holds them now.

        Read it on the event loop; rendering it (exporter.pipeline.exposition) may then happen in any thread,
        since families are immutable and a poll replaces them rather than changing them."""
        return merge(self.store.served_families(), self.own_metrics())

    def own_metrics(self) -> list[Metric]:
        """The exporter's health metrics, plus this process's when asked for."""
        own = list(self._self_metrics())
        if self.process_metrics:
            own += [*PROCESS_COLLECTOR.collect(), *PLATFORM_COLLECTOR.collect()]
        return own

    def collect(self) -> Iterable[Metric]:
        """The same families as prometheus_client Metrics, for registries and their encoders."""
        merged: dict[str, Metric] = {}
        for families in self.store.served_families():
            for family in families:
                metric = merged.get(family.name)
                if metric is None:
                    metric = merged[family.name] = Metric(family.name, family.help, family.type)
                metric.samples.extend(family.samples)
        for metric in self.own_metrics():
            existing = merged.get(metric.name)
            if existing is None:
                merged[metric.name] = metric
            elif existing.type == metric.type:
                existing.samples.extend(metric.samples)
        return merged.values()

    def _self_metrics(self) -> Iterable[Metric]:
        snapshots = self.store.snapshots()
        up = GaugeMetricFamily(
            SELF + "target_up", "1 if the target's last poll succeeded, 0 if it failed.", labels=["target"]
        )
        duration = GaugeMetricFamily(
            SELF + "target_poll_duration_seconds",
            "How long the target's last poll took, retries included.",
            labels=["target"],
        )
        samples = GaugeMetricFamily(
            SELF + "target_samples", "Samples the target's last poll produced.", labels=["target"]
        )
        last_success = GaugeMetricFamily(
            SELF + "target_last_success_timestamp_seconds",
            "Unix time of the target's last successful poll.",
            labels=["target"],
        )
        polls = CounterMetricFamily(SELF + "target_polls", "Polls of the target, successful or not.", labels=["target"])
        retries = CounterMetricFamily(
            SELF + "target_poll_retries", "Attempts beyond the first within a poll.", labels=["target"]
        )
        errors = CounterMetricFamily(
            SELF + "target_poll_errors", "Polls that finally failed, by reason.", labels=["target", "reason"]
        )
        dropped = CounterMetricFamily(
            SELF + "target_dropped_samples",
            "Samples or lines dropped from otherwise good polls, by reason.",
            labels=["target", "reason"],
        )
        problems = CounterMetricFamily(
            SELF + "target_payload_problems",
            "Successful polls whose payload's sample lines did not match its declared families, by reason"
            " (escaped_names, unmatched_samples, unknown_escaping).",
            labels=["target", "reason"],
        )
        withheld = GaugeMetricFamily(
            SELF + "target_withheld_families",
            "The target's families not served now, because another target serves a clashing family of that name, by reason.",
            labels=["target", "reason"],
        )
        for snap in snapshots:
            name = snap.target.name
            polls.add_metric([name], snap.polls)
            retries.add_metric([name], snap.retries)
            for reason, count in sorted(snap.errors.items()):
                errors.add_metric([name, reason], count)
            for reason, count in sorted(snap.dropped.items()):
                dropped.add_metric([name, reason], count)
            for reason, count in sorted(snap.problems.items()):
                problems.add_metric([name, reason], count)
            for reason, count in sorted(
                Counter(family.reason for family in self.store.withheld(name).values()).items()
            ):
                withheld.add_metric([name, reason], count)
            if snap.up is None:
                continue
            up.add_metric([name], 1.0 if snap.up else 0.0)
            duration.add_metric([name], snap.last_duration or 0.0)
            samples.add_metric([name], snap.sample_count)
            if snap.last_success is not None:
                last_success.add_metric([name], snap.last_success)
        yield from (up, duration, samples, last_success, polls, retries, errors, dropped, problems, withheld)

        yield GaugeMetricFamily(
            SELF + "config_last_reload_successful",
            "1 if the last configuration load succeeded, 0 if the running config is an older one.",
            value=1.0 if self.store.config_ok else 0.0,
        )
        if self.store.config_loaded_at is not None:
            yield GaugeMetricFamily(
                SELF + "config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load.",
                value=self.store.config_loaded_at,
            )
        if self.listener is not None:
            guard = self.listener
            yield GaugeMetricFamily(SELF + "http_connections", "Client connections open now.", value=guard.open)
            yield CounterMetricFamily(
                SELF + "http_connections_refused",
                "Client connections answered 503 and closed because max_connections were open.",
                value=guard.refused,
            )
            yield CounterMetricFamily(
                SELF + "http_header_timeouts",
                "Client connections closed for not sending a request's headers within header_timeout.",
                value=guard.timed_out,
            )
        info = GaugeMetricFamily(
            SELF + "build_info",
            "Always 1; the labels say which build is running.",
            labels=["version", "python_version", "accelerator"],
        )
        info.add_metric([__version__, platform.python_version(), accel.IMPLEMENTATION], 1.0)
        yield info


def target_exposition(families: Iterable[SeriesFamily]) -> str:
    """The series one target contributes to /metrics (Store.served), in the classic text format, for its debugging page."""
    return render_text(merge([families], ())).decode()


def registry_for(collector: Collector) -> CollectorRegistry:
    """A registry holding only our collector, for prometheus_client's encoders."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
