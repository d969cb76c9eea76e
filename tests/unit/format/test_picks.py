"""A picker gives the values at its positions, in order, however it keeps them (exporter.format.picks)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.format.picks import breaks, picker, runs


@settings(max_examples=200, deadline=None)
@given(
    positions=st.lists(st.integers(0, 49), max_size=60)
    | st.lists(st.tuples(st.integers(0, 40), st.integers(1, 10)), max_size=6).map(
        lambda spans: [at for start, length in spans for at in range(start, start + length)]
    )
)
def test_a_picker_gives_the_values_at_its_positions_in_order(positions):
    values = [float(at) * 1.5 for at in range(50)]
    assert list(picker(positions)(values)) == [values[at] for at in positions]
    assert [at for piece in runs(positions) for at in range(piece.start, piece.stop)] == positions


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=30))
def test_pairs_break_where_either_side_breaks(pairs):
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    expected = [i for i in range(1, len(pairs)) if firsts[i] != firsts[i - 1] + 1 or seconds[i] != seconds[i - 1] + 1]
    assert breaks(firsts, seconds) == expected
    assert breaks(firsts) == [i for i in range(1, len(pairs)) if firsts[i] != firsts[i - 1] + 1]
