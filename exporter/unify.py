"""The unified vocabulary: one family per concept, computed from a target's raw families through its profile.

Unified series carry `backend` (the profile's name) and `model`, plus `outcome` on finished requests;
other upstream labels (engine, rank, version) are folded away: counts add up, the KV-cache ratio takes
the fullest. They are computed from the families as parsed, before names are sanitized, so profiles can
name upstream metrics as the backends spell them.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from prometheus_client.utils import floatToGoString

from exporter import profiles
from exporter.family import Family, Sample
from exporter.family_filter import family_filter
from exporter.normalize import exposition_names, served_base, served_type
from exporter.profiles import CONCEPTS, FINISHED, Concept, Profile, Source, sources_of
from exporter.sources.base import TargetConfig

log = structlog.get_logger("exporter.unify")

INF = math.inf
#: What a Unifier has logged before its first poll: nothing, so that the first profile (or none) is said.
_NOT_YET = "<not yet>"


@dataclass(frozen=True, slots=True)
class Unified:
    """What one poll serves before normalizing: raw families (unless `raw: false`) and unified ones."""

    families: list[Family]
    #: The profile used, or None (none detected, or `profile: none`).
    profile: str | None


def unify(profile: Profile, families: Iterable[Family], *, model: str | None = None) -> list[Family]:
    """The unified families `profile` finds in `families`; `model` names the model where the backend does not."""
    index = _SampleIndex(families, _wanted_names(profile))
    out = []
    for concept_name, choices in profile.series.items():
        concept = CONCEPTS[concept_name]
        for choice in choices:
            sources = sources_of(choice)
            if not any(index.has(source, concept) for source in sources):
                continue  # not in this payload: try the next (deprecated) choice
            family = _compute(concept_name, concept, sources, index, profile, model or "")
            if family.samples:
                out.append(family)
            break  # the first choice present is used alone, even if it yields nothing usable
    return out


class Unifier:
    """One target's vocabulary settings applied to each poll: family filter, profile, raw series or not."""

    def __init__(self, target: TargetConfig):
        self.target = target.name
        self.setting = target.profile
        self.raw = target.raw
        self.model = target.model
        self.prefix = target.prefix or ""
        self.keep = family_filter(target.allow_families, target.deny_families)
        self.last_profile: str | None = _NOT_YET
        self._namesakes_said: set[str] = set()
        self._names: dict[tuple[str, str], tuple[str, ...]] = {}
        #: (family names with samples, the profile they were detected as), from the last poll
        self._detected: tuple[tuple[str, ...], Profile | None] | None = None
        #: (unified names, raw family names and types, which raw families clash), from the last poll
        self._clashes: tuple[tuple, list[int]] | None = None

    def apply(self, families: list[Family]) -> Unified:
        if self.keep is not None:  # http sources filtered while parsing; the other kinds are filtered here
            families = [family for family in families if self.keep(family.name)]
        profile = self._profile(families)
        if profile is None:
            return Unified(families if self.raw else [], None)
        unified = unify(profile, families, model=self.model)
        raw = self._beside(profile, unified, families) if self.raw else []
        return Unified(raw + unified, profile.name)

    def _profile(self, families: list[Family]) -> Profile | None:
        if self.setting == profiles.NONE:
            return None
        if self.setting:
            profile = profiles.by_name(self.setting)
        else:
            names = tuple([family.name for family in families if family.samples])
            if self._detected is None or self._detected[0] != names:  # the same families as last poll, usually
                self._detected = (names, profiles.detect(list(names)))
            profile = self._detected[1]
        name = profile.name if profile else None
        if name != self.last_profile:
            log.info("profile in use", target=self.target, profile=name, detected=self.setting is None)
            self.last_profile = name
        return profile

    def _beside(self, profile: Profile, unified: list[Family], families: list[Family]) -> list[Family]:
        """Raw families, less any that feeds a unified family of its own served name (NIM's unprefixed
        `prompt_tokens_total`): that series is served once, as the unified series, rather than twice under
        one name, which would double every sum over it. An unrelated namesake is served as it is."""
        taken = frozenset(name for family in unified for name in self._served_names(family.name, family.type))
        # Which families share a served name with a unified one depends on names and types alone:
        # worked out again only when they change (a target's families are usually the same each poll).
        key = (taken, tuple([family.name for family in families]), tuple([family.type for family in families]))
        if self._clashes is None or self._clashes[0] != key:
            clashes = [
                index for index, family in enumerate(families)
                if not taken.isdisjoint(self._served_names(family.name, served_type(family)))
            ]
            self._clashes = (key, clashes)
        clashes = self._clashes[1]
        if not clashes:
            return list(families)
        read = _wanted_names(profile)
        dropped = set()
        for index in clashes:
            family = families[index]
            if any(sample.name in read for sample in family.samples):
                dropped.add(index)
                if family.name not in self._namesakes_said:
                    self._namesakes_said.add(family.name)
                    log.info("raw family served once, as its unified namesake", target=self.target, family=family.name)
        return [family for index, family in enumerate(families) if index not in dropped]

    def _served_names(self, name: str, kind: str) -> tuple[str, ...]:
        """Every exposition name a family of this upstream name and type is served under (remembered:
        a target's families are the same every poll)."""
        names = self._names.get((name, kind))
        if names is None:
            if len(self._names) > 10_000:
                self._names.clear()
            names = self._names[(name, kind)] = exposition_names(served_base(name, kind, self.prefix), kind)
        return names


