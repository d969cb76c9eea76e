"""One target's whole way from what its source read to what /metrics serves.

    body ──parse──▶ families ──unify──▶ ──conform──▶ ──normalize, relabel──▶ served families
                                                                              (rendered text)

A `Pipeline` belongs to one target's poller and is dropped with it; it runs every stage of every
poll and is the only thing that remembers anything between polls. What a poll makes is an
`Output`: immutable, with each family's text already rendered. Scrapes read it and never write
back; nothing in here is told what scrapes do.

A target's bodies usually differ in their values alone: the same lines, new numbers. So the
pipeline remembers one thing, the *shape* of its last bodies (everything but the values, known by
the body key, `_body_key`), once two bodies running had it, and what the stages made of it:

- a `Skeleton` (exporter.pipeline.skeleton) makes the families of a body of that shape from its values alone,
  with one C-speed split of the body and a float per sample instead of a parse;
- a `Steady` (exporter.pipeline.steady) makes the served output of such a body from its values alone, with
  no families at all: the unifier's arithmetic compiled, conform's rules on the values, a template.

That is the fast path, and `run` reads as it goes: split the body, and if it fits the shape (the same
text but for its values), `Steady.fill` its values. Every other poll takes the long way through every stage, which is the
reference: a Steady is made from a long-way poll, checked against it, and gives way to it on any
poll whose values would take another decision (a histogram count that is not whole, a family
served untyped). Everything remembered is the size of one poll of this target.

What has no Steady takes the long way with a template of its families' shapes instead (`_serve`):
the families sources hand over (NATS, NVML: no body, no key), bodies with exemplars (which the split
cannot read), and shapes a Steady could not be made for (a 100k-sample body's unified arithmetic is
more than exporter.pipeline.traced compiles).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from exporter.core.family import Family, Sample, shape_of
from exporter.core.offload import let_scrapes_by
from exporter.format import accel
from exporter.format.parse import ParseError, ParseResult, parse
from exporter.pipeline.conform import Conformer
from exporter.pipeline.exposition import SeriesFamily, prerender
from exporter.pipeline.normalize import Normalized, normalize
from exporter.pipeline.relabel import Relabeler
from exporter.pipeline.skeleton import Skeleton, remaker
from exporter.pipeline.steady import LongWay, Steady
from exporter.pipeline.template import Template, values_of
from exporter.pipeline.unify import Unifier
from exporter.sources.base import Exposition, Payload, SourceError, TargetConfig

log = structlog.get_logger("exporter.pipeline.target")

__all__ = ["Output", "Pipeline", "families_of", "read"]


@dataclass(frozen=True, slots=True)
class Output:
    """What one poll made: the target's served families, rendered, and what was dropped on the way."""

    families: tuple[SeriesFamily, ...]
    #: Samples or lines dropped, by reason (`truncated_line`, `duplicate`, `served_untyped`, ...).
    dropped: dict[str, int] = field(default_factory=dict)
    #: Where the body's sample lines did not match its declared families (exporter.format.parse.ParseResult.problems).
    problems: dict[str, int] = field(default_factory=dict)
    #: The profile the unified series came from, and what `explain` reads (exporter.pipeline.unify.Unified).
    profile: str | None = None
    reading: Any = None

    @property
    def sample_count(self) -> int:
        return sum(len(family.samples) for family in self.families)


class _Body:
    """A body's sample lines (exporter.format.accel.PLAIN_SAMPLE), read in one pass (`accel.split`): their
    values and the body's key. The long way reads `parts`, the split as a list: [text before the first
    one, its series, its value, text up to the next one, ...]."""

    __slots__ = ("_parts", "_values", "exposition", "key")

    def __init__(self, exposition: Exposition):
        self.exposition = exposition
        values, count, shape, parts = accel.split(exposition.data)
        self._values = values
        #: Its shape, in a few bytes (`_body_key`).
        self.key = _body_key(exposition, count, shape)
        self._parts = parts

    @property
    def parts(self) -> list[bytes]:
        parts = self._parts
        if parts is None:
            parts = self._parts = accel.PLAIN_SAMPLE.split(b"\n" + self.exposition.data)
        return parts

    def readable(self) -> bool:
        """Whether the split read the body's sample lines as the parser would (if it read them): not where
        an exemplar puts a second value on a line, which the split would read as the line's own."""
        return _EXEMPLAR.search(self.exposition.data) is None

    def values(self) -> list[float] | None:
        """Its sample values, in order (a new list); None when one is not a number (the parser then says where)."""
        values = self._values
        return None if values is None else values.copy()


