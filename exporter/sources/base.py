"""The one interface every target kind implements, and the config fields they all share."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from exporter.family import Family
from exporter.fields import Duration
from exporter.redact import redact_urls

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = frozenset({"target"})


class SourceError(Exception):
    """A poll failed. `reason` is a short, stable word counted in `target_poll_errors_total`.

    `raw` is what the backend sent, if anything (an HTML error page where metrics were expected),
    kept for the target's debugging page.
    """

    def __init__(self, reason: str, message: str, *, retryable: bool = True, raw: bytes = b""):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.raw = raw

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(slots=True)
class Payload:
    """What one successful poll returns: the families, plus what the source had to drop on the way."""

    families: list[Family]
    #: Samples or lines dropped but not fatal, by reason (e.g. `truncated_line`).
    dropped: dict[str, int] = field(default_factory=dict)
    #: The raw body as received, for debugging views; sources may leave it empty.
    raw: bytes = b""


class Source(Protocol):
    async def poll(self) -> Payload:
        """Read the target once. Raises SourceError on failure."""
        ...

    async def close(self) -> None: ...


class TargetConfig(BaseModel):
    """Fields every target has. Each kind subclasses this with its own `type` literal and fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)
    type: str
    interval: Duration | None = None
    timeout: Duration | None = None
    retries: int | None = Field(default=None, ge=0, le=10)
    backoff: Duration | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    prefix: str | None = None

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"label name {name!r} is not a valid Prometheus label name")
            if name in RESERVED_LABELS:
                raise ValueError(f"label name {name!r} is reserved: every sample already carries it")
        return labels

    def redacted(self) -> dict[str, Any]:
        """The target's config for display: secrets are never shown, secret files only by path.

        Kinds with secret fields override this and hide them too; URL passwords are hidden here.
        """
        return redact_urls(self.model_dump(mode="json", exclude_none=True))


T = TypeVar("T")


class Shared:
    """Resources that several sources share (one aiohttp session, NATS connections), closed together."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def get(self, key: str, make: Callable[[], T]) -> T:
        if key not in self._items:
            self._items[key] = make()
        return self._items[key]

    async def close(self) -> None:
        items, self._items = self._items, {}
        for item in items.values():
            result = item.close()
            if inspect.isawaitable(result):
                await result
