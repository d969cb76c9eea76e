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

import math

from prometheus_client.utils import floatToGoString

from exporter.family import Family, shape_of

__all__ = ["Conformer"]

#: The plan of a family that can never be served with its type (its structure breaks a rule).
_BROKEN = "broken"


class _Plan:
    """Positions of a family's samples (in its sample order) and what each poll's values must satisfy."""

    __slots__ = ("nonneg", "not_negative", "integer", "not_nan", "ones", "bools", "ordered", "equal")

    def __init__(self) -> None:
        self.nonneg: list[int] = []  # >= 0, NaN excluded
        self.not_negative: list[int] = []  # NaN or >= 0
        self.integer: list[int] = []  # whole numbers (finite)
        self.not_nan: list[int] = []
        self.ones: list[int] = []  # exactly 1
        self.bools: list[int] = []  # 0 or 1
        self.ordered: list[tuple[int, int]] = []  # value at the first <= value at the second
        self.equal: list[tuple[int, int]] = []

    def holds(self, values: list[float]) -> bool:
        return (
            all(values[i] >= 0 for i in self.nonneg)
            and not any(values[i] < 0 for i in self.not_negative)
            and all(math.isfinite(values[i]) and values[i].is_integer() for i in self.integer)
            and all(values[i] == values[i] for i in self.not_nan)
            and all(values[i] == 1 for i in self.ones)
            and all(values[i] in (0.0, 1.0) for i in self.bools)
            and all(values[a] <= values[b] for a, b in self.ordered)
            and all(values[a] == values[b] for a, b in self.equal)
        )

    def empty(self) -> bool:
        return not (self.nonneg or self.not_negative or self.integer or self.not_nan or self.ones or self.bools or self.ordered or self.equal)


def _bound(text: str | None) -> float | None:
    """An `le` or `quantile` label as OpenMetrics accepts it: a number, not NaN, `+Inf` spelled so."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if value != value or (value == math.inf and text != floatToGoString(value)):
        return None
    return value


def _plan(family: Family) -> _Plan | str | None:
    """What `family` needs to be served with its type: None (nothing), _BROKEN (never), or a _Plan."""
    kind, name, samples = family.type, family.name, family.samples
    plan = _Plan()
    if kind == "counter":
        plan.nonneg = [i for i, s in enumerate(samples) if s.name[len(name):] in ("", "_total")]
    elif kind == "info":
        plan.ones = list(range(len(samples)))
    elif kind == "stateset":
        if any(name not in sample.labels for sample in samples):
            return _BROKEN
        plan.bools = list(range(len(samples)))
    elif kind == "summary":
        for i, sample in enumerate(samples):
            suffix = sample.name[len(name):]
            if suffix == "":
                quantile = _bound(sample.labels.get("quantile"))
                if quantile is None or not 0 <= quantile <= 1:
                    return _BROKEN
                plan.not_negative.append(i)  # a quantile's value may be NaN
            elif suffix in ("_sum", "_count"):
                plan.nonneg.append(i)
                if suffix == "_count":
                    plan.integer.append(i)
    elif kind in ("histogram", "gaugehistogram"):
        if not _plan_histogram(family, plan):
            return _BROKEN
    return None if plan.empty() else plan


def _plan_histogram(family: Family, plan: _Plan) -> bool:
    name, gauge = family.name, family.type == "gaugehistogram"
    count_suffix, sum_suffix = ("_gcount", "_gsum") if gauge else ("_count", "_sum")
    groups: dict[frozenset, dict] = {}
    for i, sample in enumerate(family.samples):
        suffix = sample.name[len(name):]
        if suffix == "_bucket":
            bound = _bound(sample.labels.get("le"))
            if bound is None:
                return False
            key = frozenset(item for item in sample.labels.items() if item[0] != "le")
            groups.setdefault(key, {"buckets": [], "count": None, "sum": None})["buckets"].append((bound, i))
        elif suffix in (count_suffix, sum_suffix):
            group = groups.setdefault(frozenset(sample.labels.items()), {"buckets": [], "count": None, "sum": None})
            group["count" if suffix == count_suffix else "sum"] = i
    for group in groups.values():
        buckets = sorted(group["buckets"])
        bounds = [bound for bound, _ in buckets]
        if not buckets or bounds[-1] != math.inf or len(set(bounds)) != len(bounds):
            return False  # no +Inf bucket, or two buckets of one bound
        count, total = group["count"], group["sum"]
        if (count is None) != (total is None):
            return False  # OpenMetrics wants both or neither
        negative = bounds[0] < 0
        if total is not None and negative and not gauge:
            return False  # a histogram with negative buckets has no _sum
        positions = [i for _, i in buckets]
        plan.nonneg += positions
        plan.integer += positions
        plan.ordered += list(zip(positions, positions[1:]))
        if count is not None:
            plan.nonneg.append(count)
            plan.integer.append(count)
            plan.equal.append((positions[-1], count))
            plan.not_nan.append(total)
            if not gauge or not negative:
                plan.nonneg.append(total)
    return True


class Conformer:
    """One target's check of its families against OpenMetrics, poll after poll."""

    def __init__(self) -> None:
        self._plans: dict[tuple, _Plan | str | None] = {}
        self._used: dict[tuple, _Plan | str | None] = {}

    def __call__(self, families: list[Family]) -> tuple[list[Family], int]:
        """The families, those that break a rule split into untyped ones; and how many samples were split."""
        out: list[Family] | None = None
        split = 0
        for index, family in enumerate(families):
            if family.type in ("gauge", "untyped", "unknown") or not family.samples:
                if out is not None:
                    out.append(family)
                continue
            key = shape_of(family)
            plan = self._plans.get(key, self)
            if plan is self:
                plan = _plan(family)
            self._used[key] = plan
            if plan is None or (plan is not _BROKEN and plan.holds([s.value for s in family.samples])):
                if out is not None:
                    out.append(family)
                continue
            if out is None:
                out = list(families[:index])
            out += _untyped(family)
            split += len(family.samples)
        self._plans, self._used = self._used, {}
        return (families if out is None else out), split


def _untyped(family: Family) -> list[Family]:
    by_name: dict[str, Family] = {}
    for sample in family.samples:
        by_name.setdefault(sample.name, Family(sample.name, "untyped", family.help)).samples.append(sample)
    return list(by_name.values())
