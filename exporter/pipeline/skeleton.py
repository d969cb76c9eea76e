"""A body's families made again from its values alone, when it has the shape of one parsed before.

Nearly every server writes each sample line as `name{labels} value`, and a target's next body
usually has the same lines with new values. One C-speed split of the body (PLAIN_SAMPLE, exporter.format.accel) separates
the values from everything else; when everything else is as it was, the families are the last
parse's with the new values, made without reading a label.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import cast

from exporter.core.family import Family, Sample, shape_of
from exporter.format.accel import PLAIN_SAMPLE
from exporter.format.parse import ParseResult, parse

__all__ = ["Skeleton", "remaker"]


class Skeleton:
    """A parsed body with its sample values taken out: per family, which split value each sample takes.

    Its families' sample names and labels are most of what it holds. Where a target's fast path serves
    its polls without them (exporter.pipeline.steady), `compact` lets them go and keeps a way to make
    them again (the body it was made of, compressed, parsed again): the few polls that read them, a poll
    the fast path gives to the long way or an `explain`, pay one parse, and the next fast poll lets them
    go again."""

    __slots__ = ("_families", "_remake", "key", "problems", "truncated")

    def __init__(self, key: tuple, families: list[tuple], truncated: int, problems: dict[str, int]):
        #: The shape of the bodies this reads (exporter.pipeline.target's body key).
        self.key = key
        #: per family: (name, type, help, unit, shape, sample names, labels, indexes of its values
        #: or a slice of them). Not the
        #: series' text: what reads a family of this shape needs its labels, and its shape says the rest.
        self._families: list[tuple] | None = families
        #: how to make them again once compacted (None: never compacted)
        self._remake: Callable[[], list[tuple]] | None = None
        self.truncated = truncated
        self.problems = problems

    @property
    def families(self) -> list[tuple]:
        families = self._families
        if families is None:
            assert self._remake is not None  # only a compacted skeleton lets them go
            families = self._families = self._remake()
        return families

    def compact(self, remake: Callable[[], list[tuple]] | None = None) -> None:
        """Let go of the families, which `remake` (or the one given before) makes again when read."""
        if remake is not None:
            self._remake = remake
        if self._remake is not None:
            self._families = None

    @property
    def compacted(self) -> bool:
        return self._families is None

    @classmethod
    def of(cls, key: tuple, parts: list[bytes], order: list[Sample | None], result: ParseResult) -> Skeleton | None:
        """The skeleton of a body split into `parts` and parsed into `result` (`order`: the Sample of each
        sample line, None where skipped as unwanted); None unless the split found exactly the sample lines
        the parser read, each with the value the parser read (then there is no fast way for this body)."""
        values, series = parts[2::3], parts[1::3]
        if len(values) != len(order):
            return None
        index_of: dict[int, int] = {}
        for number, (text, sample) in enumerate(zip(values, order)):
            if sample is None:
                continue
            # The split and the parser must have read the same line: a line the split skipped (a
            # timestamp) and one it found that the parser did not (after `# EOF`, or an exemplar's
            # value) would otherwise pair one line's series with another's value.
            if sample.key is None or sample.key.encode() != series[number]:
                return None
            try:
                value = float(text)
            except ValueError:
                return None
            if value != sample.value and not (value != value and sample.value != sample.value):
                return None
            index_of[id(sample)] = number
        families = []
        for family in result.families:
            found = [index_of.get(id(sample)) for sample in family.samples]
            if None in found:
                return None
            positions = cast("list[int]", found)
            indexes: list[int] | slice = positions
            if positions and positions == list(range(positions[0], positions[0] + len(positions))):
                indexes = slice(
                    positions[0], positions[0] + len(positions)
                )  # lines one after another: no positions kept
            families.append(
                (
                    family.name,
                    family.type,
                    family.help,
                    family.unit,
                    shape_of(family),
                    [sample.name for sample in family.samples],
                    [sample.labels for sample in family.samples],
                    indexes,
                )
            )
        return cls(key, families, result.truncated_lines, dict(result.problems))

    def again(self, parts: list[bytes]) -> ParseResult | None:
        """The families of a body of this shape split into `parts`; None when a value is not a number
        (the parser then says where)."""
        try:
            values = list(map(float, parts[2::3]))
        except ValueError:
            return None
        return self.families_of(values)

    def families_of(self, values: list) -> ParseResult:
        """The families of a body of this shape whose sample lines have these values, in order."""
        families = []
        for name, kind, help_text, unit, shape, names, labels, indexes in self.families:
            taken = values[indexes] if indexes.__class__ is slice else [values[i] for i in indexes]
            samples = list(map(Sample, names, labels, taken))
            families.append(Family(name, kind, help_text, unit, samples, shape))
        return ParseResult(families, self.truncated, dict(self.problems))


def remaker(
    key: tuple, data: bytes, openmetrics: bool, escaping: str | None, keep: Callable[[str], bool] | None
) -> Callable[[], list[tuple]]:
    """How to make the families of the skeleton a body was made into, again: the body kept compressed
    (a target's series text is repetitive: a tenth of the labels' dicts, or less) and parsed again as it
    was, within the limits it kept then. The same bytes parse to the same families, so the skeleton is
    the same, value for value."""
    packed = zlib.compress(data, 1)

    def remake() -> list[tuple]:
        body = zlib.decompress(packed)
        order: list[Sample | None] = []
        result = parse(body, openmetrics=openmetrics, escaping=escaping, keep=keep, order=order)
        skeleton = Skeleton.of(key, PLAIN_SAMPLE.split(b"\n" + body), order, result)
        if skeleton is None:  # it was made of these very bytes
            raise RuntimeError("a skeleton could not be made again of the body it was made of")
        return skeleton.families

    return remake
