"""The overview's windows use the last poll's plan (where each row's values are) again for a poll with
the same family names and the same shapes of the families they read: a poll that differs in either is
read afresh, as reading every sample would."""

from __future__ import annotations

import dataclasses

from prometheus_client.samples import Sample

from exporter.config.loader import parse_config
from exporter.pipeline.exposition import SeriesFamily
from exporter.pipeline.template import _Samples
from exporter.serve.overview.windows import Windows
from exporter.serve.store import Snapshot

TARGET = parse_config("targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/metrics'}\n").targets[0]
LABELS = {"backend": "vllm", "model": "m"}


class Shape:
    """A template's stand-in: what every family of this shape holds but its values."""

    def __init__(self, name: str, labels: dict[str, str]):
        self._series = [(name, labels)]

    def series(self, chunks: object) -> list[tuple[str, dict[str, str]]]:
        return self._series


def gauge(shape: Shape, value: float) -> SeriesFamily:
    """A gauge family filled from a template of this shape, as the pipeline's fast path serves one."""
    name = shape.series(None)[0][0]
    return SeriesFamily(name, "gauge", "", _Samples(None, [value], shape))  # type: ignore[arg-type]


def observe_both(fast: Windows, plain: Windows, families: tuple[SeriesFamily, ...], at: float) -> tuple:
    """Both windows fed one poll (plain with its samples read one by one); the row's last gauges."""
    fast.observe(Snapshot(TARGET, families, up=True, last_poll=at))
    as_samples = tuple(dataclasses.replace(family, samples=tuple(family.samples)) for family in families)
    assert all(isinstance(sample, Sample) for family in as_samples for sample in family.samples)
    plain.observe(Snapshot(TARGET, as_samples, up=True, last_poll=at))
    assert fast.rows == plain.rows
    return fast.rows["t", "backend", "m"].points[-1].gauges


def test_a_poll_of_the_same_names_and_shapes_reads_its_own_values():
    fast, plain = Windows(spacing=0), Windows(spacing=0)
    other, running = Shape("other", {}), Shape("requests_running", LABELS)
    assert observe_both(fast, plain, (gauge(other, 7.0), gauge(running, 1.0)), 1000.0) == (1.0, None, None)
    assert observe_both(fast, plain, (gauge(other, 8.0), gauge(running, 2.0)), 1001.0) == (2.0, None, None)


def test_a_family_read_now_where_an_unread_one_was_is_read_though_the_others_kept_their_shapes():
    fast, plain = Windows(spacing=0), Windows(spacing=0)
    other, running = Shape("other", {}), Shape("requests_running", LABELS)
    waiting = Shape("requests_waiting", LABELS)
    observe_both(fast, plain, (gauge(other, 7.0), gauge(running, 1.0)), 1000.0)
    observe_both(fast, plain, (gauge(other, 7.0), gauge(running, 1.0)), 1001.0)
    assert observe_both(fast, plain, (gauge(waiting, 5.0), gauge(running, 2.0)), 1002.0) == (2.0, 5.0, None)


def test_a_family_of_a_new_shape_is_read_afresh():
    fast, plain = Windows(spacing=0), Windows(spacing=0)
    running = Shape("requests_running", LABELS)
    other_model = Shape("requests_running", {"backend": "vllm", "model": "n"})
    observe_both(fast, plain, (gauge(running, 1.0),), 1000.0)
    observe_both(fast, plain, (gauge(other_model, 3.0),), 1001.0)
    assert fast.rows["t", "backend", "n"].points[-1].gauges == (3.0, None, None)
    assert fast.rows["t", "backend", "m"].points[-1].gauges == (), "up, but this model served nothing this poll"
