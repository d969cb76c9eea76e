"""Values picked by position, at C speed, kept small: what a fast path keeps for each check it makes.

A target's fast path checks rules on some of each poll's values (exporter.pipeline.conform's, the
guards of exporter.pipeline.traced, exporter.format.accel's packed rules), for as long as the target
keeps its shape. The positions mostly
run one after another (a histogram's buckets), so a picker keeps where each run starts and ends
rather than an int object per position.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence

__all__ = ["breaks", "picker", "runs"]


def picker(positions: Sequence[int], long_runs: int = 16) -> Callable[[Sequence], Sequence]:
    """`lambda values: [values[i] for i in positions]`, at C speed: one slice where the positions are
    one run, a slice per run where they run `long_runs` long on average, else an itemgetter (whose ints
    the caller may share between pickers)."""
    if not positions:
        return lambda values: ()
    if len(positions) == 1:
        only = positions[0]
        return lambda values: (values[only],)
    slices = runs(positions)
    if len(slices) == 1:
        return operator.itemgetter(slices[0])
    # Chaining the runs' slices keeps less but costs a steady poll more than the itemgetter's tuple
    # (bench/steady_poll.py: +2% with every rule's picks chained): only where the runs are long.
    if long_runs * len(slices) <= len(positions):
        kept = tuple(slices)
        return lambda values: list(itertools.chain.from_iterable(map(values.__getitem__, kept)))
    return operator.itemgetter(*positions)


def runs(positions: Sequence[int]) -> list[slice]:
    """The positions as slices of consecutive ones, in order."""
    if not positions:
        return []
    cut = breaks(positions)
    return [slice(positions[start], positions[end - 1] + 1) for start, end in zip([0, *cut], [*cut, len(positions)])]


def breaks(*sequences: Sequence[int]) -> list[int]:
    """Where runs of consecutive positions break, in sequences of equal length read side by side: each
    index after the first at which some sequence's value is not the one before it plus one (found at C
    speed, with no Python loop per position)."""
    steps_off = [map((1).__ne__, map(operator.sub, itertools.islice(s, 1, None), s)) for s in sequences]
    either = steps_off[0] if len(steps_off) == 1 else map(any, zip(*steps_off))
    return list(itertools.compress(range(1, len(sequences[0])), either))
