"""Render /metrics from the store: each target's families are rendered once per poll, not once per scrape.

prometheus_client's encoders format every sample on every call: about 5 µs each, over a second for
200k series. A target's families only change when it is polled, so each family keeps the text it
was rendered to (first time a scrape needs it), and a scrape concatenates those pieces under one
HELP/TYPE per name. The output is what `generate_latest` and the OpenMetrics `generate_latest` write,
line for line: the same name munging, label order and escaping, and `floatToGoString` for values.

gzip works the same way. A family's large chunks are deflated once, by the poller or by the first
gzip scrape that needs them, into pieces that refer to nothing before them; a scrape writes those
pieces one after another in one gzip member, and deflates only the HELP/TYPE lines and small chunks
itself (see Body).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection, Iterable, Iterator

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
    # Made for one scrape: a deflated twin of its text would be thrown away with it (see Body).
    return SeriesFamily(metric.name, metric.type, metric.documentation, tuple(metric.samples), {"own": True})


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


# -- gzip, from pieces deflated once per poll ---------------------------------------------------

#: A family's chunk at least this long gets a deflated twin, made once and kept with the (immutable)
#: family. Shorter chunks and the HELP/TYPE lines are deflated by each scrape, each run of them
#: together: alone they compress poorly (no context), and deflating them costs a scrape little
#: (for the bench's 200k series, ~700 kB of the 27 MB: ~4 ms). The pieces cannot refer to each other,
#: so the body is ~1.33x the size of gzip over the whole text at the same level (1).
DEFLATE_ALONE = 1024
#: A gzip member's header: deflate, no name, mtime 0, fastest (XFL 4), Unix; as zlib writes it at level 1.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"
#: An empty fixed-Huffman block marked final: what ends the deflate stream after the last piece.
_LAST_BLOCK = zlib.compressobj(1, zlib.DEFLATED, -15).flush()
#: The CRC-32 of the text is taken over runs of about this much, each joined first: few calls, so few
#: handovers of the GIL (zlib.crc32 releases it for anything over 5 kB), and buffers that malloc
#: reuses, where joining the whole 27 MB page-faulted fresh memory for 15-100 ms of a scrape.
_CRC_RUN = 1 << 20
#: The formats whose chunks may have deflated twins, by the key of each chunk.
FORMATS = ("openmetrics", "text")


def deflate(data: bytes) -> bytes:
    """Raw deflate (level 1) of `data` that refers to nothing before it and ends byte-aligned on a
    non-final block (a sync flush): pieces like this, concatenated, are one valid deflate stream."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def deflated(family: SeriesFamily, key: str, data: bytes) -> bytes:
    """The deflated twin of one of the family's chunks (`data`, under `key`), made on first use and kept
    with the family: a new poll brings new families, so a twin never outlives the text it was made from."""
    twins = family.rendered.get("deflated")
    if twins is None:
        twins = family.rendered.setdefault("deflated", {})
    piece = twins.get(key)
    if piece is None:
        # Two scrapes at once may both make it (in worker threads): the same bytes either way.
        piece = twins[key] = deflate(data)
    return piece


def _format_of(key: str) -> str:
    return "openmetrics" if key == "openmetrics" else "text"


def gzip_served(families: Iterable[SeriesFamily]) -> set[str]:
    """The formats in which a gzip scrape served these families' deflated twins (a target's previous poll)."""
    return {fmt for fmt in FORMATS if any(family.rendered.get("gzip " + fmt) for family in families)}


def predeflate(families: Iterable[SeriesFamily], formats: Collection[str]) -> None:
    """Make the deflated twins of the families' large chunks in these formats ("openmetrics", "text")
    now, in the poller, rather than in the first gzip scrape that wants them."""
    for family in families:
        rendered = chunks(family)
        pieces = []
        if "openmetrics" in formats:
            pieces.append(("openmetrics", rendered.openmetrics))
        if "text" in formats:
            pieces += [("inside", rendered.inside), *rendered.outside.items()]
        for key, data in pieces:
            if len(data) >= DEFLATE_ALONE:
                deflated(family, key, data)


class Body:
    """One scrape's body, in two steps.

    Gathering, on the event loop, takes references to the text and deflated twins that families keep,
    and for gzip deflates the HELP/TYPE lines and runs of small chunks: Python-level work and many
    small calls (~12 ms for the bench's 200k series, rendering our own metrics included). `finish()`,
    which may run in a worker thread, does the rest in a few large calls that release the GIL, so that
    it runs beside the event loop rather than taking turns with it (each handover of the GIL to a busy
    loop can cost the thread 5 ms): joining the text; or for gzip, the CRC-32 of the text for the
    trailer and the twins still to make (of polls the poller did not deflate). `size` is the length
    of the text, uncompressed.

    The gzip member is its header, then raw deflate pieces each made by a fresh compressor and ended
    by a sync flush (byte-aligned, not final, no reference to anything before it), so that pieces made
    apart join into one valid deflate stream; then an empty final block, the CRC-32 and the length."""

    def __init__(self, parts: Iterable[Part], *, gzip: bool = False):
        self.gzip = gzip
        #: Every piece of text, in order: the body itself, or what the gzip trailer's CRC and length cover.
        self.texts: list[bytes] = []
        #: The gzip member, in order, with empty places for the twins `missing`: (index, family, key, text).
        self.out: list[bytes] = []
        self.missing: list[tuple[int, SeriesFamily, str, bytes]] = []
        if gzip:
            self._gather(parts)
        else:
            self.texts = [part[0] for part in parts]
        self.size = sum(map(len, self.texts))

    def _gather(self, parts: Iterable[Part]) -> None:
        texts, out, missing = self.texts, self.out, self.missing
        out.append(_GZIP_HEADER)
        fresh: list[bytes] = []
        for data, family, key in parts:
            if not data:
                continue
            texts.append(data)
            if family is None or len(data) < DEFLATE_ALONE or "own" in family.rendered:
                fresh.append(data)
                continue
            family.rendered["gzip " + _format_of(key)] = True  # the poller's hint (see gzip_served)
            if fresh:
                out.append(deflate(b"".join(fresh)))
                fresh = []
            twins = family.rendered.get("deflated")
            piece = twins.get(key) if twins is not None else None
            if piece is None:
                missing.append((len(out), family, key, data))
                out.append(b"")
            else:
                out.append(piece)
        if fresh:
            out.append(deflate(b"".join(fresh)))

    def finish(self) -> bytes:
        """The body: the text joined, or one gzip member that decompresses to exactly that text."""
        if not self.gzip:
            return b"".join(self.texts)
        out = self.out
        for index, family, key, data in self.missing:
            out[index] = deflated(family, key, data)
        crc, run, length = 0, [], 0
        for text in self.texts:
            run.append(text)
            length += len(text)
            if length >= _CRC_RUN:
                crc, run, length = zlib.crc32(b"".join(run), crc), [], 0
        crc = zlib.crc32(b"".join(run), crc)
        return b"".join([*out, _LAST_BLOCK, struct.pack("<II", crc, self.size & 0xFFFFFFFF)])


def render_gzip(parts: Iterable[Part]) -> bytes:
    """The exposition these parts join to, as one gzip member (see Body)."""
    return Body(parts, gzip=True).finish()
