"""`type: nvml`: the host's NVIDIA GPUs through NVML (nvidia-ml-py), in Prometheus conventions.

What dcgm-exporter reports by default, in base units (docs/gpus.md maps its names to ours). Every
NVML call runs on one worker thread per target: a call stuck in the driver holds up this target
alone, and while it is stuck the target reports `timeout` instead of queueing more calls behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import importlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Annotated, Any, Literal, TypeVar

import structlog
from pydantic import Field, field_validator

from exporter.core.family import Family, Sample
from exporter.sources.base import Payload, Shared, SourceError, TargetConfig

log = structlog.get_logger("exporter.sources.nvml")

#: Longest pause between two attempts to initialize NVML on a host without a working driver.
INIT_BACKOFF_MAX = 300.0
#: How long close() waits for nvmlShutdown before leaving it to a worker thread that is stuck.
CLOSE_GRACE = 2.0
#: Most XID events read from the event set in one poll (a storm must not keep a poll going).
MAX_EVENTS_PER_POLL = 1000

T = TypeVar("T")
R = TypeVar("R")


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


def load_binding() -> ModuleType:
    """nvidia-ml-py's `pynvml`. Importing it loads no driver library (nvmlInit does); tests swap in a fake."""
    return importlib.import_module("pynvml")


# -- what we serve --------------------------------------------------------------------------------

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


# -- the worker thread ----------------------------------------------------------------------------


