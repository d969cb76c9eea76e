"""Where a GPU host's poll spends the event loop thread's CPU, stage by stage, in one process.

    .venv/bin/python bench/loop_sections.py [--seconds 30] [--targets 8]

The daemon runs in this process as `inference-exporter run` builds it, polling --targets upstreams
that serve the vLLM V1 payload (bench/scenarios.py's child process: values moved on every answer)
every second, scraped every 5 s as Prometheus 3 would. Over the measured window it prints the loop
thread's CPU time (`time.thread_time`) per poll: around every event-loop callback (by task name and
coroutine, or by callback), around the stages a poll goes through (the pipeline, the store's
publish and its observers, the collector; for the poller's and the HTTP source's coroutines, the
steps they run themselves, not their waits), the loop's waits in `epoll`, and any cycle collection.
The wrappers cost a little themselves: compare runs of this bench, not its totals with other
benches'. Run it from a checkout's root to measure that checkout (its `exporter` is imported first).
No assertions: the machine may be shared; the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.events
import gc
import os
import selectors
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [os.getcwd(), str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]

from helpers.support import free_port  # noqa: E402
from scenarios import PROMETHEUS_HEADERS, Upstreams, config_yaml, http_targets  # noqa: E402

#: label -> CPU seconds (or, for labels starting with "#", a count)
SPENT: dict[str, float] = {}


def add(label: str, value: float) -> None:
    SPENT[label] = SPENT.get(label, 0.0) + value


def timed(owner: Any, attr: str, label: str) -> None:
    """Wrap owner.attr (a plain function or method) to add its thread CPU time under `label`."""
    original: Callable[..., Any] | None = getattr(owner, attr, None)
    if original is None:  # not in the checkout measured
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            add(label, time.thread_time() - start)

    setattr(owner, attr, wrapper)


class _TimedSteps:
    """A coroutine driven step by step, the thread CPU time of each step added under `label`: what the
    coroutine itself runs on the loop, not the waits between its steps (nor the callbacks that end them)."""

    def __init__(self, coro: Any, label: str):
        self.coro, self.label = coro, label

    def __await__(self) -> Any:
        coro, label = self.coro, self.label
        value: Any = None
        error: BaseException | None = None
        while True:
            start = time.thread_time()
            try:
                step = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                add(label, time.thread_time() - start)
                return stop.value
            except BaseException:
                add(label, time.thread_time() - start)
                raise
            add(label, time.thread_time() - start)
            try:
                value, error = (yield step), None
            except BaseException as exc:  # handed on to the coroutine, as await does
                value, error = None, exc


def timed_steps(owner: Any, attr: str, label: str) -> None:
    """Wrap owner.attr (a coroutine function or method) to add the CPU time of its steps under `label`."""
    original: Callable[..., Any] | None = getattr(owner, attr, None)
    if original is None:  # not in the checkout measured
        return

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await _TimedSteps(original(*args, **kwargs), label)

    setattr(owner, attr, wrapper)


def instrument() -> None:
    """Wrap the loop's callbacks and selector, the poll's stages, and watch the cycle collector."""
    from exporter.pipeline.exposition import AheadDeflater
    from exporter.pipeline.target import Pipeline
    from exporter.runtime import scheduler
    from exporter.serve.collector import Collector
    from exporter.serve.overview.windows import Windows
    from exporter.serve.store import Snapshot, Store
    from exporter.sources.http import HTTPSource

    run = asyncio.events.Handle._run

    def handle_run(self: Any) -> None:
        callback = self._callback
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            name = owner.get_name().split(" ")[0].rstrip("-0123456789")
            label = f"task {name}: {getattr(owner.get_coro(), '__qualname__', '?')}"
        else:
            label = f"callback {getattr(callback, '__qualname__', type(callback).__name__)}"
        start = time.thread_time()
        try:
            run(self)
        finally:
            add(label, time.thread_time() - start)

    asyncio.events.Handle._run = handle_run  # type: ignore[method-assign]
    select = selectors.EpollSelector.select

    def epoll(self: Any, timeout: float | None = None) -> Any:
        label = "loop: select, no wait" if timeout == 0 else "loop: select, waiting"
        add("#" + label, 1)
        start = time.thread_time()
        try:
            return select(self, timeout)
        finally:
            add(label, time.thread_time() - start)

    selectors.EpollSelector.select = epoll  # type: ignore[method-assign]
    for owner, attr, label in [
        (Pipeline, "run", "stage: Pipeline.run"),
        (Store, "publish", "stage: Store.publish (with observers)"),
        (Windows, "observe", "stage: Windows.observe"),
        (AheadDeflater, "observe", "stage: AheadDeflater.observe"),
        (Collector, "merged", "stage: Collector.merged (a scrape)"),
        (scheduler, "replace", "stage: the scheduler's dataclasses.replace"),
        (Snapshot, "replaced", "stage: Snapshot.replaced (the scheduler's snapshots)"),
        (scheduler.TargetPoller, "_note_next_poll", "stage: TargetPoller._note_next_poll"),
    ]:
        timed(owner, attr, label)
    timed_steps(HTTPSource, "poll", "stage: HTTPSource.poll (its steps in the task: request, body)")
    timed_steps(scheduler.TargetPoller, "_poll", "stage: TargetPoller._poll (its steps: source, pipeline, publish)")
    started: list[float] = []

    def collecting(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.thread_time()]
        elif started:
            add(f"gc: generation {info['generation']}", time.thread_time() - started[0])
            add(f"#gc: generation {info['generation']}", 1)

    gc.callbacks.append(collecting)


async def measure(seconds: float, targets: int) -> None:
    from exporter.config.loader import parse_config
    from exporter.core.logs import configure
    from exporter.runtime.daemon import Daemon

    configure("error", "console")
    instrument()
    upstreams = await Upstreams({"vllm": targets}).start()
    try:
        paths = [f"/vllm/{i}/metrics" for i in range(targets)]
        config = parse_config(config_yaml(http_targets(upstreams.info["http"], paths, "vllm"), "1s"), "<bench>")
        listen = f"127.0.0.1:{free_port()}"
        daemon = Daemon(config, config_path=None, listen=listen)
        await daemon.start()
        try:
            await asyncio.sleep(3)
            await upstreams.scrape(f"http://{listen}/metrics", 5, 5.0, PROMETHEUS_HEADERS)  # warm-up
            polls = sum(snap.polls for snap in daemon.store.snapshots())
            SPENT.clear()
            cpu, process, wall = time.thread_time(), time.process_time(), time.perf_counter()
            scraped = await upstreams.scrape(f"http://{listen}/metrics", seconds, 5.0, PROMETHEUS_HEADERS)
            cpu, process, wall = time.thread_time() - cpu, time.process_time() - process, time.perf_counter() - wall
            polls = sum(snap.polls for snap in daemon.store.snapshots()) - polls
        finally:
            await daemon.close()
    finally:
        upstreams.stop()
    per = max(polls, 1)
    print(
        f"{polls} polls, {len(scraped['latencies'])} scrapes in {wall:.1f} s; loop thread {cpu / wall:.2%} of one core, "
        f"{cpu / per * 1e3:.3f} ms a poll; whole process (its other threads too) {process / wall:.2%}, "
        f"{process / per * 1e3:.3f} ms a poll\n"
    )
    for label, value in sorted(SPENT.items(), key=lambda item: (item[0].startswith("#"), -item[1])):
        if label.startswith("#"):
            print(f"  {label[1:]:60s} {value / per:8.2f} a poll")
        elif value / per >= 0.0005e-3:
            print(f"  {label:60s} {value / per * 1e3:8.3f} ms a poll")
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds (default 30)")
    parser.add_argument("--targets", type=int, default=8, help="vLLM upstreams polled every second (default 8)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    asyncio.run(measure(args.seconds, args.targets))
