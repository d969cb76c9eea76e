"""A steady poll's fast path (exporter.pipeline.steady) serves what the long way serves, for any values.

A body with the shape of the last ones is served from its values alone: the unifier's arithmetic
replayed, conform's rules checked on the values, the template filled. Here every payload of both
corpora, under every target configuration the template tests run, is polled with value vectors drawn
at random (NaN, infinities, negative and fractional counts, decreasing buckets, values that flip a
guard or a rule) and each poll's Output is held to what a first poll of the same body makes.
"""

from __future__ import annotations

import math
import random

import pytest
from helpers.support import body_of, corpora, simulated, with_values_moved
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_template import CONFIGS

from exporter.config.loader import parse_config
from exporter.format.accel import PLAIN_SAMPLE
from exporter.pipeline.exposition import chunks
from exporter.pipeline.target import Output, Pipeline
from exporter.serve.explain import explain_reading
from exporter.sources.base import Exposition, TargetConfig


def target_with(extra: str = "") -> TargetConfig:
    return parse_config(f"targets:\n  - name: t\n    type: http\n    url: http://127.0.0.1:9/metrics\n{extra}").targets[
        0
    ]


def value_text(value: float) -> str:
    """A value as a server writes it (Go's and prometheus_client's spellings of the special ones)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def with_values(body: bytes, values: list[float]) -> bytes:
    """The body with its sample lines' values replaced, in order (the lines the fast path reads)."""
    texts = iter(values)

    def replaced(match) -> bytes:
        end = b"\r" if match[0].endswith(b"\r") else b""
        return b"\n" + match[1] + b" " + value_text(next(texts)).encode() + end

    return PLAIN_SAMPLE.sub(replaced, b"\n" + body)[1:]


def values_in(body: bytes) -> list[float]:
    return [float(value) for value in PLAIN_SAMPLE.split(b"\n" + body)[2::3]]


def served(output: Output, target: TargetConfig) -> tuple:
    """Everything a poll's Output gives its readers: families (samples, rendered text), what it dropped
    and found, its profile, and what `explain` reads of it."""
    families = []
    for family in output.families:
        rendered = chunks(family)
        samples = [(s.name, s.labels, repr(s.value)) for s in family.samples]
        families.append(
            (family.name, family.type, family.help, samples, rendered.openmetrics, rendered.inside, rendered.outside)
        )
    reading = output.reading
    index = None
    if reading is not None and reading.index is not None:
        index = {
            name: [(s.labels, repr(s.value)) for s in reading.index.samples(name, {})]
            for name in sorted(reading.index.wanted)
        }
    explanation = explain_reading(target, reading) if reading is not None else None
    return families, output.dropped, output.problems, output.profile, index, explanation


#: What a drawn value may become, beside the one the body had.
WILD = (math.nan, math.inf, -math.inf, -1.0, -0.0, 0.0, 0.5, 2.5, 1e300, -7.25)


def drawn(rng: random.Random, original: list[float], mode: str) -> list[float]:
    if mode == "moved":  # what a live server does: counts go up by whole numbers
        step = rng.randint(0, 5)
        return [value + step if math.isfinite(value) else value for value in original]
    share = {"few": 0.05, "many": 0.5, "all": 1.0}[mode]
    return [
        (rng.choice(WILD) if rng.random() < 0.5 else value * rng.choice((-1, 0.5, 3)) + rng.randint(0, 3))
        if rng.random() < share
        else value
        for value in original
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("payload", corpora())
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    modes=st.lists(st.sampled_from(["moved", "few", "many", "all", "again"]), min_size=3, max_size=3),
)
def test_a_steady_poll_serves_what_the_long_way_serves_for_any_values(payload, config, seed, modes):
    rng = random.Random(seed)
    body = body_of(payload)
    target = target_with(CONFIGS[config])

    def exposition(data: bytes) -> Exposition:
        return Exposition(data, body.openmetrics, body.escaping)

    steady = Pipeline(target)
    for step in range(2):  # the second body of one shape makes the fast path
        steady.run(exposition=exposition(with_values_moved(body.data, step)))
    shape = steady._shape
    assert shape is not None and shape.steady is not None, "every payload of the corpora has a fast path"
    original = values = values_in(body.data)
    for mode in modes:  # "again": the last poll's values once more (two misses running make a fast path of them)
        values = values if mode == "again" else drawn(rng, original, mode)
        data = with_values(body.data, values)
        fast = steady.run(exposition=exposition(data))
        long_way = Pipeline(target, remember=False).run(exposition=exposition(data))
        assert served(fast, target) == served(long_way, target)


