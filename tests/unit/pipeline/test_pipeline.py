"""A target's pipeline (exporter.pipeline.target): the one owner of what a target remembers between polls.

What it remembers lives and dies with its target; what a poll makes is a value scrapes only read.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref

import pytest
from helpers.support import simulated, with_values_moved

from exporter.config.loader import parse_config
from exporter.pipeline.exposition import chunks
from exporter.pipeline.skeleton import Skeleton
from exporter.pipeline.steady import Steady
from exporter.pipeline.target import Output, Pipeline
from exporter.pipeline.template import Template
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.store import Store
from exporter.sources import Shared
from exporter.sources.base import Exposition


def texts(output: Output) -> list[bytes]:
    """Each served family's OpenMetrics text, as the poll rendered it."""
    return [chunks(family).openmetrics for family in output.families]


def target(extra: str = ""):
    return parse_config(f"targets:\n  - {{name: t, type: http, url: 'http://127.0.0.1:9/metrics'{extra}}}\n").targets[0]


async def test_what_a_target_remembers_goes_with_its_poller(upstream):
    config = parse_config(f"targets:\n  - {{name: vllm, type: http, url: '{upstream.url}/simulated/vllm'}}\n")
    shared = Shared()
    try:
        poller = TargetPoller(config.targets[0], Store(), shared)
        for _ in range(3):
            assert (await poller.poll()).up
        shape = poller.pipeline._shape
        assert shape is not None and shape.steady is not None
        # (by id: what other tests' outputs still hold, a fast poll's reading its skeleton, is theirs)
        remembered = {id(shape.skeleton), id(shape.steady), id(shape.steady._template)}
        del shape
        pipeline = weakref.ref(poller.pipeline)
        await poller.close()
        del poller
        gc.collect()
        assert pipeline() is None
        kinds = Skeleton | Steady | Template
        assert not [thing for thing in gc.get_objects() if isinstance(thing, kinds) and id(thing) in remembered]
    finally:
        await shared.close()


def test_two_targets_share_nothing_they_remember():
    body = simulated("vllm")
    one, other = Pipeline(target()), Pipeline(target())
    for step in range(3):
        one.run(exposition=Exposition(with_values_moved(body, step)))
    assert one._shape is not None and other._shape is None and other._template is None
    served = other.run(exposition=Exposition(with_values_moved(body, 7)))
    expected = Pipeline(target()).run(exposition=Exposition(with_values_moved(body, 7)))
    assert texts(served) == texts(expected)


def test_a_polls_output_is_immutable_and_rendered():
    output = Pipeline(target()).run(exposition=Exposition(simulated("vllm")))
    assert isinstance(output, Output) and output.families
    with pytest.raises(dataclasses.FrozenInstanceError):
        output.families = ()  # type: ignore[misc]
    family = output.families[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        family.help = "changed"  # type: ignore[misc]
    assert all(f.chunks is not None for f in output.families), "scrapes only concatenate what the poll rendered"


def test_a_body_that_fails_leaves_nothing_remembered_and_the_next_good_one_is_read_in_full():
    body = simulated("vllm")
    pipeline = Pipeline(target())
    for step in range(3):
        pipeline.run(exposition=Exposition(with_values_moved(body, step)))
    assert pipeline._shape is not None
    broken = body.replace(b"\n", b"\n{{{ not a sample\n", 1)
    with pytest.raises(Exception) as failed:
        pipeline.run(exposition=Exposition(broken, where="http://upstream/metrics"))
    assert getattr(failed.value, "reason", None) == "parse"
    assert pipeline._shape is None
    again = pipeline.run(exposition=Exposition(with_values_moved(body, 5)))
    fresh = Pipeline(target()).run(exposition=Exposition(with_values_moved(body, 5)))
    assert texts(again) == texts(fresh)


def test_a_target_polled_once_remembers_nothing_and_serves_what_a_remembering_one_serves():
    body = simulated("vllm")
    once = Pipeline(target(), remember=False)
    served = once.run(exposition=Exposition(body))
    again = once.run(exposition=Exposition(body))
    assert once._shape is None and once._template is None and once._last_key is None and once._last_shapes is None
    expected = Pipeline(target()).run(exposition=Exposition(body))
    assert texts(served) == texts(expected)
    assert texts(again) == texts(expected)


def test_no_module_keeps_a_cache_of_what_upstreams_send():
    """Caches of upstream data belong to a target's pipeline; module-level memoization is kept for the
    daemon's own tables (the profiles shipped, the vocabulary per prefix)."""
    import functools
    import importlib
    import pkgutil

    import exporter

    allowed = {"exporter.profiles._compiled", "exporter.profiles.profiles", "exporter.serve.claims.vocabulary"}
    found = set()
    for module in pkgutil.walk_packages(exporter.__path__, "exporter."):
        if module.name.startswith("exporter.simulate") or module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            if isinstance(value, functools._lru_cache_wrapper) and value.__module__ == module.name:
                found.add(f"{module.name}.{name}")
    assert found <= allowed, found - allowed


def test_the_polls_that_take_the_long_way_go_to_the_ingest_thread_until_the_pipeline_is_settled():
    """A small body's polls run on the event loop only once its pipeline serves them from the fast path:
    the polls before (the first, the one that builds the fast path) take tens of milliseconds, and
    many targets starting together would otherwise hold up the loop and its scrapes."""
    from exporter.runtime.scheduler import _off_loop
    from exporter.sources.base import Payload

    target = parse_config("targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/metrics', profile: vllm}\n")
    pipeline = Pipeline(target.targets[0])
    body = simulated("vllm")
    off_loop = []
    for step in range(4):
        payload = Payload([], exposition=Exposition(with_values_moved(body, step)))
        off_loop.append(_off_loop(payload, pipeline))
        pipeline.run(exposition=payload.exposition)
    assert off_loop[0] and not off_loop[-1]
    assert pipeline.settled
    assert not _off_loop(Payload([]), pipeline)  # a source's few families stay on the loop
