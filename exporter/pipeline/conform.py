"""Families that strict OpenMetrics readers would reject are served as untyped series instead.

An upstream may send a negative counter, an info of 0, a stateset sample without its label, a bucket
`le="NaN"` or a histogram whose `_count` is 2.5; served as typed families, these make a strict reader
(prometheus_client's OpenMetrics parser, and Prometheus with it) reject the whole scrape, every
target's series with it. The rules are OpenMetrics 1.0's, as prometheus_client checks them. A family
that breaks one is served split by sample name as `unknown` families, which carry any value: nothing
is lost, and the family keeps its type again on the first poll that is valid.

What makes a family's structure valid depends on its series alone, and is worked out once per shape;
what its values must satisfy (non-negative counts, integer buckets, `+Inf` equal to `_count`) is checked
every poll, from positions remembered with the shape.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable
from typing import cast

from exporter.core.family import Family, shape_of
from exporter.format import accel
from exporter.format.picks import picker
from exporter.pipeline.normalize import _LABELS, _NAME, _group_keys, _shapes

__all__ = ["Conformer", "values_rule"]

#: The plan of a family that can never be served with its type (its structure breaks a rule).
_BROKEN = "broken"


class _Plan:
    """Positions of a family's samples (in its sample order) and what each poll's values must satisfy."""

    __slots__ = (
        "_check",
        "_checks",
        "bools",
        "equal",
        "floats",
        "integer",
        "nonneg",
        "not_nan",
        "not_negative",
        "ones",
        "ordered",
    )

    def __init__(self) -> None:
        self.nonneg: list[int] = []  # >= 0, NaN excluded
        self.not_negative: list[int] = []  # NaN or >= 0
        self.integer: list[int] = []  # whole numbers (finite)
        self.not_nan: list[int] = []
        self.ones: list[int] = []  # exactly 1
        self.bools: list[int] = []  # 0 or 1
        self.ordered: list[tuple[int, int]] = []  # value at the first <= value at the second
        self.equal: list[tuple[int, int]] = []
        self._check: Callable[[list[float]], bool] | None = None
        self._checks: list | None = None
        #: whether every value checked is a float (not an int: a source's families may have those)
        self.floats = False

    def holds(self, values: list[float]) -> bool:
        """Whether this poll's values keep every rule: checked at once (`check`) where they are floats, as
        a body's are; else (a source's ints) each check picks its values with an itemgetter and tests them
        with a C-level predicate. Either way a poll costs no Python bytecode per sample."""
        check = self._check
        if check is None:
            check = self._check = self.check()
        if self._checks is None:  # no int seen yet
            try:
                return check(values)
            except TypeError:  # an int among them: this family's next polls go straight to the checks below
                self._checks = self._compile()
        return all(rule(values) for rule in self._checks)

    def _compile(self) -> list:
        checks = []

        picked = picker  # a slice per run of positions: a fast path keeps these for as long as its shape

        if self.nonneg:
            get = picked(self.nonneg)
            checks.append(lambda values: all(map(operator.ge, get(values), _ZEROS)))
        if self.not_negative:
            get_nn = picked(self.not_negative)
            checks.append(lambda values: not any(map(operator.lt, get_nn(values), _ZEROS)))
        if self.integer and self.floats:  # quicker, but for floats alone (a TypeError for an int)
            get_whole = picked(self.integer)
            checks.append(lambda values: all(map(_IS_INTEGER, get_whole(values))))
        elif self.integer:  # v % 1 is 0.0 for whole numbers, NaN for NaN and the infinities
            get_int = picked(self.integer)
            checks.append(lambda values: all(map(_ZERO.__eq__, map(operator.mod, get_int(values), _ONES))))
        if self.not_nan:
            get_nan = picked(self.not_nan)
            checks.append(lambda values: all(map(operator.eq, get_nan(values), get_nan(values))))
        if self.ones:
            get_one = picked(self.ones)
            checks.append(lambda values: all(map(_ONE.__eq__, get_one(values))))
        if self.bools:
            get_bool = picked(self.bools)
            checks.append(lambda values: all(map(_BOOLS.__contains__, get_bool(values))))
        if self.ordered:
            low, high = picked([a for a, _ in self.ordered]), picked([b for _, b in self.ordered])
            checks.append(lambda values: all(map(operator.le, low(values), high(values))))
        if self.equal:
            left, right = picked([a for a, _ in self.equal]), picked([b for _, b in self.equal])
            checks.append(lambda values: all(map(operator.eq, left(values), right(values))))
        return checks

    @classmethod
    def joined(cls, plans: list[tuple[int, _Plan]]) -> _Plan:
        """One plan that holds where each of `plans` holds, each on the values from its offset on: the
        rules of several families checked at once on their values laid end to end, which must be floats."""
        joined = cls()
        joined.floats = True
        for offset, plan in plans:
            for name in ("nonneg", "not_negative", "integer", "not_nan", "ones", "bools"):
                getattr(joined, name).extend(offset + position for position in getattr(plan, name))
            for name in ("ordered", "equal"):
                getattr(joined, name).extend((offset + a, offset + b) for a, b in getattr(plan, name))
        return joined

    def check(self) -> Callable[[list[float]], bool]:
        """`holds` on floats, without the plan: what a fast path keeps. Its rules are packed as runs of
        positions (exporter.format.accel.rules: a few bytes a family, where the plan keeps an int per
        value) and checked in one call (accel.checker: in C where it was built); a value that is not a
        float is a TypeError."""
        packed = accel.rules(
            {
                "nonneg": self.nonneg,
                "not_negative": self.not_negative,
                "integer": self.integer,
                "not_nan": self.not_nan,
                "one": self.ones,
                "bool": self.bools,
                "ordered": self.ordered,
                "equal": self.equal,
            }
        )
        return accel.checker(packed)

    def empty(self) -> bool:
        return not (
            self.nonneg
            or self.not_negative
            or self.integer
            or self.not_nan
            or self.ones
            or self.bools
            or self.ordered
            or self.equal
        )


_ZERO, _ONE = 0.0, 1.0
_BOOLS = frozenset({0.0, 1.0})
_ONES = itertools.repeat(1.0)
_ZEROS = itertools.repeat(0.0)
_IS_INTEGER = float.is_integer
_VALUE = operator.attrgetter("value")


def _bound(text: str | None) -> float | None:
    """An `le` or `quantile` label that normalize serves as OpenMetrics accepts it: a number, not NaN."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if value != value:
        return None
    return value  # `Inf`, `1`: normalize serves it as Prometheus writes it (`+Inf`, `1.0`)


