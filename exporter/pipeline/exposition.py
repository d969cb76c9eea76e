"""Render /metrics from the store: each target's families are rendered once per poll, not once per scrape.

prometheus_client's encoders format every sample on every call: far too much CPU per scrape for an
aggregator's series (docs/performance.md). A target's families only change when it is polled, so the
poll renders each family's text once (exporter.pipeline.target, `prerender`), and a scrape concatenates
those pieces under one HELP/TYPE per name. The output is what `generate_latest` and the OpenMetrics
`generate_latest` write, line for line: the same name munging, label order and escaping, and
`floatToGoString` for values.

gzip works the same way. A family's large chunks are deflated once, by the first gzip scrape that
needs them, into pieces that refer to nothing before them and are kept with the text they were made
from; a scrape writes those pieces one after another in one gzip member, and deflates only the
HELP/TYPE lines and small chunks itself (see Body).
"""

from __future__ import annotations

import concurrent.futures
import operator
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample as PromSample

from exporter.core import offload
from exporter.core.compression import zlib
from exporter.format import accel
from exporter.format.accel import go_float


@dataclass(frozen=True, slots=True)
class SeriesFamily:
    """One family as served: a valid name, a prometheus_client type, HELP, ready-made samples."""

    name: str
    type: str
    help: str
    samples: Sequence[PromSample]
    #: Each sample's `name{labels} ` as served, where normalize already wrote them.
    heads: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    #: Its text as /metrics serves it (exporter.pipeline.exposition.Chunks), rendered by the pipeline once per
    #: poll; None for families rendered by each scrape (our own metrics).
    chunks: Chunks | None = field(default=None, compare=False, repr=False)


def _family_maker() -> Callable[[str, str, str, Sequence[PromSample], Chunks], SeriesFamily]:
    """`SeriesFamily(name, type, help, samples, chunks=chunks)`, in half the time: its fields set through
    their slots rather than the frozen dataclass's `object.__setattr__` call per field (a template's fill
    makes a family per served family, every poll)."""
    names = ["name", "type", "help", "samples", "heads", "chunks"]
    if [f.name for f in fields(SeriesFamily)] != names:  # a field added: made by the dataclass, as it says
        return lambda name, kind, help_, samples, chunks: SeriesFamily(name, kind, help_, samples, chunks=chunks)
    new = object.__new__
    name_, kind_, help_, samples_, heads_, chunks_ = (vars(SeriesFamily)[name].__set__ for name in names)

    def family(name: str, kind: str, help: str, samples: Sequence[PromSample], chunks: Chunks) -> SeriesFamily:
        made = new(SeriesFamily)
        name_(made, name)
        kind_(made, kind)
        help_(made, help)
        samples_(made, samples)
        heads_(made, None)
        chunks_(made, chunks)
        return made

    return family


#: Suffixes the classic text format moves out of a family into gauge families of their own.
_OUTSIDE_SUFFIXES = ("_created", "_gsum", "_gcount")
_NAME = operator.attrgetter("name")
_VALUE = operator.attrgetter("value")
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


class Classic:
    """Where one family's lines go in the classic text format, which moves the samples of some suffixes
    (`_OUTSIDE_SUFFIXES`) out of the family: the positions of the lines that stay inside, and of each
    moved suffix's, in the order it writes them. The same for every fill of a template's family."""

    __slots__ = ("_inside", "_outside")

    def __init__(self, inside: list[int], outside: dict[str, list[int]]):
        self._inside = _lines_picker(inside)
        self._outside = [(suffix, _lines_picker(positions)) for suffix, positions in outside.items()]

    @classmethod
    def of(cls, family: str, names: Iterable[str]) -> Classic | None:
        """Where the lines of a family with samples of these names go; None where none moves (its classic
        text is its OpenMetrics text)."""
        names = list(names)
        if not any(name[len(family) :] in _OUTSIDE_SUFFIXES for name in set(names)):
            return None
        inside: list[int] = []
        outside: dict[str, list[int]] = {}
        for index, name in enumerate(names):
            suffix = name[len(family) :]
            (outside.setdefault(suffix, []) if suffix in _OUTSIDE_SUFFIXES else inside).append(index)
        return cls(inside, outside)

    def split(self, openmetrics: bytes) -> tuple[bytes, dict[str, bytes]]:
        """The classic text's pieces of a family's OpenMetrics sample lines: (inside, {suffix: moved})."""
        lines = openmetrics.split(b"\n")  # a sample line has no raw newline: label values escape it
        return self._inside(lines), {suffix: pick(lines) for suffix, pick in self._outside}


