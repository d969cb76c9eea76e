"""The one thread a target's NVML calls run on: a call stuck in the driver holds up this target
alone, and while it is stuck the target reports `timeout` instead of queueing more calls behind it."""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
