"""What a target's fast path remembers between polls: the work the stages did on its shape, and none of
the families, samples or plans of the poll it was made of (bench/pipeline_memory.py says what each part
costs per series)."""

from __future__ import annotations

import gc
import math
import sys
import types

import pytest
from helpers.support import body_of, corpora, simulated, with_values_moved
from hypothesis import given, settings
from hypothesis import strategies as st
from test_steady import served

from exporter.config.loader import parse_config
from exporter.core.family import Family, Sample
from exporter.format.accel import PLAIN_SAMPLE
from exporter.format.parse import parse
from exporter.pipeline.conform import _Plan
from exporter.pipeline.target import Pipeline
from exporter.sources.base import Exposition, TargetConfig


def target_with() -> TargetConfig:
    return parse_config("targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/metrics'}\n").targets[0]


def steady_pipeline(backend: str = "vllm") -> Pipeline:
    pipeline = Pipeline(target_with())
    body = simulated(backend)
    for step in range(3):
        pipeline.run(exposition=Exposition(with_values_moved(body, step)))
    assert pipeline._shape is not None and pipeline._shape.steady is not None
    return pipeline


def reachable(root: object) -> list[object]:
    """Every object reachable from `root` through references the garbage collector sees, short of
    classes and modules (a function's globals lead to whatever any module holds)."""
    modules = {id(module.__dict__) for module in list(sys.modules.values()) if hasattr(module, "__dict__")}
    seen: dict[int, object] = {id(root): root}
    todo = [root]
    while todo:
        for referent in gc.get_referents(todo.pop()):
            if id(referent) in seen or id(referent) in modules or isinstance(referent, type | types.ModuleType):
                continue
            seen[id(referent)] = referent
            todo.append(referent)
    return list(seen.values())


def test_a_fast_path_keeps_no_family_or_sample_of_the_poll_it_was_made_of():
    shape = steady_pipeline()._shape
    assert shape is not None
    kept = [o for o in reachable(shape.steady) if isinstance(o, Family | Sample)]
    assert kept == []


def test_a_target_its_fast_path_serves_keeps_no_conform_plans():
    """The Steady checks conform's rules itself; a poll that takes the long way works them out again."""
    conform = steady_pipeline().conform
    assert not (conform._plans or conform._used or conform._by_shape or conform._by_shape_used)


VALUES = st.one_of(
    st.sampled_from([0.0, 1.0, -0.0, -1.0, 0.5, math.nan, math.inf, -math.inf]),
    st.floats(-10, 10, allow_nan=False),
)


def plan_rules(most: int) -> st.SearchStrategy[tuple[list, list]]:
    """A plan's rules on positions up to `most`: (kind, position) and (pair kind, a, b)."""
    kinds = st.sampled_from(["nonneg", "not_negative", "integer", "not_nan", "ones", "bools"])
    positions = st.integers(0, most)
    return st.tuples(
        st.lists(st.tuples(kinds, positions), max_size=8),
        st.lists(st.tuples(st.sampled_from(["ordered", "equal"]), positions, positions), max_size=4),
    )


def plan_of(rules: tuple[list, list]) -> _Plan:
    plan = _Plan()
    singles, pairs = rules
    for name, position in singles:
        getattr(plan, name).append(position)
    for name, a, b in pairs:
        getattr(plan, name).append((a, b))
    return plan


@settings(max_examples=60, deadline=None)
@given(rules=plan_rules(5), offset=st.integers(0, 3), values=st.lists(VALUES, min_size=9, max_size=9))
def test_a_joined_plans_compiled_check_holds_where_its_plan_holds(rules, offset, values):
    plan = plan_of(rules)
    joined = _Plan.joined([(offset, plan)])
    again = _Plan.joined([(offset, plan)])
    assert joined.check()(values) == again.holds(values)


def families_seen(families: list[Family]) -> list[tuple]:
    return [(f.name, f.type, f.help, f.unit, [(s.name, s.labels, repr(s.value)) for s in f.samples]) for f in families]


@pytest.mark.parametrize("payload", corpora())
def test_a_compacted_skeleton_makes_the_families_a_parse_makes(payload):
    """A target its fast path serves lets its skeleton's labels go; a poll off the fast path (or an
    explain) makes them again, of the body the skeleton was parsed from, and reads what a parse reads."""
    body = body_of(payload)
    pipeline = Pipeline(target_with())

    def exposition(data: bytes) -> Exposition:
        return Exposition(data, body.openmetrics, body.escaping)

    for step in range(3):
        pipeline.run(exposition=exposition(with_values_moved(body.data, step)))
    shape = pipeline._shape
    assert shape is not None and shape.steady is not None and shape.made_of is None
    assert shape.skeleton.compacted
    data = with_values_moved(body.data, 7)
    made = shape.skeleton.again(PLAIN_SAMPLE.split(b"\n" + data))
    assert made is not None and not shape.skeleton.compacted
    parsed = parse(data, openmetrics=body.openmetrics, escaping=body.escaping)
    assert families_seen(made.families) == families_seen(parsed.families)
    pipeline.run(exposition=exposition(with_values_moved(body.data, 8)))
    assert shape.skeleton.compacted, "the next fast poll lets them go again"


@pytest.mark.parametrize("payload", corpora())
def test_the_poll_that_makes_the_fast_path_serves_from_it_what_the_long_way_serves(payload):
    """The second poll of a shape makes its Steady and serves that Steady's output, not the long way's
    families (which would stay in the target's snapshot until the next poll): the same bytes and readings."""
    body = body_of(payload)
    target = target_with()
    pipeline = Pipeline(target)
    for step in range(2):
        data = with_values_moved(body.data, step)
        out = pipeline.run(exposition=Exposition(data, body.openmetrics, body.escaping))
    assert pipeline._shape is not None and pipeline._shape.steady is not None
    assert all(type(family.samples).__name__ == "_Samples" for family in out.families), "filled, not the long way's"
    expected = Pipeline(target, remember=False).run(exposition=Exposition(data, body.openmetrics, body.escaping))
    assert served(out, target) == served(expected, target)


@settings(max_examples=200, deadline=None)
@given(
    rules=plan_rules(8), values=st.lists(st.integers(-2, 3) | VALUES, min_size=9, max_size=9), polls=st.integers(1, 3)
)
def test_a_plan_holds_on_a_sources_ints_as_on_the_same_values_as_floats(rules, values, polls):
    """A source's families may carry ints: a plan says of them what it says of the same values as floats,
    poll after poll, once it has seen an int (its C check takes floats alone)."""
    plan, floats = plan_of(rules), plan_of(rules)
    as_floats = [float(value) for value in values]
    for _ in range(polls):
        assert plan.holds(values) == floats.holds(as_floats)
        assert plan.holds(as_floats) == floats.holds(as_floats)