def _lines_picker(positions: list[int]) -> Callable[[list[bytes]], bytes]:
    """The lines at these positions, joined and each ended by a newline, at C speed."""
    if not positions:
        return lambda lines: b""
    if positions == list(range(positions[0], positions[-1] + 1)):
        run = slice(positions[0], positions[-1] + 1)
        return lambda lines: b"\n".join(lines[run]) + b"\n"
    if len(positions) == 1:
        only = positions[0]
        return lambda lines: lines[only] + b"\n"
    pick = operator.itemgetter(*positions)
    return lambda lines: b"\n".join(pick(lines)) + b"\n"


class Chunks:
    """One family's rendered samples: classic text (inside the family / moved out by suffix) and
    OpenMetrics, as bytes, so that a scrape joins bytes and never encodes the same text again.

    Immutable once made, like the family it belongs to; its deflated twins (`deflated`) are worked
    out from it on first use and kept with it, so that they never outlive the text they were made from.
    So is the classic text of a family made by `lazy` (a template's fill): cut out of the OpenMetrics
    lines the first time a scrape asks for it, since most polls are scraped in OpenMetrics alone (two
    scrapes at once may both cut it: the same bytes either way)."""

    __slots__ = ("_classic", "_inside", "_outside", "_twins", "openmetrics")

    def __init__(self, inside: bytes, outside: dict[str, bytes], openmetrics: bytes):
        self._inside: bytes | None = inside
        self._outside: dict[str, bytes] | None = outside
        self.openmetrics = openmetrics
        self._classic: Classic | None = None
        self._twins: dict[str, bytes] = {}

    @classmethod
    def lazy(cls, openmetrics: bytes, classic: Classic) -> Chunks:
        """A family's chunks from its OpenMetrics lines alone; its classic text is cut when first read."""
        made = cls.__new__(cls)
        made.openmetrics, made._classic, made._twins = openmetrics, classic, {}
        made._inside = made._outside = None
        return made

    @property
    def inside(self) -> bytes:
        """The classic text of the samples that stay inside the family."""
        inside = self._inside
        if inside is None:
            inside = self._cut()[0]
        return inside

    @property
    def outside(self) -> dict[str, bytes]:
        """The classic text of the samples moved out of the family, by suffix, in the order it writes them."""
        outside = self._outside
        if outside is None:
            outside = self._cut()[1]
        return outside

    def _cut(self) -> tuple[bytes, dict[str, bytes]]:
        assert self._classic is not None  # only `lazy` leaves the classic text to make
        inside, outside = self._classic.split(self.openmetrics)
        self._outside = outside  # before `_inside`, which a reader checks first
        self._inside = inside
        return inside, outside

    @classmethod
    def of(cls, family: SeriesFamily) -> Chunks:
        """Render a family's samples: each line its head and its value's text (floatToGoString), written by
        the fill a template's are written by (exporter.format.accel.fill), the classic text cut out of
        them when first read."""
        samples = family.samples
        heads = tuple(head.encode() for head in family.heads or [series_head(s.name, s.labels) for s in samples])
        openmetrics = accel.fill(heads, (len(heads),), list(map(_VALUE, samples)), go_float, accel.GO_EXPONENTS)[0]
        classic = Classic.of(family.name, map(_NAME, samples))
        return cls(openmetrics, {}, openmetrics) if classic is None else cls.lazy(openmetrics, classic)

    def text(self, key: str) -> bytes:
        """The chunk under `key`: "openmetrics", "inside", or a moved suffix."""
        if key == "openmetrics":
            return self.openmetrics
        return self.inside if key == "inside" else self.outside[key]

    def twin(self, key: str) -> bytes | None:
        """The deflated twin of the chunk under `key`, if one was made."""
        return self._twins.get(key)

    def deflated(self, key: str) -> bytes:
        """The deflated twin of the chunk under `key`, made on first use. Two scrapes at once (in worker
        threads) may both make it: the same bytes either way."""
        twin = self._twins.get(key)
        if twin is None:
            twin = self._twins[key] = deflate(self.text(key))
        return twin


