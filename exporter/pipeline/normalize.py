"""Turn one target's parsed families into the series we serve: sanitized, prefixed, labelled, deduplicated.

Everything a scrape needs is computed here, once per poll, so that the collector only concatenates.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from prometheus_client.samples import Sample as PromSample

from exporter.core.family import Family, Sample
from exporter.core.rules import LABEL_NAME
from exporter.pipeline.exposition import SeriesFamily, _escape_value, series_head

_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_VALID_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: Family types prometheus_client can encode (anything else is served as `unknown`), with the
#: sample-name suffixes each one owns in an exposition besides its own name.
_OWNED_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": (),
    "unknown": (),
    "stateset": (),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("_sum", "_count", "_created"),
}


def exposition_names(name: str, kind: str) -> tuple[str, ...]:
    """Every sample name a family of this type may use. Two families that share one cannot both be
    served: OpenMetrics readers reject the clash (a histogram `x` and a gauge `x_bucket`, say)."""
    return (name, *(name + suffix for suffix in _OWNED_SUFFIXES[kind]))


@dataclass(frozen=True, slots=True)
class Normalized:
    families: tuple[SeriesFamily, ...]
    #: Samples dropped on the way, by reason: `duplicate`, `type_conflict`.
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def sample_count(self) -> int:
        return sum(len(family.samples) for family in self.families)


def sanitize_name(name: str) -> str:
    """A metric or label name as Prometheus conventions allow it: `[a-zA-Z_][a-zA-Z0-9_]*`, no colons."""
    if _VALID_NAME.match(name):
        return name
    cleaned = _INVALID_NAME_CHARS.sub("_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else "_" + cleaned


#: Names the daemon owns: its self-metrics (exporter.serve.collector.SELF). Nothing from an upstream serves under them.
RESERVED_PREFIX = "inference_exporter_"
#: What an upstream name or label name in reserved space is served under instead (Prometheus's word for
#: a label it had to rename): `__name__` -> `exported___name__`, `inference_exporter_target_up` ->
#: `exported_inference_exporter_target_up`.
EXPORTED = "exported_"


def is_reserved_name(name: str) -> bool:
    """Whether a served metric name belongs to the daemon or to Prometheus (`__`-prefixed)."""
    return name.startswith(("__", RESERVED_PREFIX))


def unreserved(name: str) -> str:
    """A served metric name outside reserved space: reserved ones get `exported_` in front."""
    return EXPORTED + name if is_reserved_name(name) else name


def apply_prefix(name: str, prefix: str) -> str:
    """Prefix a name once: a name that already carries the prefix keeps it as is."""
    if not prefix:
        return name
    stem = prefix if prefix.endswith("_") else prefix + "_"
    return name if name.startswith(stem) else stem + name


def _family_type(family: Family) -> str:
    return family.type if family.type in _OWNED_SUFFIXES else "unknown"


def _as_float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def go_float_label(value: float) -> str:
    """A float as Prometheus writes `le` and `quantile` values (model/labels FormatOpenMetricsFloat):
    Go's shortest `%g` (exponent from 1e+06 and below 1e-04), `.0` on whole numbers, `+Inf`, `-Inf`, `NaN`."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0.0"
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    exponent = int(exp_text or 0)
    if whole.strip("0"):
        digits, point = (whole + fraction).lstrip("0"), len(whole.lstrip("0")) + exponent
    else:
        digits = fraction.lstrip("0")
        point = exponent - (len(fraction) - len(digits))
    digits = digits.rstrip("0") or "0"
    sign = "-" if value < 0 else ""
    power = point - 1
    if power < -4 or power >= 6:
        rest = "." + digits[1:] if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{rest}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}.0"
    return f"{sign}{digits[:point]}.{digits[point:]}"


#: The label whose value is a float bound, by family type: served in Prometheus's canonical form,
#: as Prometheus 3 stores it (`le="Inf"` from the Gateway API Inference Extension becomes `+Inf`,
#: which OpenMetrics parsers require), so `1` and `1.0` are one series.
_FLOAT_BOUNDS = {"histogram": "le", "gaugehistogram": "le", "summary": "quantile"}


