"""The unified vocabulary: one family per concept, computed from a target's raw families through its profile.

Unified series carry `backend` (the profile's name) and `model`, plus `outcome` on finished requests;
other upstream labels (engine, rank, version) are folded away: counts add up, the KV-cache ratio takes
the fullest. They are computed from the families as parsed, before names are sanitized, so profiles can
name upstream metrics as the backends spell them.

A steady poll does not run this module: the pipeline runs it once on traced values (exporter.pipeline.traced)
and replays the arithmetic it did on each poll's values (exporter.pipeline.steady). So its arithmetic on values
sticks to what a trace replays (+, -, *, /, comparisons, `is_integer`, and `larger` for `max`); anything
else on a value makes a trace give up (the shape's polls then take the long way), never go wrong.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import structlog
from prometheus_client.utils import floatToGoString

from exporter import profiles
from exporter.core.family import Family, Sample
from exporter.pipeline.family_filter import family_filter
from exporter.pipeline.normalize import _group_keys, exposition_names, fold_created, served_base, served_type
from exporter.pipeline.traced import larger
from exporter.profiles import CONCEPTS, FINISHED, Concept, Profile, Source, sources_of
from exporter.sources.base import TargetConfig

log = structlog.get_logger("exporter.pipeline.unify")

INF = math.inf
#: What a Unifier has logged before its first poll: nothing, so that the first profile (or none) is said.
_NOT_YET = "<not yet>"


@dataclass(frozen=True, slots=True)
class Reading:
    """What `explain` needs of one poll's families, kept with its snapshot so that a target's page can
    explain its last poll when asked: the names of the families with samples (after the family
    filter), and the samples the profile used reads (none without a profile). Far less than the
    families themselves, and nothing is worked out until someone asks."""

    names: tuple[str, ...]
    #: The profile the poll used, and its samples by name (see `_SampleIndex`).
    profile: str | None = None
    index: _SampleIndex | None = None

    def without_samples(self) -> Reading:
        """This reading less the samples it holds: what a poll of the same shape reads again, from its own
        samples (`Unifier.reading_later`). A fast path keeps this, not the samples of the poll it was made of."""
        if self.index is None:
            return self
        return Reading(self.names, self.profile, _SampleIndex.later(tuple, self.index.wanted))


@dataclass(frozen=True, slots=True)
class Unified:
    """What one poll serves before normalizing: raw families (unless `raw: false`) and unified ones."""

    families: list[Family]
    #: The profile used, or None (none detected, or `profile: none`).
    profile: str | None
    #: For `explain` (exporter.serve.explain.explain_reading).
    reading: Reading | None = None


def unify(
    profile: Profile, families: Iterable[Family], *, model: str | None = None, index: _SampleIndex | None = None
) -> list[Family]:
    """The unified families `profile` finds in `families`; `model` names the model where the backend does not.

    A series without the profile's model label (a Dynamo worker's request gauges, vLLM's cache_config_info)
    takes the target's `model:`, or else the one model the rest of the payload names, if it names one.
    `index`, if the caller has made it, is `families`' samples that `profile` reads."""
    if index is None:
        index = _SampleIndex(families, _wanted_names(profile))
    default = _DefaultModel(index, profile, model)
    out = []
    for concept_name, choices in profile.series.items():
        concept = CONCEPTS[concept_name]
        for choice in choices:
            sources = sources_of(choice)
            if not any(index.has(source, concept) for source in sources):
                continue  # not in this payload: try the next (deprecated) choice
            family = _compute(concept_name, concept, sources, index, profile, default)
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
        #: The profiles this target may use: the shipped ones and the config's `profile_files:`.
        self.extra = target.operator_profiles
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
        families = self._kept(families)
        names = tuple([family.name for family in families if family.samples])
        profile = self._profile(names)
        if profile is None:
            return Unified(families if self.raw else [], None, Reading(names))
        index = _SampleIndex(families, _wanted_names(profile))
        unified = unify(profile, families, model=self.model, index=index)
        raw = self._beside(profile, unified, families) if self.raw else []
        return Unified(raw + unified, profile.name, Reading(names, profile.name, index))

    def _kept(self, families: list[Family]) -> list[Family]:
        """The families this target keeps, one per metric."""
        if self.keep is not None:  # http sources filtered while parsing; the other kinds are filtered here
            families = [family for family in families if self.keep(family.name)]
        # One family per metric, whatever the format: the text format's `X_created` gauges go back into
        # X, so that a raw X dropped for its unified namesake (NIM's histograms) takes them along,
        # rather than leaving them to be folded into the unified X, whose series they do not match.
        return fold_created(families)

    def reading_later(self, reading: Reading, families: Callable[[], list[Family]]) -> Reading:
        """What `explain` reads of a poll of the same shape as `reading`'s, whose families are made from
        `families` only when someone asks (exporter.pipeline.target's fast path makes none)."""
        if reading.index is None:
            return reading  # no profile: the names are the shape's
        wanted = reading.index.wanted
        return Reading(reading.names, reading.profile, _SampleIndex.later(lambda: self._kept(families()), wanted))

    def _profile(self, names: tuple[str, ...]) -> Profile | None:
        """The profile for a poll whose families with samples have these names."""
        if self.setting == profiles.NONE:
            return None
        profile: Profile | None
        if self.setting:
            profile = profiles.by_name(self.setting, self.extra)
        else:
            if self._detected is None or self._detected[0] != names:  # the same families as last poll, usually
                self._detected = (names, profiles.detect(list(names), self.extra))
            profile = self._detected[1]
        name = profile.name if profile else None
        if name != self.last_profile:
            if name is not None:
                # `detected` says where the profile came from: the payload's names, or the config.
                log.info("profile in use", target=self.target, profile=name, detected=self.setting is None)
            else:
                log.info(
                    "no profile detected: serving the raw families only",
                    target=self.target,
                    hint="set `profile:` on the target if it is a known backend",
                )
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
                index
                for index, family in enumerate(families)
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
        if source.count:
            return _counter_names(metric) + _counter_names(source.count)
        return (metric + "_bucket", metric + "_count", metric + "_sum")
    if source.part is not None:
        return (f"{metric}_{source.part}",)
    if concept.type == "counter":
        return _counter_names(metric)
    return (metric,) + ((source.minus,) if source.minus else ()) + ((source.times.metric,) if source.times else ())


