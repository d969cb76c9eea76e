"""A failed poll leaves nothing behind: for every kind of target and every way a poll can fail.

The daemon collects reference cycles rarely (daemon.GC_YOUNG_THRESHOLD), so anything a failed poll
leaves in a cycle (its exception's frames, with the body they were reading) stays for minutes;
one failing 16 MiB target grew the daemon by gigabytes. Each test here fails a poll several times
in one way and then asserts that (1) the polls made no cyclic garbage and (2) the memory Python
holds did not grow, so nothing the polls made is alive after them, and that the reason is the
named one, with a message that says what happened in words, not a Python repr.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import tracemalloc
from asyncio.selector_events import _SelectorTransport
from collections import Counter
from pathlib import Path

import pytest

from exporter.config import parse_config
from exporter.scheduler import TargetPoller
from exporter.sources import Shared
from exporter.store import Snapshot, Store
from support import free_port

#: What memory held after the polls may exceed that before them by: noise from allocator free lists
#: and the interpreter's tables, far below one body of the sizes the upstreams send (MiBs).
HELD_NOISE = 512 * 1024
#: Polls measured after the first two (which may make what a target keeps: its parser, its connection).
MEASURED_POLLS = 3


@pytest.fixture(scope="module")
def hostile():
    """tests/hostile_upstream.py in a process of its own: none of its objects are counted here."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("hostile_upstream.py"))], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stdin.close()
        process.wait(10)


def _target(yaml_target: str, defaults: str = "{interval: 5s, timeout: 500ms, retries: 1, backoff: 10ms}"):
    return parse_config(f"defaults: {defaults}\ntargets:\n  - {yaml_target}\n").targets[0]


def _closed_transport_cycles(garbage: list) -> set[int]:
    """asyncio's own: a closed socket transport refers to itself through a bound method (CPython 3.11),
    with its socket (closed) and address tuples. Everything else in `garbage` is ours to answer for."""
    ids: set[int] = set()
    for item in garbage:
        if isinstance(item, _SelectorTransport):
            assert item.is_closing(), f"an open transport became garbage: {item!r}"
            ids.add(id(item))
            for part in gc.get_referents(item):
                ids.add(id(part))
                if isinstance(part, dict):
                    ids.update(id(value) for value in part.values())
                    ids.update(id(inner) for value in part.values() for inner in gc.get_referents(value))
    return ids


async def failed_polls_leave_nothing(poller: TargetPoller, polls: int = MEASURED_POLLS) -> Snapshot:
    """Poll twice, then `polls` more times with the collector off; assert those left no garbage and
    held no more memory after than before. The last snapshot."""
    tracemalloc.start()  # before the first polls: what they replace (a table resized) counts as freed
    for _ in range(2):
        await poller.poll()
    gc.collect()
    gc.disable()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(polls):
            snapshot = await poller.poll()
        await asyncio.sleep(0)  # callbacks the polls scheduled (connection_lost...) run
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        asyncio_own = _closed_transport_cycles(gc.garbage)
        garbage = Counter(type(item).__qualname__ for item in gc.garbage if id(item) not in asyncio_own)
    finally:
        tracemalloc.stop()
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not garbage, f"{snapshot.last_reason}: failed polls left cyclic garbage {dict(garbage.most_common(8))}"
    assert held < HELD_NOISE, f"{snapshot.last_reason}: memory held grew by {held} bytes over {polls} failed polls"
    return snapshot


def says_what_happened(message: str) -> bool:
    """Words, not a repr: no `<Class ...>`, no `message='...'`, no `Error(`."""
    return message and not any(mark in message for mark in ("<", "message=", "Error(", "Exception("))


#: path on the hostile upstream -> (extra target config, the reason the poll must fail with)
HTTP_FAILURES = {
    "status": ("", "http_status"),
    "hang": ("timeout: 200ms", "timeout"),
    "endless": ("body_size_limit: 1MiB", "body_too_large"),
    "big": ("body_size_limit: 1MiB", "body_too_large"),
    "bomb": ("body_size_limit: 1MiB", "body_too_large"),
    "unparsable": ("", "parse"),
    "many": ("sample_limit: 100", "sample_limit"),
    "redirect": ("", "too_many_redirects"),
    "short": ("", "invalid_response"),
    "long": ("", "read"),
    "cut": ("", "read"),
    "not-http": ("", "invalid_response"),
}


@pytest.mark.parametrize("path", HTTP_FAILURES)
async def test_a_failed_http_poll_leaves_nothing_behind(hostile, path):
    extra, reason = HTTP_FAILURES[path]
    target = _target(f"{{name: hostile, type: http, url: '{hostile}/{path}'{', ' + extra if extra else ''}}}")
    shared = Shared()
    try:
        snapshot = await failed_polls_leave_nothing(TargetPoller(target, Store(), shared))
    finally:
        await shared.close()
    assert (snapshot.up, snapshot.last_reason) == (False, reason), snapshot.last_error
    assert says_what_happened(snapshot.last_error), snapshot.last_error


async def test_a_refused_connection_leaves_nothing_behind():
    target = _target(f"{{name: refused, type: http, url: 'http://127.0.0.1:{free_port()}/metrics'}}")
    shared = Shared()
    try:
        snapshot = await failed_polls_leave_nothing(TargetPoller(target, Store(), shared))
    finally:
        await shared.close()
    assert snapshot.last_reason == "connect" and says_what_happened(snapshot.last_error)


async def test_a_redirect_loop_and_a_short_content_length_say_so(hostile):
    shared = Shared()
    try:
        loop = await TargetPoller(_target(f"{{name: loop, type: http, url: '{hostile}/redirect'}}"), Store(), shared).poll()
        short = await TargetPoller(_target(f"{{name: short, type: http, url: '{hostile}/short'}}"), Store(), shared).poll()
    finally:
        await shared.close()
    assert "redirect loop" in loop.last_error and "/redirect" in loop.last_error
    assert "more body than its Content-Length" in short.last_error
