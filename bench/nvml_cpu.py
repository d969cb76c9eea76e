"""CPU cost of sampling 8 GPUs at a 1 s interval: our own overhead, measured against the fake NVML host.

Each figure is process CPU time (every thread, the NVML worker included) per poll through the real
TargetPoller (source, normalize, store), beside a baseline measured in the same run: the same
poller with a source that returns nothing at once. At a 1 s interval, CPU seconds per poll is also
the share of one core. The fake answers from memory: a real driver adds its own time inside NVML
(and about 20 ms of waiting per PCIe reading), which only a run on a GPU host shows
(bench/nvml_real.py).

    .venv/bin/python bench/nvml_cpu.py [--polls 300] [--seconds 0]

`--seconds N` also runs each poller on its real 1 s schedule for N seconds and reports the CPU the
whole process used meanwhile (getrusage), idle event loop included.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.fake_nvml import FakeNVML, eight_gpus  # noqa: E402
from prometheus_client.exposition import generate_latest  # noqa: E402

from exporter.config.loader import parse_config  # noqa: E402
from exporter.core.logs import configure  # noqa: E402
from exporter.runtime.scheduler import TargetPoller  # noqa: E402
from exporter.serve.collector import Collector, registry_for  # noqa: E402
from exporter.serve.store import Store  # noqa: E402
from exporter.sources import Payload, Shared  # noqa: E402
from exporter.sources.nvml import NVMLSource, NVMLTarget  # noqa: E402

INTERVAL = 1.0


class EmptySource:
    """The baseline: a poll that returns at once with nothing."""

    async def poll(self) -> Payload:
        return Payload([])

    async def close(self) -> None:
        pass


def poller(source_kind: str) -> tuple[TargetPoller, Store]:
    target = parse_config(
        "defaults: {interval: 1s, timeout: 1s, retries: 0}\ntargets:\n  - {name: gpus, type: nvml}\n"
    ).targets[0]
    assert isinstance(target, NVMLTarget)
    store = Store()
    polling = TargetPoller(target, store, Shared())
    polling.source = (
        EmptySource() if source_kind == "empty" else NVMLSource(target, Shared(), nvml=FakeNVML(eight_gpus()))
    )
    return polling, store


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def per_poll(kind: str, polls: int) -> tuple[float, int]:
    """CPU seconds per poll, polling back to back; and the samples one poll serves."""
    polling, _store = poller(kind)
    for _ in range(10):  # warm up: NVML started, caches filled
        snapshot = await polling.poll()
    assert snapshot.up, snapshot.last_error
    started = time.process_time()
    for _ in range(polls):
        await polling.poll()
    spent = (time.process_time() - started) / polls
    await polling.close()
    return spent, snapshot.sample_count


async def on_schedule(kind: str, seconds: float) -> float:
    """Process CPU seconds per second while the poller runs on its 1 s interval."""
    polling, _ = poller(kind)
    task = asyncio.create_task(polling.run())
    await asyncio.sleep(2)  # first poll, warm-up
    started_cpu, started = cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    share = (cpu() - started_cpu) / (time.monotonic() - started)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await polling.close()
    return share


def scrape_cost(scrapes: int) -> float:
    """CPU seconds to encode /metrics once for 8 GPUs (a scrape, separate from polling)."""
    polling, store = poller("nvml")
    asyncio.run(polling.poll())
    registry = registry_for(Collector(store, process_metrics=False))
    started = time.process_time()
    for _ in range(scrapes):
        generate_latest(registry)
    spent = (time.process_time() - started) / scrapes
    asyncio.run(polling.close())
    return spent


async def main(polls: int, seconds: float) -> None:
    empty, _ = await per_poll("empty", polls)
    nvml, samples = await per_poll("nvml", polls)
    print(f"polls back to back: {polls} each; process CPU per poll (all threads)")
    print(f"  baseline, empty source         {empty * 1e3:8.3f} ms   {empty / INTERVAL:7.3%} of one core at 1 s")
    print(f"  nvml, 8 fake GPUs ({samples} samples) {nvml * 1e3:8.3f} ms   {nvml / INTERVAL:7.3%} of one core at 1 s")
    print(
        f"  nvml less baseline             {(nvml - empty) * 1e3:8.3f} ms   {(nvml - empty) / INTERVAL:7.3%} of one core at 1 s"
    )
    if seconds > 0:
        idle = await on_schedule("empty", seconds)
        busy = await on_schedule("nvml", seconds)
        print(f"on the 1 s schedule for {seconds:g} s each: whole-process CPU per wall second")
        print(f"  baseline, empty source         {idle:7.3%} of one core")
        print(f"  nvml, 8 fake GPUs              {busy:7.3%} of one core")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=300, help="polls to time back to back (default 300)")
    parser.add_argument("--seconds", type=float, default=0, help="also run each on its 1 s schedule this long")
    args = parser.parse_args()
    configure("warning", "console")
    asyncio.run(main(args.polls, args.seconds))
    scrape = scrape_cost(200)
    print(f"scrape: encoding /metrics for 8 GPUs costs {scrape * 1e3:.3f} ms of CPU per scrape")
