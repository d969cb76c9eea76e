"""Turn one target's parsed families into the series we serve: sanitized, prefixed, labelled, deduplicated.

Everything a scrape needs is computed here, once per poll, so that the collector only concatenates.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.samples import Sample as PromSample

from exporter.family import Family, Sample

if TYPE_CHECKING:
    from exporter.exposition import Chunks

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
class SeriesFamily:
    """One family as served: a valid name, a prometheus_client type, HELP, ready-made samples."""

    name: str
    type: str
    help: str
    samples: Sequence[PromSample]
    #: Each sample's `name{labels} ` as served, where normalize already wrote them.
    heads: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    #: Its text as /metrics serves it (exporter.exposition.Chunks), rendered by the pipeline once per
    #: poll; None for families rendered by each scrape (our own metrics).
    chunks: Chunks | None = field(default=None, compare=False, repr=False)


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


#: Names the daemon owns: its self-metrics (exporter.collector.SELF). Nothing from an upstream serves under them.
RESERVED_PREFIX = "inference_exporter_"
#: What an upstream name or label name in reserved space is served under instead (Prometheus's word for
#: a label it had to rename): `__name__` -> `exported___name__`, `inference_exporter_target_up` ->
#: `exported_inference_exporter_target_up`.
EXPORTED = "exported_"


def is_reserved_name(name: str) -> bool:
    """Whether a served metric name belongs to the daemon or to Prometheus (`__`-prefixed)."""
    return name.startswith("__") or name.startswith(RESERVED_PREFIX)


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


def _canonical_bound(labels: dict[str, str], kind: str) -> dict[str, str]:
    bound = _FLOAT_BOUNDS.get(kind)
    text = labels.get(bound) if bound is not None else None
    if text is None:
        return labels
    value = _as_float(text)
    if value is None:
        return labels
    canonical = go_float_label(value)
    return labels if canonical == text else {**labels, bound: canonical}


def _group(labels: dict[str, str], bound: str) -> frozenset:
    return frozenset(item for item in labels.items() if item[0] != bound)


def is_well_formed(name: str, kind: str, samples: list) -> bool:
    """Whether samples (ours or prometheus_client's) make a valid family `name` of this type."""
    return _is_well_formed(Family(name, kind, samples=samples), kind)


def _is_well_formed(family: Family, kind: str) -> bool:
    """Histograms need a numeric `le` on every bucket and a +Inf bucket in every series group; summaries
    a numeric `quantile` on every quantile sample. Otherwise encoders and parsers reject the family."""
    if kind in ("histogram", "gaugehistogram"):
        bucket = family.name + "_bucket"
        # Only its suffixed names: the parser may have put a sample named like the family itself here.
        members = {family.name + suffix for suffix in _OWNED_SUFFIXES[kind]}
        groups, complete = set(), set()
        for sample in family.samples:
            if sample.name not in members:
                return False
            group = _group(sample.labels, "le")
            groups.add(group)
            if sample.name == bucket:
                le = _as_float(sample.labels.get("le"))
                if le is None:
                    return False
                if le == math.inf:
                    complete.add(group)
        return groups == complete
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


_SUFFIX_RANK = {"_bucket": 0, "": 0, "_total": 0, "_count": 1, "_gcount": 1, "_sum": 2, "_gsum": 2, "_created": 3}
_GROUPED_TYPES = {"counter": "", "histogram": "le", "gaugehistogram": "le", "summary": "quantile"}


def _order(sample_name: str, labels: dict[str, str], kind: str, name: str) -> tuple | None:
    """Where a sample goes in its family (see `_grouped`): its series group, suffix rank and bound."""
    bound = _GROUPED_TYPES.get(kind)
    if bound is None:
        return None
    rank = _SUFFIX_RANK.get(sample_name[len(name):], 4)
    return _group(labels, bound), rank, _as_float(labels.get(bound)) or 0.0


def _grouped(entries: list[tuple[PromSample, str | None, tuple | None]], kind: str, name: str) -> list:
    """Counter, histogram and summary samples one series group at a time, buckets and quantiles in
    order, as OpenMetrics requires (upstreams send `_bucket`, `_sum`, `_count`, `_created` in any order).
    Each entry is (sample, head, order); an order not known yet is computed here."""
    if kind not in _GROUPED_TYPES:
        return entries
    first_seen: dict[frozenset, int] = {}

    def position(entry):
        order = entry[2] or _order(entry[0].name, entry[0].labels, kind, name)
        return first_seen.setdefault(order[0], len(first_seen)), order[1], order[2]

    return sorted(entries, key=position)


def fold_created(families: list[Family]) -> list[Family]:
    """Put `X_created` gauges back into their counter, histogram or summary X.

    prometheus_client's classic text format writes creation times as separate gauge families;
    served that way in OpenMetrics they would clash with X's own `_created` samples. The unifier
    folds them before anything else (a raw X dropped for its unified namesake takes its creation
    times with it); here they are folded again for callers that did not."""
    owners = {}
    for family in families:
        if family.type in ("counter", "histogram", "summary"):
            base = family.name[: -len("_total")] if family.type == "counter" and family.name.endswith("_total") else family.name
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


def _series_ids(family: Family) -> tuple:
    """Each sample's series as the upstream wrote it (or its name and labels): the family's identity."""
    return tuple(sample.key or (sample.name, *sample.labels.items()) for sample in family.samples)


def _servable(families: list[Family], cache: SeriesCache, dropped: Counter | None = None):
    """Each non-empty family with its served type and series ids; broken histograms and summaries split
    apart (their samples counted in `dropped["served_untyped"]`)."""
    for family in fold_created(families):
        if not family.samples:
            continue
        kind = _family_type(family)
        series = _series_ids(family)
        if cache.well_formed(family, kind, series):
            yield family, kind, series
        else:
            if dropped is not None:
                dropped["served_untyped"] += len(family.samples)
            for part in _split_untyped(family):
                yield part, "unknown", _series_ids(part)


def _split_untyped(family: Family) -> list[Family]:
    """A family whose structure is broken: serve each of its sample names as an untyped family."""
    by_name: dict[str, Family] = {}
    for sample in family.samples:
        by_name.setdefault(sample.name, Family(sample.name, "untyped", family.help)).samples.append(sample)
    return list(by_name.values())


class _Labeller:
    """Adds `target` and the static labels; an upstream label that clashes becomes `exported_<label>`."""

    def __init__(self, target: str, static: dict[str, str]):
        self.own = {"target": target, **static}
        self._renames: dict[str, str] = {}

    def _rename(self, name: str) -> str:
        renamed = self._renames.get(name)
        if renamed is None:
            renamed = sanitize_name(name)
            if renamed.startswith("__"):  # reserved for Prometheus: `__name__` twice fails the whole scrape
                renamed = EXPORTED + renamed
            while renamed in self.own:
                renamed = "exported_" + renamed
            self._renames[name] = renamed
        return renamed

    def labels(self, upstream: dict[str, str]) -> dict[str, str]:
        if not upstream:
            return dict(self.own)
        labels = {self._rename(name): value for name, value in upstream.items()}
        labels.update(self.own)
        return labels


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


class Assembler:
    """Gathers served families one at a time: one type per name, duplicate series collapsed (the last wins).

    `normalize` fills one from an upstream's families; relabeling fills another from what normalize made.
    """

    def __init__(self) -> None:
        self._out: dict[str, tuple[str, str, dict[tuple, PromSample]]] = {}
        self._claimed: dict[str, str] = {}  # exposition name -> the family that owns it
        self.dropped: Counter[str] = Counter()
        #: served name -> (layout key, upstream sample count) when exactly one upstream family made it
        self._origin: dict[str, tuple | None] = {}
        #: served name -> (samples, heads, layout) of a family rebuilt whole from a remembered layout
        self._prebuilt: dict[str, tuple] = {}

    def family(
        self, name: str, kind: str, help_text: str, size: int, layout_key: tuple | None = None
    ) -> dict[tuple, PromSample] | None:
        """The series of family `name`, made on first use; None, with its `size` samples counted, if it
        clashes with a family of another type (or with another family's suffixed names)."""
        existing = self._out.get(name)
        if existing is None:
            names = exposition_names(name, kind)
            if any(self._claimed.get(n, name) != name for n in names):
                self.dropped["type_conflict"] += size
                return None
            self._claimed.update(dict.fromkeys(names, name))
            existing = self._out[name] = (kind, help_text, {})
            self._origin[name] = (layout_key, size) if layout_key is not None else None
        elif existing[0] != kind:
            self.dropped["type_conflict"] += size
            return None
        else:  # a second upstream family served under the same name: merge sample by sample
            self._origin[name] = None
            prebuilt = self._prebuilt.pop(name, None)
            if prebuilt is not None:
                samples, heads, layout = prebuilt
                for sample, head, entry in zip(samples, heads, layout.entries):
                    existing[2][entry[2]] = (sample, head, entry[4], None)
        return existing[2]

    def is_new(self, name: str) -> bool:
        return name not in self._out

    def prebuilt(self, name: str, samples: tuple[PromSample, ...], layout: "Layout") -> None:
        """Family `name` (just made by `family`) as a remembered layout rebuilt it, values filled in."""
        self._prebuilt[name] = (samples, layout.heads, layout)
        self.dropped["duplicate"] += layout.duplicates

    def put(
        self,
        series: dict[tuple, tuple],
        key: tuple,
        sample: PromSample,
        head: str | None = None,
        order: tuple | None = None,
        index: int | None = None,
    ) -> None:
        """Add a sample under its series key; `head` (its rendered `name{labels} `) and `order` may come
        from a cache, else they are worked out when needed."""
        if key in series:
            self.dropped["duplicate"] += 1
        series[key] = (sample, head, order, index)

    def result(self, dropped: dict[str, int] | None = None, cache: SeriesCache | None = None) -> Normalized:
        counts = Counter(dropped or {})
        counts.update(self.dropped)
        families = []
        for name, (kind, help_text, series) in self._out.items():
            prebuilt = self._prebuilt.get(name)
            if prebuilt is not None:
                family = SeriesFamily(name, kind, help_text, prebuilt[0], prebuilt[1])
                families.append(family)
                continue
            entries = _grouped([(*value, key) for key, value in series.items()], kind, name)
            heads = tuple(entry[1] for entry in entries)
            family = SeriesFamily(name, kind, help_text, tuple(entry[0] for entry in entries), heads if all(heads) else None)
            if all(heads):
                origin = self._origin.get(name)
                if cache is not None and origin is not None and all(entry[3] is not None for entry in entries):
                    cache.remember_layout(origin[0], Layout.of(entries, heads, origin[1] - len(entries)))
            families.append(family)
        return Normalized(tuple(families), {reason: count for reason, count in counts.items() if count})


@dataclass(frozen=True, slots=True)
class Layout:
    """How one upstream family became its served family: which upstream sample goes where (after
    duplicates and OpenMetrics grouping), with each one's served name, labels and head. While the
    family keeps the same series, the next poll only fills in the values."""

    positions: tuple[int, ...]
    entries: tuple[tuple, ...]  # (served name, labels, series key, head, order) in served order
    heads: tuple[str, ...]
    duplicates: int

    @classmethod
    def of(cls, grouped: list[tuple], heads: tuple[str, ...], duplicates: int) -> "Layout":
        """From result()'s grouped entries: (sample, head, order, upstream position, series key)."""
        return cls(
            tuple(entry[3] for entry in grouped),
            tuple((e[0].name, e[0].labels, e[4], e[1], e[2]) for e in grouped),
            heads,
            duplicates,
        )


class SeriesCache:
    """One target's per-series normalizing work, from poll to poll.

    A target serves the same series every poll, so the served name, labels, series key, rendered
    head and place in its family are worked out once per series and looked up after that, by the
    text the upstream wrote it with. Series a poll no longer has are forgotten at the next one."""

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple] = {}
        self._used: dict[tuple, tuple] = {}
        #: family name -> (its series keys, whether they made a well-formed family)
        self._shapes: dict[str, tuple[tuple, bool]] = {}
        self._used_shapes: dict[str, tuple[tuple, bool]] = {}
        #: (upstream family, type) -> (its series keys, the Layout they were served with)
        self._layouts: dict[tuple, tuple[tuple, Layout]] = {}
        self._used_layouts: dict[tuple, tuple[tuple, Layout]] = {}

    def get(self, key: tuple) -> tuple | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._used[key] = entry
        return entry

    def put(self, key: tuple, entry: tuple) -> None:
        self._used[key] = entry

    def layout(self, key: tuple) -> Layout | None:
        """The layout remembered for this upstream family, if its series are exactly the same again."""
        known = self._layouts.get(key[:2])
        if known is None or known[0] != key[2]:
            return None
        self._used_layouts[key[:2]] = known
        return known[1]

    def remember_layout(self, key: tuple, layout: Layout) -> None:
        self._used_layouts[key[:2]] = (key[2], layout)

    def well_formed(self, family: Family, kind: str, series: tuple) -> bool:
        """`_is_well_formed`, remembered while the family keeps exactly the same series."""
        if kind not in ("histogram", "gaugehistogram", "summary", "counter", "info"):
            return True
        known = self._shapes.get(family.name)
        if known is None or known[0] != series:
            known = (series, _is_well_formed(family, kind))
        self._used_shapes[family.name] = known
        return known[1]

    def clear(self) -> None:
        """Forget everything: when polls are served from a template, this is memory nobody reads."""
        self.__init__()

    def rotate(self) -> None:
        self._entries, self._used = self._used, {}
        self._shapes, self._used_shapes = self._used_shapes, {}
        self._layouts, self._used_layouts = self._used_layouts, {}