# -- reading the payload ------------------------------------------------------------------------


def _sample_names(source: Source, concept: Concept) -> tuple[str, ...]:
    """The upstream sample names a source reads, in order of preference where there are two spellings."""
    metric = source.metric
    if concept.type == "histogram":
        return (metric + "_bucket", metric + "_count", metric + "_sum")
    if source.part == "sum":
        return (metric + "_sum",)
    if concept.type == "counter":
        return (metric + "_total", metric)  # prometheus_client writes `_total`; Triton and TGI do not
    return (metric,) + ((source.minus,) if source.minus else ())


def _wanted_names(profile: Profile) -> frozenset[str]:
    """Every upstream sample name the profile reads (the same for every poll, so computed once)."""
    names = _WANTED.get(profile.name)
    if names is None or names[0] is not profile:
        names = _WANTED[profile.name] = (profile, _names_read(profile))
    return names[1]


_WANTED: dict[str, tuple[Profile, frozenset[str]]] = {}


def _names_read(profile: Profile) -> frozenset[str]:
    return frozenset(
        name
        for concept_name, choices in profile.series.items()
        for choice in choices
        for source in sources_of(choice)
        for name in _sample_names(source, CONCEPTS[concept_name])
    )


class _SampleIndex:
    """The payload's samples by sample name, only for names the profile reads."""

    def __init__(self, families: Iterable[Family], wanted: frozenset[str]):
        self._by_name: dict[str, list[Sample]] = defaultdict(list)
        for family in families:
            for sample in family.samples:
                if sample.name in wanted:
                    self._by_name[sample.name].append(sample)

    def samples(self, name: str, match: dict[str, str]) -> list[Sample]:
        found = self._by_name.get(name, ())
        if not match:
            return list(found)
        return [s for s in found if all(s.labels.get(key) == value for key, value in match.items())]

    def has(self, source: Source, concept: Concept) -> bool:
        names = _sample_names(source, concept)
        if source.minus:
            names = names[:1]
        return any(self.samples(name, source.match) for name in names)

    def counter(self, source: Source, concept: Concept) -> list[Sample]:
        for name in _sample_names(source, concept):
            found = self.samples(name, source.match)
            if found:
                return found
        return []


# -- computing the unified families ------------------------------------------------------------------


def _compute(
    name: str, concept: Concept, sources: list[Source], index: _SampleIndex, profile: Profile, model: str
) -> Family:
    def model_of(labels: dict[str, str]) -> str:
        return (labels.get(profile.model_label, "") if profile.model_label else "") or model

    family = Family(name, concept.type, concept.help)
    own = {"backend": profile.name}

    def labels_for(model_name: str, **extra: str) -> dict[str, str]:
        labels = dict(own)
        if model_name:
            labels["model"] = model_name
        labels.update(extra)
        return labels

    if concept.type == "gauge":
        values = _gauges(sources, index, model_of, concept)
        family.samples = [Sample(name, labels_for(m), v) for m, v in values.items()]
    elif concept.type == "counter":
        totals: dict[tuple[str, str], float] = defaultdict(float)
        for source in sources:
            outcome_of = _outcome_reader(source) if name == FINISHED else (lambda labels: "")
            for sample in index.counter(source, concept):
                totals[(model_of(sample.labels), outcome_of(sample.labels))] += sample.value
        family.samples = [
            Sample(name, labels_for(m, **({"outcome": outcome} if name == FINISHED else {})), v)
            for (m, outcome), v in totals.items()
        ]
    else:
        for m, histogram in _histograms(sources, index, model_of).items():
            family.samples.extend(histogram.samples(name, labels_for(m)))
    return family