def is_well_formed(name: str, kind: str, samples: list) -> bool:
    """Whether samples (ours or prometheus_client's) make a valid family `name` of this type."""
    return _is_well_formed(Family(name, kind, samples=samples), kind)


def _is_well_formed(family: Family, kind: str, labels: list | None = None, groups: list | None = None) -> bool:
    """Histograms need a numeric `le` on every bucket and a +Inf bucket in every series group; summaries
    a numeric `quantile` on every quantile sample. Otherwise encoders and parsers reject the family.
    `labels` and (for a histogram) `groups`, if the caller has them: its samples' labels and series groups
    (the keys of `_group_keys`)."""
    if kind in ("histogram", "gaugehistogram"):
        return _histogram_is_well_formed(family, kind, labels, groups)
    if kind == "summary":
        return all(_as_float(s.labels.get("quantile")) is not None for s in family.samples if s.name == family.name)
    if kind in ("counter", "info"):
        # `# TYPE b_total counter` takes `b_total_total` and `b_total_created` too, which would be served
        # outside the family `b` (a clash strict readers reject): such a family is served untyped.
        own = "_total" if kind == "counter" else "_info"
        base = family.name[: -len(own)] if family.name.endswith(own) else family.name
        allowed = (base, base + own, base + "_created") if kind == "counter" else (base, base + own)
        return all(sample.name in allowed for sample in family.samples)
    return True


def _histogram_is_well_formed(family: Family, kind: str, labels: list | None, groups: list | None) -> bool:
    """Only its suffixed sample names (the parser may have put a sample named like the family itself
    here), a numeric `le` on every bucket, and a `+Inf` bucket in every series group; worked out for
    the whole family at once, each distinct `le` text read once."""
    samples = family.samples
    names = list(map(_NAME, samples))
    if not set(names) <= {family.name + suffix for suffix in _OWNED_SUFFIXES[kind]}:
        return False
    if labels is None:
        labels = list(map(_LABELS, samples))
    bounds = list(map(dict.get, labels, itertools.repeat("le")))
    buckets = list(map((family.name + "_bucket").__eq__, names))
    read = {text: _as_float(text) for text in set(itertools.compress(bounds, buckets))}
    if None in read.values():
        return False
    infinite = {text for text, value in read.items() if value == math.inf}
    if groups is None:
        groups = _group_keys(labels, _shapes(labels), "le")[1]
    complete = set(itertools.compress(groups, map(operator.and_, buckets, map(infinite.__contains__, bounds))))
    return len(complete) == len(set(groups))


# -- a family's samples, read a whole family at a time ---------------------------------------------
#
# Label names repeat within a family (every sample of a histogram has the same few), so what depends on
# them alone is worked out once per distinct tuple of names (a shape), and each sample's text is made
# by %-formatting its label dict with its shape's format: C-level work, no Python bytecode per label.

_NAME = operator.attrgetter("name")
_LABELS = operator.attrgetter("labels")
_VALUE = operator.attrgetter("value")


def _shapes(labels: list[dict[str, str]]) -> list[tuple[str, ...]]:
    """Each sample's label names, in its order."""
    return list(map(tuple, labels))


def _formattable(names: tuple[str, ...]) -> bool:
    """Whether every name is a plain label name, which can key a `%(name)s` format and be written as it
    is (an upstream's UTF-8 names may hold parentheses, quotes or `%`)."""
    return all(map(LABEL_NAME.fullmatch, names))


def _plain(labels: list[dict[str, str]]) -> bool:
    """Whether no label value needs escaping in an exposition (no backslash, newline or double quote),
    checked over every value at once."""
    text = "".join(itertools.chain.from_iterable(map(dict.values, labels)))
    return not ("\\" in text or "\n" in text or '"' in text)


def _escape(value: str) -> str:

    return _escape_value(value)


def _as_text(labels: list[dict[str, str]]) -> list[dict[str, str]]:
    """The label dicts with their values as an exposition writes them (escaped where they need it)."""
    if _plain(labels):
        return labels
    return [{name: _escape(value) for name, value in each.items()} for each in labels]


