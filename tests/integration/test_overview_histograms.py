"""The overview's histogram points: worked out once per shape (bucket order, +Inf, the bucket cap) and
corrected for resets in C on a poll's usual path, they must be exactly what reading every bucket the
plain way gives: merged by bound (a repeated bound's last bucket), sorted, and each bucket's count
corrected with Prometheus's reset rule."""

from __future__ import annotations

import math
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.samples import Sample

from exporter.config.loader import parse_config
from exporter.pipeline.exposition import SeriesFamily
from exporter.serve.overview.promql import rise
from exporter.serve.overview.windows import HISTOGRAMS, MAX_BUCKETS, Windows
from exporter.serve.store import Snapshot

TARGET = parse_config("targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/metrics'}\n").targets[0]
NAME = HISTOGRAMS[0]


def family(buckets: list[tuple[str, float]]) -> SeriesFamily:
    """One histogram family of model m: its buckets as (le, count), in the order given."""
    labels = {"backend": "vllm", "model": "m"}
    samples = [Sample(f"{NAME}_bucket", {**labels, "le": le}, count) for le, count in buckets]
    return SeriesFamily(NAME, "histogram", "", tuple(samples))


def plain(polls: list[list[tuple[str, float]]]) -> list[tuple[tuple[float, ...], array, int] | None]:
    """Each poll's point as the overview defines it, worked out bucket by bucket."""
    points: list[tuple[tuple[float, ...], array, int] | None] = []
    raw: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    kept: tuple[tuple[float, ...], array, int] | None = None
    for buckets in polls:
        merged: dict[float, float] = {}
        for le, count in buckets:
            merged[float(le)] = count
        if math.inf not in merged or len(merged) > MAX_BUCKETS:
            points.append(None)
            continue
        bounds = tuple(sorted(merged))
        counts = tuple(merged[bound] for bound in bounds)
        if raw is None or kept is None or raw[0] != bounds:
            kept = (bounds, array("d", [0.0] * len(counts)), kept[2] + 1 if kept is not None else 0)
        else:
            kept = (bounds, array("d", [t + rise(o, n) for t, o, n in zip(kept[1], raw[1], counts)]), kept[2])
        raw = (bounds, counts)
        points.append(kept)
    return points


BOUNDS = ["0.1", "0.5", "1", "+Inf"]


@settings(max_examples=60, deadline=None)
@given(
    layout=st.lists(st.sampled_from(BOUNDS), min_size=1, max_size=7),
    counts=st.lists(
        st.lists(st.one_of(st.integers(0, 50).map(float), st.just(math.nan)), min_size=7, max_size=7),
        min_size=2,
        max_size=5,
    ),
)
def test_histogram_points_are_the_buckets_read_one_by_one(layout, counts):
    """Repeated bounds, a missing +Inf, counts that go down (a reset) or are NaN: one layout (one shape)
    polled with changing counts."""
    windows = Windows(spacing=0)
    polls = [[(le, values[i]) for i, le in enumerate(layout)] for values in counts]
    for at, buckets in enumerate(polls):
        windows.observe(Snapshot(TARGET, (family(buckets),), up=True, last_poll=1000.0 + at))
    (row,) = windows.rows.values()
    got = [point.histograms[0] for point in row.points]
    expected = plain(polls)
    assert [h is None for h in got] == [h is None for h in expected]
    for mine, theirs in zip(got, expected):
        if mine is not None and theirs is not None:
            assert mine[0] == theirs[0] and mine[2] == theirs[2]
            assert [x if x == x else "nan" for x in mine[1]] == [x if x == x else "nan" for x in theirs[1]]


def test_new_bounds_start_a_new_run_from_zero():
    windows = Windows(spacing=0)
    first = [("0.1", 1.0), ("+Inf", 2.0)]
    second = [("0.1", 3.0), ("1", 4.0), ("+Inf", 5.0)]
    for at, buckets in enumerate([first, first, second]):
        windows.observe(Snapshot(TARGET, (family(buckets),), up=True, last_poll=1000.0 + at))
    (row,) = windows.rows.values()
    runs = [point.histograms[0] for point in row.points]
    assert [h[2] for h in runs if h] == [0, 0, 1]
    last = runs[-1]
    assert last is not None and list(last[1]) == [0.0, 0.0, 0.0]


def test_too_many_buckets_give_no_histogram():
    windows = Windows(spacing=0)
    buckets = [(str(i), float(i)) for i in range(MAX_BUCKETS)] + [("+Inf", 99.0)]
    windows.observe(Snapshot(TARGET, (family(buckets),), up=True, last_poll=1000.0))
    (row,) = windows.rows.values()
    assert row.points[-1].histograms[0] is None
