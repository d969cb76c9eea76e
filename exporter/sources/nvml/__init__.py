"""`type: nvml`: the host's NVIDIA GPUs through NVML (nvidia-ml-py), in Prometheus conventions.

What dcgm-exporter reports by default, in base units (docs/gpus.md maps its names to ours). Every
NVML call runs on one worker thread per target: a call stuck in the driver holds up this target
alone, and while it is stuck the target reports `timeout` instead of queueing more calls behind it.

The package: `config` (the target's schema), `metrics` (what is served), `worker` (the thread),
`sampler` (one reading of every GPU), `source` (the Source).
"""

from __future__ import annotations

from exporter.sources.nvml.config import NVMLTarget
from exporter.sources.nvml.metrics import FAMILIES
from exporter.sources.nvml.source import NVMLSource

__all__ = ["FAMILIES", "NVMLSource", "NVMLTarget"]
