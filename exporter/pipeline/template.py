"""A poll served by filling its values into the last poll's output, when nothing but the values changed.

A target's families usually keep their shape from one poll to the next: the same names, types, HELP
and series, new numbers. Normalizing, relabeling and rendering depend on the shape alone, and carry each
value through unchanged, so their output for one poll says where every value of the next one goes.
A Template is that output with the values left out. It is made by running the stages once more on the
same families with each value replaced by its own position (0.0, 1.0, 2.0, ...), so that every value
served tells which upstream value it was; then it is checked by filling in the real values, which must
give back exactly what the stages made. A stage that ever computed a value would fail that check and
simply go without a template.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client.samples import Sample as PromSample

from exporter.core.family import Family, Sample
from exporter.format import accel
from exporter.format.parse import parse
from exporter.format.picks import picker
from exporter.pipeline.exposition import (
    Chunks,
    Classic,
    SeriesFamily,
    rendered_family,
    series_head,
)
from exporter.pipeline.normalize import Normalized

__all__ = ["Template", "checked", "sample_series", "sample_values", "values_of"]


def values_of(families: Sequence[Family]) -> list[float]:
    """Every sample value of a poll's families, in order: what a template is filled with."""
    return [sample.value for family in families for sample in family.samples]


class _Text:
    """Sample lines less their values, and how many of them each family has: filled in and cut into
    pieces per family in one pass (exporter.format.accel.fill, compiled where it was built)."""

    __slots__ = ("_heads", "_sizes")

    def __init__(self, pieces: Sequence[Sequence[str]]):
        self._heads = tuple(head.encode() for piece in pieces for head in piece)
        self._sizes = tuple(len(piece) for piece in pieces)

    def cut(self, values: Sequence[float]) -> list[bytes]:
        """Each piece's bytes with these values (floatToGoString of each), one per line in order."""
        return accel.fill(self._heads, self._sizes, values, accel.go_float, accel.GO_EXPONENTS)


class _Samples(Sequence):
    """A filled family's samples as prometheus_client Samples, made when someone reads them: scrapes
    read the rendered text, and only the collector path (`once`, registries) and the overview read
    samples. Their names and labels are read back from that text once per template (see
    `_FamilyTemplate.series`), so a template keeps labels only for the families someone reads."""

    __slots__ = ("_chunks", "_made", "_template", "_values")

    def __init__(self, chunks: Chunks, values: Sequence[float], template: _FamilyTemplate):
        self._chunks, self._values, self._template = chunks, values, template
        self._made: tuple[PromSample, ...] | None = None

    def _all(self) -> tuple[PromSample, ...]:
        made = self._made
        if made is None:
            made = self._made = tuple(
                PromSample(name, labels, value, None, None)
                for (name, labels), value in zip(self._template.series(self._chunks), self._values)
            )
        return made

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index):
        return self._all()[index]

    def __iter__(self):
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        return self._all() == (other._all() if isinstance(other, _Samples) else other)

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def sample_values(samples: Sequence) -> tuple[object | None, Sequence[float]]:
    """A served family's sample values in order, and what every poll of the same shape shares (None
    where nothing says so): read without making a Sample per sample. Two families with the same shape
    have the same series, in the same order (`sample_series`): a reader may work out once per shape
    what it does with each position, and read only the values on every poll."""
    if isinstance(samples, _Samples):
        return samples._template, samples._values
    return None, [sample.value for sample in samples]


def sample_series(samples: Sequence) -> Sequence[tuple[str, dict[str, str]]]:
    """A served family's (name, labels) of each sample, in order, without making a Sample per sample."""
    if isinstance(samples, _Samples):
        return samples._template.series(samples._chunks)
    return [(sample.name, sample.labels) for sample in samples]


class _FamilyTemplate:
    """One served family without its values: its name, type and HELP, and its samples' place in the poll."""

    __slots__ = ("_series", "classic", "first", "help", "last", "name", "type")

    def __init__(self, family: SeriesFamily, first: int, last: int, classic: Classic | None):
        self.name, self.type, self.help = family.name, family.type, family.help
        self.first, self.last = first, last  # its samples among all the poll's served samples
        #: where the classic text format puts its lines, when it moves some out of the family (else None:
        #: its classic text is its OpenMetrics text)
        self.classic = classic
        self._series: list[tuple[str, dict[str, str]]] | None = None

    def series(self, chunks: Chunks) -> list[tuple[str, dict[str, str]]]:
        """(name, labels) of each sample line, in order: read back from one fill's OpenMetrics text the
        first time someone reads this family's samples, then kept, since every fill of this template
        writes the same series (only the values differ). Every poll's reader (the overview) would
        otherwise parse the same series again, poll after poll."""
        series = self._series
        if series is None:
            lines: list = []
            parse(chunks.openmetrics, order=lines)
            series = self._series = [(line.name, line.labels) for line in lines]
        return series


