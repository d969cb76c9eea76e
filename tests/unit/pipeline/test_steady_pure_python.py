"""The steady fast path on the pure-Python split and fill (exporter.format.accel, as where the compiled
module is not built, or INFERENCE_EXPORTER_PURE_PYTHON=1 forces them) serves what the long way serves,
for every payload of both corpora: the fallback is held to the same bytes as the compiled module."""

from __future__ import annotations

import random

import pytest
from helpers.support import body_of, corpora, with_values_moved
from test_steady import drawn, served, target_with, values_in, with_values

from exporter.format import accel
from exporter.pipeline.target import Pipeline
from exporter.sources.base import Exposition


@pytest.fixture
def pure_python(monkeypatch):
    monkeypatch.setattr(accel, "split", accel.python_split)
    monkeypatch.setattr(accel, "fill", accel.python_fill)


@pytest.mark.usefixtures("pure_python")
@pytest.mark.parametrize("payload", corpora())
def test_a_steady_poll_on_pure_python_serves_what_the_long_way_serves(payload):
    body = body_of(payload)
    target = target_with("    prefix: host\n    labels: {region: eu}\n")
    rng = random.Random(7)

    def exposition(data: bytes) -> Exposition:
        return Exposition(data, body.openmetrics, body.escaping)

    steady = Pipeline(target)
    for step in range(2):
        steady.run(exposition=exposition(with_values_moved(body.data, step)))
    assert steady.settled, "every payload of the corpora has a fast path"
    original = values_in(body.data)
    for mode in ("moved", "many", "all"):
        data = with_values(body.data, drawn(rng, original, mode))
        fast = steady.run(exposition=exposition(data))
        long_way = Pipeline(target, remember=False).run(exposition=exposition(data))
        assert served(fast, target) == served(long_way, target)
