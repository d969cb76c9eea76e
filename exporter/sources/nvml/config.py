"""`type: nvml`: the target's schema (which GPUs' readings are served, and how)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from exporter.sources.base import TargetConfig


class NVMLTarget(TargetConfig):
    type: Literal["nvml"]
    #: Serve GPU memory per process (one series per process and GPU: opt in, mind the cardinality).
    processes: bool = False
    #: Serve PCIe throughput. NVML samples each direction for 20 ms of wall time per GPU and poll
    #: (most of a poll's time: docs/performance.md), so a host with many GPUs and a short interval or
    #: timeout may turn it off. The call costs waiting, not CPU.
    pcie_throughput: bool = True
    #: GPU indices to read, as nvidia-smi numbers them; unset reads every GPU on the host.
    devices: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1)

    @field_validator("devices")
    @classmethod
    def _distinct(cls, devices: list[int] | None) -> list[int] | None:
        if devices is not None and len(set(devices)) != len(devices):
            raise ValueError(f"each GPU index may be listed once, got {devices}")
        return devices