def _formatted(labels: list[dict[str, str]], keys: list, formats: dict) -> list[str]:
    """Each label dict written by its key's %-format, from the values its picker reads (`formats`:
    key -> (format, picker)): positional, which is quicker than a format that looks up each name."""
    if len(formats) == 1:
        text, pick = next(iter(formats.values()))
        return list(map(text.__mod__, map(pick, labels)))
    text_of = {key: text for key, (text, _) in formats.items()}
    pick_of = {key: pick for key, (_, pick) in formats.items()}
    return list(
        map(str.__mod__, map(text_of.__getitem__, keys), map(operator.call, map(pick_of.__getitem__, keys), labels))
    )


def _no_values(labels: dict[str, str]) -> tuple:
    return ()


def _picker(names: tuple[str, ...]) -> Callable[[dict[str, str]], object]:
    """Reads these labels' values from a label dict (C-level: an itemgetter)."""
    return operator.itemgetter(*names) if names else _no_values


#: Series groups of a run of samples: (names, keys). Where every sample has the same label names (less
#: the bound), `names` is them and each key the sample's values of them; else `names` is None and each
#: key is (names, values). Equal keys (of one run, or of two with the same `names`), equal groups.
Groups = tuple[tuple[str, ...] | None, list]


def _picked(labels: list[dict[str, str]], shapes: list[tuple], pickers: dict[tuple, tuple]) -> Groups:
    """The series groups of these label dicts, each read by its shape's picker (`pickers`: shape ->
    (names, picker)). Where every shape reads the same names (a histogram's buckets and its count), one
    picker reads all."""
    if len({names for names, _ in pickers.values()}) == 1:
        names, pick = next(iter(pickers.values()))
        return names, list(map(pick, labels))
    names_of = {shape: names for shape, (names, _) in pickers.items()}
    pick_of = {shape: pick for shape, (_, pick) in pickers.items()}
    return None, list(
        zip(map(names_of.__getitem__, shapes), map(operator.call, map(pick_of.__getitem__, shapes), labels))
    )


def _named(groups: Groups) -> list:
    """The groups' keys as (names, values), comparable with any other run's."""
    names, keys = groups
    return keys if names is None else list(zip(itertools.repeat(names), keys))


def _group_keys(
    labels: list[dict[str, str]],
    shapes: list[tuple],
    bound: str,
    skip: Collection[str] = (),
    distinct: dict | None = None,
) -> Groups:
    """Each label dict's series group: its label names less `bound` (and less `skip`) in sorted order,
    with their values. Equal keys, equal groups, whatever the labels' order. `distinct`: the different
    shapes, if the caller has them."""
    pickers = {}
    for shape in dict.fromkeys(shapes) if distinct is None else distinct:
        names = tuple(sorted(name for name in shape if name != bound and name not in skip))
        pickers[shape] = (names, _picker(names))
    return _picked(labels, shapes, pickers)


_SUFFIX_RANK = {"_bucket": 0, "": 0, "_total": 0, "_count": 1, "_gcount": 1, "_sum": 2, "_gsum": 2, "_created": 3}
_GROUPED_TYPES = {"counter": "", "histogram": "le", "gaugehistogram": "le", "summary": "quantile"}


