"""Target kinds: the config `type:` string -> its config schema and its Source class.

Adding a kind is one new module here and one entry in KINDS; nothing else changes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from exporter.sources.base import Payload, Shared, Source, SourceError, TargetConfig
from exporter.sources.http import HTTPTarget
from exporter.sources.nats import NATSTarget
from exporter.sources.nvml import NVMLTarget


@dataclass(frozen=True)
class Kind:
    config: type[TargetConfig]
    #: "module:Class" of the Source, imported on first use so that a kind's heavy
    #: dependencies (nats, pynvml) load only when a config uses that kind.
    source: str


KINDS: dict[str, Kind] = {
    "http": Kind(HTTPTarget, "exporter.sources.http:HTTPSource"),
    "nvml": Kind(NVMLTarget, "exporter.sources.nvml:NVMLSource"),
    "nats": Kind(NATSTarget, "exporter.sources.nats:NATSSource"),
}


def create_source(target: TargetConfig, shared: Shared) -> Source:
    module, _, cls = KINDS[target.type].source.partition(":")
    return getattr(importlib.import_module(module), cls)(target, shared)


__all__ = ["KINDS", "Kind", "Payload", "Shared", "Source", "SourceError", "TargetConfig", "create_source"]
