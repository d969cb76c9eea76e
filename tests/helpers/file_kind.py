"""`type: file`: a target kind that exists only in the tests, to show that a new kind is this one
module and one line in `exporter.sources.KINDS` (tests/integration/test_new_kind.py), nothing else.

It reads exposition text from a file, as an HTTP target reads it from a server, and hands the body
to the target's pipeline, which parses, unifies and serves it as it does any other.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from pydantic import Field

from exporter.core.secret import Secret
from exporter.sources.base import Exposition, Payload, Shared, SourceError, TargetConfig

#: How much of a file is read at most.
MOST_BYTES = 16 * 1024 * 1024


class FileTarget(TargetConfig):
    """The kind's config: `path:` of a file of Prometheus text (or OpenMetrics)."""

    type: Literal["file"]
    path: Path
    openmetrics: bool = False
    sample_limit: int = Field(default=0, ge=0)
    #: A secret this kind never uses, to show that a kind's secrets are hidden by their type alone.
    passphrase: Secret | None = None


class FileSource:
    """Reads the target's file at each poll."""

    def __init__(self, target: FileTarget, shared: Shared):
        self.target = target

    async def poll(self) -> Payload:
        path = self.target.path
        try:
            data = await asyncio.to_thread(_read, path)
        except OSError as exc:
            raise SourceError("read", f"cannot read {path}: {exc.strerror}") from None
        where = str(path)
        body = Exposition(data, self.target.openmetrics, where=where, sample_limit=self.target.sample_limit)
        return Payload([], raw=data[:4096], exposition=body)

    async def close(self) -> None:
        pass


def _read(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(MOST_BYTES)