class _Shape:
    """The shape of a target's last bodies, and what the stages made of it."""

    __slots__ = ("key", "made_of", "misses", "skeleton", "steady", "tried")

    def __init__(self, body: _Body, skeleton: Skeleton):
        self.key = body.key
        self.skeleton = skeleton
        #: the body the skeleton was parsed from, until this shape's Steady is tried (the same poll)
        self.made_of: Exposition | None = body.exposition
        self.steady: Steady | None = None
        #: whether a Steady was tried for this shape; polls running that its Steady gave back to the long way
        self.tried = False
        self.misses = 0

    def fits(self, body: _Body) -> bool:
        """Whether a body has this shape: the same text but for its values (its key is this shape's)."""
        return body.key == self.key

    def wants_steady(self) -> bool:
        """Whether to make (again) this shape's Steady from this poll: first after the skeleton, and
        again when the last one gave two polls running to the long way (its values took another turn)."""
        return not self.tried or self.misses >= 2


class Pipeline:
    """One target's stages, and the shape of its last bodies (see the module's docstring)."""

    def __init__(self, target: TargetConfig, *, remember: bool = True):
        self.target = target
        #: False for a target polled once (`once`): then no shape is worked out or kept.
        self.remember = remember
        self.unifier = Unifier(target)
        #: Families strict OpenMetrics readers would reject -> untyped ones (exporter.pipeline.conform).
        self.conform = Conformer()
        self.relabel = Relabeler(target.metric_relabel_configs)
        #: The key of the last body read the long way (a shape is kept when the next one has it).
        self._last_key: tuple | None = None
        self._shape: _Shape | None = None
        #: Families handed over by a source: the shapes of the last ones served the long way, and the
        #: template made of them.
        self._last_shapes: tuple | None = None
        self._template: Template | None = None
        self._failed = False

    @property
    def settled(self) -> bool:
        """Whether a body of the last shape is served by the steady fast path: its polls cost their values.
        Until then (a first poll, a changed shape, the poll that builds the fast path) a poll takes the
        long way, tens of milliseconds for a body of a thousand series."""
        shape = self._shape
        return shape is not None and shape.steady is not None

    def run(self, families: list[Family] | None = None, exposition: Exposition | None = None) -> Output:
        """One poll: a source's families, or its exposition body, to what is served. Raises SourceError
        for a body that cannot be read or is over a limit; nothing about that body is remembered."""
        if exposition is None:
            return _output(self._through(families or [], self._serve))
        if exposition.keep is None and self.unifier.keep is not None:  # the allow/deny lists, applied while parsing
            exposition = replace(exposition, keep=self.unifier.keep)
        body = _Body(exposition) if self.remember else None
        shape = self._shape
        # The fast path. (A body that fits its shape has no exemplar: its text but for its values is the
        # text of the body the shape was made of, which had none.)
        if body is not None and shape is not None and shape.steady is not None and shape.fits(body):
            values = body.values()
            served = None if values is None else shape.steady.fill(values)
            if served is not None and values is not None:
                shape.misses = 0
                return self._steady_output(shape, shape.steady, served, values)
            shape.misses += 1  # a decision on values came out otherwise: the long way, for this poll
        if body is not None and not body.readable():
            body = None
        try:
            result = self._read(exposition, body)
        except ParseError as exc:
            raise _unreadable(exposition, exc) from None
        way = self._through(result.families, self._long_way if self._steady_ahead(body) else self._serve, result)
        shape = self._shape
        if body is not None and shape is not None and shape.wants_steady() and shape.fits(body):
            let_scrapes_by()
            self._make_steady(shape, body, way)
            # Served as the next polls will be (byte for byte the long way's, as the Steady was checked):
            # the long way's families, samples and label dicts go now, rather than stay in the target's
            # snapshot, beside every other target's, until its next poll.
            steady, values = shape.steady, body.values()
            served = None if steady is None or values is None else steady.fill(values)
            if steady is not None and served is not None and values is not None:
                return self._steady_output(shape, steady, served, values)
        return _output(way)

    def _steady_ahead(self, body: _Body | None) -> bool:
        """Whether a body's shape has (or may get) a Steady. Without one (a body with exemplars, which the
        split cannot read; a shape whose Steady could not be made), the long way serves the families as
        a source's are: through a template of their shapes, when the last poll had them too."""
        shape = self._shape
        if body is None:
            return False
        return shape is None or shape.steady is not None or not shape.tried or not shape.fits(body)

    def _steady_output(self, shape: _Shape, steady: Steady, served: tuple, values: list[float]) -> Output:
        skeleton = shape.skeleton
        skeleton.compact()  # what a poll off the fast path, or an explain, made again
        reading = steady.reading
        if reading is not None:  # what `explain` reads, made only if it does
            reading = self.unifier.reading_later(reading, lambda: skeleton.families_of(values).families)
        return Output(served, dict(steady.dropped), dict(steady.problems), steady.profile, reading)

    def _make_steady(self, shape: _Shape, body: _Body, way: LongWay) -> None:
        shape.tried, shape.misses = True, 0
        made_of, shape.made_of = shape.made_of, None
        values = body.values()
        shape.steady = None
        if values is None:
            return
        try:
            shape.steady = Steady.of(values, shape.skeleton, self.unifier, self._stages, way)
            if shape.steady is not None:
                self.conform.forget()  # the Steady checks conform's rules itself
                # The skeleton's labels are read again only off the fast path: made again, when they are,
                # of the body the skeleton was parsed from.
                remake = (
                    None
                    if made_of is None
                    else remaker(shape.key, made_of.data, made_of.openmetrics, made_of.escaping, made_of.keep)
                )
                shape.skeleton.compact(remake)
        except Exception:  # a bug here must cost speed, never a poll
            if not self._failed:
                self._failed = True
                log.exception(
                    "could not make this shape's fast path; its polls take the long way", target=self.target.name
                )

    def _through(self, families: list[Family], serve, result: ParseResult | None = None) -> LongWay:
        """The long way: each stage on the last one's families."""
        dropped: dict[str, int] = {}
        problems: dict[str, int] = {}
        if result is not None:
            problems = dict(result.problems)
            if result.truncated_lines:
                dropped["truncated_line"] = result.truncated_lines
        unified = self.unifier.apply(families)
        conformed, untyped = self.conform(unified.families)
        let_scrapes_by()
        served = serve(conformed)
        if untyped:
            dropped["served_untyped"] = untyped
        for reason, count in served.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
        return LongWay(unified, conformed, served, dropped, problems)

    # -- body -> families ---------------------------------------------------------------------------

    def read_body(self, exposition: Exposition) -> ParseResult:
        """The families of a body: made from the skeleton when the body has its shape, else parsed (and
        a skeleton made when the next body has this one's shape). ParseError or SourceError (a limit)
        when it cannot be read; then nothing is remembered of it."""
        return self._read(exposition, _split(exposition) if self.remember else None)

    def _read(self, exposition: Exposition, body: _Body | None) -> ParseResult:
        if not self.remember:
            return read(exposition)
        shape = self._shape
        if shape is not None and body is not None and shape.fits(body):
            again = shape.skeleton.again(body.parts)
            if again is not None:
                return again
        order: list[Sample | None] = []
        try:
            result = read(exposition, order)
        except (ParseError, SourceError):
            self._forget_body()
            raise
        for family in result.families:  # the shapes a skeleton will hand out, for every poll alike
            family.shape = shape_of(family)
        if body is None:
            self._forget_body()
        elif body.key == self._last_key:
            # The second body of this shape running: worth a skeleton, made from this parse (which
            # must have read exactly the lines the split found, or there is none).
            skeleton = Skeleton.of(body.key, body.parts, order, result)
            self._shape = _Shape(body, skeleton) if skeleton is not None else None
            self._last_key = None
        else:
            self._shape = None
            self._last_key = body.key
        return result

    def _forget_body(self) -> None:
        self._shape = None
        self._last_key = None

    # -- families -> served -------------------------------------------------------------------------

    def _stages(self, families: list[Family]) -> Normalized:
        target = self.target
        return self.relabel(normalize(families, target=target.name, labels=target.labels, prefix=target.prefix or ""))

    def _long_way(self, families: list[Family]) -> Normalized:
        """What the stages make of the families, rendered."""
        normalized = self._stages(families)
        return Normalized(prerender(normalized.families), normalized.dropped)

    def _serve(self, families: list[Family]) -> Normalized:
        """Families a source handed over: served through the template when they have its shapes, else
        the long way (and that poll's shapes become the next template's, when the next poll has them too)."""
        if not self.remember:
            return self._long_way(families)
        template = self._template
        shapes = tuple(map(shape_of, families))
        if template is not None and template.shapes == shapes:
            return template.fill(values_of(families))
        normalized = self._long_way(families)
        self._template = None
        if shapes != self._last_shapes:
            self._last_shapes = shapes
            return normalized
        self._last_shapes = None
        try:
            self._template = Template.of(families, shapes, self._stages, normalized)
        except Exception:  # a bug here must cost speed, never a poll
            if not self._failed:
                self._failed = True
                log.exception(
                    "could not remember this poll's output; its polls take the long way", target=self.target.name
                )
        return normalized