def _gauges(
    sources: list[Source], index: _SampleIndex, model_of: Callable[[dict[str, str]], str], concept: Concept
) -> dict[str, float]:
    combine = max if concept.combine == "max" else (lambda a, b: a + b)
    values: dict[str, float] = {}
    for source in sources:
        for sample in index.samples(source.metric, source.match):
            key, value = model_of(sample.labels), sample.value / source.divisor
            values[key] = combine(values[key], value) if key in values else value
        if source.minus:
            for sample in index.samples(source.minus, source.match):
                key = model_of(sample.labels)
                if key in values:
                    values[key] = max(0.0, values[key] - sample.value / source.divisor)
    return values


def _outcome_reader(source: Source) -> Callable[[dict[str, str]], str]:
    if source.outcome is not None:
        fixed = source.outcome
        return lambda labels: fixed
    label, renames = source.outcome_label or "", source.outcomes

    def read(labels: dict[str, str]) -> str:
        value = labels.get(label) or "unknown"
        return renames.get(value, value)

    return read


@dataclass
class _Histogram:
    """Cumulative bucket counts by upper bound, summed over every upstream series that maps here."""

    parts: list[tuple[dict[float, float], float, float | None]] = field(default_factory=list)

    def samples(self, name: str, labels: dict[str, str]) -> list[Sample]:
        bounds = sorted({bound for buckets, _, _ in self.parts for bound in buckets})
        # An upstream series with other bounds counts, at `bound`, the most any of its bounds up to
        # `bound` holds: one sweep over its sorted buckets beside the sorted union of bounds.
        totals = [0.0] * len(bounds)
        for buckets, _, _ in self.parts:
            own = sorted(buckets.items())
            position, held = 0, None
            for index, bound in enumerate(bounds):
                while position < len(own) and own[position][0] <= bound:
                    value = own[position][1]
                    if held is None or value > held:
                        held = value
                    position += 1
                if held is not None:
                    totals[index] += held
        bucket = name + "_bucket"
        out = [
            Sample(bucket, {**labels, "le": _bound_text(bound)}, cumulative) for bound, cumulative in zip(bounds, totals)
        ]
        sums = [total for _, _, total in self.parts]
        if all(total is not None for total in sums):  # OpenMetrics: `_count` and `_sum` go together
            out.append(Sample(name + "_count", dict(labels), sum(count for _, count, _ in self.parts)))
            out.append(Sample(name + "_sum", dict(labels), sum(sums)))
        return out


@functools.lru_cache(maxsize=1024)
def _bound_text(bound: float) -> str:
    return floatToGoString(bound)


def _histograms(
    sources: list[Source], index: _SampleIndex, model_of: Callable[[dict[str, str]], str]
) -> dict[str, _Histogram]:
    """Histograms by model. A summary, or a histogram without buckets, gives its count as the `+Inf`
    bucket; an upstream series whose buckets lack `+Inf` (a cut-off payload) is left out."""
    merged: dict[str, _Histogram] = defaultdict(_Histogram)
    for source in sources:
        groups: dict[frozenset, dict] = defaultdict(lambda: {"buckets": {}, "count": None, "sum": None, "broken": False})
        for sample in index.samples(source.metric + "_bucket", source.match):
            group = groups[_without(sample.labels, "le")]
            try:
                bound = float(sample.labels.get("le", ""))
            except ValueError:
                group["broken"] = True
                continue
            group["buckets"][bound if bound == INF else bound / source.divisor] = sample.value
        for sample in index.samples(source.metric + "_count", source.match):
            groups[_without(sample.labels, "le")]["count"] = sample.value
        for sample in index.samples(source.metric + "_sum", source.match):
            groups[_without(sample.labels, "le")]["sum"] = sample.value / source.divisor
        for key, group in groups.items():
            buckets, count = group["buckets"], group["count"]
            if group["broken"] or (buckets and INF not in buckets):
                continue
            if not buckets:
                if count is None or group["sum"] is None:
                    continue  # a count alone is no histogram
                buckets = {INF: count}
            if not all(_is_count(value) for value in (*buckets.values(), *(() if count is None else (count,)))):
                continue  # bucket counts are whole, non-negative numbers: this series is not a histogram
            merged[model_of(dict(key))].parts.append((buckets, buckets[INF] if count is None else count, group["sum"]))
    return merged


def _is_count(value: float) -> bool:
    return value >= 0 and math.isfinite(value) and value.is_integer()


def _without(labels: dict[str, str], name: str) -> frozenset:
    return frozenset(item for item in labels.items() if item[0] != name)

