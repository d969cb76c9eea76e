"""The `overview:` section of the config: the default window, how much is kept, and the health thresholds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from exporter.core.fields import Duration, format_duration

#: The longest `keep` allowed: windows live in memory, and a longer one is Prometheus's job.
MAX_KEEP = 3600.0
#: The windows the page offers, in seconds; those above `keep` are left out.
WINDOW_CHOICES = (60.0, 300.0, 900.0)


class OverviewSettings(BaseModel):
    """How /overview judges a backend. Ratios are shares of the requests finished in the window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The window used when a request names none.
    window: Duration = 60.0
    #: How far back polls are kept, and so the longest window a request may ask for.
    keep: Duration = 900.0
    error_ratio_degraded: float = Field(default=0.01, ge=0, le=1)
    error_ratio_unhealthy: float = Field(default=0.05, ge=0, le=1)
    abort_ratio_degraded: float = Field(default=0.05, ge=0, le=1)
    abort_ratio_unhealthy: float = Field(default=0.25, ge=0, le=1)
    kv_cache_degraded: float = Field(default=0.95, ge=0, le=1)
    #: Requests waiting in a backend's queue from which it is degraded (0 turns the check off).
    waiting_degraded: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> OverviewSettings:
        if self.keep > MAX_KEEP:
            _fail(
                f"keep {format_duration(self.keep)} is longer than {format_duration(MAX_KEEP)}: windows are held in memory"
            )
        if self.window > self.keep:
            _fail(
                f"window {format_duration(self.window)} is longer than keep {format_duration(self.keep)}, the history kept for it"
            )
        for kind in ("error", "abort"):
            degraded, unhealthy = getattr(self, f"{kind}_ratio_degraded"), getattr(self, f"{kind}_ratio_unhealthy")
            if degraded > unhealthy:
                _fail(f"{kind}_ratio_degraded {degraded:g} is above {kind}_ratio_unhealthy {unhealthy:g}")
        return self

    def windows(self) -> list[float]:
        """The windows a person may pick: the usual ones that fit in `keep`, the default and `keep` itself."""
        return sorted({w for w in WINDOW_CHOICES if w <= self.keep} | {self.window, self.keep})


def _fail(problem: str) -> None:
    """A problem the config loader reports as it is, at the `overview:` key's line."""
    raise PydanticCustomError("config_check", "{problems}", {"problems": problem})
