"""PromQL's arithmetic over a window of polls: `increase()` across counter resets, and `histogram_quantile()`.

The overview computes what a person would ask Prometheus for, from the polls the daemon keeps, so it
does it the same way: a counter that goes down was reset (the new value is what it counted since),
and a quantile is interpolated linearly inside the bucket where its rank falls
(prometheus/prometheus promql/quantile.go, `BucketQuantile`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

#: Bucket counts closer than this share are taken as equal before forcing them monotonic (as Prometheus).
SMALL_DELTA_TOLERANCE = 1e-12


def rise(before: float, after: float) -> float:
    """What a counter counted between two readings: a decrease is a reset, after which the new value is
    all it has counted (Prometheus's counter-reset rule)."""
    return after - before if after >= before else after


def increase(values: Iterable[float]) -> float:
    """How much a counter grew over consecutive readings, resets included (no extrapolation)."""
    total, previous = 0.0, None
    for value in values:
        if previous is not None:
            total += rise(previous, value)
        previous = value
    return total


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """The q-quantile of cumulative bucket counts by upper bound, as Prometheus's histogram_quantile.

    NaN without a +Inf bucket, with fewer than two buckets, or with no observations; the highest
    finite bound when the rank falls in the +Inf bucket; linear interpolation otherwise, from 0 in the
    first bucket (or that bucket's bound when it is not above 0)."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(zip(bounds, counts))
    if not buckets or buckets[-1][0] != math.inf:
        return math.nan
    buckets = _coalesced(buckets)
    buckets = _monotonic(buckets)
    if len(buckets) < 2:
        return math.nan
    observations = buckets[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    # the first bucket whose cumulative count reaches the rank (sort.Search over all but +Inf)
    b = next((index for index in range(len(buckets) - 1) if buckets[index][1] >= rank), len(buckets) - 1)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def _coalesced(buckets: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Buckets of the same upper bound added together."""
    out: list[tuple[float, float]] = []
    for bound, count in buckets:
        if out and out[-1][0] == bound:
            out[-1] = (bound, out[-1][1] + count)
        else:
            out.append((bound, count))
    return out


def _monotonic(buckets: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cumulative counts never going down (resets of single buckets, or precision, can make them), and
    counts within a tiny share of the previous one taken as equal to it."""
    out: list[tuple[float, float]] = []
    previous = -math.inf
    for bound, count in buckets:
        if count < previous or abs(count - previous) <= SMALL_DELTA_TOLERANCE * abs(count):
            count = previous
        out.append((bound, count))
        previous = count
    return out