def _counter_names(metric: str) -> tuple[str, str]:
    return (metric + "_total", metric)  # prometheus_client writes `_total`; Triton and TGI do not


def _primary_names(source: Source, concept: Concept) -> tuple[str, ...]:
    """The sample names whose presence says the source is in a payload (not the gauge it subtracts or
    multiplies by, nor the counter of observations)."""
    if concept.type == "gauge":
        return (source.metric,)
    if concept.type == "histogram" and source.count:
        return _counter_names(source.metric)
    return _sample_names(source, concept)


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


_LABELS = operator.attrgetter("labels")
_VALUE = operator.attrgetter("value")


class _SampleIndex:
    """The payload's samples by sample name, only for names the profile reads."""

    def __init__(self, families: Iterable[Family], wanted: frozenset[str]):
        self.wanted = wanted
        self._later: Callable[[], Iterable[Family]] | None = None
        self._by_name: dict[str, list[Sample]] = defaultdict(list)
        # One pass over every sample, a set lookup each: faster than reading each family's names in C
        # first, since most families are not read at all.
        for family in families:
            for sample in family.samples:
                if sample.name in wanted:
                    self._by_name[sample.name].append(sample)

    @classmethod
    def later(cls, families: Callable[[], Iterable[Family]], wanted: frozenset[str]) -> _SampleIndex:
        """The index of `families()`, called the first time the index is read."""
        index = cls((), wanted)
        index._later = families
        return index

    def _made(self) -> dict[str, list[Sample]]:
        later = self._later
        if later is not None:
            self._by_name = _SampleIndex(later(), self.wanted)._by_name
            self._later = None
        return self._by_name

    def samples(self, name: str, match: dict[str, str]) -> list[Sample]:
        found = self._made().get(name, ())
        if not match:
            return list(found)
        return [s for s in found if all(s.labels.get(key) == value for key, value in match.items())]

    def has(self, source: Source, concept: Concept) -> bool:
        return any(self.samples(name, source.match) for name in _primary_names(source, concept))

    def counter(self, source: Source, concept: Concept) -> list[Sample]:
        return self.first_of(_sample_names(source, concept), source.match)

    def first_of(self, names: Iterable[str], match: dict[str, str]) -> list[Sample]:
        """The samples of the first of `names` present (a counter's two spellings)."""
        for name in names:
            found = self.samples(name, match)
            if found:
                return found
        return []

    def models(self, label: str) -> set[str]:
        """Every value of `label` among the samples read."""
        values = (map(dict.get, map(_LABELS, samples), itertools.repeat(label)) for samples in self._made().values())
        return set(filter(None, itertools.chain.from_iterable(values)))


# -- computing the unified families ------------------------------------------------------------------


class _DefaultModel:
    """The model of a series that names none: the target's `model:`, else the one model the payload's
    other series name (worked out once, and only if a series needs it)."""

    def __init__(self, index: _SampleIndex, profile: Profile, configured: str | None):
        self._index, self._label = index, profile.model_label
        self._model: str | None = configured or ("" if not profile.model_label else None)

    def __call__(self) -> str:
        if self._model is None:
            named = self._index.models(self._label or "")
            self._model = next(iter(named)) if len(named) == 1 else ""
        return self._model


