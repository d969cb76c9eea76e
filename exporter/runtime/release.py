"""Giving memory back: what a failed poll made, and the C allocator's free pages.

A caught exception keeps every frame it passed through alive, and with them their locals: the
body being read, the samples being parsed. Where a frame also refers back to the exception (a
local that holds it, tenacity's retry state), that is a reference cycle, and the daemon collects
cycles rarely (daemon.GC_YOUNG_THRESHOLD), so one failing 16 MiB target grew the daemon by
gigabytes. `drop_frames` cuts the exception from its frames, so that reference counting frees
them the moment the exception itself goes.

glibc's malloc keeps freed memory in per-thread arenas: bodies read and parsed in worker threads
and on the event loop left RSS hundreds of MB above what Python held, never returned after load.
`HeapTrim` hands free pages back with `malloc_trim(0)` when RSS has grown; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

import structlog

log = structlog.get_logger("exporter.runtime.release")


def drop_frames(exc: BaseException | None) -> None:
    """Cut `exc`, and every exception chained to it, from its traceback's frames.

    Called where a poll's failure is caught: what the exception says (its type and message) is
    kept, the frames and their locals are freed at once. Frames are not cleared one by one
    (`frame.clear()` would close a suspended coroutine whose frame a traceback happens to hold):
    dropping the traceback is enough, since only it refers to the finished frames.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        following = exc.__cause__ or exc.__context__
        exc = following


#: RSS growth since the last trim, in bytes, that makes another trim worth its cost (a few ms).
TRIM_GROWTH = 32 * 1024 * 1024
#: The least time between two trims, in seconds.
TRIM_EVERY = 10.0


#: glibc's mallopt parameter for the most malloc arenas (malloc.h: M_ARENA_MAX = -8).
_M_ARENA_MAX = -8
#: Arenas allowed: one, shared by every thread. Threads that hold the GIL seldom call malloc at once,
#: so they wait little for its lock, while a second arena kept its own freed pages: on a GPU host
#: (8 vLLM targets), the ingest thread's arena held 1.8 MB for 0.45 MB in use, and peak RSS was
#: 1.4 MB lower with one arena (docs/performance.md, Memory).
ARENA_MAX = 1


def _glibc(name: str):
    """A glibc function, or None where the C library is not glibc (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _glibc_malloc_trim():
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


def limit_arenas(count: int = ARENA_MAX) -> bool:
    """Cap glibc's malloc arenas (8 per core by default), before worker threads are made; each
    thread that finished a large body otherwise kept its own arena of freed pages. An operator's
    MALLOC_ARENA_MAX in the environment is left to rule. False where this is not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))


def rss_bytes() -> int:
    """The process's resident set size, from /proc; 0 where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class HeapTrim:
    """Returns the C heap's free pages to the system after RSS grew by TRIM_GROWTH, at most every TRIM_EVERY s."""

    def __init__(self, *, growth: int = TRIM_GROWTH, every: float = TRIM_EVERY):
        self._trim = _glibc_malloc_trim()
        self.growth = growth
        self.every = every
        self._floor = rss_bytes()
        self._last = 0.0
        #: How many trims ran and how many bytes of RSS they gave back, for the bench and the log.
        self.trims = 0
        self.returned = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe(self) -> int:
        """Trim if RSS grew enough since the last trim and it is time; the bytes of RSS given back."""
        if self._trim is None:
            return 0
        now = time.monotonic()
        if now - self._last < self.every:
            return 0
        rss = rss_bytes()
        if rss - self._floor < self.growth:
            return 0
        return self.now(rss)

    async def run(self) -> None:
        """Check every `every` seconds, for as long as the daemon runs."""
        import asyncio

        while True:
            await asyncio.sleep(self.every)
            self.maybe()

    def now(self, rss: int | None = None) -> int:
        """Trim at once; the bytes of RSS given back."""
        if self._trim is None:
            return 0
        before = rss_bytes() if rss is None else rss
        self._trim(0)
        after = rss_bytes()
        self._last, self._floor = time.monotonic(), after
        self.trims += 1
        self.returned += max(0, before - after)
        log.debug("gave free heap pages back", before=before, after=after)
        return max(0, before - after)
