"""Heavy ingest work off the event loop: one worker thread, one piece of a target's work at a time.

Parsing and normalizing a body of 100,000 series holds the CPU for a long stretch; on the event
loop, no scrape was answered meanwhile (the figures: docs/performance.md). In the worker thread the
GIL is handed back and forth every few milliseconds (sys.getswitchinterval), so scrapes and other
polls go on meanwhile. Small pieces stay on the loop, where a thread hop would cost more than the
work.

A target's parser and series caches are not safe to share between two threads, and a piece of work
keeps running in the thread after the poll that started it timed out or was cancelled. So each
owner (a source, a poller) has one `Lane`: its next piece, on or off the loop, first waits for the
one still running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Bodies of at least this many bytes are parsed in the worker thread.
OFF_LOOP_BYTES = 256 * 1024
#: Payloads of at least this many samples are normalized in the worker thread.
OFF_LOOP_SAMPLES = 5_000

#: How long the event loop may wait for the GIL while the worker thread holds it (CPython's default
#: is 5 ms). Each time the loop thread comes back from I/O (a select, a send) it waits that long
#: for the GIL: a scrape makes several such waits, so at 5 ms one scrape during a large parse took
#: many times that (bench/soak.py's p99; docs/performance.md); the worker is only asked to let go
#: when the loop has work.
SWITCH_INTERVAL = 0.0005

_executor: concurrent.futures.ThreadPoolExecutor | None = None


def submit(work: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
    """Queue a piece of work for the worker thread, after what is queued there: work that nobody awaits
    (deflating a poll ahead of the scrapes that will want it)."""
    return _worker().submit(work, *args)


def _worker() -> concurrent.futures.ThreadPoolExecutor:
    """One thread for every target: pieces queue rather than contend for the GIL among themselves."""
    global _executor
    if _executor is None:
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
    return _executor


class Lane:
    """One owner's pieces of work, in order: never two at once, whether on the loop or in the thread."""

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: concurrent.futures.Future | None = None

    async def run(self, off_loop: bool, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        running = self._running
        if running is not None and not running.done():  # left running by a poll that was cancelled
            await asyncio.wait([asyncio.wrap_future(running)])
        self._running = None
        if not off_loop:
            return work(*args, **kwargs)
        # In the caller's context: what the work logs reaches its daemon's event rings (exporter.core.events).
        future = _worker().submit(contextvars.copy_context().run, work, *args, **kwargs)
        self._running = future
        try:
            return await asyncio.wrap_future(future)
        finally:
            if future.done():  # its result or exception is not kept past this poll
                self._running = None