def _compute(
    name: str,
    concept: Concept,
    sources: list[Source],
    index: _SampleIndex,
    profile: Profile,
    default: Callable[[], str],
) -> Family:
    label = profile.model_label

    def model_of(labels: dict[str, str]) -> str:
        return (labels.get(label, "") if label else "") or default()

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
            outcome_of = _outcome_reader(source) if name == FINISHED else _no_outcome
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


def _no_outcome(labels: dict[str, str]) -> str:
    return ""


def _gauges(
    sources: list[Source], index: _SampleIndex, model_of: Callable[[dict[str, str]], str], concept: Concept
) -> dict[str, float]:
    combine = larger if concept.combine == "max" else (lambda a, b: a + b)
    values: dict[str, float] = {}
    for source in sources:
        for sample, value in _gauge_values(source, index):
            key, value = model_of(sample.labels), value / source.divisor
            values[key] = combine(values[key], value) if key in values else value
        if source.minus:
            for sample in index.samples(source.minus, source.match):
                key = model_of(sample.labels)
                if key in values:
                    values[key] = larger(0.0, values[key] - sample.value / source.divisor)
    return values


def _gauge_values(source: Source, index: _SampleIndex) -> Iterable[tuple[Sample, float]]:
    """Each upstream sample of a gauge source with its value: as it is, multiplied by the `times` gauge of the
    same labels (less the factor's own match labels), or the product of its `value_labels`."""
    samples = index.samples(source.metric, source.match)
    if source.times is not None:
        factor_keys = set(source.times.match)
        own_keys = set(source.match)
        factors = {
            _without_keys(s.labels, factor_keys): s.value
            for s in index.samples(source.times.metric, source.times.match)
        }
        for sample in samples:
            factor = factors.get(_without_keys(sample.labels, own_keys))
            if factor is not None:
                yield sample, sample.value * factor
        return
    if source.value_labels:
        for sample in samples:
            product = 1.0
            try:
                for label in source.value_labels:
                    product *= float(sample.labels.get(label, ""))
            except ValueError:
                continue
            if math.isfinite(product):
                yield sample, product
        return
    for sample in samples:
        yield sample, sample.value


def _without_keys(labels: dict[str, str], keys: set[str]) -> frozenset:
    return frozenset(item for item in labels.items() if item[0] not in keys)


def _outcome_reader(source: Source) -> Callable[[dict[str, str]], str]:
    labels_read = source.outcome_labels
    if not labels_read:
        fixed = source.outcome or ""
        return lambda labels: fixed
    renames, others, default = source.outcomes, source.others, source.outcome

    def read(labels: dict[str, str]) -> str:
        value = next((v for label in labels_read if (v := labels.get(label))), None)
        if value is None:
            return default or others or "unknown"
        return renames.get(value) or others or value

    return read


@dataclass
class _Histogram:
    """Cumulative bucket counts by upper bound, summed over every upstream series that maps here."""

    parts: list[tuple[dict[float, float], float, float | None]] = field(default_factory=list)

    def samples(self, name: str, labels: dict[str, str]) -> list[Sample]:
        bounds = sorted(set().union(*(buckets for buckets, _, _ in self.parts)))
        # Each upstream series counts, at each bound, the most any of its own bounds up to that one holds
        # (a running max, for counts that should not go down), or nothing below its first bound; the
        # totals add the series up in order, a column at a time.
        rows = [_held(buckets, bounds) for buckets, _, _ in self.parts]
        totals = [sum(column, 0.0) for column in zip(*rows)] if rows else [0.0] * len(bounds)
        bucket = name + "_bucket"
        out = [
            Sample(bucket, {**labels, "le": _bound_text(bound)}, cumulative)
            for bound, cumulative in zip(bounds, totals)
        ]
        sums = [total for _, _, total in self.parts]
        if all(total is not None for total in sums):  # OpenMetrics: `_count` and `_sum` go together
            out.append(Sample(name + "_count", dict(labels), sum(count for _, count, _ in self.parts)))
            out.append(Sample(name + "_sum", dict(labels), sum(cast("list[float]", sums))))
        return out


def _held(buckets: dict[float, float], bounds: list[float]) -> list[float]:
    """What one series counts at each of `bounds` (see `_Histogram.samples`); 0.0 below its first bound."""
    own = sorted(buckets)
    if own == bounds:  # the usual case: every series of the histogram has the same bounds
        return list(
            itertools.accumulate(map(buckets.__getitem__, own), larger)
        )  # max, as arithmetic (exporter.pipeline.traced)
    # Other bounds: one sweep over its sorted buckets beside the sorted union of bounds.
    items = sorted(buckets.items())
    row = [0.0] * len(bounds)
    position, held = 0, None
    for index, bound in enumerate(bounds):
        while position < len(items) and items[position][0] <= bound:
            value = items[position][1]
            held = value if held is None else larger(held, value)
            position += 1
        if held is not None:
            row[index] = held
    return row