def fold_created(families: list[Family]) -> list[Family]:
    """Put `X_created` gauges back into their counter, histogram or summary X.

    prometheus_client's classic text format writes creation times as separate gauge families;
    served that way in OpenMetrics they would clash with X's own `_created` samples. The unifier
    folds them before anything else (a raw X dropped for its unified namesake takes its creation
    times with it); here they are folded again for callers that did not."""
    owners = {}
    for family in families:
        if family.type in ("counter", "histogram", "summary"):
            base = (
                family.name[: -len("_total")]
                if family.type == "counter" and family.name.endswith("_total")
                else family.name
            )
            owners[base + "_created"] = family
    if not any(f.name in owners and f.type in ("gauge", "untyped", "unknown") for f in families):
        return families
    folded: dict[int, Family] = {}
    #: per folded family, its series as the parser handed out their shapes (None once one had none)
    series: dict[int, list[tuple] | None] = {}
    kept = []
    for family in families:
        owner = owners.get(family.name)
        if owner is not None and family.type in ("gauge", "untyped", "unknown"):
            target = folded.get(id(owner))
            if target is None:
                target = folded[id(owner)] = Family(owner.name, owner.type, owner.help, owner.unit, list(owner.samples))
                series[id(owner)] = None if owner.shape is None else [owner.shape[4:]]
            target.samples.extend(Sample(family.name, s.labels, s.value, s.key) for s in family.samples)
            parts = series[id(owner)]
            series[id(owner)] = None if parts is None or family.shape is None else [*parts, family.shape[4:]]
        else:
            kept.append(family)
    # A folded family's shape is made of its parts' series, as the pipeline handed out their shapes, so
    # that a poll of a steady body (its families folded anew every poll) does not work out every folded
    # family's shape again, in the conform and template stages.
    for key, target in folded.items():
        parts = series[key]
        if parts is not None:
            target.shape = (target.name, target.type, target.help, target.unit, tuple(parts))
    return [folded.get(id(family), family) for family in kept]


class _Servable(NamedTuple):
    """A family to serve, with its served type, and what reading it has worked out: its samples' labels,
    their shapes (label names), the different shapes, and (for a histogram) their series groups."""

    family: Family
    kind: str
    labels: list[dict[str, str]]
    shapes: list[tuple[str, ...]]
    distinct: dict[tuple[str, ...], None]
    groups: Groups | None


def _servable(families: list[Family], dropped: Counter | None = None) -> Iterator[_Servable]:
    """Each non-empty family to serve; broken histograms and summaries split apart (their samples counted
    in `dropped["served_untyped"]`)."""
    for family in fold_created(families):
        if not family.samples:
            continue
        kind = _family_type(family)
        labels = list(map(_LABELS, family.samples))
        shapes = _shapes(labels)
        distinct = dict.fromkeys(shapes)
        groups = (
            _group_keys(labels, shapes, "le", distinct=distinct) if kind in ("histogram", "gaugehistogram") else None
        )
        if _is_well_formed(family, kind, labels, groups and groups[1]):
            yield _Servable(family, kind, labels, shapes, distinct, groups)
        else:
            if dropped is not None:
                dropped["served_untyped"] += len(family.samples)
            for part in _split_untyped(family):
                labels = list(map(_LABELS, part.samples))
                shapes = _shapes(labels)
                yield _Servable(part, "unknown", labels, shapes, dict.fromkeys(shapes), None)


def _split_untyped(family: Family) -> list[Family]:
    """A family whose structure is broken: serve each of its sample names as an untyped family."""
    by_name: dict[str, Family] = {}
    for sample in family.samples:
        by_name.setdefault(sample.name, Family(sample.name, "untyped", family.help)).samples.append(sample)
    return list(by_name.values())


class _Shape:
    """What a tuple of upstream label names becomes, worked out once per tuple: the served names (with
    `target` and the static labels after them), and which upstream label each served one takes its
    value from (the last of two that are renamed alike, as a dict made from them keeps it)."""

    __slots__ = ("formattable", "groups", "names", "same", "source")

    def __init__(self, labeller: _Labeller, names: tuple[str, ...]):
        renamed = labeller.renamed(names)
        self.names = renamed + tuple(labeller.own)
        self.source = dict(zip(renamed, names))
        self.same = renamed == names
        self.formattable = _formattable(names)
        #: bound -> (served names less the bound, in order; a picker of their upstream values): see `group`
        self.groups: dict[str, tuple] = {}