def _plan(family: Family) -> _Plan | str | None:
    """What `family` needs to be served with its type: None (nothing), _BROKEN (never), or a _Plan."""
    kind, name, samples = family.type, family.name, family.samples
    plan = _Plan()
    if kind == "counter":
        plan.nonneg = [i for i, s in enumerate(samples) if s.name[len(name) :] in ("", "_total")]
    elif kind == "info":
        plan.ones = list(range(len(samples)))
    elif kind == "stateset":
        if any(name not in sample.labels for sample in samples):
            return _BROKEN
        plan.bools = list(range(len(samples)))
    elif kind == "summary":
        for i, sample in enumerate(samples):
            suffix = sample.name[len(name) :]
            if suffix == "":
                quantile = _bound(sample.labels.get("quantile"))
                if quantile is None or not 0 <= quantile <= 1:
                    return _BROKEN
                plan.not_negative.append(i)  # a quantile's value may be NaN
            elif suffix in ("_sum", "_count"):
                if "quantile" in sample.labels:
                    return _BROKEN  # Go's text parser reads `quantile` on every sample of a summary
                plan.nonneg.append(i)
                if suffix == "_count":
                    plan.integer.append(i)
    elif kind in ("histogram", "gaugehistogram") and not _plan_histogram(family, plan):
        return _BROKEN
    return None if plan.empty() else plan


