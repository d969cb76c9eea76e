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

Scrapes go first: while one is answered, the worker starts no new piece, and long pieces (a target's
fast path being built) wait between their parts (`scraping`, `let_scrapes_by`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
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

#: The longest the worker thread holds back one piece of work, in all, while scrapes are being answered
#: (`scraping`).
SCRAPE_FIRST_LIMIT = 0.25
#: The most of any second the worker spends waiting for scrapes: clients scraping back to back, a
#: scrape always in progress, slow ingest down by half at most, and never stop it.
SCRAPE_FIRST_SHARE = 0.5

_executor: concurrent.futures.ThreadPoolExecutor | None = None
#: How many scrapes are being answered now, in every daemon of this process (they share the worker).
_scraping = 0
#: The worker thread's identity, once it has run something.
_worker_thread: int | None = None
#: The worker thread's own: when the piece it runs stops waiting for scrapes (time.monotonic), and the
#: second it counts its waits in (its start, and what it waited in it).
_piece_deadline = 0.0
_second: tuple[float, float] = (0.0, 0.0)


@contextlib.contextmanager
def scraping() -> Iterator[None]:
    """While a scrape is answered, the worker thread starts no new piece of work (for up to
    SCRAPE_FIRST_LIMIT a piece, and half of any second): a scrape is someone waiting, ingest work is not. Both want the GIL, and the loop
    thread gets it about half the time while the worker runs Python: 200 targets building their fast
    paths together after a start (tens of ms each) doubled a 200k-series scrape's time and more
    (docs/performance.md, the aggregator). A piece already running runs on. For the event loop thread,
    around the part of a scrape that works, not around writing it to a client that may read slowly."""
    global _scraping
    _scraping += 1
    try:
        yield
    finally:
        _scraping -= 1


def scrape_in_progress() -> bool:
    """Whether a scrape is being answered now: a poll's work that would run on the event loop meanwhile
    goes to the worker, which takes it up after the scrape."""
    return _scraping > 0


def let_scrapes_by() -> None:
    """Between two parts of a long piece of work: in the worker thread, wait while a scrape is answered
    (up to SCRAPE_FIRST_LIMIT for the whole piece), as between two pieces; elsewhere (the event loop), nothing. A piece
    running when a scrape comes in would otherwise take half of its time from the scrape."""
    if _scraping and threading.get_ident() == _worker_thread:
        _wait_for_scrapes()


def _wait_for_scrapes() -> None:
    """In the worker thread: wait while a scrape is answered, until the piece's deadline, and no longer
    than SCRAPE_FIRST_SHARE of the second."""
    global _second
    now = time.monotonic()
    started, waited = _second
    if now - started >= 1.0:
        started, waited = now, 0.0
    until = min(_piece_deadline, now + SCRAPE_FIRST_SHARE - waited)
    while _scraping and time.monotonic() < until:
        time.sleep(0.001)  # lets go of the GIL
    _second = (started, waited + time.monotonic() - now)


def _after_scrapes(work: Callable[..., T], *args: Any) -> T:
    """In the worker thread: `work`, once no scrape is being answered or the piece may wait no longer."""
    global _worker_thread, _piece_deadline
    _worker_thread = threading.get_ident()
    _piece_deadline = time.monotonic() + SCRAPE_FIRST_LIMIT
    if _scraping:
        _wait_for_scrapes()
    return work(*args)


def submit(work: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
    """Queue a piece of work for the worker thread, after what is queued there: work that nobody awaits
    (deflating a poll ahead of the scrapes that will want it)."""
    return _worker().submit(_after_scrapes, work, *args)


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
        future = _worker().submit(
            _after_scrapes, functools.partial(contextvars.copy_context().run, work, *args, **kwargs)
        )
        self._running = future
        try:
            return await asyncio.wrap_future(future)
        finally:
            if future.done():  # its result or exception is not kept past this poll
                self._running = None
