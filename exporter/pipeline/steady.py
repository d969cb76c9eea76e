"""A steady poll's fast path: a body with the last one's shape goes from its values to what is served.

A target's bodies usually differ in their values alone. For such a body, all the stages' work but
their arithmetic is last poll's again: which samples the unifier reads and how it combines them,
which families conform serves untyped, the served text around each value. A `Steady` keeps that
work, made once from a poll that took the long way (exporter.pipeline.target), and serves a poll of the
same shape from its values alone, making no Family or Sample:

    values ──unify plan──▶ unified values ──conform's rules──▶ ──template──▶ served families

- the unify plan is the unifier itself, traced (exporter.pipeline.traced): run once on values that remember
  their arithmetic, and compiled into one function of the next poll's values; the raw families'
  values pass through it by position;
- conform's rules are its own per-family checks (exporter.pipeline.conform.values_rule), on the unified
  values of each family whose values decide whether it keeps its type;
- the template (exporter.pipeline.template) renders the served families from the values.

Every decision the long way takes on values is taken again on the new ones: a histogram count that
is no longer a whole number fails a guard of the unify plan, a family conform would now serve
untyped (or typed again) fails its rule. Then `fill` gives None and the poll takes the long way:
slower, never different. A Steady is kept only if it gives back, byte for byte, what the long way
served from the poll it was made of.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter.core.family import Family
from exporter.core.offload import let_scrapes_by
from exporter.pipeline.conform import _Plan, values_rule
from exporter.pipeline.exposition import SeriesFamily
from exporter.pipeline.normalize import Normalized
from exporter.pipeline.skeleton import Skeleton
from exporter.pipeline.template import Template, checked
from exporter.pipeline.traced import Trace, TraceError
from exporter.pipeline.unify import Reading, Unified, Unifier

__all__ = ["LongWay", "Steady"]


@dataclass(frozen=True, slots=True)
class LongWay:
    """What the stages made of one poll, each stage on the last one's families: what is served, and what
    a Steady is made of and checked against."""

    unified: Unified
    conformed: list[Family]
    #: The served families, rendered.
    served: Normalized
    dropped: dict[str, int]
    problems: dict[str, int]


class Steady:
    """The stages' work on a body of one shape, less the values: `fill` serves a poll of that shape."""

    __slots__ = ("_broken", "_conformed", "_kept", "_replay", "_template", "dropped", "problems", "profile", "reading")

    def __init__(
        self,
        replay: Callable[[list[float]], list | None],
        kept: Callable[[list[float]], bool] | None,
        broken: list[tuple[int, int, Callable[[list[float]], bool]]],
        conformed: Callable[[Sequence], Sequence] | None,
        template: Template,
        way: LongWay,
    ):
        #: the unify plan: a poll's values -> its unified families' values, in order (None: a guard failed)
        self._replay = replay
        #: conform's rules that the unified values must keep (those of the families it served with their
        #: type, all at once), and those they must break (one per family it served untyped: its values'
        #: first and end)
        self._kept, self._broken = kept, broken
        #: the unified values in the order of the conformed families' samples (None: the same order)
        self._conformed = conformed
        self._template = template
        #: what the poll it was made of dropped and found: the same for every poll it serves
        self.dropped, self.problems = dict(way.dropped), dict(way.problems)
        self.profile = way.unified.profile
        #: what `explain` reads, less the samples of that poll (a poll it serves reads its own, if asked)
        reading = way.unified.reading
        self.reading: Reading | None = None if reading is None else reading.without_samples()

    @classmethod
    def of(
        cls,
        values: list[float],
        skeleton: Skeleton,
        unifier: Unifier,
        stages: Callable[[list[Family]], Normalized],
        way: LongWay,
    ) -> Steady | None:
        """The Steady of a body of `skeleton`'s shape with these values, which the long way made into
        `way` (`stages`: normalize and relabel, as the long way ran them); None where the stages did
        something a Steady cannot do again (then this shape's polls take the long way)."""
        unified = way.unified.families
        trace = Trace()
        try:
            traced = unifier.apply(skeleton.families_of(trace.inputs(values)).families)
        except TraceError:  # an operation a trace cannot replay, or too many of them
            return None
        if traced.profile != way.unified.profile or _structure(traced.families) != _structure(unified):
            return None
        let_scrapes_by()  # between the parts of a build (tens of ms in all), scrapes go first
        replay = trace.compile([sample.value for family in traced.families for sample in family.samples])
        let_scrapes_by()
        unified_values = replay(values)
        if unified_values is None:
            return None
        # Conform's rules, for each family whose values decide whether it keeps its type.
        kept: list[tuple[int, _Plan]] = []
        broken: list[tuple[int, int, Callable[[list[float]], bool]]] = []
        first = 0
        for family in unified:
            end = first + len(family.samples)
            rule = values_rule(family)
            if rule is not None and rule.holds(unified_values[first:end]):
                kept.append((first, rule))
            elif rule is not None:
                broken.append((first, end, rule.holds))
            first = end
        position_of = {id(sample): at for at, sample in enumerate(s for f in unified for s in f.samples)}
        order = [position_of.get(id(sample), -1) for family in way.conformed for sample in family.samples]
        if -1 in order:
            return None
        conformed = None if order == list(range(len(order))) else _picker(order)
        template = Template.of(way.conformed, (), stages, way.served)
        if template is None:
            return None
        steady = cls(replay, _Plan.joined(kept).check() if kept else None, broken, conformed, template, way)
        again = steady.fill(values)
        if again is None or checked(again) != checked(way.served.families):
            return None
        return steady

    def fill(self, values: list[float]) -> tuple[SeriesFamily, ...] | None:
        """The served families of a poll of this shape whose sample lines have these values; None where
        a decision the long way takes on values would come out otherwise (take the long way)."""
        try:
            unified = self._replay(values)
            if unified is None or (self._kept is not None and not self._kept(unified)):
                return None
        except (ArithmeticError, TypeError):  # the long way meets the one, and does not need the other
            return None
        for first, end, holds in self._broken:
            if holds(unified[first:end]):
                return None
        served = unified if self._conformed is None else self._conformed(unified)
        return self._template.fill(served).families


def _picker(positions: list[int]) -> Callable[[Sequence], Sequence]:
    if len(positions) == 1:
        only = positions[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*positions)


def _structure(families: list[Family]) -> list[tuple]:
    """Everything about families but their values."""
    return [(f.name, f.type, f.help, f.unit, [(s.name, s.labels) for s in f.samples]) for f in families]