#: A rendered family, made quickly (see _family_maker).
rendered_family = _family_maker()


def chunks(family: SeriesFamily) -> Chunks:
    """The family's rendered text: as the pipeline rendered it, or made now (our own metrics, per scrape)."""
    return family.chunks if family.chunks is not None else Chunks.of(family)


def prerender(families: Iterable[SeriesFamily]) -> tuple[SeriesFamily, ...]:
    """The families with their text rendered, in the poller, so that scrapes only concatenate."""
    return tuple(
        family if family.chunks is not None else replace(family, chunks=Chunks.of(family)) for family in families
    )


def _as_family(metric: Metric) -> SeriesFamily:
    # Made for one scrape, not rendered ahead: a deflated twin of its text would be thrown away with it (see Body).
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
#: (the family's rendered Chunks and the chunk's key), or None for text made by the scrape itself
#: (HELP/TYPE lines, our own metrics).
Part = tuple[bytes, Chunks | None, str]


def text_parts(merged: dict[str, list[SeriesFamily]]) -> Iterator[Part]:
    """The classic text format 0.0.4, as prometheus_client.exposition.generate_latest writes it, in pieces."""
    for name, families in merged.items():
        first = families[0]
        kind = first.type
        served = name + "_total" if kind == "counter" else name + "_info" if kind == "info" else name
        help_text = _help_text(first.help)
        yield f"# HELP {served} {help_text}\n# TYPE {served} {_TEXT_TYPES.get(kind, kind)}\n".encode(), None, ""
        moved: dict[str, list[tuple[bytes, Chunks | None]]] = {}
        for family in families:
            rendered, kept = chunks(family), family.chunks
            yield rendered.inside, kept, "inside"
            for suffix, text in rendered.outside.items():
                moved.setdefault(suffix, []).append((text, kept))
        for suffix in sorted(moved):
            yield f"# HELP {name}{suffix} {help_text}\n# TYPE {name}{suffix} gauge\n".encode(), None, ""
            for text, kept in moved[suffix]:
                yield text, kept, suffix


def openmetrics_parts(merged: dict[str, list[SeriesFamily]]) -> Iterator[Part]:
    """OpenMetrics 1.0, as prometheus_client.openmetrics.exposition.generate_latest writes it, in pieces."""
    for name, families in merged.items():
        first = families[0]
        help_text = _help_text(first.help).replace('"', r"\"")
        yield f"# HELP {name} {help_text}\n# TYPE {name} {first.type}\n".encode(), None, ""
        for family in families:
            yield chunks(family).openmetrics, family.chunks, "openmetrics"
    yield b"# EOF\n", None, ""


def render_text(merged: dict[str, list[SeriesFamily]]) -> bytes:
    """The classic text format 0.0.4, as prometheus_client.exposition.generate_latest writes it."""
    return b"".join([part[0] for part in text_parts(merged)])


def render_openmetrics(merged: dict[str, list[SeriesFamily]]) -> bytes:
    """OpenMetrics 1.0, as prometheus_client.openmetrics.exposition.generate_latest writes it."""
    return b"".join([part[0] for part in openmetrics_parts(merged)])


# -- gzip, from pieces deflated once per poll ---------------------------------------------------

#: A family's chunk at least this long gets a deflated twin, made once and kept with its (immutable)
#: text. Shorter chunks and the HELP/TYPE lines are deflated by each scrape, each run of them
#: together: alone they compress poorly (no context), and deflating them costs a scrape little
#: (a small share of the body). The pieces cannot refer to each other, so the body is somewhat
#: larger than gzip over the whole text at the same level (1); the figures are in docs/performance.md.
DEFLATE_ALONE = 1024
#: A gzip member's header: deflate, no name, mtime 0, fastest (XFL 4), Unix; as zlib writes it at level 1.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"
#: An empty fixed-Huffman block marked final: what ends the deflate stream after the last piece.
_LAST_BLOCK = zlib.compressobj(1, zlib.DEFLATED, -15).flush()
#: The CRC-32 of the text is taken over runs of about this much, each joined first: few calls, so few
#: handovers of the GIL (zlib.crc32 releases it for anything over 5 kB), and buffers that malloc
#: reuses, where joining a whole large body page-faulted fresh memory for much of a scrape.
_CRC_RUN = 1 << 20