def _output(way: LongWay) -> Output:
    return Output(way.served.families, way.dropped, way.problems, way.unified.profile, way.unified.reading)


def _split(exposition: Exposition) -> _Body | None:
    """A body split on its sample lines; None for a body with exemplars, which put a second value on a
    line that the split would read as the line's own."""
    body = _Body(exposition)
    return body if body.readable() else None


#: Where an exemplar starts (a regular expression finds it faster than `in`, whose last byte is common).
_EXEMPLAR = re.compile(rb"# \{")


def read(exposition: Exposition, order: list[Sample | None] | None = None) -> ParseResult:
    """An exposition body parsed in full, within its target's limits: ParseError when it cannot be read,
    SourceError (`sample_limit`, `label_limit`) when it is over one. `order`: see exporter.format.parse.parse."""
    result = parse(
        exposition.data,
        openmetrics=exposition.openmetrics,
        escaping=exposition.escaping,
        keep=exposition.keep,
        order=order,
    )
    exposition.check_samples(sum(len(family.samples) for family in result.families))
    if exposition.label_limits:
        problem = label_problem(result.families, *exposition.label_limits)
        if problem is not None:
            raise SourceError("label_limit", f"{exposition.where}: {problem}", retryable=False)
    return result


def families_of(payload: Payload) -> list[Family]:
    """A payload's families as its source read them, before any stage: a body is parsed in full."""
    if payload.exposition is None:
        return payload.families
    try:
        return read(payload.exposition).families
    except ParseError as exc:
        raise _unreadable(payload.exposition, exc) from None