def normalize(
    families: list[Family],
    *,
    target: str,
    labels: dict[str, str] | None = None,
    prefix: str = "",
    cache: SeriesCache | None = None,
) -> Normalized:
    """Families as one target exposed them -> families as we serve them, with `target` on every sample.

    Pass the target's SeriesCache to reuse per-series work from its earlier polls (same target, same
    labels and prefix: a poller keeps one for its lifetime)."""
    from exporter.exposition import series_head  # the served text of a series; exposition imports us

    labeller = _Labeller(target, labels or {})
    assembler = Assembler()
    cache = cache if cache is not None else SeriesCache()

    for family, kind, series_ids in _servable(families, cache, assembler.dropped):
        raw = family.name
        name = served_base(raw, kind, prefix)
        if name.startswith(EXPORTED) and is_reserved_name(name[len(EXPORTED):]):
            assembler.dropped["renamed_reserved"] += len(family.samples)  # served, under `exported_<name>`
        if kind == "counter" and raw.endswith("_total"):
            raw_base = raw[: -len("_total")]
        elif kind == "info" and raw.endswith("_info"):
            raw_base = raw[: -len("_info")]
        else:
            raw_base = raw
        layout_key = (raw_base, kind, series_ids)
        layout = cache.layout(layout_key) if assembler.is_new(name) else None
        series = assembler.family(
            name, kind, family.help or f"{raw} (no HELP from upstream)", len(family.samples), layout_key
        )
        if series is None:
            continue
        if layout is not None:  # the same series as last poll: only the values are new
            samples = family.samples
            assembler.prebuilt(
                name,
                tuple(
                    PromSample(entry[0], entry[1], samples[position].value, None, None)
                    for position, entry in zip(layout.positions, layout.entries)
                ),
                layout,
            )
            continue

        for index, (sample, series_id) in enumerate(zip(family.samples, series_ids)):
            cache_key = (raw_base, kind, series_id)
            entry = cache.get(cache_key)
            if entry is None:
                suffix = sample.name[len(raw_base):] if sample.name.startswith(raw_base) else ""
                if kind == "counter" and suffix in ("", "_total"):
                    suffix = "_total"
                elif kind == "info":
                    suffix = "_info"
                sample_name = name + suffix
                upstream = _canonical_bound(sample.labels, kind)
                served_labels = labeller.labels(upstream)
                entry = (
                    sample_name,
                    served_labels,
                    (sample_name, frozenset(upstream.items())),
                    series_head(sample_name, served_labels),
                    _order(sample_name, served_labels, kind, name),
                )
                cache.put(cache_key, entry)
            assembler.put(
                series, entry[2], PromSample(entry[0], entry[1], sample.value, None, None), entry[3], entry[4], index
            )

    result = assembler.result(cache=cache)
    cache.rotate()
    return result