#: The deflate window (2**14, 16 kB) and memory level of the compressors: the standard zlib's state is
#: 2**(WINDOW_BITS + 2) + 2**(MEMORY_LEVEL + 9) bytes, 137 kB per thread rather than the defaults'
#: (15, 8) 268 kB, for the same output size and speed within 1% on every payload's families
#: (docs/performance.md, Memory): a family's lines repeat within far less than 16 kB. zlib-ng's
#: (exporter.core.compression) is ~220 kB either way, for twice the speed.
WINDOW_BITS, MEMORY_LEVEL = 14, 7


def deflate(data: bytes) -> bytes:
    """Raw deflate (level 1) of `data` that refers to nothing before it and ends byte-aligned on a
    non-final block (a full flush): pieces like this, concatenated, are one valid deflate stream.

    Each thread reuses one compressor: a full flush forgets everything before it, and gives the
    bytes a fresh compressor would, while a fresh compressor costs more to set up (its 137 kB of
    state) than deflating a 1 kB piece, and a large body is thousands of pieces."""
    compressor = getattr(_compressors, "compressor", None)
    if compressor is None:
        compressor = _compressors.compressor = zlib.compressobj(1, zlib.DEFLATED, -WINDOW_BITS, MEMORY_LEVEL)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


#: One compressor per thread that deflates (the event loop, scrapes' worker threads).
_compressors = threading.local()


class Body:
    """One scrape's body, in two steps.

    Gathering, on the event loop, takes references to the text and deflated twins that families keep,
    and for gzip deflates the HELP/TYPE lines and runs of small chunks: Python-level work and many
    small calls (milliseconds for an aggregator's series: docs/performance.md). `finish()`,
    which may run in a worker thread, does the rest in a few large calls that release the GIL, so that
    it runs beside the event loop rather than taking turns with it (each handover of the GIL to a busy
    loop can cost the thread 5 ms): joining the text; or for gzip, the CRC-32 of the text for the
    trailer and the twins still to make (the first gzip scrape of each poll makes them). `size` is the
    length of the text, uncompressed.

    The gzip member is its header, then raw deflate pieces each made by a fresh compressor and ended
    by a sync flush (byte-aligned, not final, no reference to anything before it), so that pieces made
    apart join into one valid deflate stream; then an empty final block, the CRC-32 and the length."""

    def __init__(self, parts: Iterable[Part], *, gzip: bool = False):
        self.gzip = gzip
        #: Every piece of text, in order: the body itself, or what the gzip trailer's CRC and length cover.
        self.texts: list[bytes] = []
        #: The gzip member, in order, with empty places for the twins `missing`: (index, chunks, key).
        self.out: list[bytes] = []
        self.missing: list[tuple[int, Chunks, str]] = []
        if gzip:
            self._gather(parts)
        else:
            self.texts = [part[0] for part in parts]
        self.size = sum(map(len, self.texts))

    def _gather(self, parts: Iterable[Part]) -> None:
        texts, out, missing = self.texts, self.out, self.missing
        out.append(_GZIP_HEADER)
        fresh: list[bytes] = []
        for data, kept, key in parts:
            if not data:
                continue
            texts.append(data)
            if kept is None or len(data) < DEFLATE_ALONE:
                fresh.append(data)
                continue
            if fresh:
                out.append(deflate(b"".join(fresh)))
                fresh = []
            piece = kept.twin(key)
            if piece is None:
                missing.append((len(out), kept, key))
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
        for index, kept, key in self.missing:
            out[index] = kept.deflated(key)
        crc, run, length = 0, [], 0
        for text in self.texts:
            run.append(text)
            length += len(text)
            if length >= _CRC_RUN:
                crc, run, length = zlib.crc32(b"".join(run), crc), [], 0
        crc = zlib.crc32(b"".join(run), crc)
        return b"".join([*out, _LAST_BLOCK, struct.pack("<II", crc, self.size & 0xFFFFFFFF)])