def _unreadable(exposition: Exposition, error: ParseError) -> SourceError:
    return SourceError("parse", f"{exposition.where}: {error}", raw=exposition.raw)


def _body_key(exposition: Exposition, count: int, shape: bytes) -> tuple:
    """A body's shape, in a few bytes: equal for two bodies that differ in sample values alone.

    `shape` (exporter.format.accel.split) is the text between sample lines with the length of every
    piece, and each line's series, one to a line (a series has no newline: PLAIN_SAMPLE), so that no two
    different splits give the same bytes; kept as its length and its hash, with the format and escaping
    that say how to read them. The hash is Python's own for bytes (SipHash, keyed anew in each process),
    half the time of SHA-256, which was a tenth of a steady poll. Two shapes that collided would only
    put a target's values in its own last series, which its upstream could send as they are anyway."""
    return exposition.openmetrics, exposition.escaping, count, len(shape), hash(shape)


def label_problem(families, count: int, name_length: int, value_length: int) -> str | None:
    """What breaks the first label limit, as Prometheus's label_limit and *_length_limit say it; else None."""

    def shown(name: str) -> str:  # an upstream's name, cut: the message is kept, logged and shown
        return name if len(name) <= 120 else name[:120] + "..."

    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if count and len(labels) > count:
                return f"series {shown(sample.name)} has {len(labels)} labels, over the label_limit of {count}"
            for label, value in labels.items():
                if name_length and len(label) > name_length:
                    return f"series {shown(sample.name)} has a label name of {len(label)} characters, over the label_name_length_limit of {name_length}"
                if value_length and len(value) > value_length:
                    return f"series {shown(sample.name)} label {label[:60]} has a value of {len(value)} characters, over the label_value_length_limit of {value_length}"
    return None
