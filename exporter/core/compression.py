"""The zlib the daemon deflates, inflates and takes CRC-32s with: zlib-ng's (the `zlib-ng` package, a
dependency) where it imports, else the standard library's. The same API and the same formats, so
either one's output reads with the other; zlib-ng's level 1 deflates the served pieces twice as fast
(a little larger), inflates upstreams' gzip bodies twice as fast and takes a CRC-32 ten times as fast
(docs/performance.md). `BACKEND` says which serves; the startup log line says it too."""

from __future__ import annotations

import zlib as _standard
from types import ModuleType

__all__ = ["BACKEND", "zlib"]

zlib: ModuleType
try:
    from zlib_ng import zlib_ng as zlib
except ImportError:  # not installed, or no wheel for this platform: the same streams, slower
    zlib, BACKEND = _standard, "zlib"
else:
    BACKEND = "zlib-ng"


def use_in_aiohttp() -> None:
    """Has aiohttp inflate responses with this zlib too (process-wide, as aiohttp keeps it)."""
    import aiohttp

    if zlib is not _standard:
        aiohttp.set_zlib_backend(zlib)
