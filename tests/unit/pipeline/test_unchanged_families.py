"""A steady poll serves a family whose text came out as the last poll's as that poll's family: what was
made of it since (deflated twins, classic text, samples read) is kept, and nothing else changes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config.loader import parse_config
from exporter.pipeline.exposition import chunks
from exporter.pipeline.target import Output, Pipeline
from exporter.sources.base import Exposition

BODY = """# HELP a_total Requests.
# TYPE a_total counter
a_total{x="1"} %r
a_created{x="1"} 1.7e+09
# HELP b A gauge.
# TYPE b gauge
b{y="1"} %r
b{y="2"} %r
"""


def target():
    return parse_config(
        "targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/metrics', profile: none}\n"
    ).targets[0]


def body(a: float, b1: float, b2: float) -> Exposition:
    return Exposition((BODY % (a, b1, b2)).encode())


def steady_pipeline() -> Pipeline:
    pipeline = Pipeline(target())
    for step in range(3):  # the second body of one shape makes the fast path
        pipeline.run(exposition=body(1.0 + step, 2.0, 3.0))
    assert pipeline._shape is not None and pipeline._shape.steady is not None
    return pipeline


def by_name(output: Output) -> dict:
    return {family.name: family for family in output.families}


def test_a_family_whose_values_did_not_change_is_the_last_polls_with_its_twins_kept():
    pipeline = steady_pipeline()
    first = by_name(pipeline.run(exposition=body(10.0, 2.0, 3.0)))
    chunks(first["b"]).deflated("openmetrics")
    second = by_name(pipeline.run(exposition=body(11.0, 2.0, 3.0)))
    assert second["b"] is first["b"] and chunks(second["b"]).twin("openmetrics") is not None
    assert second["a"] is not first["a"]
    third = by_name(pipeline.run(exposition=body(11.0, 2.0, 4.0)))
    assert third["a"] is second["a"] and third["b"] is not second["b"]
    assert [s.value for s in third["b"].samples] == [2.0, 4.0]


VALUE = st.sampled_from([0.0, -0.0, 1.0, 2.5, 1e6, 1e300, float("inf"), float("nan")])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(VALUE, VALUE, VALUE), min_size=1, max_size=6))
def test_polls_that_repeat_some_families_serve_what_the_long_way_serves(polls):
    pipeline = steady_pipeline()
    for values in polls:
        fast = pipeline.run(exposition=body(*values))
        long_way = Pipeline(target(), remember=False).run(exposition=body(*values))
        for mine, theirs in zip(fast.families, long_way.families, strict=True):
            ours, long = chunks(mine), chunks(theirs)
            assert (ours.openmetrics, ours.inside, ours.outside) == (long.openmetrics, long.inside, long.outside)
            assert [(s.name, s.labels, repr(s.value)) for s in mine.samples] == [
                (s.name, s.labels, repr(s.value)) for s in theirs.samples
            ]


def test_a_family_made_quickly_is_the_dataclass_made_by_its_constructor():
    from exporter.pipeline.exposition import Chunks, SeriesFamily, rendered_family

    text = b'a_total{x="1"} 1.0\n'
    made = rendered_family("a", "counter", "A.", (), Chunks(text, {}, text))
    assert made == SeriesFamily("a", "counter", "A.", ()) and made.heads is None and chunks(made).openmetrics == text
    assert hash(made) == hash(SeriesFamily("a", "counter", "A.", ()))
