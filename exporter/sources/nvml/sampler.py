"""Reading every GPU (and MIG device) of the host once per poll, on the worker thread: NVML's answers
turned into readings, a GPU that stopped answering said so, XID events counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import structlog

from exporter.core.family import Family, Sample
from exporter.sources.base import Payload
from exporter.sources.nvml.config import NVMLTarget
from exporter.sources.nvml.metrics import (
    _PSTATE_UNKNOWN,
    _VALUE_MEMBERS,
    CLOCK_EVENT_REASONS,
    FAMILIES,
    Reading,
    _text,
    cuda_version,
    mig_profile,
)

log = structlog.get_logger("exporter.sources.nvml")


#: Most XID events read from the event set in one poll (a storm must not keep a poll going).
MAX_EVENTS_PER_POLL = 1000

R = TypeVar("R")


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