class _Worker:
    """One daemon thread that runs a target's NVML calls, one job at a time.

    Not a ThreadPoolExecutor: Python joins executor threads at exit, so one call stuck in the
    driver would keep the daemon from ever stopping. A daemon thread is simply left behind.
    """

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        # In the caller's context: what the job logs reaches its daemon's event rings (exporter.core.events).
        self._jobs.put((future, functools.partial(contextvars.copy_context().run, job)))
        return future

    def stop(self) -> None:
        """End the thread once the jobs already submitted have run."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the awaiting poll, which decides
                future.set_exception(exc)


# -- sampling, on the worker thread ---------------------------------------------------------------


class Unavailable(Exception):
    """NVML as a whole stopped working (driver unloaded or upgraded): shut it down and start again."""


@dataclass
class _GPU:
    index: int
    handle: Any = None
    #: gpu_info's labels, read once.
    info: dict[str, str] | None = None
    lost: bool = False
    #: XID code -> events seen since this target started; None while XID events are not registered.
    xids: Counter[int] | None = None

    @property
    def labels(self) -> dict[str, str]:
        return {"gpu": str(self.index), "uuid": self.info["uuid"] if self.info else ""}


@dataclass
class _Poll:
    """What one sample() gathers: readings per family, and what it had to leave out."""

    families: dict[str, Family] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)

    def add(self, base: dict[str, str], readings: Iterable[Reading]) -> None:
        for name, labels, value in readings:
            family = self.families.get(name)
            if family is None:
                kind, help_text = FAMILIES[name]
                family = self.families[name] = Family(name, kind, help_text)
            sample = name + "_total" if family.type == "counter" else name
            family.samples.append(Sample(sample, {**base, **labels}, float(value)))


class Sampler:
    """All of one target's NVML state and calls. Used from its worker thread only."""

    def __init__(self, nvml: ModuleType, target: NVMLTarget):
        self.nvml = nvml
        self.target = target
        #: The NVML call in progress and its GPU, so that a stuck one can be named.
        self.calling = ""
        self.calling_gpu: int | None = None
        #: Whether nvmlInit succeeded and nvmlShutdown is owed.
        self.initialized = False
        self.driver_version = ""
        self.cuda_version = ""
        self.gpus: list[_GPU] = []
        self.event_set: Any = None
        #: (GPU index, field) pairs NVML does not support: not asked again.
        self.unsupported: set[tuple[int, str]] = set()
        #: (GPU index, field) pairs whose failure was already said at warning level.
        self._failed: set[tuple[int, str]] = set()
        self._process_names: dict[int, str] = {}
        #: Fields that failed in this poll with an error other than "not supported".
        self._errors = 0
        #: Which of several names for one reading this binding and driver answer to (see call_newest).
        self._chosen: dict[tuple[str, ...], str] = {}
        # nvidia-ml-py 12.560+ raises NVMLLibraryMismatchError, not an NVMLError, where the driver lacks a
        # function it calls by an unversioned name (nvmlDeviceGetComputeRunningProcesses on old drivers).
        mismatch = getattr(nvml, "NVMLLibraryMismatchError", None)
        self._unsupported_errors = (
            nvml.NVMLError_NotSupported,
            nvml.NVMLError_FunctionNotFound,
            nvml.NVMLError_NoPermission,
            *((mismatch,) if mismatch else ()),
        )
        self._fatal_errors = (
            nvml.NVMLError_Uninitialized,
            nvml.NVMLError_DriverNotLoaded,
            nvml.NVMLError_LibRmVersionMismatch,
            nvml.NVMLError_LibraryNotFound,
        )
        self._reasons = {
            label: getattr(nvml, "nvmlClocksEventReason" + suffix) for label, suffix in CLOCK_EVENT_REASONS.items()
        }
        self._fields = self._field_readers()

    def call(self, name: str, *args: Any) -> Any:
        self.calling = name
        return getattr(self.nvml, name)(*args)

    def call_newest(self, names: tuple[str, ...], *args: Any) -> Any:
        """Call the first of `names` (newest first) that the binding and the driver both have; remember it.

        NVML deprecates functions for newer ones that older drivers lack: each GPU host gets the best it has.
        """
        chosen = self._chosen.get(names)
        if chosen is not None:
            return self.call(chosen, *args)
        for name in names[:-1]:
            if not hasattr(self.nvml, name):  # an older nvidia-ml-py
                continue
            try:
                result = self.call(name, *args)
            except self.nvml.NVMLError_FunctionNotFound:  # an older driver
                continue
            self._chosen[names] = name
            return result
        self._chosen[names] = names[-1]
        return self.call(names[-1], *args)

    def describe_call(self) -> str:
        """The call in progress, for messages: "nvmlDeviceGetPowerUsage on GPU 3"."""
        where = f" on GPU {self.calling_gpu}" if self.calling_gpu is not None else ""
        return f"{self.calling or '(between calls)'}{where}"

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> None:
        """nvmlInit and what stays the same while it holds. Raises NVMLError if NVML cannot start."""
        self.call("nvmlInit")
        self.initialized = True
        try:
            self.driver_version = _text(self.call("nvmlSystemGetDriverVersion"))
            try:
                self.cuda_version = cuda_version(self.call("nvmlSystemGetCudaDriverVersion"))
            except self.nvml.NVMLError:
                self.cuda_version = ""
            count = self.call("nvmlDeviceGetCount")
            wanted = self.target.devices if self.target.devices is not None else range(count)
            self.gpus = [_GPU(index) for index in wanted]
            missing = [index for index in wanted if index >= count]
            if missing:
                log.warning(
                    "configured GPUs are not on this host; counted as lost",
                    target=self.target.name,
                    missing=missing,
                    gpus_on_host=count,
                )
            try:
                self.event_set = self.call("nvmlEventSetCreate")
            except self.nvml.NVMLError as exc:
                log.debug("NVML event sets are not available; no XID counts", target=self.target.name, error=str(exc))
        except BaseException:
            self.stop()
            raise
        self.calling = ""

    def stop(self) -> None:
        """Free the event set and nvmlShutdown if nvmlInit succeeded, whatever state NVML is in now."""
        if not self.initialized:
            return
        self.initialized = False
        if self.event_set is not None:
            try:
                self.call("nvmlEventSetFree", self.event_set)
            except self.nvml.NVMLError:
                pass
            self.event_set = None
        try:
            self.call("nvmlShutdown")
        except self.nvml.NVMLError:
            pass
        self.gpus = []
        self.calling, self.calling_gpu = "", None

    # -- one poll ---------------------------------------------------------------------------

    def sample(self) -> Payload:
        """Every GPU once. Raises Unavailable when NVML as a whole fails."""
        poll = _Poll()
        self._errors = 0
        try:
            self._read_xid_events()
            for gpu in self.gpus:
                self._sample_gpu(gpu, poll)
        except self._fatal_errors as exc:
            raise Unavailable(f"NVML stopped working during {self.describe_call()}: {exc}") from None
        if self._errors:
            poll.dropped["nvml_error"] += self._errors
        self.calling, self.calling_gpu = "", None
        return Payload(list(poll.families.values()), dict(poll.dropped))

    def _sample_gpu(self, gpu: _GPU, poll: _Poll) -> None:
        """One GPU's readings into `poll`; a lost GPU adds none and is counted instead."""
        nvml = self.nvml
        errors_before = self._errors
        self.calling_gpu = gpu.index
        try:
            if gpu.handle is None:
                gpu.handle = self._handle(gpu.index)
            if gpu.info is None:
                gpu.info = self._identify(gpu.handle)
                self._register_xid_events(gpu)
            readings = [("gpu_info", self._info_labels(gpu), 1.0)]
            for name, read in self._fields:
                readings += self._read(gpu, name, read) or ()
        except nvml.NVMLError_GpuIsLost as exc:
            self._errors = errors_before
            poll.dropped["gpu_lost"] += 1
            if not gpu.lost:
                gpu.lost = True
                log.warning(
                    "GPU is lost; its series are dropped until it is back",
                    target=self.target.name,
                    gpu=gpu.index,
                    uuid=gpu.info["uuid"] if gpu.info else None,
                    call=self.calling,
                    error=str(exc),
                )
            return
        except self._fatal_errors:
            raise
        except nvml.NVMLError as exc:  # identity unreadable: nothing to label this GPU's series with
            self._errors += 1
            self._say_failed(gpu, "identity", exc)
            return
        if gpu.lost:
            gpu.lost = False
            log.info("GPU is back", target=self.target.name, gpu=gpu.index, uuid=gpu.info["uuid"])
        poll.add(gpu.labels, readings)

    def _handle(self, index: int) -> Any:
        try:
            return self.call("nvmlDeviceGetHandleByIndex", index)
        except self.nvml.NVMLError_InvalidArgument:
            # An index past the host's last GPU: configured, but gone from the bus before NVML started.
            raise self.nvml.NVMLError(self.nvml.NVML_ERROR_GPU_IS_LOST) from None

    def _read(self, gpu: _GPU, name: str, read: Callable[[_GPU], R]) -> R | None:
        """One field of one GPU: None if NVML does not support it there (remembered) or it failed this time."""
        if (gpu.index, name) in self.unsupported:
            return None
        try:
            return read(gpu)
        except (self.nvml.NVMLError_GpuIsLost, *self._fatal_errors):
            raise
        except self._unsupported_errors as exc:
            self.unsupported.add((gpu.index, name))
            denied = isinstance(exc, self.nvml.NVMLError_NoPermission)
            (log.warning if denied else log.debug)(
                "GPU field not available; not asking for it again",
                target=self.target.name,
                gpu=gpu.index,
                field=name,
                call=self.calling,
                error=str(exc),
            )
            return None
        except self.nvml.NVMLError as exc:
            self._errors += 1
            self._say_failed(gpu, name, exc)
            return None

    def _say_failed(self, gpu: _GPU, name: str, exc: Exception) -> None:
        first = (gpu.index, name) not in self._failed
        self._failed.add((gpu.index, name))
        (log.warning if first else log.debug)(
            "reading a GPU field failed; skipped this poll",
            target=self.target.name,
            gpu=gpu.index,
            field=name,
            call=self.calling,
            error=str(exc),
        )

    # -- identity and events ----------------------------------------------------------------

    def _identify(self, handle: Any) -> dict[str, str]:
        info = {
            "uuid": _text(self.call("nvmlDeviceGetUUID", handle)),
            "name": _text(self.call("nvmlDeviceGetName", handle)),
            "pci_bus_id": "",
            "serial": "",
        }
        for key, read in (
            ("pci_bus_id", lambda: self.call("nvmlDeviceGetPciInfo", handle).busId),
            ("serial", lambda: self.call("nvmlDeviceGetSerial", handle)),
        ):
            try:
                info[key] = _text(read())
            except self._unsupported_errors:
                pass
        return info

    def _info_labels(self, gpu: _GPU) -> dict[str, str]:
        assert gpu.info is not None
        return {**gpu.info, "driver_version": self.driver_version, "cuda_driver_version": self.cuda_version}

    def _register_xid_events(self, gpu: _GPU) -> None:
        if self.event_set is None:
            return
        try:
            self.call("nvmlDeviceRegisterEvents", gpu.handle, self.nvml.nvmlEventTypeXidCriticalError, self.event_set)
            gpu.xids = Counter()
        except (self.nvml.NVMLError_GpuIsLost, *self._fatal_errors):
            raise
        except self.nvml.NVMLError as exc:
            log.debug("GPU does not report XID events", target=self.target.name, gpu=gpu.index, error=str(exc))

    def _read_xid_events(self) -> None:
        """Count the XID events since the last poll; waiting 0 ms, so this never blocks on an empty set."""
        if self.event_set is None or not any(gpu.xids is not None for gpu in self.gpus):
            return
        by_index = {gpu.index: gpu for gpu in self.gpus}
        for _ in range(MAX_EVENTS_PER_POLL):
            try:
                event = self.call("nvmlEventSetWait_v2", self.event_set, 0)
                index = self.call("nvmlDeviceGetIndex", event.device)
            except self.nvml.NVMLError_Timeout:
                return
            except self._fatal_errors:
                raise
            except self.nvml.NVMLError as exc:
                log.debug("reading XID events failed; trying again next poll", target=self.target.name, error=str(exc))
                return
            gpu = by_index.get(index)
            if gpu is not None and gpu.xids is not None and event.eventType & self.nvml.nvmlEventTypeXidCriticalError:
                gpu.xids[int(event.eventData)] += 1
                log.warning("GPU reported an XID error", target=self.target.name, gpu=index, xid=int(event.eventData))

    # -- the fields -------------------------------------------------------------------------

    def _field_readers(self) -> list[tuple[str, Callable[[_GPU], list[Reading]]]]:
        fields = [
            ("utilization", self._utilization),
            ("encoder_utilization", self._encoder),
            ("decoder_utilization", self._decoder),
            ("memory", self._memory),
            ("power_usage", self._power),
            ("power_limit", self._power_limit),
            ("energy", self._energy),
            ("temperature", self._temperature),
            ("memory_temperature", self._memory_temperature),
            ("sm_clock", self._sm_clock),
            ("memory_clock", self._memory_clock),
            ("fan_speed", self._fan),
            ("pcie_throughput", self._pcie),
            ("pcie_replays", self._pcie_replays),
            ("performance_state", self._pstate),
            ("clock_event_reasons", self._clock_event_reasons),
            ("ecc_errors", self._ecc),
            ("remapped_rows", self._remapped_rows),
            ("xid_errors", self._xid_errors),
            ("mig", self._mig),
            ("processes", self._processes),
        ]
        opted_out = {"pcie_throughput": not self.target.pcie_throughput, "processes": not self.target.processes}
        return [(name, read) for name, read in fields if not opted_out.get(name)]

    def _utilization(self, gpu: _GPU) -> list[Reading]:
        rates = self.call("nvmlDeviceGetUtilizationRates", gpu.handle)
        return [
            ("gpu_utilization_ratio", {}, rates.gpu / 100),
            ("gpu_memory_utilization_ratio", {}, rates.memory / 100),
        ]

    def _encoder(self, gpu: _GPU) -> list[Reading]:
        return [
            ("gpu_encoder_utilization_ratio", {}, self.call("nvmlDeviceGetEncoderUtilization", gpu.handle)[0] / 100)
        ]

    def _decoder(self, gpu: _GPU) -> list[Reading]:
        return [
            ("gpu_decoder_utilization_ratio", {}, self.call("nvmlDeviceGetDecoderUtilization", gpu.handle)[0] / 100)
        ]

    def _memory(self, gpu: _GPU) -> list[Reading]:
        memory = self.call("nvmlDeviceGetMemoryInfo", gpu.handle)
        return [
            ("gpu_memory_used_bytes", {}, memory.used),
            ("gpu_memory_free_bytes", {}, memory.free),
            ("gpu_memory_total_bytes", {}, memory.total),
        ]

    def _power(self, gpu: _GPU) -> list[Reading]:
        return [("gpu_power_usage_watts", {}, self.call("nvmlDeviceGetPowerUsage", gpu.handle) / 1000)]

    def _power_limit(self, gpu: _GPU) -> list[Reading]:
        return [("gpu_power_limit_watts", {}, self.call("nvmlDeviceGetEnforcedPowerLimit", gpu.handle) / 1000)]

    def _energy(self, gpu: _GPU) -> list[Reading]:
        return [("gpu_energy_consumed_joules", {}, self.call("nvmlDeviceGetTotalEnergyConsumption", gpu.handle) / 1000)]

    def _temperature(self, gpu: _GPU) -> list[Reading]:
        names = ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature")
        celsius = self.call_newest(names, gpu.handle, self.nvml.NVML_TEMPERATURE_GPU)
        return [("gpu_temperature_celsius", {}, celsius)]

    def _memory_temperature(self, gpu: _GPU) -> list[Reading]:
        nvml = self.nvml
        value = self.call("nvmlDeviceGetFieldValues", gpu.handle, [nvml.NVML_FI_DEV_MEMORY_TEMP])[0]
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            raise nvml.NVMLError(value.nvmlReturn)
        return [("gpu_memory_temperature_celsius", {}, getattr(value.value, _VALUE_MEMBERS[value.valueType]))]

    def _sm_clock(self, gpu: _GPU) -> list[Reading]:
        return [
            ("gpu_sm_clock_hertz", {}, self.call("nvmlDeviceGetClockInfo", gpu.handle, self.nvml.NVML_CLOCK_SM) * 1e6)
        ]

    def _memory_clock(self, gpu: _GPU) -> list[Reading]:
        mhz = self.call("nvmlDeviceGetClockInfo", gpu.handle, self.nvml.NVML_CLOCK_MEM)
        return [("gpu_memory_clock_hertz", {}, mhz * 1e6)]

    def _fan(self, gpu: _GPU) -> list[Reading]:
        return [("gpu_fan_speed_ratio", {}, self.call("nvmlDeviceGetFanSpeed", gpu.handle) / 100)]

    def _pcie(self, gpu: _GPU) -> list[Reading]:
        # The driver samples each direction for 20 ms (wall time, not CPU) and reports KiB/s.
        rx = self.call("nvmlDeviceGetPcieThroughput", gpu.handle, self.nvml.NVML_PCIE_UTIL_RX_BYTES)
        tx = self.call("nvmlDeviceGetPcieThroughput", gpu.handle, self.nvml.NVML_PCIE_UTIL_TX_BYTES)
        return [
            ("gpu_pcie_receive_bytes_per_second", {}, rx * 1024),
            ("gpu_pcie_transmit_bytes_per_second", {}, tx * 1024),
        ]

    def _pcie_replays(self, gpu: _GPU) -> list[Reading]:
        return [("gpu_pcie_replays", {}, self.call("nvmlDeviceGetPcieReplayCounter", gpu.handle))]

    def _pstate(self, gpu: _GPU) -> list[Reading]:
        state = self.call("nvmlDeviceGetPerformanceState", gpu.handle)
        return [] if state == _PSTATE_UNKNOWN else [("gpu_performance_state", {}, state)]

    def _clock_event_reasons(self, gpu: _GPU) -> list[Reading]:
        names = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")  # 535+, older
        mask = self.call_newest(names, gpu.handle)
        return [
            ("gpu_clock_event_reason", {"reason": label}, 1 if mask & bit else 0)
            for label, bit in self._reasons.items()
        ]

    def _ecc(self, gpu: _GPU) -> list[Reading]:
        nvml = self.nvml
        kinds = (
            ("corrected", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ("uncorrected", nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
        )
        return [
            (
                "gpu_ecc_errors",
                {"type": kind},
                self.call("nvmlDeviceGetTotalEccErrors", gpu.handle, code, nvml.NVML_VOLATILE_ECC),
            )
            for kind, code in kinds
        ]

    def _remapped_rows(self, gpu: _GPU) -> list[Reading]:
        correctable, uncorrectable, pending, failure = self.call("nvmlDeviceGetRemappedRows", gpu.handle)
        return [
            ("gpu_remapped_rows", {"cause": "correctable"}, correctable),
            ("gpu_remapped_rows", {"cause": "uncorrectable"}, uncorrectable),
            ("gpu_row_remap_pending", {}, 1 if pending else 0),
            ("gpu_row_remap_failure", {}, 1 if failure else 0),
        ]

    def _xid_errors(self, gpu: _GPU) -> list[Reading]:
        if gpu.xids is None:
            return []
        return [("gpu_xid_errors", {"xid": str(code)}, count) for code, count in sorted(gpu.xids.items())]

    def _mig(self, gpu: _GPU) -> list[Reading]:
        nvml = self.nvml
        if self.call("nvmlDeviceGetMigMode", gpu.handle)[0] != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        readings: list[Reading] = []
        for slot in range(self.call("nvmlDeviceGetMaxMigDeviceCount", gpu.handle)):
            try:
                mig = self.call("nvmlDeviceGetMigDeviceHandleByIndex", gpu.handle, slot)
            except nvml.NVMLError_NotFound:  # an empty slot
                continue
            labels = {
                "gpu_instance": str(self.call("nvmlDeviceGetGpuInstanceId", mig)),
                "compute_instance": str(self.call("nvmlDeviceGetComputeInstanceId", mig)),
                "profile": mig_profile(_text(self.call("nvmlDeviceGetName", mig))),
            }
            memory = self.call("nvmlDeviceGetMemoryInfo", mig)
            readings += [
                ("gpu_mig_memory_used_bytes", labels, memory.used),
                ("gpu_mig_memory_free_bytes", labels, memory.free),
                ("gpu_mig_memory_total_bytes", labels, memory.total),
            ]
            # NVML reports no utilization per MIG instance on the GPUs we know of; where one does, serve it.
            rates = self._read(gpu, "mig_utilization", lambda _: self.call("nvmlDeviceGetUtilizationRates", mig))  # noqa: B023 (called now)
            if rates is not None:
                readings.append(("gpu_mig_utilization_ratio", labels, rates.gpu / 100))
        return readings

    def _processes(self, gpu: _GPU) -> list[Reading]:
        readings: list[Reading] = []
        for process in self.call("nvmlDeviceGetComputeRunningProcesses", gpu.handle):
            if process.usedGpuMemory is None:  # not reported (Windows WDDM, some containers)
                continue
            labels = {"pid": str(process.pid), "process": self._process_name(process.pid)}
            readings.append(("gpu_process_memory_used_bytes", labels, process.usedGpuMemory))
        return readings

    def _process_name(self, pid: int) -> str:
        name = self._process_names.get(pid)
        if name is None:
            try:
                name = _text(self.call("nvmlSystemGetProcessName", pid))
            except self.nvml.NVMLError:  # gone already, or not ours to see
                name = ""
            if len(self._process_names) > 4096:  # pids come and go: forget them now and then
                self._process_names.clear()
            self._process_names[pid] = name
        return name


# -- the source -----------------------------------------------------------------------------------


def describe_init_error(exc: Exception, nvml: ModuleType) -> str:
    """What an operator needs to hear when nvmlInit fails."""
    if isinstance(exc, nvml.NVMLError_LibraryNotFound):
        return (
            "NVML library libnvidia-ml.so.1 not found: install the NVIDIA driver, or run the container "
            "with the NVIDIA container toolkit (--gpus all / runtime nvidia)"
        )
    if isinstance(exc, nvml.NVMLError_DriverNotLoaded):
        return "the NVIDIA kernel driver is not loaded (nvidia-smi says more)"
    if isinstance(exc, nvml.NVMLError_NoPermission):
        return "no permission to open the NVIDIA devices (/dev/nvidia*)"
    if isinstance(exc, nvml.NVMLError_LibRmVersionMismatch):
        return "the NVML library and the kernel driver differ in version (a driver upgrade without a reboot?)"
    return f"nvmlInit failed: {exc}"


class NVMLSource:
    """Samples the GPUs on this target's worker thread; one sample in flight at most."""

    def __init__(self, target: NVMLTarget, shared: Shared, *, nvml: ModuleType | None = None):
        self.target = target
        self.nvml = nvml if nvml is not None else load_binding()
        self.sampler = Sampler(self.nvml, target)
        self._worker: _Worker | None = None
        self._inflight: concurrent.futures.Future | None = None
        self._inflight_since = 0.0
        self._started = False
        self._init_failures = 0
        self._polls_to_skip = 0
        self._init_error = ""

    async def poll(self) -> Payload:
        self._check_not_stuck()
        if not self._started:
            await self._start()
        try:
            return await self._run(self.sampler.sample)
        except Unavailable as exc:
            self._started = False
            await self._run(self.sampler.stop)
            log.error("NVML stopped working; starting it again", target=self.target.name, error=str(exc))
            raise SourceError("nvml_unavailable", str(exc), retryable=False) from None

    def _check_not_stuck(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            stuck = time.monotonic() - self._inflight_since
            raise SourceError(
                "timeout",
                f"NVML call {self.sampler.describe_call()} has not returned for {stuck:.1f}s; "
                "polls are skipped until it does",
                retryable=False,
            )

    async def _start(self) -> None:
        if self._polls_to_skip > 0:
            self._polls_to_skip -= 1
            raise SourceError("nvml_unavailable", f"{self._init_error} (retrying with backoff)", retryable=False)
        try:
            await self._run(self.sampler.start)
        except self.nvml.NVMLError as exc:
            self._init_failures += 1
            self._init_error = describe_init_error(exc, self.nvml)
            interval = self.target.interval
            assert interval is not None  # the config resolves it for every target
            most = max(0, int(INIT_BACKOFF_MAX / interval) - 1)
            self._polls_to_skip = min(2 ** (self._init_failures - 1) - 1, most)
            (log.error if self._init_failures == 1 else log.debug)(
                "NVML is not available; GPU metrics are down, retrying with backoff",
                target=self.target.name,
                error=self._init_error,
                attempt=self._init_failures,
                next_attempt_in_s=round((self._polls_to_skip + 1) * interval, 3),
            )
            raise SourceError("nvml_unavailable", self._init_error, retryable=False) from None
        self._started = True
        log.info(
            "NVML started",
            target=self.target.name,
            driver=self.sampler.driver_version,
            cuda=self.sampler.cuda_version,
            gpus=[gpu.index for gpu in self.sampler.gpus],
            after_failed_attempts=self._init_failures,
        )
        self._init_failures = 0

    async def _run(self, job: Callable[[], T]) -> T:
        """Run `job` on the worker thread. If the scheduler's timeout cancels the wait, the job runs on
        and stays in flight: the next poll sees it and reports `timeout` rather than queue behind it."""
        return await asyncio.wrap_future(self._submit(job))

    def _submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        if self._worker is None:
            self._worker = _Worker(f"nvml {self.target.name}")
        future = self._worker.submit(job)
        self._inflight, self._inflight_since = future, time.monotonic()
        future.add_done_callback(self._note_done)
        return future

    def _note_done(self, future: concurrent.futures.Future) -> None:
        took = time.monotonic() - self._inflight_since
        if self.target.timeout is not None and took > self.target.timeout:
            log.info("a stuck NVML call returned", target=self.target.name, after_s=round(took, 3))

    async def close(self) -> None:
        """nvmlShutdown on the worker thread, after any call still in flight; waits a little, never long."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        # Submitted even when not started: an nvmlInit stuck now may still succeed, and is then owed a shutdown.
        done = worker.submit(self.sampler.stop)
        worker.stop()
        self._started = False
        deadline = time.monotonic() + CLOSE_GRACE
        # `done` is the worker thread's future, which may never finish: polled, so that close is bounded.
        while not done.done() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if not done.done():
            log.warning(
                "an NVML call is still stuck; nvmlShutdown runs when it returns",
                target=self.target.name,
                call=self.sampler.describe_call(),
            )
