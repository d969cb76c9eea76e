"""One target's whole way from what its source read to what /metrics serves.

    body ──parse──▶ families ──unify──▶ ──conform──▶ ──normalize, relabel──▶ served families
                                                                              (rendered text)

A `Pipeline` belongs to one target's poller and is dropped with it; it runs every stage of every
poll and is the only thing that remembers anything between polls. What a poll makes is an
`Output`: immutable, with each family's text already rendered. Scrapes read it and never write
back; nothing in here is told what scrapes do.

A target's polls usually differ in their values alone: the same series, HELP and TYPE lines, new
numbers. So the pipeline remembers one thing, the *shape* of the last poll (everything but the
values), and what each stage made of it:

- a `Skeleton` (exporter.pipeline.skeleton) makes the families of a body of that shape from its values alone,
  with one C-speed split of the body and a float per sample instead of a parse;
- a `Template` (exporter.pipeline.template) makes the served families, rendered, from their values alone.

Unify and conform run on every poll: they compute values (sums, ratios, unit changes) and decide
on values (a histogram whose counts go down is served untyped), which no template could keep. A
poll of another shape takes the long way through every stage, and becomes the shape remembered
when the next poll has it too (so a target whose series change on every poll never pays for one).
Everything remembered is the size of one poll of this target.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from exporter.core.family import Family, Sample, shape_of
from exporter.format.parse import ParseError, ParseResult, parse
from exporter.pipeline.conform import Conformer
from exporter.pipeline.exposition import SeriesFamily, prerender
from exporter.pipeline.normalize import Normalized, normalize
from exporter.pipeline.relabel import Relabeler
from exporter.pipeline.skeleton import PLAIN_SAMPLE, Skeleton
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


class Pipeline:
    """One target's stages, and the shape of its last poll (see the module's docstring)."""

    def __init__(self, target: TargetConfig, *, remember: bool = True):
        self.target = target
        #: False for a target polled once (`once`): then no shape is worked out or kept.
        self.remember = remember
        self.unifier = Unifier(target)
        #: Families strict OpenMetrics readers would reject -> untyped ones (exporter.pipeline.conform).
        self.conform = Conformer()
        self.relabel = Relabeler(target.metric_relabel_configs)
        #: The shape key of the last body read the long way (a skeleton is made when the next one has it).
        self._last_key: tuple | None = None
        self._skeleton: Skeleton | None = None
        #: The shapes of the last families served the long way, and the template made of them.
        self._last_shapes: tuple | None = None
        self._template: Template | None = None
        self._failed = False

    def run(self, families: list[Family] | None = None, exposition: Exposition | None = None) -> Output:
        """One poll: a source's families, or its exposition body, to what is served. Raises SourceError
        for a body that cannot be read or is over a limit; nothing about that body is remembered."""
        dropped: dict[str, int] = {}
        problems: dict[str, int] = {}
        if exposition is not None:
            if exposition.keep is None and self.unifier.keep is not None:  # the allow/deny lists, applied while parsing
                exposition = replace(exposition, keep=self.unifier.keep)
            try:
                read = self.read_body(exposition)
            except ParseError as exc:
                raise _unreadable(exposition, exc) from None
            families = read.families
            problems = dict(read.problems)
            if read.truncated_lines:
                dropped["truncated_line"] = read.truncated_lines
        unified = self.unifier.apply(families or [])
        conformed, untyped = self.conform(unified.families)
        normalized = self._serve(conformed)
        if untyped:
            dropped["served_untyped"] = untyped
        for reason, count in normalized.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
        return Output(normalized.families, dropped, problems, unified.profile, unified.reading)

    # -- body -> families ---------------------------------------------------------------------------

    def read_body(self, exposition: Exposition) -> ParseResult:
        """The families of a body: made from the skeleton when the body has its shape, else parsed (and
        a skeleton made when the next body has this one's shape). ParseError or SourceError (a limit)
        when it cannot be read; then nothing is remembered of it."""
        data = exposition.data
        if not self.remember:
            return read(exposition)
        # Exemplars put a second value on a line, which the split would read as the line's own.
        parts = None if b"# {" in data else PLAIN_SAMPLE.split(b"\n" + data)
        key = _body_key(exposition, parts) if parts is not None else None
        skeleton = self._skeleton
        if skeleton is not None and parts is not None and key is not None and skeleton.key == key:
            again = skeleton.again(parts)
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
        if key is None:
            self._forget_body()
        elif key == self._last_key:
            # The second body of this shape running: worth a skeleton, made from this parse (which
            # must have read exactly the lines the split found, or there is none).
            assert parts is not None  # `key` is made from them
            self._skeleton = Skeleton.of(key, parts, order, result)
            self._last_key = None
        else:
            self._skeleton = None
            self._last_key = key
        return result

    def _forget_body(self) -> None:
        self._skeleton = None
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
        """Served through the template when the families have its shapes, else the long way (and that
        poll's shapes become the next template's, when the next poll has them too)."""
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


def _body_key(exposition: Exposition, parts: list[bytes]) -> tuple:
    """A body's shape, in a few bytes: equal for two bodies that differ in sample values alone.

    The text between sample lines and each line's series, hashed with the length of every piece (so
    that no two different splits hash alike), with the format and escaping that say how to read them."""
    between, series = parts[0::3], parts[1::3]
    digest = hashlib.blake2b(digest_size=16)
    for pieces in (between, series):
        digest.update(array("Q", map(len, pieces)).tobytes())
        digest.update(b"".join(pieces))
    return exposition.openmetrics, exposition.escaping, len(series), digest.digest()


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
