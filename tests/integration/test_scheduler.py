"""Polling: retries with backoff inside the interval, first polls spread, reasons counted."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

from exporter.config.loader import parse_config
from exporter.runtime.scheduler import TargetPoller, first_poll_offset
from exporter.serve.store import Store
from exporter.sources import Shared


def one_target(yaml_target: str, defaults: str = "{interval: 5s, timeout: 1s, retries: 2, backoff: 50ms}"):
    return parse_config(f"defaults: {defaults}\ntargets:\n  - {yaml_target}\n").targets[0]


async def poll_once(target):
    store, shared = Store(), Shared()
    try:
        poller = TargetPoller(target, store, shared)
        return await poller.poll()
    finally:
        await shared.close()


async def test_target_that_fails_twice_then_succeeds_within_one_interval_ends_up_up(upstream):
    target = one_target(f'{{name: flaky, type: http, url: "{upstream.url}/flaky/a/2"}}')
    snap = await poll_once(target)
    assert snap.up is True
    assert snap.retries == 2
    assert snap.errors == {}
    assert upstream.hits["/flaky/a/2"] == 3
    assert snap.sample_count > 100


async def test_a_poll_that_runs_out_of_retries_counts_one_error_with_its_reason(upstream):
    target = one_target(f'{{name: flaky, type: http, url: "{upstream.url}/flaky/b/5"}}')
    snap = await poll_once(target)
    assert snap.up is False
    assert snap.errors == {"http_status": 1}
    assert snap.retries == 2 and upstream.hits["/flaky/b/5"] == 3
    assert snap.families == ()


async def test_retries_never_spill_past_the_next_interval(upstream):
    # Each attempt times out after 400ms; ten retries would take 4s, but the interval is 1s.
    target = one_target(
        f'{{name: hangs, type: http, url: "{upstream.url}/hang"}}',
        "{interval: 1s, timeout: 400ms, retries: 10, backoff: 10ms}",
    )
    snap = await poll_once(target)
    assert snap.up is False and snap.last_reason == "timeout"
    assert upstream.hits["/hang"] < 4
    assert snap.last_duration <= 1.0 + 0.25  # the interval, plus scheduling slack


async def test_limits_are_not_retried(upstream):
    target = one_target(f'{{name: big, type: http, url: "{upstream.url}/big", body_size_limit: 1KiB}}')
    snap = await poll_once(target)
    assert snap.last_reason == "body_too_large"
    assert upstream.hits["/big"] == 1 and snap.retries == 0


def test_first_polls_are_spread_over_the_interval():
    offsets = sorted(first_poll_offset(f"target-{i}", 10.0) for i in range(200))
    assert offsets[0] >= 0 and offsets[-1] < 10.0
    # every tenth of the interval gets some targets: no thundering herd at start-up
    assert {int(offset) for offset in offsets} == set(range(10))
    assert first_poll_offset("vllm", 15.0) == first_poll_offset("vllm", 15.0)


async def test_each_poll_gets_its_full_retries_from_the_policy_it_reuses(upstream):
    upstream.broken.add("r")
    target = one_target(f'{{name: broken, type: http, url: "{upstream.url}/switch/r"}}')
    store, shared = Store(), Shared()
    try:
        poller = TargetPoller(target, store, shared)
        first = await poller.poll()
        second = await poller.poll()
        upstream.broken.discard("r")
        both = await asyncio.gather(poller.poll(), poller.poll())  # overlapping polls keep their own counts
    finally:
        await shared.close()
    assert first.up is False and second.up is False
    assert second.retries == 4  # two retries in each of the two polls
    assert upstream.hits["/switch/r"] == 2 * 3 + 2
    assert all(snap.up for snap in both)


async def test_a_poll_leaves_no_garbage_for_the_cycle_collector(upstream):
    """Objects in reference cycles outlive their poll until a collection walks everything younger:
    with hundreds of targets, each poll's few dozen made those collections long scrape-time pauses."""
    target = one_target(f'{{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}')
    store, shared = Store(), Shared()
    try:
        poller = TargetPoller(target, store, shared)
        for _ in range(3):  # past the first polls, which make the shape and the template
            await poller.poll()
        gc.collect()
        gc.disable()
        try:
            for _ in range(10):
                await poller.poll()
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            garbage = Counter(type(item).__qualname__ for item in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    finally:
        await shared.close()
    assert not garbage, garbage


async def test_no_retry_starts_when_the_first_attempt_left_too_little_of_the_interval(upstream):
    """The first attempt runs outside tenacity; its time still counts against the interval: a timeout
    of 480ms in a 500ms interval leaves less than a tenth of the timeout for a retry, so none starts."""
    target = one_target(
        f'{{name: hangs, type: http, url: "{upstream.url}/hang"}}',
        defaults="{interval: 500ms, timeout: 480ms, retries: 2, backoff: 1ms}",
    )
    snap = await poll_once(target)
    assert snap.up is False and snap.last_reason == "timeout"
    assert upstream.hits["/hang"] == 1 and snap.retries == 0


async def test_a_settled_targets_poll_goes_to_the_ingest_thread_while_a_scrape_is_answered(upstream):
    from exporter.core import offload
    from exporter.runtime.scheduler import _off_loop

    target = one_target(f'{{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}')
    store, shared = Store(), Shared()
    try:
        poller = TargetPoller(target, store, shared)
        for _ in range(3):
            await poller.poll()
        assert poller.pipeline.settled, "the third poll of an unchanged shape is served by its fast path"
        payload = await poller.source.poll()
        assert not _off_loop(payload, poller.pipeline), "a small settled body is worked on the event loop"
        with offload.scraping():
            assert _off_loop(payload, poller.pipeline), "during a scrape it waits in the ingest thread"
        await poller.close()
    finally:
        await shared.close()
