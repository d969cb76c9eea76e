"""What the NVML source serves: every family's name, type and HELP, in base units (docs/gpus.md maps
dcgm-exporter's names to these), and the text of NVML's values (versions, MIG profiles, reasons)."""

from __future__ import annotations

#: Every family this source can serve: name -> (type, HELP). Counters' samples carry `_total`.
FAMILIES: dict[str, tuple[str, str]] = {
    "gpu_info": (
        "gauge",
        "Always 1; the labels say which GPU it is (name, uuid, PCI bus id, serial) and which driver runs it.",
    ),
    "gpu_utilization_ratio": (
        "gauge",
        "Share of the last sample period (1/6 s to 1 s by product) in which a kernel ran on the GPU.",
    ),
    "gpu_memory_utilization_ratio": (
        "gauge",
        "Share of the last sample period in which device memory was read or written.",
    ),
    "gpu_encoder_utilization_ratio": ("gauge", "Share of the last sample period in which the video encoder was busy."),
    "gpu_decoder_utilization_ratio": ("gauge", "Share of the last sample period in which the video decoder was busy."),
    "gpu_memory_used_bytes": ("gauge", "Device memory allocated, reserved memory included."),
    "gpu_memory_free_bytes": ("gauge", "Device memory not allocated."),
    "gpu_memory_total_bytes": ("gauge", "Device memory installed."),
    "gpu_power_usage_watts": ("gauge", "Power drawn by the board, as the driver last measured it."),
    "gpu_power_limit_watts": ("gauge", "Power limit the driver enforces (the lowest of every limit set)."),
    "gpu_energy_consumed_joules": ("counter", "Energy the board consumed since the driver was loaded."),
    "gpu_temperature_celsius": ("gauge", "GPU die temperature."),
    "gpu_memory_temperature_celsius": ("gauge", "Device memory (HBM) temperature."),
    "gpu_sm_clock_hertz": ("gauge", "Current clock of the streaming multiprocessors."),
    "gpu_memory_clock_hertz": ("gauge", "Current clock of device memory."),
    "gpu_fan_speed_ratio": ("gauge", "Fan speed the driver asks for, as a share of the fan's maximum."),
    "gpu_pcie_receive_bytes_per_second": ("gauge", "PCIe traffic into the GPU over the driver's last 20 ms sample."),
    "gpu_pcie_transmit_bytes_per_second": ("gauge", "PCIe traffic out of the GPU over the driver's last 20 ms sample."),
    "gpu_pcie_replays": ("counter", "PCIe transfers retried, since the driver was loaded."),
    "gpu_performance_state": ("gauge", "Performance state: 0 (P0, the fastest) to 15 (P15, the slowest)."),
    "gpu_clock_event_reason": (
        "gauge",
        "1 while the reason in the label holds the clocks down (throttles them), else 0.",
    ),
    "gpu_ecc_errors": (
        "counter",
        "ECC errors in device memory since the driver was loaded, by type (corrected, uncorrected).",
    ),
    "gpu_remapped_rows": ("counter", "Device memory rows remapped, by the cause (correctable, uncorrectable errors)."),
    "gpu_row_remap_pending": ("gauge", "1 if a row remap waits for the next GPU reset, else 0."),
    "gpu_row_remap_failure": ("gauge", "1 if remapping a row has failed (the GPU needs service), else 0."),
    "gpu_xid_errors": ("counter", "XID errors the driver reported since this target started, by XID code."),
    "gpu_mig_memory_used_bytes": ("gauge", "Device memory allocated in a MIG instance."),
    "gpu_mig_memory_free_bytes": ("gauge", "Device memory not allocated in a MIG instance."),
    "gpu_mig_memory_total_bytes": ("gauge", "Device memory of a MIG instance."),
    "gpu_mig_utilization_ratio": ("gauge", "Share of the last sample period in which a kernel ran on a MIG instance."),
    "gpu_process_memory_used_bytes": ("gauge", "Device memory a process with a CUDA context uses on a GPU."),
}

#: Clock event (throttle) reasons: our `reason` label -> the suffix of pynvml's constant.
CLOCK_EVENT_REASONS = {
    "gpu_idle": "GpuIdle",
    "applications_clocks_setting": "ApplicationsClocksSetting",
    "sw_power_cap": "SwPowerCap",
    "hw_slowdown": "HwSlowdown",
    "sync_boost": "SyncBoost",
    "sw_thermal_slowdown": "SwThermalSlowdown",
    "hw_thermal_slowdown": "HwThermalSlowdown",
    "hw_power_brake_slowdown": "HwPowerBrakeSlowdown",
    "display_clock_setting": "DisplayClockSetting",
}

#: Performance state NVML reports when it does not know one.
_PSTATE_UNKNOWN = 32

#: c_nvmlValue_t's member for each NVML_VALUE_TYPE_* (0 double, 1 uint, 2 ulong, 3 ulonglong, 4 sll, 5 sint, 6 ushort).
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")

#: One reading: (family, labels beyond gpu and uuid, value).
Reading = tuple[str, dict[str, str], float]


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def cuda_version(value: int) -> str:
    """NVML's CUDA driver version number (12040) as people write it (12.4)."""
    return f"{value // 1000}.{value % 1000 // 10}"


def mig_profile(name: str) -> str:
    """A MIG device's profile from its NVML name ("NVIDIA A100-SXM4-40GB MIG 1g.5gb" -> "1g.5gb")."""
    _, marker, profile = name.rpartition("MIG ")
    return profile.strip() if marker else ""
