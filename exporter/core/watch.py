"""Noticing that a file changed, including a Kubernetes ConfigMap update, by polling its stat once a tick.

A ConfigMap volume holds `config.yaml -> ..data/config.yaml` and swaps the `..data` symlink to a
new directory when the map changes: the path never changes, the file it resolves to does. So the
stamp is taken of the resolved file (its real path, device, inode, mtime and size), which catches
that swap, an editor's write-to-temp-and-rename, and an in-place write alike. Polling a stat a
second costs nothing and works on every filesystem, where inotify misses symlink swaps and
bind-mounted files.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import structlog

log = structlog.get_logger("exporter.core.watch")


class Stamp(NamedTuple):
    real_path: str
    device: int
    inode: int
    mtime_ns: int
    size: int


def file_stamp(path: str | os.PathLike[str]) -> Stamp | None:
    """What the file at `path` resolves to right now; None if it cannot be read (missing, dangling link)."""
    try:
        real = os.path.realpath(path)
        stat = os.stat(real)
    except OSError:
        return None
    return Stamp(real, stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


class FileWatch:
    """Calls back when a file has changed and then held still for one tick.

    Waiting for one quiet tick means a file caught half-written (truncate, then write) is read
    once it is whole, rather than failing a reload in between.
    """

    def __init__(self, path: Path, interval: float = 1.0, also: Callable[[], list[str]] | None = None):
        self.path = path
        self.interval = interval
        #: Other files read with this one (the config's profile files), asked again at every tick, so
        #: that a file a glob newly matches counts as a change too.
        self.also = also
        #: The file as it was when last read; `mark()` it right before reading.
        self.read_as: Any = self.stamp()

    def stamp(self) -> Any:
        own = file_stamp(self.path)
        if self.also is None:
            return own
        try:
            others = tuple((path, file_stamp(path)) for path in self.also())
        except Exception:  # a bad glob in a config being edited: the next tick asks again
            others = ()
        return (own, others)

    def mark(self) -> None:
        """Remember the file as it is now: the caller is about to read it."""
        self.read_as = self.stamp()

    async def run(self, on_change: Callable[[], Awaitable[object]]) -> None:
        """Poll forever; `on_change` is expected to `mark()` and read the file."""
        seen = self.read_as
        while True:
            await asyncio.sleep(self.interval)
            now = self.stamp()
            if now != self.read_as and now == seen:
                try:
                    await on_change()
                except Exception:  # a bug in reacting must not end the watching
                    log.exception("reacting to a changed file failed", file=str(self.path))
            seen = now
