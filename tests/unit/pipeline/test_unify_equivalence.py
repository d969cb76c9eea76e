"""The unified histograms, worked out a whole family at a time (exporter.pipeline.unify), are exactly what the
plain rule gives sample by sample: the reference below is that rule, written out one sample at a time
as unify first did it. Compared on random families of hostile shape: labels in any order, several
models, unreadable, missing, NaN and duplicate bounds, counts that are not whole, missing `_count`,
`_sum` or `+Inf`, other units; floats compared bit for bit."""

from __future__ import annotations

import math
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core.family import Family, Sample
from exporter.pipeline.unify import INF, _histograms, _SampleIndex
from exporter.profiles import Source

# -- the reference: one sample at a time --------------------------------------------------------------


def reference_histograms(source: Source, index: _SampleIndex, model_of) -> dict[str, list]:
    """(buckets, count, sum) of each upstream series, by model, in the order unify adds them up."""
    merged: dict[str, list] = defaultdict(list)
    groups: dict[frozenset, dict] = defaultdict(lambda: {"buckets": {}, "count": None, "sum": None, "broken": False})
    for sample in index.samples(source.metric + "_bucket", source.match):
        group = groups[without_le(sample.labels)]
        try:
            bound = float(sample.labels.get("le", ""))
        except ValueError:
            group["broken"] = True
            continue
        group["buckets"][bound if bound == INF else bound / source.divisor] = sample.value
    for sample in index.samples(source.metric + "_count", source.match):
        groups[without_le(sample.labels)]["count"] = sample.value
    for sample in index.samples(source.metric + "_sum", source.match):
        groups[without_le(sample.labels)]["sum"] = sample.value / source.divisor
    for key, group in groups.items():
        buckets, count = group["buckets"], group["count"]
        if group["broken"] or (buckets and INF not in buckets):
            continue
        if not buckets:
            if count is None or group["sum"] is None:
                continue
            buckets = {INF: count}
        values = [*buckets.values(), *(() if count is None else (count,))]
        if not all(value >= 0 and math.isfinite(value) and value.is_integer() for value in values):
            continue
        merged[model_of(dict(key))].append((buckets, buckets[INF] if count is None else count, group["sum"]))
    return merged


def reference_totals(parts: list) -> tuple[list[float], list[float]]:
    """The merged histogram's bounds, and at each the sum over series of the most the series holds up to it."""
    bounds = sorted({bound for buckets, _, _ in parts for bound in buckets})
    totals = [0.0] * len(bounds)
    for buckets, _, _ in parts:
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
    return bounds, totals


def without_le(labels: dict[str, str]) -> frozenset:
    return frozenset(item for item in labels.items() if item[0] != "le")


# -- random families --------------------------------------------------------------------------------

BOUNDS = ["0.1", "0.5", "1", "1.0", "2.5", "10", "+Inf", "Inf", "-0.0", "0", "NaN", "x", ""]
VALUES = st.one_of(
    st.integers(min_value=0, max_value=50).map(float),
    st.sampled_from([-1.0, 0.5, math.inf, math.nan, -0.0, 1e300]),
)


@st.composite
def histogram_family(draw) -> Family:
    samples = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        labels = {"model_name": draw(st.sampled_from(["a", "b", ""])), "engine": draw(st.sampled_from(["0", "1"]))}
        if draw(st.booleans()):
            labels = dict(reversed(list(labels.items())))  # another order, the same series
        if draw(st.booleans()):
            labels["extra"] = "x"
        for text in draw(st.lists(st.sampled_from(BOUNDS), max_size=5)):
            bucket = dict(labels) if text == "" else {**labels, "le": text}  # "": no `le` at all
            samples.append(Sample("h_bucket", bucket, draw(VALUES)))
        if draw(st.booleans()):
            samples.append(Sample("h_count", dict(labels), draw(VALUES)))
        if draw(st.booleans()):
            samples.append(Sample("h_sum", dict(labels), draw(VALUES)))
    draw(st.randoms()).shuffle(samples)
    return Family("h", "histogram", samples=samples)


def bits(value: float) -> str:
    return "nan" if value != value else value.hex()


def described(merged: dict) -> list:
    """Models, series and merged samples, floats as bits."""
    return [
        (
            model,
            [
                (sorted(map(repr, buckets.items())), bits(count), None if total is None else bits(total))
                for buckets, count, total in parts
            ],
        )
        for model, parts in merged.items()
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=histogram_family(), unit=st.sampled_from([None, "milliseconds"]), match=st.booleans())
def test_histograms_a_family_at_a_time_are_the_sample_by_sample_rule(family, unit, match):
    source = Source(metric="h", unit=unit, match={"engine": "0"} if match else {})
    index = _SampleIndex([family], frozenset({"h_bucket", "h_count", "h_sum"}))

    def model_of(labels: dict[str, str]) -> str:
        return labels.get("model_name", "") or "default"

    got = {model: histogram.parts for model, histogram in _histograms([source], index, model_of).items()}
    assert described(got) == described(reference_histograms(source, index, model_of))
    for model, histogram in _histograms([source], index, model_of).items():
        if any(bound != bound for buckets, _, _ in histogram.parts for bound in buckets):
            continue  # a NaN bound sorts nowhere: what the rule makes of it is no contract
        bounds, totals = reference_totals(histogram.parts)
        served = [s for s in histogram.samples("u", {"model": model}) if s.name == "u_bucket"]
        assert [bits(s.value) for s in served] == [bits(total) for total in totals]
        assert len(served) == len(bounds)


def test_two_nan_bounds_of_one_series_are_two_buckets_as_read_one_sample_at_a_time():
    labels = {"model_name": "a"}
    family = Family(
        "h",
        "histogram",
        samples=[
            Sample("h_bucket", {**labels, "le": "NaN"}, 1.0),
            Sample("h_bucket", {**labels, "le": "NaN"}, 2.0),
            Sample("h_bucket", {**labels, "le": "+Inf"}, 3.0),
            Sample("h_count", labels, 3.0),
        ],
    )
    source = Source(metric="h")
    index = _SampleIndex([family], frozenset({"h_bucket", "h_count", "h_sum"}))

    def model_of(labels: dict[str, str]) -> str:
        return labels.get("model_name", "")

    got = {model: histogram.parts for model, histogram in _histograms([source], index, model_of).items()}
    assert described(got) == described(reference_histograms(source, index, model_of))
    assert len(got["a"][0][0]) == 3