class _Labeller:
    """Adds `target` and the static labels; an upstream label that clashes becomes `exported_<label>`."""

    def __init__(self, target: str, static: dict[str, str]):
        self.own = {"target": target, **static}
        self._own_values = tuple(self.own.values())
        #: an upstream label dict with the own labels after it, when no upstream name is renamed
        self._with_own: Callable[..., dict[str, str]] = functools.partial(dict, **self.own)
        #: the own labels as a %-format writes them: escaped, `%` doubled
        self._own_text = {name: _escape(value).replace("%", "%%") for name, value in self.own.items()}
        self._renames: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._shapes: dict[tuple[str, ...], _Shape] = {}
        self._heads: dict[tuple[str, tuple[str, ...]], tuple[str, Callable]] = {}

    def renamed(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The served names of one series' upstream label names: sanitized; `__`-prefixed ones (Prometheus's)
        with `exported_` in front; and one that clashes with `target` or a static label with `exported_` in
        front until it names no other label of the series, as Prometheus renames a scraped label that
        clashes with a target label (`target` -> `exported_target`, or `exported_exported_target` where
        the series has an `exported_target` of its own)."""
        renamed = self._renames.get(names)
        if renamed is None:
            plain = [EXPORTED + name if name.startswith("__") else name for name in map(sanitize_name, names)]
            taken = {*plain, *self.own}
            for index, name in enumerate(plain):
                if name in self.own:
                    while name in taken:
                        name = EXPORTED + name
                    taken.add(name)
                    plain[index] = name
            renamed = self._renames[names] = tuple(plain)
        return renamed

    def renames_apart(self, series_names: Iterable[tuple[str, ...]]) -> bool:
        """Whether each upstream label name is served under one name, and no two under the same one, in
        every series with these tuples of label names."""
        served_as: dict[str, str] = {}
        taken_by: dict[str, str] = {}
        for names in series_names:
            for name, served in zip(names, self.renamed(names), strict=True):
                if served_as.setdefault(name, served) != served or taken_by.setdefault(served, name) != name:
                    return False
        return True

    def labels(self, upstream: dict[str, str]) -> dict[str, str]:
        """One sample's served labels: its own, renamed where they clash, then `target` and the static ones."""
        if not upstream:
            return dict(self.own)
        labels = dict(zip(self.renamed(tuple(upstream)), upstream.values(), strict=True))
        labels.update(self.own)
        return labels

    def shape(self, names: tuple[str, ...]) -> _Shape:
        shape = self._shapes.get(names)
        if shape is None:
            shape = self._shapes[names] = _Shape(self, names)
        return shape

    def served(
        self, labels: list[dict[str, str]], shapes: list[tuple], distinct: Iterable[tuple]
    ) -> list[dict[str, str]]:
        """`labels()` of each label dict, a whole family at once (label dicts made in C: zip, dict)."""
        distinct = {names: self.shape(names) for names in distinct}
        if all(shape.same for shape in distinct.values()):
            return list(map(self._with_own, labels))
        served_names = {names: shape.names for names, shape in distinct.items()}
        values = map(itertools.chain, map(dict.values, labels), itertools.repeat(self._own_values))
        return list(map(dict, map(zip, map(served_names.__getitem__, shapes), values)))

    def head_format(self, sample_name: str, names: tuple[str, ...]) -> tuple[str, Callable]:
        """How a sample's head (`series_head` of its served name and labels) is written from its upstream
        label dict (values escaped): a %-format with a `%s` for each upstream value, and a picker of
        those values in that order."""
        key = (sample_name, names)
        head = self._heads.get(key)
        if head is None:
            source = self.shape(names).source  # served name -> upstream name (never an own label's name)
            own = self._own_text
            order = sorted({*source, *own})
            pairs = ",".join(f'{name}="{own.get(name, "%s")}"' for name in order)
            text = f"{sample_name.replace('%', '%%')}{{{pairs}}} "
            head = self._heads[key] = (text, _picker(tuple(source[name] for name in order if name not in own)))
        return head

    def group(self, names: tuple[str, ...], bound: str) -> tuple[tuple[str, ...], Callable]:
        """How to read a sample's series group (`_group_keys` of its served labels, less the own labels, the
        same on every sample) from its upstream label dict: the served names, and a picker of their values."""
        shape = self.shape(names)
        group = shape.groups.get(bound)
        if group is None:
            pairs = sorted((served, upstream) for served, upstream in shape.source.items() if served != bound)
            group = shape.groups[bound] = (
                tuple(served for served, _ in pairs),
                _picker(tuple(upstream for _, upstream in pairs)),
            )
        return group