#: A histogram sample's part of its series (as indexes into a group's [buckets, count, sum]).
_BUCKET, _COUNT, _SUM, _OTHER = 0, 1, 2, 3
_COUNT_OR_SUM = frozenset({_COUNT, _SUM})


def _plan_histogram(family: Family, plan: _Plan) -> bool:
    name, gauge = family.name, family.type == "gaugehistogram"
    count_suffix, sum_suffix = ("_gcount", "_gsum") if gauge else ("_count", "_sum")
    samples = family.samples
    names = list(map(_NAME, samples))
    # Each sample's part of its series: a bucket, the count, the sum, or none (`_created`, say).
    part_of = {}
    for sample_name in dict.fromkeys(names):
        suffix = sample_name[len(name) :]
        part_of[sample_name] = {"_bucket": _BUCKET, count_suffix: _COUNT, sum_suffix: _SUM}.get(suffix, _OTHER)
    parts = list(map(part_of.__getitem__, names))
    labels = list(map(_LABELS, samples))
    bounds = list(map(dict.get, labels, itertools.repeat("le")))
    is_bucket = list(map(_BUCKET.__eq__, parts))
    read = {text: _bound(text) for text in set(itertools.compress(bounds, is_bucket))}
    if None in read.values():
        return False
    bound_of = cast("dict[str | None, float]", read)  # every bound read
    sealed = set(itertools.compress(bounds, map(_COUNT_OR_SUM.__contains__, parts)))
    sealed.discard(None)
    if sealed:
        return False  # Go's text parser reads `le` on every sample of a histogram
    # Each sample's series group (labels less `le`), named by the position of its first sample.
    seen: dict[object, int] = {}
    groups = list(map(seen.setdefault, _group_keys(labels, _shapes(labels), "le")[1], itertools.count()))
    in_series = list(map(_OTHER.__ne__, parts))
    positions = range(len(parts))
    bucket_positions = list(itertools.compress(positions, is_bucket))
    bucket_groups = list(itertools.compress(groups, is_bucket))
    bucket_bounds = list(map(bound_of.__getitem__, itertools.compress(bounds, is_bucket)))
    keys = list(zip(bucket_groups, bucket_bounds))
    if not all(map(operator.lt, keys, itertools.islice(keys, 1, None))):
        # Not each series' buckets together and in order, or a bound written twice: one bucket per
        # series and bound, the last written (as normalize serves them), by series and bound.
        buckets = sorted(dict(zip(keys, bucket_positions)).items())
        bucket_groups = [group for (group, _), _ in buckets]
        bucket_bounds = [bound for (_, bound), _ in buckets]
        bucket_positions = [position for _, position in buckets]
    if len(set(bucket_groups)) != len(set(itertools.compress(groups, in_series))):
        return False  # a series with a count or sum and no bucket
    is_count, is_sum = list(map(_COUNT.__eq__, parts)), list(map(_SUM.__eq__, parts))
    counts = dict(zip(itertools.compress(groups, is_count), itertools.compress(positions, is_count)))
    sums = dict(zip(itertools.compress(groups, is_sum), itertools.compress(positions, is_sum)))
    same_group = list(map(operator.eq, bucket_groups, bucket_groups[1:]))
    lasts = list(itertools.compress(range(len(bucket_positions)), map(operator.not_, [*same_group, False])))
    for first, last in zip([0, *(end + 1 for end in lasts[:-1])], lasts):
        if bucket_bounds[last] != math.inf:
            return False  # no +Inf bucket
        group = bucket_groups[last]
        count, total = counts.get(group), sums.get(group)
        if (count is None) != (total is None):
            return False  # OpenMetrics wants both or neither
        negative = bucket_bounds[first] < 0
        if total is not None and negative and not gauge:
            return False  # a histogram with negative buckets has no _sum
        if count is not None and total is not None:  # both or neither, from here
            plan.nonneg.append(count)
            plan.integer.append(count)
            plan.equal.append((bucket_positions[last], count))
            plan.not_nan.append(total)
            if not gauge or not negative:
                plan.nonneg.append(total)
    plan.nonneg += bucket_positions
    plan.integer += bucket_positions
    plan.ordered += itertools.compress(itertools.pairwise(bucket_positions), same_group)
    return True