def test_a_poll_whose_values_fail_a_guard_takes_the_long_way_and_serves_it():
    """A histogram bucket that is not a whole count is no histogram for the unifier: the poll that has
    one cannot be replayed (a guard), and is served as a first poll of its body would be."""
    body = simulated("vllm")
    target = target_with()
    pipeline = Pipeline(target)
    for step in range(3):
        pipeline.run(exposition=Exposition(with_values_moved(body, step)))
    shape = pipeline._shape
    assert shape is not None and shape.steady is not None and shape.misses == 0
    line = next(line for line in body.split(b"\n") if line.startswith(b"vllm:e2e_request_latency_seconds_bucket{"))
    head, _, value = line.rpartition(b" ")
    fractional = body.replace(line, head + b" " + repr(float(value) + 0.5).encode(), 1)
    served_fast = pipeline.run(exposition=Exposition(fractional))
    assert shape.misses == 1, "the guard sent the poll the long way"
    expected = Pipeline(target, remember=False).run(exposition=Exposition(fractional))
    assert served(served_fast, target) == served(expected, target)
    assert expected.dropped.get("served_untyped"), "the raw histogram is served untyped, too"
    # and the next poll with whole counts takes the fast path again
    again = pipeline.run(exposition=Exposition(with_values_moved(body, 4)))
    assert shape.misses == 0 and pipeline._shape is shape
    expected = Pipeline(target, remember=False).run(exposition=Exposition(with_values_moved(body, 4)))
    assert served(again, target) == served(expected, target)


def test_a_shape_whose_values_keep_failing_a_guard_gets_a_fast_path_of_its_own():
    """Two polls running given to the long way: the values took another turn (a family now served
    untyped, say), and the fast path is made again from the poll that found it."""
    body = simulated("vllm")
    target = target_with()
    pipeline = Pipeline(target)
    for step in range(2):
        pipeline.run(exposition=Exposition(with_values_moved(body, step)))
    shape = pipeline._shape
    assert shape is not None and shape.steady is not None
    first = shape.steady
    negative = with_values(body, [-1.0 for _ in values_in(body)])  # every counter served untyped
    for _ in range(2):
        pipeline.run(exposition=Exposition(negative))
    assert shape.steady is not first and shape.steady is not None and shape.misses == 0
    out = pipeline.run(exposition=Exposition(negative))
    assert shape.misses == 0, "the fast path made of the negative values serves them"
    assert served(out, target) == served(Pipeline(target, remember=False).run(exposition=Exposition(negative)), target)
    assert out.dropped.get("served_untyped")


def test_a_fast_polls_reading_is_worked_out_only_when_explain_asks():
    body = simulated("vllm")
    target = target_with()
    pipeline = Pipeline(target)
    for step in range(3):
        out = pipeline.run(exposition=Exposition(with_values_moved(body, step)))
    assert out.reading.index._later is not None, "nothing worked out yet"
    expected = Pipeline(target, remember=False).run(exposition=Exposition(with_values_moved(body, 2)))
    assert explain_reading(target, out.reading) == explain_reading(target, expected.reading)
    assert out.reading.index._later is None


def test_a_shape_without_a_fast_path_is_served_through_a_template_of_its_families(monkeypatch):
    """A body whose unified arithmetic is more than a trace compiles (a 100k-sample body's) gets no
    Steady: its polls take the long way, with a template of its families' shapes, as before."""
    import exporter.pipeline.traced

    monkeypatch.setattr(exporter.pipeline.traced, "MOST_STEPS", 5)
    body = simulated("vllm")
    target = target_with()
    pipeline = Pipeline(target)
    for step in range(4):
        out = pipeline.run(exposition=Exposition(with_values_moved(body, step)))
    shape = pipeline._shape
    assert shape is not None and shape.tried and shape.steady is None
    assert pipeline._template is not None
    expected = Pipeline(target, remember=False).run(exposition=Exposition(with_values_moved(body, 3)))
    assert served(out, target) == served(expected, target)