def served_base(name: str, kind: str, prefix: str = "") -> str:
    """The family name we serve for an upstream family of this name and served type (before suffixes)."""
    served = unreserved(apply_prefix(sanitize_name(name), prefix))
    if kind == "counter" and served.endswith("_total"):
        return served[: -len("_total")]
    if kind == "info" and served.endswith("_info"):
        return served[: -len("_info")]
    return served


def served_type(family: Family) -> str:
    """The type a family is served with: its own where prometheus_client can encode it, else `unknown`."""
    return _family_type(family)


#: prometheus_client's Sample fields after name, labels and value (timestamp, exemplar, and
#: native_histogram in newer versions): all None in what we serve.
_SAMPLE_TAIL = [itertools.repeat(None)] * (len(PromSample._fields) - 3)
#: A Sample from a (name, labels, value, None...) tuple, without a Python-level __new__ per sample.
_new_sample = functools.partial(tuple.__new__, PromSample)


def samples_of(names: list[str], labels: list[dict[str, str]], values: list[float]) -> list[PromSample]:
    """prometheus_client Samples of these names, labels and values, made in C (no timestamps, exemplars)."""
    return list(map(_new_sample, zip(names, labels, values, *_SAMPLE_TAIL)))


def _taken(items: list, order: range | list[int]) -> Iterable:
    """The items at these positions (all of them, when `order` is every position in order)."""
    return items if isinstance(order, range) else map(items.__getitem__, order)


class _Gathering:
    """One served family as it is gathered: every sample handed in, in order, with its head and where it
    sorts (series group, suffix rank, bound), and the position of each series' last sample."""

    __slots__ = ("bounds", "group_names", "groups", "heads", "help", "kind", "name", "ranks", "samples", "series")

    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text
        self.series: dict = {}
        self.samples: list[PromSample] = []
        self.heads: list[str | None] = []
        #: the samples' series groups (see `Groups`): every key read by `group_names`, or named where None
        self.group_names: tuple[str, ...] | None = None
        self.groups: list = []
        self.ranks: list[int] = []
        self.bounds: list[float] = []

    def add_groups(self, groups: Groups) -> None:
        names, keys = groups
        if not self.groups:
            self.group_names, self.groups = names, list(keys)
        elif names is not None and names == self.group_names:
            self.groups += keys
        else:  # two runs read by different names: keep them comparable
            self.groups = _named((self.group_names, self.groups)) + _named(groups)
            self.group_names = None

    def served_order(self) -> range | list[int]:
        """Positions of the samples served: each series once, where it first came, with its last sample;
        counter, histogram and summary samples one series group at a time, buckets and quantiles in order,
        as OpenMetrics requires (upstreams send `_bucket`, `_sum`, `_count`, `_created` in any order)."""
        count = len(self.samples)
        order: range | list[int] = range(count) if len(self.series) == count else list(self.series.values())
        if self.kind not in _GROUPED_TYPES or len(order) < 2:
            return order
        # Each group sorts where it was first seen: the position of its first sample.
        seen: dict[object, int] = {}
        first_seen = list(map(seen.setdefault, _taken(self.groups, order), itertools.count()))
        keys = list(zip(first_seen, _taken(self.ranks, order), _taken(self.bounds, order)))
        if all(map(operator.le, keys, itertools.islice(keys, 1, None))):
            return order  # already in order: what a sort would give (it keeps a non-descending run as it is)
        return list(map(order.__getitem__, sorted(range(len(keys)), key=keys.__getitem__)))


