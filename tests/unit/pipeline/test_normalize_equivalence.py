"""normalize works a whole family at a time; what it serves is what a plain per-sample reading gives.

`reference` below is deliberately simple: one sample at a time, frozensets for identities, `sorted`
for order, `series_head` for heads. Hypothesis feeds both the same families: histograms with shuffled
buckets and odd `le` texts, duplicate series, label names that clash with `target` and the static
labels, `__name__`-like and UTF-8 names, values that need escaping, names that sanitize alike.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core.family import Family, Sample
from exporter.pipeline.exposition import series_head
from exporter.pipeline.normalize import (
    exposition_names,
    fold_created,
    go_float_label,
    is_reserved_name,
    normalize,
    sanitize_name,
    served_base,
    served_type,
)

EXAMPLES = int(os.environ.get("EQUIVALENCE_EXAMPLES", "300"))

_SUFFIX_RANK = {"_bucket": 0, "": 0, "_total": 0, "_count": 1, "_gcount": 1, "_sum": 2, "_gsum": 2, "_created": 3}
_OWNED = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("_sum", "_count", "_created"),
}


def _number(text):
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _well_formed(family: Family, kind: str) -> bool:
    name, samples = family.name, family.samples
    if kind in ("histogram", "gaugehistogram"):
        groups, complete = set(), set()
        for sample in samples:
            if sample.name not in {name + suffix for suffix in _OWNED[kind]}:
                return False
            group = frozenset((key, value) for key, value in sample.labels.items() if key != "le")
            groups.add(group)
            if sample.name == name + "_bucket":
                bound = _number(sample.labels.get("le"))
                if bound is None:
                    return False
                if bound == math.inf:
                    complete.add(group)
        return groups == complete
    if kind == "summary":
        return all(_number(s.labels.get("quantile")) is not None for s in samples if s.name == name)
    if kind in ("counter", "info"):
        own = "_total" if kind == "counter" else "_info"
        base = name[: -len(own)] if name.endswith(own) else name
        allowed = {base, base + own} | ({base + "_created"} if kind == "counter" else set())
        return all(sample.name in allowed for sample in samples)
    return True


def reference(families: list[Family], *, target: str, labels: dict[str, str], prefix: str):
    own = {"target": target, **labels}

    def rename(label: str, upstream: dict[str, str]) -> str:
        """Prometheus's rule: a label that clashes with a target label gets `exported_` in front until its
        name is free of the target's labels and the series' other labels."""
        served = sanitize_name(label)
        if served.startswith("__"):
            served = "exported_" + served
        if served in own:
            others = {sanitize_name(other) for other in upstream if other != label} | set(own)
            while served in others:
                served = "exported_" + served
        return served

    dropped: Counter[str] = Counter()
    served: dict[str, tuple[str, str, dict]] = {}
    claimed: dict[str, str] = {}
    for family in fold_created(families):
        if not family.samples:
            continue
        kind = served_type(family)
        if _well_formed(family, kind):
            parts = [(family, kind)]
        else:
            dropped["served_untyped"] += len(family.samples)
            by_name: dict[str, Family] = {}
            for sample in family.samples:
                by_name.setdefault(sample.name, Family(sample.name, "untyped", family.help)).samples.append(sample)
            parts = [(part, "unknown") for part in by_name.values()]
        for part, kind in parts:
            name = served_base(part.name, kind, prefix)
            if name.startswith("exported_") and is_reserved_name(name[len("exported_") :]):
                dropped["renamed_reserved"] += len(part.samples)
            if name not in served:
                if any(claimed.get(n, name) != name for n in exposition_names(name, kind)):
                    dropped["type_conflict"] += len(part.samples)
                    continue
                claimed.update(dict.fromkeys(exposition_names(name, kind), name))
                served[name] = (kind, part.help or f"{part.name} (no HELP from upstream)", {})
            elif served[name][0] != kind:
                dropped["type_conflict"] += len(part.samples)
                continue
            raw_base = part.name
            if kind == "counter" and part.name.endswith("_total"):
                raw_base = part.name[: -len("_total")]
            elif kind == "info" and part.name.endswith("_info"):
                raw_base = part.name[: -len("_info")]
            series = served[name][2]
            for sample in part.samples:
                suffix = sample.name[len(raw_base) :] if sample.name.startswith(raw_base) else ""
                if kind == "counter" and suffix in ("", "_total"):
                    suffix = "_total"
                elif kind == "info":
                    suffix = "_info"
                upstream = dict(sample.labels)
                bound = {"histogram": "le", "gaugehistogram": "le", "summary": "quantile"}.get(kind)
                if bound in upstream and _number(upstream[bound]) is not None:
                    upstream[bound] = go_float_label(_number(upstream[bound]))
                out = {rename(key, upstream): value for key, value in upstream.items()}
                out.update(own)
                key = (name + suffix, frozenset(upstream.items()))
                if key in series:
                    dropped["duplicate"] += 1
                series[key] = (name + suffix, out, sample.value)
    result = []
    for name, (kind, help_text, series) in served.items():
        entries = list(series.values())
        if kind in ("counter", "histogram", "gaugehistogram", "summary"):
            bound = {"counter": ""}.get(kind, "quantile" if kind == "summary" else "le")
            seen: list[frozenset] = []

            def position(entry):
                group = frozenset((key, value) for key, value in entry[1].items() if key != bound)
                if group not in seen:
                    seen.append(group)
                rank = _SUFFIX_RANK.get(entry[0][len(name) :], 4)
                return seen.index(group), rank, _number(entry[1].get(bound)) or 0.0

            entries = sorted(entries, key=position)
        samples = [(n, list(out.items()), value) for n, out, value in entries]
        result.append((name, kind, help_text, samples, [series_head(n, out) for n, out, _ in entries]))
    return result, {reason: count for reason, count in dropped.items() if count}


def served(normalized):
    families = [
        (
            family.name,
            family.type,
            family.help,
            [(s.name, list(s.labels.items()), s.value) for s in family.samples],
            list(family.heads or ()),
        )
        for family in normalized.families
    ]
    return families, normalized.dropped


FAMILY_NAMES = st.sampled_from(
    ["h", "h", "a:b", "a_b", "c_total", "c", "__name__", "inference_exporter_x", "i_info", "s"]
)
KINDS = st.sampled_from(
    ["histogram", "histogram", "gaugehistogram", "summary", "counter", "gauge", "untyped", "info", "stateset"]
)
LABEL_NAMES = st.sampled_from(
    [
        "a",
        "b",
        "model",
        "target",
        "pool",
        "exported_target",
        "__name__",
        "__x",
        "a:b",
        "a_b",
        "ä",
        "x(y)",
        "quantile",
        "le",
    ]
)
LABEL_VALUES = st.sampled_from(["1", "x", "Qwen/Qwen3-0.6B", 'say "hi"', "back\\slash", "new\nline", "%(a)s", "{}", ""])
BOUNDS = st.sampled_from(["1", "1.0", "0.5", "5e-1", "Inf", "+Inf", "+Inf", "-1", "1e6", "0.0001", "NaN", "abc", "1_0"])
SUFFIXES = st.sampled_from(["", "_bucket", "_count", "_sum", "_total", "_created", "_info", "_gsum", "_gcount", "_x"])
VALUES = st.sampled_from([0.0, 1.0, 2.5, -1.0, math.inf, 7.0])


@st.composite
def label_sets(draw):
    """Labels as an ordered list of pairs: the same set in another order is the same series."""
    pairs = draw(st.lists(st.tuples(LABEL_NAMES, LABEL_VALUES), max_size=3, unique_by=lambda pair: pair[0]))
    return [pair for pair in pairs if pair[0] not in ("le", "quantile")]


@st.composite
def histogram_like(draw, name: str, kind: str):
    """Series with buckets (shuffled, some bounds written twice or oddly), counts and sums, as a histogram
    or summary carries them; sometimes broken (no +Inf, a stray sample)."""
    samples = []
    for labels in draw(st.lists(label_sets(), min_size=1, max_size=3)):
        bound = "quantile" if kind == "summary" else "le"
        own = name if kind == "summary" else name + "_bucket"
        texts = draw(st.lists(BOUNDS, min_size=1, max_size=5))
        for text in texts + (["+Inf"] if draw(st.booleans()) else []):  # most series complete
            at = draw(st.integers(0, len(labels)))
            samples.append(Sample(own, dict(labels[:at] + [(bound, text)] + labels[at:]), draw(VALUES)))
        ordered = labels[::-1] if draw(st.booleans()) else labels  # the same series, labels in another order
        for suffix in draw(st.lists(st.sampled_from(["_count", "_sum", "_gcount", "_gsum", "_created"]), max_size=3)):
            samples.append(Sample(name + suffix, dict(ordered), draw(VALUES)))
    return draw(st.permutations(samples))


@st.composite
def families(draw):
    out = []
    for _ in range(draw(st.integers(1, 4))):
        name, kind = draw(FAMILY_NAMES), draw(KINDS)
        if kind in ("histogram", "gaugehistogram", "summary") and draw(st.integers(0, 3)):
            samples = draw(histogram_like(name, kind))
        else:
            samples = [
                Sample(name + draw(SUFFIXES), dict(draw(label_sets())), draw(VALUES))
                for _ in range(draw(st.integers(0, 5)))
            ]
        if samples and draw(st.booleans()):
            samples.append(draw(st.sampled_from(samples)))  # a duplicate series, written again
        out.append(Family(name, kind, draw(st.sampled_from(["", "help"])), "", samples))
    if draw(st.booleans()):  # the classic text format's creation times, as a gauge family of their own
        base = draw(st.sampled_from(["h", "c", "s"]))
        out.append(
            Family(base + "_created", "gauge", "", "", [Sample(base + "_created", dict(draw(label_sets())), 1.0)])
        )
    return out


STATIC = st.sampled_from([{}, {"pool": "chat"}, {"a": "1", "b": 'q"uote'}, {"le": "static"}, {"pool": "50%(a)s"}])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(families(), STATIC, st.sampled_from(["", "gpu"]))
def test_normalize_serves_what_a_plain_per_sample_reading_serves(upstream, static, prefix):
    expected = reference(upstream, target="t", labels=static, prefix=prefix)
    assert served(normalize(upstream, target="t", labels=static, prefix=prefix)) == expected


def test_the_reference_sees_the_odd_cases_the_property_is_for():
    """A fixed example of each odd case, so that the comparison above is known to reach them."""
    upstream = [
        Family(
            "h",
            "histogram",
            "",
            "",
            [
                Sample("h_bucket", {"le": "Inf", "a": "1"}, 3.0),
                Sample("h_sum", {"a": "1"}, 2.0),
                Sample("h_bucket", {"a": "1", "le": "1"}, 1.0),
                Sample("h_count", {"a": "1"}, 3.0),
                Sample("h_bucket", {"a": "1", "le": "1.0"}, 2.0),  # the same bucket as `1`: the last wins
            ],
        ),
        Family("g", "gauge", "", "", [Sample("g", {"target": "x", "__name__": "y", "v": 'a"b'}, 1.0)]),
        # Two upstream label names served as one: still two upstream series (a series is known by its
        # upstream labels, which the rename does not change).
        Family("r", "gauge", "", "", [Sample("r", {"a:b": "1"}, 1.0), Sample("r", {"a_b": "1"}, 2.0)]),
        # Two counters served under one name, their series told apart by other label names.
        Family(
            "c:d", "counter", "", "", [Sample("c:d_total", {"x": "1"}, 1.0), Sample("c:d_created", {"x": "1"}, 9.0)]
        ),
        Family("c_d", "counter", "", "", [Sample("c_d_total", {"y": "1"}, 2.0), Sample("c_d_total", {"x": "1"}, 3.0)]),
    ]
    families, dropped = served(normalize(upstream, target="t", labels={"pool": "p"}))
    assert (families, dropped) == reference(upstream, target="t", labels={"pool": "p"}, prefix="")
    histogram = families[0]
    assert [(name, dict(labels).get("le")) for name, labels, _ in histogram[3]] == [
        ("h_bucket", "1.0"),
        ("h_bucket", "+Inf"),
        ("h_count", None),
        ("h_sum", None),
    ]
    assert next(value for *_, value in histogram[3]) == 2.0
    assert dropped == {"duplicate": 2}  # the bucket `1.0` after `1`, and `c_d_total{x="1"}` after `c:d`'s
    assert families[1][4] == ['g{exported___name__="y",exported_target="x",pool="p",target="t",v="a\\"b"} ']
    assert [value for *_, value in families[2][3]] == [1.0, 2.0]
    assert [(name, value) for name, _, value in families[3][3]] == [
        ("c_d_total", 3.0),
        ("c_d_created", 9.0),
        ("c_d_total", 2.0),
    ]


def reference_histogram_plan(family: Family):
    """What conform requires of a histogram, one sample at a time: None if it can never be served typed,
    else each check's positions (sorted: their order does not matter)."""
    name, gauge = family.name, family.type == "gaugehistogram"
    count_suffix, sum_suffix = ("_gcount", "_gsum") if gauge else ("_count", "_sum")
    groups: dict[frozenset, dict] = {}
    for i, sample in enumerate(family.samples):
        suffix = sample.name[len(name) :]
        if suffix == "_bucket":
            bound = _number(sample.labels.get("le"))
            if bound is None or bound != bound:
                return None
            key = frozenset(item for item in sample.labels.items() if item[0] != "le")
            groups.setdefault(key, {"buckets": {}, "count": None, "sum": None})["buckets"][bound] = i
        elif suffix in (count_suffix, sum_suffix):
            if "le" in sample.labels:
                return None
            group = groups.setdefault(frozenset(sample.labels.items()), {"buckets": {}, "count": None, "sum": None})
            group["count" if suffix == count_suffix else "sum"] = i
    checks: dict[str, list] = {"nonneg": [], "integer": [], "ordered": [], "equal": [], "not_nan": []}
    for group in groups.values():
        buckets = sorted(group["buckets"].items())
        if not buckets or buckets[-1][0] != math.inf:
            return None
        count, total = group["count"], group["sum"]
        if (count is None) != (total is None):
            return None
        negative = buckets[0][0] < 0
        if total is not None and negative and not gauge:
            return None
        positions = [i for _, i in buckets]
        checks["nonneg"] += positions
        checks["integer"] += positions
        checks["ordered"] += list(itertools.pairwise(positions))
        if count is not None:
            checks["nonneg"] += [count] + ([total] if not gauge or not negative else [])
            checks["integer"].append(count)
            checks["equal"].append((positions[-1], count))
            checks["not_nan"].append(total)
    return {check: sorted(positions) for check, positions in checks.items()}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["histogram", "gaugehistogram"]).flatmap(
        lambda kind: st.tuples(st.just(kind), histogram_like("h", kind))
    )
)
def test_conform_plans_a_histogram_as_a_per_sample_reading_does(drawn):
    from exporter.pipeline.conform import _Plan, _plan_histogram

    kind, samples = drawn
    family = Family("h", kind, "", "", list(samples))
    plan = _Plan()
    planned = _plan_histogram(family, plan)
    expected = reference_histogram_plan(family)
    assert planned == (expected is not None)
    if planned:
        assert {check: sorted(getattr(plan, check)) for check in expected} == expected


def test_a_summary_whose_series_has_target_and_exported_target_groups_as_the_reference_does():
    """Found by the property: served `target` and `exported_target` once took one served name, so that
    a series' `_count` and its quantiles fell into different groups."""
    labels = {"exported_target": "x", "target": "1"}
    samples = [Sample("h_count", dict(labels), 1.0)]
    samples += [Sample("h", {"quantile": "1", "target": "1", "exported_target": "x"}, 1.0) for _ in range(4)]
    upstream = [Family("h", "summary", "", "", samples)]
    expected = reference(upstream, target="t", labels={}, prefix="")
    assert served(normalize(upstream, target="t", labels={}, prefix="")) == expected
