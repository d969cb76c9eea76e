"""A fake NVML host: the nvidia-ml-py functions the nvml source calls, failing with nvidia-ml-py's own errors.

There is no GPU where the tests run. This module object stands in for `pynvml`: its functions
keep pynvml's names, arguments and return shapes, and every failure is a real `pynvml.NVMLError`
subclass made from its NVML return code, exactly as pynvml raises them. Constants and error
classes come from the real pynvml; a function the fake does not implement is an AttributeError,
never a call into a real driver.
"""

from __future__ import annotations

import threading
import types
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml


def nvml_error(code: int) -> pynvml.NVMLError:
    """The exception pynvml raises for an NVML return code (NVMLError picks the subclass)."""
    return pynvml.NVMLError(code)


@dataclass
class FakeMIG:
    gpu_instance: int
    compute_instance: int
    profile: str
    memory_total: int
    memory_used: int
    #: (gpu %, memory %), or None where NVML reports no utilization per MIG instance (the usual case).
    utilization: tuple[int, int] | None = None


@dataclass
class FakeGPU:
    index: int
    name: str = "NVIDIA H100 80GB HBM3"
    memory_total: int = 80 * 2**30
    memory_used: int = 20 * 2**30
    utilization: tuple[int, int] = (50, 30)
    encoder: int = 0
    decoder: int = 0
    power_mw: int = 300_000
    power_limit_mw: int = 700_000
    energy_mj: int = 123_456_789
    temperature: int = 60
    memory_temperature: int = 70
    sm_mhz: int = 1980
    memory_mhz: int = 2619
    fan_percent: int = 40
    pcie_rx_kib: int = 1000
    pcie_tx_kib: int = 2000
    pcie_replays: int = 0
    pstate: int = 0
    clock_event_reasons: int = 0
    ecc: tuple[int, int] = (0, 0)
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)
    serial: str = ""
    mig: list[FakeMIG] | None = None
    #: (pid, process name, bytes used)
    processes: list[tuple[int, str, int]] = field(default_factory=list)
    #: pynvml function names that answer NVML_ERROR_NOT_SUPPORTED on this GPU.
    unsupported: set[str] = field(default_factory=set)
    #: Every call on this GPU answers NVML_ERROR_GPU_IS_LOST while set.
    lost: bool = False
    #: pynvml function name -> an Event the call waits for on this GPU (a call stuck in the driver).
    blocks: dict[str, threading.Event] = field(default_factory=dict)

    @property
    def uuid(self) -> str:
        return f"GPU-{self.index:08x}-0000-4000-8000-{self.index:012x}"

    @property
    def bus_id(self) -> str:
        return f"00000000:{0x18 + self.index:02X}:00.0"


@dataclass(frozen=True)
class Handle:
    """An nvmlDevice_t: a GPU, or one of its MIG devices."""

    gpu: FakeGPU
    mig: FakeMIG | None = None


def eight_gpus() -> list[FakeGPU]:
    """The host the tests poll: 8 H100s, GPU 2 split into MIG instances, GPU 5 lacking some fields."""
    gpus = [
        FakeGPU(
            index,
            power_mw=100_000 + 10_000 * index,
            temperature=40 + index,
            serial=f"165432100{index}",
            processes=[(1000 + index, "python3", (index + 1) * 2**30)],
        )
        for index in range(8)
    ]
    gpus[2].mig = [
        FakeMIG(1, 0, "3g.40gb", 40 * 2**30, 10 * 2**30),
        FakeMIG(2, 0, "2g.20gb", 20 * 2**30, 5 * 2**30),
    ]
    # A MIG-enabled GPU reports no utilization of its own, as NVML does.
    gpus[2].unsupported = {"nvmlDeviceGetUtilizationRates"}
    gpus[5].name = "NVIDIA L4"
    gpus[5].unsupported = {
        "nvmlDeviceGetFanSpeed",
        "nvmlDeviceGetTotalEccErrors",
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetSerial",
        "nvmlDeviceGetMigMode",
        "memory_temperature",
    }
    return gpus