class Assembler:
    """Gathers served families one at a time: one type per name, duplicate series collapsed (the last wins).

    `normalize` fills one from an upstream's families; relabeling fills another from what normalize made.
    """

    def __init__(self) -> None:
        self._out: dict[str, _Gathering] = {}
        self._claimed: dict[str, str] = {}  # exposition name -> the family that owns it
        self.dropped: Counter[str] = Counter()

    def family(self, name: str, kind: str, help_text: str, size: int) -> _Gathering | None:
        """Family `name`, made on first use; None, with its `size` samples counted, if it clashes with a
        family of another type (or with another family's suffixed names). A second upstream family served
        under the same name is merged into the first, sample by sample."""
        existing = self._out.get(name)
        if existing is None:
            names = exposition_names(name, kind)
            if any(self._claimed.get(n, name) != name for n in names):
                self.dropped["type_conflict"] += size
                return None
            self._claimed.update(dict.fromkeys(names, name))
            existing = self._out[name] = _Gathering(name, kind, help_text)
        elif existing.kind != kind:
            self.dropped["type_conflict"] += size
            return None
        return existing

    def add(
        self,
        family: _Gathering,
        samples: list[PromSample],
        keys: list,
        heads: list[str] | None = None,
        orders: tuple[Groups, list[int], list[float]] | None = None,
    ) -> None:
        """Add samples under their series keys (a key seen before is a duplicate: its last sample is served,
        where the first was). `heads` are their rendered `name{labels} `; `orders` their series groups, suffix
        ranks and bounds (see `_Gathering.served_order`), worked out here when not given."""
        start = len(family.samples)
        before = len(family.series)
        family.series.update(zip(keys, range(start, start + len(samples))))
        self.dropped["duplicate"] += before + len(samples) - len(family.series)
        family.samples += samples
        family.heads += heads if heads is not None else itertools.repeat(None, len(samples))
        if family.kind in _GROUPED_TYPES:
            if orders is None:
                orders = _orders(samples, family.kind, family.name)
            family.add_groups(orders[0])
            family.ranks += orders[1]
            family.bounds += orders[2]

    def result(self, dropped: dict[str, int] | None = None) -> Normalized:
        counts = Counter(dropped or {})
        counts.update(self.dropped)
        families = []
        for name, gathering in self._out.items():
            order = gathering.served_order()
            heads = tuple(_taken(gathering.heads, order))
            families.append(
                SeriesFamily(
                    name,
                    gathering.kind,
                    gathering.help,
                    tuple(_taken(gathering.samples, order)),
                    heads if all(heads) else None,
                )
            )
        return Normalized(tuple(families), {reason: count for reason, count in counts.items() if count})


def _orders(samples: list[PromSample], kind: str, name: str) -> tuple[Groups, list[int], list[float]]:
    """Series group, suffix rank and bound of each sample of served family `name`, one sample at a time
    (see `_Gathering.served_order`)."""
    bound = _GROUPED_TYPES[kind]
    labels = list(map(_LABELS, samples))
    names = list(map(_NAME, samples))
    rank_of = {sample_name: _SUFFIX_RANK.get(sample_name[len(name) :], 4) for sample_name in set(names)}
    return (
        _group_keys(labels, _shapes(labels), bound),
        list(map(rank_of.__getitem__, names)),
        _bound_values(labels, bound),
    )


def _bound_values(labels: list[dict[str, str]], bound: str) -> list[float]:
    """Each label dict's bound as a number to sort by (0.0 where there is none or it is not a number)."""
    texts = list(map(dict.get, labels, itertools.repeat(bound)))
    values = {text: _as_float(text) or 0.0 for text in set(texts)}
    return list(map(values.__getitem__, texts))


def _canonical_bounds(labels: list[dict[str, str]], bound: str) -> list[dict[str, str]]:
    """Each label dict with its bound in canonical form (see `_FLOAT_BOUNDS`), each distinct text read
    once; new dicts only where it changes."""
    texts = list(map(dict.get, labels, itertools.repeat(bound)))
    changed = {}
    for text in set(texts):
        value = _as_float(text)
        if value is not None and (canonical := go_float_label(value)) != text:
            changed[text] = canonical
    if not changed:
        return labels
    return [{**each, bound: changed[text]} if text in changed else each for each, text in zip(labels, texts)]


