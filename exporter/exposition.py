"""Render /metrics from the store: each target's families are rendered once per poll, not once per scrape.

prometheus_client's encoders format every sample on every call: about 5 µs each, over a second for
200k series. A target's families only change when it is polled, so each family keeps the text it
was rendered to (first time a scrape needs it), and a scrape concatenates those pieces under one
HELP/TYPE per name. The output is what `generate_latest` and the OpenMetrics `generate_latest` write,
line for line: the same name munging, label order and escaping, and `floatToGoString` for values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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


class _Chunks:
    """One family's rendered samples: classic text (inside the family / moved out by suffix) and OpenMetrics."""

    __slots__ = ("inside", "outside", "openmetrics")

    def __init__(self, family: SeriesFamily):
        inside: list[str] = []
        outside: dict[str, list[str]] = {}
        everything: list[str] = []
        name = family.name
        heads = family.rendered.get("heads") or [series_head(s.name, s.labels) for s in family.samples]
        for sample, head in zip(family.samples, heads):
            line = f"{head}{floatToGoString(sample.value)}\n"
            everything.append(line)
            suffix = sample.name[len(name):]
            if suffix in _OUTSIDE_SUFFIXES:
                outside.setdefault(suffix, []).append(line)
            else:
                inside.append(line)
        # Kept as bytes, so that a scrape joins bytes and never encodes the same text again.
        self.inside = "".join(inside).encode()
        self.outside = {suffix: "".join(lines).encode() for suffix, lines in outside.items()}
        self.openmetrics = "".join(everything).encode()


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


#: One piece of an exposition, in order: the bytes, and where a deflated twin of them may be kept
#: (the family and the chunk's key), or None for text made by the scrape itself (HELP/TYPE lines).
Part = tuple[bytes, SeriesFamily | None, str]


def text_parts(merged: dict[str, list[SeriesFamily]]) -> Iterator[Part]:
    """The classic text format 0.0.4, as prometheus_client.exposition.generate_latest writes it, in pieces."""
    for name, families in merged.items():
        first = families[0]
        kind = first.type
        served = name + "_total" if kind == "counter" else name + "_info" if kind == "info" else name
        help_text = _help_text(first.help)
        yield f"# HELP {served} {help_text}\n# TYPE {served} {_TEXT_TYPES.get(kind, kind)}\n".encode(), None, ""
        moved: dict[str, list[tuple[bytes, SeriesFamily]]] = {}
        for family in families:
            rendered = chunks(family)
            yield rendered.inside, family, "inside"
            for suffix, text in rendered.outside.items():
                moved.setdefault(suffix, []).append((text, family))
        for suffix in sorted(moved):
            yield f"# HELP {name}{suffix} {help_text}\n# TYPE {name}{suffix} gauge\n".encode(), None, ""
            for text, family in moved[suffix]:
                yield text, family, suffix


def openmetrics_parts(merged: dict[str, list[SeriesFamily]]) -> Iterator[Part]:
    """OpenMetrics 1.0, as prometheus_client.openmetrics.exposition.generate_latest writes it, in pieces."""
    for name, families in merged.items():
        first = families[0]
        help_text = _help_text(first.help).replace('"', r"\"")
        yield f"# HELP {name} {help_text}\n# TYPE {name} {first.type}\n".encode(), None, ""
        for family in families:
            yield chunks(family).openmetrics, family, "openmetrics"
    yield b"# EOF\n", None, ""


def render_text(merged: dict[str, list[SeriesFamily]]) -> bytes:
    """The classic text format 0.0.4, as prometheus_client.exposition.generate_latest writes it."""
    return b"".join([part[0] for part in text_parts(merged)])


def render_openmetrics(merged: dict[str, list[SeriesFamily]]) -> bytes:
    """OpenMetrics 1.0, as prometheus_client.openmetrics.exposition.generate_latest writes it."""
    return b"".join([part[0] for part in openmetrics_parts(merged)])