def values_rule(family: Family) -> _Plan | None:
    """What decides, poll after poll, whether a family of this one's shape is served with its type: its
    values (a _Plan, whose `holds` says), or None where its shape alone does (it always is, or never)."""
    if family.type in ("gauge", "untyped", "unknown") or not family.samples:
        return None
    plan = _plan(family)
    return plan if isinstance(plan, _Plan) else None


class Conformer:
    """One target's check of its families against OpenMetrics, poll after poll."""

    def __init__(self) -> None:
        #: id(shape) -> (shape, plan): the parser's fast path hands out the same shape object poll after
        #: poll, and a shape tuple holds every series, so looking it up by identity saves hashing it.
        self._plans: dict[int, tuple[tuple, _Plan | str | None]] = {}
        self._used: dict[int, tuple[tuple, _Plan | str | None]] = {}
        #: shape -> plan, for shapes made anew each poll (a full parse, the unified families)
        self._by_shape: dict[tuple, _Plan | str | None] = {}
        self._by_shape_used: dict[tuple, _Plan | str | None] = {}

    def __call__(self, families: list[Family]) -> tuple[list[Family], int]:
        """The families, those that break a rule split into untyped ones; and how many samples were split."""
        out: list[Family] | None = None
        split = 0
        for index, family in enumerate(families):
            if family.type in ("gauge", "untyped", "unknown") or not family.samples:
                if out is not None:
                    out.append(family)
                continue
            plan = self._plan_of(family)
            if plan is None or (isinstance(plan, _Plan) and plan.holds(list(map(_VALUE, family.samples)))):
                if out is not None:
                    out.append(family)
                continue
            if out is None:
                out = list(families[:index])
            out += _untyped(family)
            split += len(family.samples)
        self._plans, self._used = self._used, {}
        self._by_shape, self._by_shape_used = self._by_shape_used, {}
        return (families if out is None else out), split

    def forget(self) -> None:
        """Drop the plans of the last poll's shapes (a unified family's shape holds its every series): a
        target its fast path serves does not call this again (exporter.pipeline.steady checks conform's
        rules itself), and a poll that takes the long way after all works them out again."""
        self._plans, self._used, self._by_shape, self._by_shape_used = {}, {}, {}, {}

    def _plan_of(self, family: Family) -> _Plan | str | None:
        key = family.shape
        handed = key is not None  # the parser's fast path hands out the same shape object poll after poll
        if key is not None:
            known = self._plans.get(id(key))
            if known is not None and known[0] is key:
                self._used[id(key)] = known
                return known[1]
        else:
            # A family made anew this poll (the unifier's, a full parse's): its shape is worked out once
            # and kept on it, so that the template stage, which asks next, does not work it out again
            # (no stage changes a family's names, labels or metadata after the unifier made it).
            key = family.shape = shape_of(family)
        plan = self._by_shape[key] if key in self._by_shape else _plan(family)
        self._by_shape_used[key] = plan
        if handed:
            self._used[id(key)] = (key, plan)
        return plan


def _untyped(family: Family) -> list[Family]:
    """The family split by sample name into untyped ones; each one's shape is its part of the family's
    (which samples of the family's series it has), however its samples came to be read."""
    by_name: dict[str, Family] = {}
    for sample in family.samples:
        by_name.setdefault(sample.name, Family(sample.name, "untyped", family.help)).samples.append(sample)
    whole = shape_of(family)
    for part in by_name.values():
        part.shape = (part.name, part.type, part.help, part.unit, whole)
    return list(by_name.values())
