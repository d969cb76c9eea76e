"""A large poll's parsing and normalizing run off the event loop, so that scrapes are answered meanwhile.

A target of 100,000 series took the event loop for ~190 ms a poll, and /metrics p99 with it. The
tests count whether the event loop turned while the work was under way: no timing is asserted.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from exporter.config.loader import parse_config
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.store import Snapshot, Store
from exporter.sources import Shared

SERIES = 50_000


async def loop_turns_during(work_started: threading.Event, work_done: threading.Event, poll) -> tuple[Snapshot, int]:
    """Poll, counting the event loop's turns between the start and the end of the watched work."""
    turns = 0

    async def probe() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            if work_started.is_set() and not work_done.is_set():
                turns += 1

    prober = asyncio.create_task(probe())
    try:
        snapshot = await poll()
    finally:
        prober.cancel()
    return snapshot, turns


def watched(function, started: threading.Event, done: threading.Event):
    def wrapper(*args, **kwargs):
        started.set()
        try:
            return function(*args, **kwargs)
        finally:
            done.set()

    return wrapper


async def test_a_large_body_is_parsed_and_normalized_while_the_event_loop_turns(aiohttp_server, monkeypatch):
    body = "".join(f'big_gauge{{i="{i}"}} {i}\n' for i in range(SERIES)).encode()
    app = web.Application()

    async def respond(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app.router.add_get("/metrics", respond)
    server = await aiohttp_server(app, host="127.0.0.1")
    target = parse_config(
        f"targets:\n  - {{name: big, type: http, url: '{server.make_url('/metrics')}', timeout: 9s, interval: 10s}}\n"
    ).targets[0]
    shared = Shared()
    poller = TargetPoller(target, Store(), shared)
    stages = {}
    for stage in ("parse", "normalize"):
        stages[stage] = (threading.Event(), threading.Event())
    import exporter.pipeline.target as pipeline_module

    monkeypatch.setattr(pipeline_module, "parse", watched(pipeline_module.parse, *stages["parse"]))
    monkeypatch.setattr(pipeline_module, "normalize", watched(pipeline_module.normalize, *stages["normalize"]))
    try:
        snapshot, parse_turns = await loop_turns_during(*stages["parse"], poller.poll)
        for event in stages["normalize"]:
            event.clear()
        _, normalize_turns = await loop_turns_during(*stages["normalize"], poller.poll)
    finally:
        await poller.close()
        await shared.close()
    assert snapshot.up and snapshot.sample_count == SERIES
    assert parse_turns > 0, "the event loop stood still while the body was parsed"
    assert normalize_turns > 0, "the event loop stood still while the families were normalized"
