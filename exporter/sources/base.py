"""The one interface every target kind implements, and the config fields they all share."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter import profiles
from exporter.core.family import Family
from exporter.core.fields import Duration, Interval, Timeout
from exporter.core.redact import redact_urls
from exporter.core.rules import Regex, RelabelConfig

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


@dataclass(frozen=True, slots=True)
class Exposition:
    """A Prometheus text or OpenMetrics body as a source read it, with the limits its target sets.

    Sources that read exposition text hand this over rather than parsing it themselves, so that
    the pipeline can skip the parse for a body shaped like the last one."""

    data: bytes
    openmetrics: bool = False
    #: The Content-Type's `escaping` parameter (exporter.format.escaping), which says how names were written.
    escaping: str | None = None
    #: Where it came from (the URL), for error messages.
    where: str = ""
    #: Which families are wanted, by name (exporter.pipeline.family_filter); None for all.
    keep: Callable[[str], bool] | None = None
    #: At most this many samples (0: no limit), and the label limits: (count, name length, value length).
    sample_limit: int = 0
    label_limits: tuple[int, int, int] | None = None
    #: The start of the body, kept with a parse error for the target's page.
    raw: bytes = b""

    def check_samples(self, count: int) -> None:
        """Fail the poll when `count` samples are over the target's sample_limit (a source counts the
        body's sample lines before it is parsed, the pipeline the samples it parsed)."""
        if self.sample_limit and count > self.sample_limit:
            raise SourceError(
                "sample_limit",
                f"{self.where} returned {count} samples, over the sample_limit of {self.sample_limit}",
                retryable=False,
            )


@dataclass(slots=True)
class Payload:
    """What one successful poll returns: the families, or the exposition body they are to be read from
    (exporter.pipeline.target reads it), plus what the source had to drop on the way."""

    families: list[Family]
    #: Samples or lines dropped but not fatal, by reason (e.g. `truncated_line`).
    dropped: dict[str, int] = field(default_factory=dict)
    #: The raw body as received, for debugging views; sources may leave it empty.
    raw: bytes = b""
    #: Where the body's sample lines did not match its declared families, by reason (see
    #: exporter.format.parse.ParseResult.problems): counted, logged once and shown, never silent.
    problems: dict[str, int] = field(default_factory=dict)
    #: The body's Content-Type as the server sent it (bounded, printable), where there is one.
    content_type: str = ""
    #: A body of exposition text, for the pipeline to read (then `families` is empty).
    exposition: Exposition | None = None


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
    interval: Interval | None = None
    timeout: Timeout | None = None
    retries: int | None = Field(default=None, ge=0, le=10)
    backoff: Duration | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    prefix: str | None = None
    #: The backend profile for the unified series: detected from each payload when unset; "none" for none.
    profile: str | None = None
    #: Serve the upstream's own series beside the unified ones; false serves only the unified vocabulary.
    raw: bool = True
    #: The `model` label of unified series where the backend names no model (TGI, llama.cpp).
    model: str | None = None
    #: Prometheus-style relabeling of every series this target serves.
    metric_relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    #: Fully anchored regexes over upstream family names: only families matching one are read (default: all) ...
    allow_families: list[Regex] = Field(default_factory=list)
    #: ... and families matching one of these are skipped, before their samples are parsed.
    deny_families: list[Regex] = Field(default_factory=list)

    #: The config's `profile_files:` profiles (set by the config as it resolves its targets): part of the
    #: target's identity, so that a reload that changes one restarts the targets that may use it.
    _operator_profiles: tuple[profiles.Profile, ...] = PrivateAttr(default=())

    @property
    def operator_profiles(self) -> tuple[profiles.Profile, ...]:
        return self._operator_profiles

    def with_profiles(self, extra: tuple[profiles.Profile, ...]) -> TargetConfig:
        """This target, able to use these operator profiles beside the shipped ones."""
        if extra == self._operator_profiles:
            return self
        copy = self.model_copy()
        copy._operator_profiles = extra
        return copy

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str | None, info: ValidationInfo) -> str | None:
        context = info.context or {}
        extra = context.get("profiles", ())
        if name is not None and name not in profiles.names(extra) and not context.get("profiles_incomplete"):
            raise ValueError(f"unknown profile {name!r}; expected one of: {', '.join(profiles.names(extra))}")
        return name

    @model_validator(mode="after")
    def _serves_something(self) -> TargetConfig:
        if not self.raw and self.profile == profiles.NONE:
            raise ValueError("raw: false with profile: none would serve nothing; keep one of them")
        return self

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
        """The target's config for display: every Secret shows as `<secret>` (its JSON form, whatever the
        kind: exporter.core.secret), a SecretFile by its path, and a URL's password as `<secret>`."""
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

    def forget(self, key: str, item: Any) -> None:
        """Drop `item`, closed by its last user, so that keys of targets long gone do not pile up."""
        if self._items.get(key) is item:
            del self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    async def close(self) -> None:
        items, self._items = self._items, {}
        for item in items.values():
            result = item.close()
            if inspect.isawaitable(result):
                await result
