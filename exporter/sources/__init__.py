"""Target kinds: the config `type:` string -> its config schema and its Source class.

Adding a kind is one new module here and one entry in KINDS; nothing else changes. A kind's module
is imported when a config first names the kind, so that its schema and its dependencies (nats-py,
nvidia-ml-py, Dynamo's runtime) load only for a config that uses it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from exporter.sources.base import Payload, Shared, Source, SourceError, TargetConfig


@dataclass(frozen=True)
class Kind:
    #: "module:Class" of the kind's config schema and of its Source, each imported on first use.
    schema: str
    source: str

    @property
    def config(self) -> type[TargetConfig]:
        """The kind's config schema (a TargetConfig subclass with its own `type` literal)."""
        return _imported(self.schema)


KINDS: dict[str, Kind] = {
    "http": Kind("exporter.sources.http:HTTPTarget", "exporter.sources.http:HTTPSource"),
    "nvml": Kind("exporter.sources.nvml:NVMLTarget", "exporter.sources.nvml:NVMLSource"),
    "nats": Kind("exporter.sources.nats:NATSTarget", "exporter.sources.nats:NATSSource"),
}


def create_source(target: TargetConfig, shared: Shared) -> Source:
    return _imported(KINDS[target.type].source)(target, shared)


def _imported(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["KINDS", "Kind", "Payload", "Shared", "Source", "SourceError", "TargetConfig", "create_source"]
