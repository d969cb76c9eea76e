"""Memory given back: the C heap's free pages after load, and the arena cap, where the C library is glibc."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.support import REPO

from exporter.runtime.release import HeapTrim, drop_frames

CHURN = """
import threading
from exporter.runtime.release import HeapTrim, rss_bytes

def churn():  # bodies finished in a worker thread: 200 MB in malloc'd blocks, a few of which stay
    blocks = [bytes(2000) + bytes([i % 256]) for i in range(100_000)]
    kept.append(blocks[::1000])

kept = []
heap = HeapTrim(growth=64 * 1024 * 1024, every=0)  # made at start, as the daemon's is
thread = threading.Thread(target=churn)
thread.start()
thread.join()
grown = rss_bytes()
returned = heap.maybe()
print(grown >> 20, returned >> 20, rss_bytes() >> 20)
"""


@pytest.mark.skipif(not HeapTrim().available, reason="malloc_trim is glibc's")
def test_free_heap_pages_are_given_back_once_rss_has_grown():
    """50 targets and 20 scraping clients took RSS from 152 to 553 MB, where it stayed after the load."""
    out = subprocess.run([sys.executable, "-c", CHURN], cwd=REPO, capture_output=True, text=True, check=True).stdout
    grown, returned, after = map(int, out.splitlines()[-1].split())
    assert returned >= 100, (grown, returned, after)
    assert after < grown - 100


def test_a_trim_waits_for_growth_and_its_interval():
    heap = HeapTrim(growth=1 << 40, every=0)
    assert heap.maybe() == 0 and heap.trims == 0  # RSS never grows by a terabyte
    heap = HeapTrim(growth=0, every=3600)
    heap.now()
    assert heap.maybe() == 0 and heap.trims <= 1  # an hour must pass


def test_drop_frames_cuts_every_chained_exception_from_its_frames():
    def fail():
        body = bytearray(1024)  # noqa: F841 - what the frame would keep alive
        try:
            raise KeyError("inner")
        except KeyError:
            raise ValueError("outer") from None

    try:
        fail()
    except ValueError as exc:
        caught = exc
    inner = caught.__context__
    assert inner is not None
    drop_frames(caught)
    assert caught.__traceback__ is None and inner.__traceback__ is None
    assert str(caught) == "outer"