class FakeNVML(types.ModuleType):
    """Stands in for the `pynvml` module. `calls` counts each function called, per GPU index."""

    def __init__(
        self,
        gpus: list[FakeGPU],
        *,
        library_missing: bool = False,
        driver: str = "550.54.15",
        cuda: int = 12040,
        driver_lacks: frozenset[str] = frozenset(),
    ):
        super().__init__("pynvml")
        #: Functions an older driver does not export: pynvml answers NVML_ERROR_FUNCTION_NOT_FOUND.
        self.driver_lacks = driver_lacks
        self.gpus = gpus
        self.library_missing = library_missing
        self.driver = driver
        self.cuda = cuda
        self.initialized = 0
        self.init_attempts = 0
        self.shutdowns = 0
        self.calls: Counter[tuple[int | None, str]] = Counter()
        #: XID events waiting in every event set: (GPU index, XID code).
        self.xid_events: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        if name.startswith(("NVML", "nvmlClocks", "nvmlEventType")):
            return getattr(pynvml, name)
        raise AttributeError(f"the fake NVML does not implement {name}")

    # -- plumbing ---------------------------------------------------------------------------

    def _enter(self, name: str, handle: Handle | None = None) -> FakeGPU | None:
        """Count the call and fail it as NVML would: uninitialized, GPU lost, not supported, or stuck."""
        gpu = handle.gpu if handle is not None else None
        with self._lock:
            self.calls[(gpu.index if gpu else None, name)] += 1
        if name in self.driver_lacks:
            raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        if not self.initialized:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        if gpu is None:
            return None
        if gpu.lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        block = gpu.blocks.get(name)
        if block is not None:
            block.wait(60)
        if name in gpu.unsupported and (
            handle is None or handle.mig is None or name != "nvmlDeviceGetUtilizationRates"
        ):
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _device(self, name: str, handle: Handle) -> FakeGPU:
        """`_enter` for a call on a device handle, which always has its GPU."""
        gpu = self._enter(name, handle)
        assert gpu is not None
        return gpu

    def called(self, name: str, gpu: int | None = None) -> int:
        return self.calls[(gpu, name)]

    # -- library ----------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.init_attempts += 1
        if self.library_missing:
            raise nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialized -= 1
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._enter("nvmlSystemGetProcessName")
        for gpu in self.gpus:
            for known, name, _ in gpu.processes:
                if known == pid:
                    return name
        raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return Handle(gpu)

    def nvmlDeviceGetIndex(self, handle: Handle) -> int:
        return self._device("nvmlDeviceGetIndex", handle).index

    # -- identity ---------------------------------------------------------------------------

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        return self._device("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: Handle) -> str:
        gpu = self._device("nvmlDeviceGetName", handle)
        return f"{gpu.name} MIG {handle.mig.profile}" if handle.mig else gpu.name

    def nvmlDeviceGetPciInfo(self, handle: Handle) -> SimpleNamespace:
        gpu = self._device("nvmlDeviceGetPciInfo", handle)
        return SimpleNamespace(busId=gpu.bus_id.encode())  # a ctypes char array: bytes

    def nvmlDeviceGetSerial(self, handle: Handle) -> str:
        return self._device("nvmlDeviceGetSerial", handle).serial

    # -- readings ---------------------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> SimpleNamespace:
        gpu = self._device("nvmlDeviceGetUtilizationRates", handle)
        if handle.mig is not None:
            if handle.mig.utilization is None:
                raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return SimpleNamespace(gpu=handle.mig.utilization[0], memory=handle.mig.utilization[1])
        return SimpleNamespace(gpu=gpu.utilization[0], memory=gpu.utilization[1])

    def nvmlDeviceGetEncoderUtilization(self, handle: Handle) -> list[int]:
        return [self._device("nvmlDeviceGetEncoderUtilization", handle).encoder, 167000]

    def nvmlDeviceGetDecoderUtilization(self, handle: Handle) -> list[int]:
        return [self._device("nvmlDeviceGetDecoderUtilization", handle).decoder, 167000]

    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> SimpleNamespace:
        gpu = self._device("nvmlDeviceGetMemoryInfo", handle)
        total, used = (
            (handle.mig.memory_total, handle.mig.memory_used) if handle.mig else (gpu.memory_total, gpu.memory_used)
        )
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        return self._device("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Handle) -> int:
        return self._device("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:
        return self._device("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    def nvmlDeviceGetTemperatureV(self, handle: Handle, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._device("nvmlDeviceGetTemperatureV", handle).temperature

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._device("nvmlDeviceGetTemperature", handle).temperature

    def nvmlDeviceGetFieldValues(self, handle: Handle, field_ids: list[int]) -> list[SimpleNamespace]:
        gpu = self._device("nvmlDeviceGetFieldValues", handle)
        values = []
        for field_id in field_ids:
            assert field_id == pynvml.NVML_FI_DEV_MEMORY_TEMP, field_id
            # Per-field failures come back in nvmlReturn, not as an exception, as in NVML.
            supported = "memory_temperature" not in gpu.unsupported
            values.append(
                SimpleNamespace(
                    fieldId=field_id,
                    nvmlReturn=pynvml.NVML_SUCCESS if supported else pynvml.NVML_ERROR_NOT_SUPPORTED,
                    valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                    value=SimpleNamespace(uiVal=gpu.memory_temperature if supported else 0),
                )
            )
        return values

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock: int) -> int:
        gpu = self._device("nvmlDeviceGetClockInfo", handle)
        return {pynvml.NVML_CLOCK_SM: gpu.sm_mhz, pynvml.NVML_CLOCK_MEM: gpu.memory_mhz}[clock]

    def nvmlDeviceGetFanSpeed(self, handle: Handle) -> int:
        return self._device("nvmlDeviceGetFanSpeed", handle).fan_percent

    def nvmlDeviceGetPcieThroughput(self, handle: Handle, counter: int) -> int:
        gpu = self._device("nvmlDeviceGetPcieThroughput", handle)
        return {pynvml.NVML_PCIE_UTIL_RX_BYTES: gpu.pcie_rx_kib, pynvml.NVML_PCIE_UTIL_TX_BYTES: gpu.pcie_tx_kib}[
            counter
        ]

    def nvmlDeviceGetPcieReplayCounter(self, handle: Handle) -> int:
        return self._device("nvmlDeviceGetPcieReplayCounter", handle).pcie_replays

    def nvmlDeviceGetPerformanceState(self, handle: Handle) -> int:
        return self._device("nvmlDeviceGetPerformanceState", handle).pstate

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int:
        return self._device("nvmlDeviceGetCurrentClocksEventReasons", handle).clock_event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Handle) -> int:
        return self._device("nvmlDeviceGetCurrentClocksThrottleReasons", handle).clock_event_reasons

    def nvmlDeviceGetTotalEccErrors(self, handle: Handle, error_type: int, counter_type: int) -> int:
        gpu = self._device("nvmlDeviceGetTotalEccErrors", handle)
        assert counter_type == pynvml.NVML_VOLATILE_ECC
        return gpu.ecc[0] if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else gpu.ecc[1]

    def nvmlDeviceGetRemappedRows(self, handle: Handle) -> tuple[int, int, int, int]:
        return self._device("nvmlDeviceGetRemappedRows", handle).remapped_rows

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Handle) -> list[SimpleNamespace]:
        gpu = self._device("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, _, used in gpu.processes]

    # -- MIG --------------------------------------------------------------------------------

    def nvmlDeviceGetMigMode(self, handle: Handle) -> list[int]:
        gpu = self._device("nvmlDeviceGetMigMode", handle)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig is not None else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Handle) -> int:
        self._device("nvmlDeviceGetMaxMigDeviceCount", handle)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Handle, index: int) -> Handle:
        gpu = self._device("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if gpu.mig is None or index >= len(gpu.mig):
            raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)
        return Handle(gpu, gpu.mig[index])

    def nvmlDeviceGetGpuInstanceId(self, handle: Handle) -> int:
        self._device("nvmlDeviceGetGpuInstanceId", handle)
        assert handle.mig is not None, "not a MIG device handle"
        return handle.mig.gpu_instance

    def nvmlDeviceGetComputeInstanceId(self, handle: Handle) -> int:
        self._device("nvmlDeviceGetComputeInstanceId", handle)
        assert handle.mig is not None, "not a MIG device handle"
        return handle.mig.compute_instance

    # -- events -----------------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> object:
        self._enter("nvmlEventSetCreate")
        return object()

    def nvmlEventSetFree(self, event_set: object) -> None:
        self._enter("nvmlEventSetFree")

    def nvmlDeviceRegisterEvents(self, handle: Handle, event_types: int, event_set: object) -> None:
        self._device("nvmlDeviceRegisterEvents", handle)

    def nvmlEventSetWait_v2(self, event_set: object, timeout_ms: int) -> SimpleNamespace:
        self._enter("nvmlEventSetWait_v2")
        with self._lock:
            if not self.xid_events:
                raise nvml_error(pynvml.NVML_ERROR_TIMEOUT)
            index, xid = self.xid_events.pop(0)
        return SimpleNamespace(
            device=Handle(self.gpus[index]),
            eventType=pynvml.nvmlEventTypeXidCriticalError,
            eventData=xid,
            gpuInstanceId=0xFFFFFFFF,
            computeInstanceId=0xFFFFFFFF,
        )