class AheadDeflater:
    """The serving side's guess at what its next gzip scrapes want: when a gzip scrape came since a
    target's last poll was published, its new poll's large chunks are deflated as soon as it is
    published, in that scrape's format, so that the next scrape finds them ready rather than making them
    (an aggregator's every poll is scraped, and deflating a whole poll was most of a scrape's time:
    docs/performance.md). A GPU host polled every second and scraped every 15 deflates only the poll
    after a scraped one in vain; the others are left to the scrape that serves them, if any. Pollers
    know nothing of it: /metrics tells it of gzip scrapes, and it watches the store for polls. It
    deflates in the ingest thread (exporter.core.offload), between polls' pieces of work.

    Once a format's scrapes have come a few times, a poll is deflated ahead only where the next scrape
    is due before the target's next poll (the shortest time between the last few scrapes against the
    time since the target's last poll): a GPU host polled every second and scraped every 5 s would
    otherwise deflate a poll after each scrape that the next scrape never sees, as much deflating as
    the scrapes themselves do.
    """

    def __init__(self, targets: Callable[[], Collection[str]], clock: Callable[[], float] = time.monotonic):
        #: The target names in the store, to forget targets that went.
        self._targets = targets
        self._clock = clock
        #: target -> when its last poll was published (by `clock`, time.monotonic)
        self._published: dict[str, float] = {}
        #: how many targets may be remembered before those no longer in the store are forgotten
        self._bound = 16
        #: the key of the chunks a gzip scrape read ("openmetrics", or "inside" for text) -> when the last
        #: few such scrapes came, oldest first
        self._scraped: dict[str, deque[float]] = {}
        #: What was last handed to the ingest thread (for tests to wait on).
        self.pending: concurrent.futures.Future | None = None

    def scraped(self, *, openmetrics: bool) -> None:
        """A gzip scrape in this format is being served now."""
        key = "openmetrics" if openmetrics else "inside"
        times = self._scraped.get(key)
        if times is None:
            times = self._scraped[key] = deque(maxlen=SCRAPES_TIMED)
        times.append(self._clock())

    def observe(self, families: Iterable[SeriesFamily], target: str) -> None:
        """A new poll of `target` is published: these are the families it serves."""
        now = self._clock()
        previous = self._published.get(target)
        self._published[target] = now
        if len(self._published) > self._bound:  # targets that went are forgotten now and then, not looked up each poll
            names = set(self._targets())
            self._published = {name: seen for name, seen in self._published.items() if name in names}
            self._bound = 2 * len(names) + 16
        if previous is None:
            return
        keys = [
            key
            for key, times in self._scraped.items()
            if times[-1] >= previous and _due_before(times, 2 * now - previous)
        ]
        if not keys:
            return
        large = [f.chunks for f in families if f.chunks is not None and len(f.chunks.openmetrics) >= DEFLATE_ALONE]
        if large:
            # In the ingest thread, after the polls queued there: a thread of its own would take turns with
            # that one for the GIL at every piece (zlib lets go of it), each turn up to the switch interval.
            self.pending = offload.submit(_deflate_ahead, large, keys)


#: Gzip scrapes of each format whose times the ahead deflater keeps, to tell when the next is due.
SCRAPES_TIMED = 4


def _due_before(times: deque[float], next_poll: float) -> bool:
    """Whether the next scrape is due before `next_poll`, as the scrapes at these times come: one shortest
    gap between them after the last (with only one, nothing says when the next comes: yes)."""
    if len(times) < 2:
        return True
    every = min(later - earlier for earlier, later in zip(times, list(times)[1:]))
    return times[-1] + every < next_poll


def _deflate_ahead(large: list[Chunks], keys: list[str]) -> None:
    for kept in large:
        for key in keys:
            for part in (key, *kept.outside) if key == "inside" else (key,):
                if len(kept.text(part)) >= DEFLATE_ALONE:
                    kept.deflated(part)


def render_gzip(parts: Iterable[Part]) -> bytes:
    """The exposition these parts join to, as one gzip member (see Body)."""
    return Body(parts, gzip=True).finish()
