"""Metrics kept in memory and written as the Prometheus text format the way a non-Python library
writes it: its family order, sample order, label order, number formatting and blank lines.

The styles (see the constants at the end) follow each library's text encoder:
- Rust `prometheus` crate (Dynamo), src/encoder/text.rs: families sorted by name, labels sorted
  by name with `le`/`quantile` last, buckets then `_sum` then `_count`, numbers as Rust's `Display`
  for f64 writes them (`3`, `0.5`, never an exponent).
- Rust `metrics-exporter-prometheus` (TGI), src/formatting.rs + src/recorder.rs: counters, then
  gauges, then histograms and summaries; `# HELP` only for a described metric; a blank line after
  every family; summaries with quantiles 0, 0.5, 0.9, 0.95, 0.99, 0.999 and 1.
- prometheus-cpp (Triton), core/src/text_serializer.cc: families in registration order, labels
  sorted (a std::map) with `le`/`quantile` last, `_count` then `_sum` then buckets or quantiles,
  numbers in their shortest round-trip form (std::to_chars).
- llama.cpp's server.cpp writes `value` with a std::stringstream: C++'s default `%g`, six
  significant digits (`2903.63`, `1.23457e+06`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal


def shortest(value: float) -> str:
    """The shortest text that reads back as `value`, exponent where C's `%g` uses one (std::to_chars)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def rust_display(value: float) -> str:
    """Rust's `Display` for f64: the shortest round-trip digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(float(value))
    if "e" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def c_stream(value: float) -> str:
    """A double written to a std::ostream at its default precision: `%g` with six digits."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:g}"


@dataclass(frozen=True)
class TextStyle:
    """How one library writes a text exposition."""

    number: Callable[[float], str]
    #: Families sorted by name (else in definition order, or by type group, see `group_by_type`).
    sort_families: bool = False
    #: Counters first, then gauges, then histograms and summaries (metrics-exporter-prometheus).
    group_by_type: bool = False
    #: A series' labels sorted by name (else in the order the metric names them).
    sort_labels: bool = True
    #: `_count` and `_sum` before the buckets or quantiles (prometheus-cpp), else after.
    count_sum_first: bool = False
    #: `_count` before `_sum` where both follow the buckets.
    count_before_sum: bool = False
    #: An empty line after each family (metrics-exporter-prometheus).
    blank_line_after_family: bool = False


@dataclass
class Series:
    value: float = 0.0
    #: Histograms: observations per bucket, not cumulative, the last for +Inf.
    buckets: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0
    #: Summaries: the most recent observations, for quantiles.
    window: list[float] = field(default_factory=list)

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, value: float, bounds: tuple[float, ...] = ()) -> None:
        if self.buckets:
            self.buckets[bisect.bisect_left(bounds, value)] += 1
        self.sum += value
        self.count += 1
        self.window.append(value)
        del self.window[:-500]


#: The quantiles a summary is written with (metrics-exporter-prometheus' defaults).
QUANTILES = (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)


@dataclass
class TextMetric:
    """One metric family: its name as written, type, HELP (None: no HELP line) and label names."""

    name: str
    type: str
    help: str | None
    labelnames: tuple[str, ...] = ()
    #: Histogram bucket upper bounds, ascending, without +Inf.
    buckets: tuple[float, ...] = ()
    quantiles: tuple[float, ...] = QUANTILES
    series: dict[tuple[str, ...], Series] = field(default_factory=dict)

    def labels(self, *values: str, **named: str) -> _Child:
        if named:
            values = tuple(named[name] for name in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} has labels {self.labelnames}, got {values}")
        key = tuple(str(value) for value in values)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series(
                buckets=[0] * (len(self.buckets) + 1) if self.type == "histogram" else []
            )
        return _Child(self, series)

    # A metric without labels is its own only series.
    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def observe(self, value: float) -> None:
        self.labels().observe(value)


@dataclass(frozen=True, slots=True)
class _Child:
    metric: TextMetric
    series: Series

    def inc(self, amount: float = 1.0) -> None:
        self.series.inc(amount)

    def set(self, value: float) -> None:
        self.series.set(value)

    def observe(self, value: float) -> None:
        self.series.observe(value, self.metric.buckets)

    @property
    def value(self) -> float:
        return self.series.value


_GROUP = {"counter": 0, "gauge": 1, "histogram": 2, "summary": 2}


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def write_text(metrics: list[TextMetric], style: TextStyle) -> str:
    """The text exposition of `metrics`, written as `style`'s library writes it."""
    families = list(metrics)
    if style.sort_families:
        families.sort(key=lambda metric: metric.name)
    elif style.group_by_type:
        families.sort(key=lambda metric: _GROUP[metric.type])
    number = style.number
    out: list[str] = []
    for metric in families:
        if not metric.series:
            continue  # a family with no series yet is not written (no library here writes it)
        if metric.help is not None:
            out.append(f"# HELP {metric.name} {_escape_help(metric.help)}\n")
        out.append(f"# TYPE {metric.name} {metric.type}\n")
        for key, series in metric.series.items():
            pairs = list(zip(metric.labelnames, key))
            if style.sort_labels:
                pairs.sort()

            # Called only in this iteration, for this series: the loop variables it reads are the current ones.
            def line(suffix: str, value: float | int, extra: tuple[str, str] | None = None) -> str:
                labels = pairs + [extra] if extra else pairs  # noqa: B023
                body = ",".join(f'{name}="{_escape_value(value)}"' for name, value in labels)
                name = metric.name  # noqa: B023
                return f"{name}{suffix}{{{body}}} {number(value)}\n" if body else f"{name}{suffix} {number(value)}\n"

            if metric.type in ("counter", "gauge"):
                out.append(line("", series.value))
                continue
            totals = [line("_count", series.count), line("_sum", series.sum)]
            if not style.count_before_sum and not style.count_sum_first:
                totals.reverse()
            if metric.type == "histogram":
                cumulative, parts = 0, []
                for bound, count in zip((*metric.buckets, math.inf), series.buckets):
                    cumulative += count
                    parts.append(line("_bucket", cumulative, ("le", number(bound))))
            else:
                ordered = sorted(series.window)
                parts = [line("", _quantile(ordered, q), ("quantile", number(q))) for q in metric.quantiles]
            out.extend(totals + parts if style.count_sum_first else parts + totals)
        if style.blank_line_after_family:
            out.append("\n")
    return "".join(out)


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: The Rust prometheus crate's TextEncoder (Dynamo's frontend and runtime).
RUST_PROMETHEUS = TextStyle(number=rust_display, sort_families=True)
#: Rust metrics-exporter-prometheus (TGI's router).
METRICS_EXPORTER_PROMETHEUS = TextStyle(number=rust_display, group_by_type=True, blank_line_after_family=True)
#: prometheus-cpp's TextSerializer (Triton).
PROMETHEUS_CPP = TextStyle(number=shortest, count_sum_first=True)
#: llama.cpp's server.cpp: a std::stringstream and `<<`.
LLAMACPP = TextStyle(number=c_stream)