def _bound_text(bound: float) -> str:
    """`le` as prometheus_client writes it (floatToGoString): for a finite bound under a million, repr."""
    return repr(bound) if -1e6 < bound < 1e6 else floatToGoString(bound)


def _histograms(
    sources: list[Source], index: _SampleIndex, model_of: Callable[[dict[str, str]], str]
) -> dict[str, _Histogram]:
    """Histograms by model. A summary, or a histogram without buckets, gives its count as the `+Inf`
    bucket; an upstream series whose buckets lack `+Inf` (a cut-off payload) is left out."""
    merged: dict[str, _Histogram] = defaultdict(_Histogram)
    for source in sources:
        if source.count:
            _from_counters(source, index, model_of, merged)
            continue
        divisor = source.divisor
        buckets = index.samples(source.metric + "_bucket", source.match)
        counts = index.samples(source.metric + "_count", source.match)
        sums = index.samples(source.metric + "_sum", source.match)
        if not buckets and not counts:
            continue  # a sum alone is no histogram
        # Each sample's series (its labels less `le`) as a key, a whole family at a time (exporter.pipeline.normalize).
        labels = list(map(_LABELS, itertools.chain(buckets, counts, sums)))
        keys = _group_keys(labels, list(map(tuple, labels)), "le")[1]
        first = len(buckets)
        bucket_keys, count_keys, sum_keys = keys[:first], keys[first : first + len(counts)], keys[first + len(counts) :]
        # Each distinct `le` read once (a NaN is its own key in a dict, as one read per sample makes it).
        texts = list(map(dict.get, labels[:first], itertools.repeat("le"), itertools.repeat("")))
        bound_of = {text: _bucket_bound(text, divisor) for text in set(texts)}
        if any(bound != bound for bound in bound_of.values() if bound is not None):
            bounds = [_bucket_bound(text, divisor) for text in texts]
        else:
            bounds = list(map(bound_of.__getitem__, texts))
        values = list(map(_VALUE, buckets))
        by_key: dict = {key: {} for key in keys}
        broken = set()
        for key, bound, value in zip(bucket_keys, bounds, values):
            if bound is None:
                broken.add(key)
            else:
                by_key[key][bound] = value
        count_of = dict(zip(count_keys, map(_VALUE, counts)))
        sum_of = dict(zip(sum_keys, map(operator.truediv, map(_VALUE, sums), itertools.repeat(divisor))))
        # Bucket counts are whole, non-negative numbers: checked for every series at once, then series
        # by series only where one is not.
        suspect = not _all_counts(values) or not _all_counts(list(count_of.values()))
        series_labels = dict(zip(keys, labels))
        for key, series in by_key.items():
            count, total = count_of.get(key), sum_of.get(key)
            if key in broken or (series and INF not in series):
                continue
            if not series:
                if count is None or total is None:
                    continue  # a count alone is no histogram
                series = {INF: count}
            if suspect and not all(
                _is_count(value) for value in (*series.values(), *(() if count is None else (count,)))
            ):
                continue  # this series is not a histogram
            model = model_of({name: value for name, value in series_labels[key].items() if name != "le"})
            merged[model].parts.append((series, series[INF] if count is None else count, total))
    return merged


def _bucket_bound(text: str, divisor: float) -> float | None:
    """A bucket's `le` as a bound in the vocabulary's unit; None where it is not a number."""
    try:
        bound = float(text)
    except ValueError:
        return None
    return bound if bound == INF else bound / divisor


def _from_counters(
    source: Source, index: _SampleIndex, model_of: Callable[[dict[str, str]], str], merged: dict[str, _Histogram]
) -> None:
    """A running total and a count of observations, of the same labels, as a histogram with only `+Inf`."""
    counts = {
        frozenset(s.labels.items()): s.value for s in index.first_of(_counter_names(source.count or ""), source.match)
    }
    for sample in index.first_of(_counter_names(source.metric), source.match):
        count = counts.get(frozenset(sample.labels.items()))
        if count is not None:
            merged[model_of(sample.labels)].parts.append(({INF: count}, count, sample.value / source.divisor))


def _is_count(value: float) -> bool:
    # Neither NaN nor the infinities are whole: no `math.isfinite`, which a traced value cannot answer.
    return value >= 0 and value.is_integer()


def _all_counts(values: list[float]) -> bool:
    """Whether every value `_is_count`, checked in C where they are all floats (NaN and infinities are
    not whole)."""
    try:
        return all(map(float.is_integer, values)) and (not values or min(values) >= 0)
    except TypeError:  # a value that is not a float
        return all(map(_is_count, values))
