"""Render /metrics from the store: each target's families are rendered once per poll, not once per scrape.

prometheus_client's encoders format every sample on every call: about 5 µs each, over a second for
200k series. A target's families only change when it is polled, so each family keeps the text it
was rendered to (first time a scrape needs it), and a scrape concatenates those pieces under one
HELP/TYPE per name. The output is what `generate_latest` and the OpenMetrics `generate_latest` write,
line for line: the same name munging, label order and escaping, and `floatToGoString` for values.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from exporter.normalize import SeriesFamily

#: Suffixes the classic text format moves out of a family into gauge families of their own.
_OUTSIDE_SUFFIXES = ("_created", "_gsum", "_gcount")
#: Type names as the classic text format writes them (prometheus_client's munging).
_TEXT_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def series_head(name: str, labels: dict[str, str]) -> str:
    """`name{a="1",b="2"} `: everything of a sample line before its value."""
    if labels:
        pairs = ",".join(f'{key}="{_escape_value(labels[key])}"' for key in sorted(labels))
        return f"{name}{{{pairs}}} "
    return name + " "


def go_floats(values: Iterable[float]) -> list[str]:
    """`floatToGoString` of each value, quicker: for a finite float below a million, `repr` is Go's text."""
    return [repr(v) if v.__class__ is float and -1e6 < v < 1e6 else floatToGoString(v) for v in values]


class _Chunks:
    """One family's rendered samples: classic text (inside the family / moved out by suffix) and OpenMetrics."""

    __slots__ = ("inside", "outside", "openmetrics")

    def __init__(self, family: SeriesFamily):
        name = family.name
        heads = family.rendered.get("heads") or [series_head(s.name, s.labels) for s in family.samples]
        lines = [f"{head}{text}\n" for head, text in zip(heads, go_floats([s.value for s in family.samples]))]
        # Kept as bytes, so that a scrape joins bytes and never encodes the same text again.
        self.openmetrics = "".join(lines).encode()
        self.inside = self.openmetrics
        self.outside: dict[str, bytes] = {}
        moved = [(i, suffix) for i, s in enumerate(family.samples) if (suffix := s.name[len(name):]) in _OUTSIDE_SUFFIXES]
        if moved:
            outside: dict[str, list[str]] = {}
            for index, suffix in moved:
                outside.setdefault(suffix, []).append(lines[index])
                lines[index] = ""
            self.inside = "".join(lines).encode()
            self.outside = {suffix: "".join(texts).encode() for suffix, texts in outside.items()}

    @classmethod
    def made(cls, inside: bytes, outside: dict[str, bytes], openmetrics: bytes) -> _Chunks:
        """Chunks rendered elsewhere (exporter.template fills them in from a family's last ones)."""
        made = cls.__new__(cls)
        made.inside, made.outside, made.openmetrics = inside, outside, openmetrics
        return made


def chunks(family: SeriesFamily) -> _Chunks:
    """The family's rendered text, made on first use and kept with the (immutable) family."""
    rendered = family.rendered.get("chunks")
    if rendered is None:
        rendered = family.rendered["chunks"] = _Chunks(family)
    return rendered


def prerender(families: Iterable[SeriesFamily]) -> None:
    """Render a poll's families right away, in the poller, so that scrapes only concatenate."""
    for family in families:
        chunks(family)


def _as_family(metric: Metric) -> SeriesFamily:
    return SeriesFamily(metric.name, metric.type, metric.documentation, tuple(metric.samples))


def merge(target_families: Iterable[Iterable[SeriesFamily]], own: Iterable[Metric]) -> dict[str, list[SeriesFamily]]:
    """Families by name across targets, in order of first appearance, then our own metrics merged in
    where the name is free or the type agrees (the store already keeps targets' types consistent)."""
    merged: dict[str, list[SeriesFamily]] = {}
    for families in target_families:
        for family in families:
            merged.setdefault(family.name, []).append(family)
    for metric in own:
        family = _as_family(metric)
        present = merged.get(family.name)
        if present is None:
            merged[family.name] = [family]
        elif present[0].type == family.type:
            present.append(family)
    return merged


def _help_text(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def render_text(merged: dict[str, list[SeriesFamily]]) -> bytes:
    """The classic text format 0.0.4, as prometheus_client.exposition.generate_latest writes it."""
    out: list[bytes] = []
    for name, families in merged.items():
        first = families[0]
        kind = first.type
        served = name + "_total" if kind == "counter" else name + "_info" if kind == "info" else name
        help_text = _help_text(first.help)
        out.append(f"# HELP {served} {help_text}\n# TYPE {served} {_TEXT_TYPES.get(kind, kind)}\n".encode())
        moved: dict[str, list[bytes]] = {}
        for family in families:
            rendered = chunks(family)
            out.append(rendered.inside)
            for suffix, text in rendered.outside.items():
                moved.setdefault(suffix, []).append(text)
        for suffix in sorted(moved):
            out.append(f"# HELP {name}{suffix} {help_text}\n# TYPE {name}{suffix} gauge\n".encode())
            out.extend(moved[suffix])
    return b"".join(out)


def render_openmetrics(merged: dict[str, list[SeriesFamily]]) -> bytes:
    """OpenMetrics 1.0, as prometheus_client.openmetrics.exposition.generate_latest writes it."""
    out: list[bytes] = []
    for name, families in merged.items():
        first = families[0]
        help_text = _help_text(first.help).replace('"', r"\"")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {first.type}\n".encode())
        out.extend(chunks(family).openmetrics for family in families)
    out.append(b"# EOF\n")
    return b"".join(out)
