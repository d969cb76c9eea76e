"""Run the nvml source against the real driver and print what it collected: for a machine with a GPU.

Prints the exposition the daemon would serve for every GPU, the fields each GPU does not support
(skipped from then on), and each poll's wall time and process CPU time. Exits 1 when NVML cannot
start here (no driver, no library), saying why.

    .venv/bin/python bench/nvml_real.py [--polls 5] [--interval 1] [--processes]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.exposition import generate_latest

from exporter.config.loader import parse_config
from exporter.core.logs import configure
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.collector import Collector, registry_for
from exporter.serve.store import Store
from exporter.sources import Shared
from exporter.sources.nvml import NVMLSource


async def main(polls: int, interval: float, processes: bool) -> int:
    target = parse_config(
        f"defaults: {{interval: {interval}s, timeout: {interval}s, retries: 0}}\n"
        f"targets:\n  - {{name: gpus, type: nvml, processes: {str(processes).lower()}}}\n"
    ).targets[0]
    store = Store()
    poller = TargetPoller(target, store, Shared())
    try:
        for number in range(1, polls + 1):
            wall, cpu = time.monotonic(), time.process_time()
            snapshot = await poller.poll()
            wall, cpu = time.monotonic() - wall, time.process_time() - cpu
            state = "up" if snapshot.up else f"DOWN {snapshot.last_reason}: {snapshot.last_error}"
            print(
                f"poll {number}: {state}; {snapshot.sample_count} samples; {wall * 1e3:.1f} ms wall, "
                f"{cpu * 1e3:.1f} ms CPU; dropped so far {dict(snapshot.dropped)}",
                file=sys.stderr,
            )
            if snapshot.up is False and snapshot.last_reason == "nvml_unavailable":
                return 1
            if number < polls:
                await asyncio.sleep(interval)
        assert isinstance(poller.source, NVMLSource)
        sampler = poller.source.sampler
        print(
            f"driver {sampler.driver_version}, CUDA {sampler.cuda_version}, GPUs {[gpu.index for gpu in sampler.gpus]}",
            file=sys.stderr,
        )
        unsupported: dict[int, list[str]] = {}
        for gpu, field in sorted(sampler.unsupported):
            unsupported.setdefault(gpu, []).append(field)
        for gpu, fields in unsupported.items():
            print(f"GPU {gpu} does not support: {', '.join(fields)}", file=sys.stderr)
        sys.stdout.write(generate_latest(registry_for(Collector(store, process_metrics=False))).decode())
        return 0 if snapshot.up else 1
    finally:
        await poller.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=5, help="polls to run (default 5)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls, and each poll's timeout")
    parser.add_argument("--processes", action="store_true", help="also read GPU memory per process")
    args = parser.parse_args()
    configure("debug", "console")
    sys.exit(asyncio.run(main(args.polls, args.interval, args.processes)))
