"""The NVML source: NVML initialised (again, with backoff, on a host whose driver is not ready), each
poll's readings sampled on the worker thread and served as families; nvidia-ml-py's `pynvml` loaded on
first use (`load_binding`: tests swap in a fake)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import time
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

import structlog

from exporter.sources.base import Payload, Shared, SourceError
from exporter.sources.nvml.config import NVMLTarget
from exporter.sources.nvml.sampler import Sampler, Unavailable
from exporter.sources.nvml.worker import _Worker

T = TypeVar("T")

log = structlog.get_logger("exporter.sources.nvml")


#: Longest pause between two attempts to initialize NVML on a host without a working driver.
INIT_BACKOFF_MAX = 300.0

#: How long close() waits for nvmlShutdown before leaving it to a worker thread that is stuck.
CLOSE_GRACE = 2.0


def load_binding() -> ModuleType:
    """nvidia-ml-py's `pynvml`. Importing it loads no driver library (nvmlInit does); tests swap in a fake."""
    return importlib.import_module("pynvml")


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
