"""A trace compiles to a function of new values that does the same arithmetic in the same order: the
same floats to the bit, however its temporaries are named (exporter.pipeline.traced)."""

from __future__ import annotations

import operator

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.pipeline.traced import Trace, _reused, larger

OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "max": larger}
VALUES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1.0, 3.0])


def run(program: list[tuple[str, int, int]], outputs: list[int], values: list) -> list:
    """The program on these values: each step combines two earlier values (inputs or steps' results)."""
    pool = list(values)
    for name, a, b in program:
        pool.append(OPERATIONS[name](pool[a % len(pool)], pool[b % len(pool)]))
    return [pool[at % len(pool)] for at in outputs]


def bits(values: list) -> list[str]:
    return [repr(value) if isinstance(value, float) else repr(value.value) for value in values]


@settings(max_examples=150, deadline=None)
@given(
    program=st.lists(
        st.tuples(st.sampled_from(sorted(OPERATIONS)), st.integers(0, 99), st.integers(0, 99)), max_size=40
    ),
    outputs=st.lists(st.integers(0, 99), min_size=1, max_size=10),
    first=st.lists(VALUES, min_size=4, max_size=4),
    then=st.lists(VALUES, min_size=4, max_size=4),
)
def test_a_compiled_trace_gives_the_floats_the_arithmetic_gives(program, outputs, first, then):
    trace = Trace()
    try:
        traced = run(program, outputs, trace.inputs(first))
    except ZeroDivisionError:
        return
    replay = trace.compile(traced)
    try:
        expected = run(program, outputs, then)
    except ZeroDivisionError:
        try:
            replay(then)
        except ZeroDivisionError:
            return
        raise AssertionError("the replay divided by zero where the arithmetic did not") from None
    got = replay(then)
    assert got is not None and bits(got) == bits(expected)


def test_temporaries_read_for_the_last_time_give_their_names_to_the_next():
    lines = [
        "t0 = v[0] + v[1]",
        "t1 = t0 * c[0]",
        "t2 = v[2] - c[0]",
        "if not (t2 > c[1]): return None",
        "t3 = t1 + t2",
        "return [t3, t1]",
    ]
    assert _reused(lines) == [
        "t0 = v[0] + v[1]",
        "t0 = t0 * c[0]",
        "t1 = v[2] - c[0]",
        "if not (t1 > c[1]): return None",
        "t1 = t0 + t1",
        "return [t1, t0]",
    ]


def test_a_temporary_never_read_leaves_its_name_free():
    assert _reused(["t0 = v[0] + v[1]", "t1 = v[1] * v[2]", "return [t1]"]) == [
        "t0 = v[0] + v[1]",
        "t0 = v[1] * v[2]",
        "return [t0]",
    ]