def checked(families: Sequence[SeriesFamily]) -> list[tuple]:
    """What a template's fill must give as the stages did, family by family: name, type, HELP, number of
    samples and text in every format a scrape serves. Not the samples themselves: a filled family's are
    read back from its OpenMetrics text (`_FamilyTemplate.series`), so equal text is equal samples, and
    reading them back for the check took a 1,000-sample target's fast path 6 of the 34 ms its build
    took (tests/unit/pipeline/test_steady.py and test_template.py compare the samples too)."""
    out = []
    for family in families:
        chunks = family.chunks
        assert chunks is not None  # the long way and templates render every family
        out.append(
            (
                family.name,
                family.type,
                family.help,
                len(family.samples),
                chunks.openmetrics,
                chunks.inside,
                chunks.outside,
            )
        )
    return out


class Template:
    """What one poll's families became, without the values: `fill` serves a poll of the same shapes."""

    __slots__ = ("_dropped", "_families", "_last", "_openmetrics", "_pick", "shapes")

    def __init__(self, shapes_: tuple, served: list[tuple[SeriesFamily, list[int]]], dropped: dict[str, int]):
        self.shapes = shapes_
        self._dropped = dropped
        self._families: list[_FamilyTemplate] = []
        takes: list[int] = []
        openmetrics: list[Sequence[str]] = []
        for family, family_takes in served:
            first = len(takes)
            takes += family_takes
            heads = family.heads or [series_head(s.name, s.labels) for s in family.samples]
            openmetrics.append(heads)
            # The classic text format: samples with some suffixes go after the family, one piece per suffix.
            classic = Classic.of(family.name, (sample.name for sample in family.samples))
            self._families.append(_FamilyTemplate(family, first, len(takes), classic))
        # A poll's values picked in the order served: mostly a family's samples one after another.
        self._pick = picker(takes, long_runs=4)
        self._openmetrics = _Text(openmetrics)
        #: the last fill's families, each with its OpenMetrics text: a family whose text comes out the same
        #: again is served as that family, with what was made of it since (its deflated twins, its classic
        #: text, its samples as the overview read them)
        self._last: list[tuple[bytes, SeriesFamily | None]] = []

    @classmethod
    def of(
        cls, families: Sequence[Family], shapes: tuple, stages: Callable[[list[Family]], Normalized], made: Normalized
    ) -> Template | None:
        """The template of `made`, which `stages` made from `families`; None where the stages did more
        than carry values through (then each poll of this shape goes through the stages)."""
        tagged, position = [], 0
        for family in families:
            samples = [Sample(s.name, s.labels, float(position + i), s.key) for i, s in enumerate(family.samples)]
            position += len(samples)
            tagged.append(Family(family.name, family.type, family.help, family.unit, samples))
        served: list[tuple[SeriesFamily, list[int]]] = []
        for out in stages(tagged).families:
            takes = [int(sample.value) for sample in out.samples]
            if any(take != sample.value or not 0 <= take < position for take, sample in zip(takes, out.samples)):
                return None
            served.append((out, takes))
        template = cls(shapes, served, dict(made.dropped))
        again = template.fill(values_of(families))
        if checked(again.families) != checked(made.families):
            return None
        template._last = []  # not the families this check made
        return template

    def fill(self, values: Sequence[float]) -> Normalized:
        """The output of a poll whose families have this template's shapes, from their values."""
        served = self._pick(values)
        openmetrics = self._openmetrics.cut(served)
        families = []
        # Equal text is equal values (floatToGoString tells every two floats apart, -0.0 and 0.0 too), so a
        # family of the last fill whose text this one repeats serves this one: an idle server's families
        # cost a comparison, not a family, its text's deflating and its samples' reading, every poll.
        last = self._last or [(b"", None)] * len(openmetrics)
        for template, chunk, (before, made) in zip(self._families, openmetrics, last):
            if chunk == before and made is not None:
                families.append(made)
                continue
            classic = template.classic
            rendered = Chunks(chunk, {}, chunk) if classic is None else Chunks.lazy(chunk, classic)
            samples = _Samples(rendered, served[template.first : template.last], template)
            families.append(rendered_family(template.name, template.type, template.help, samples, rendered))
        self._last = [*zip(openmetrics, families)]
        return Normalized(tuple(families), dict(self._dropped))