def _rows(servable: _Servable, name: str, raw_base: str, labeller: _Labeller, by_head: bool):
    """One upstream family's samples as served under family `name`: (samples, series keys, heads, orders)
    for `Assembler.add`. A series' key is its head when no two upstream label names are renamed alike
    (`by_head`), else its served name and upstream labels."""
    family, kind, labels, shapes, distinct, upstream_groups = servable
    samples = family.samples
    upstream_names = list(map(_NAME, samples))
    values = list(map(_VALUE, samples))
    served_names = {}
    for raw in dict.fromkeys(upstream_names):
        suffix = raw[len(raw_base) :] if raw.startswith(raw_base) else ""
        if kind == "counter" and suffix in ("", "_total"):
            suffix = "_total"
        elif kind == "info":
            suffix = "_info"
        served_names[raw] = name + suffix
    names = list(map(served_names.__getitem__, upstream_names))
    bound = _FLOAT_BOUNDS.get(kind)
    if bound is not None:
        labels = _canonical_bounds(labels, bound)
    served = labeller.served(labels, shapes, distinct)

    group_bound = _GROUPED_TYPES.get(kind)
    # With no label renamed, a histogram's served series groups are those its check read upstream.
    groups = upstream_groups if all(labeller.shape(each).same for each in distinct) else None
    if all(labeller.shape(each).formattable for each in distinct):
        text = _as_text(labels)
        shape_of = dict(zip(names, shapes))
        if len(distinct) == 1 or all(map(operator.eq, map(shape_of.__getitem__, names), shapes)):
            # each sample name has one shape (a histogram's buckets have `le`, its count not)
            heads = _formatted(text, names, {each: labeller.head_format(each, shape_of[each]) for each in shape_of})
        else:
            heads_by = list(zip(names, shapes))
            formats = {key: labeller.head_format(*key) for key in dict.fromkeys(heads_by)}
            heads = _formatted(text, heads_by, formats)
        if group_bound is not None and groups is None:
            groups = _picked(labels, shapes, {shape: labeller.group(shape, group_bound) for shape in distinct})
    else:  # a label name a format cannot hold: one sample at a time
        heads = list(map(series_head, names, served))
        if group_bound is not None and groups is None:
            groups = _group_keys(served, _shapes(served), group_bound, labeller.own)
    keys = heads if by_head else list(zip(names, map(frozenset, map(dict.items, labels))))
    orders = None
    if group_bound is not None:
        rank_of = {served_name: _SUFFIX_RANK.get(served_name[len(name) :], 4) for served_name in served_names.values()}
        orders = (groups, list(map(rank_of.__getitem__, names)), _bound_values(served, group_bound))
    return samples_of(names, served, values), keys, heads, orders


def normalize(
    families: list[Family],
    *,
    target: str,
    labels: dict[str, str] | None = None,
    prefix: str = "",
) -> Normalized:
    """Families as one target exposed them -> families as we serve them, with `target` on every sample.

    Nothing is remembered from one call to the next: each is worked out a whole family at a time."""
    labeller = _Labeller(target, labels or {})
    assembler = Assembler()
    servable = list(_servable(families, assembler.dropped))
    by_head = labeller.renames_apart(itertools.chain.from_iterable(each.distinct for each in servable))
    for each in servable:
        family, kind = each.family, each.kind
        raw = family.name
        name = served_base(raw, kind, prefix)
        if name.startswith(EXPORTED) and is_reserved_name(name[len(EXPORTED) :]):
            assembler.dropped["renamed_reserved"] += len(family.samples)  # served, under `exported_<name>`
        if kind == "counter" and raw.endswith("_total"):
            raw_base = raw[: -len("_total")]
        elif kind == "info" and raw.endswith("_info"):
            raw_base = raw[: -len("_info")]
        else:
            raw_base = raw
        gathering = assembler.family(name, kind, family.help or f"{raw} (no HELP from upstream)", len(family.samples))
        if gathering is not None:
            assembler.add(gathering, *_rows(each, name, raw_base, labeller, by_head))
    return assembler.result()
