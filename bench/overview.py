"""/metrics scrape latency with and without ten /overview stream clients connected.

    .venv/bin/python bench/overview.py [--seconds 20] [--clients 10] [--targets 8] [--every 0.2]

The daemon runs in this process as `inference-exporter run` builds it (8 simulated vLLM backends with
traffic, each polled every second, plus 8 GPUs through the fake NVML host of tests/helpers/fake_nvml.py), so
that its CPU time is its own. A child process runs the backends, the scraper (GET /metrics every
`--every` seconds, timed to the last byte, Prometheus 3's headers: OpenMetrics, gzip) and the stream
clients (each reads /api/overview/stream and counts its messages). The runs alternate without, with,
with, without clients, so that a change in the machine's load weighs on both alike; the table pools
each kind. No assertions: figures depend on the machine, which may be shared (the load is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.support import free_port  # noqa: E402

HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,text/plain;version=1.0.0;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
}


# -- the child: backends, scraper, stream clients -------------------------------------------------------


def child_main(conn: Any, targets: int) -> None:
    asyncio.run(_child(conn, targets))


async def _child(conn: Any, targets: int) -> None:
    from aiohttp import web
    from helpers.simulated_vllm import SimulatedVLLM

    sims = [SimulatedVLLM(model=f"bench/model-{i}", seed=i) for i in range(targets)]
    app = web.Application()
    for index, sim in enumerate(sims):
        app.router.add_get(f"/vllm/{index}/metrics", sim.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    async def traffic() -> None:
        while True:
            for sim in sims:
                sim.step(sim.random.randint(2, 12), errors=int(sim.random.random() < 0.2))
            await asyncio.sleep(0.5)

    ticking = asyncio.create_task(traffic())
    conn.send({"base": f"http://127.0.0.1:{port}"})
    loop = asyncio.get_running_loop()
    while True:
        order = await loop.run_in_executor(None, conn.recv)
        if order is None:
            break
        conn.send(await run_phase(**order))
    ticking.cancel()
    await runner.cleanup()


async def run_phase(url: str, stream_url: str, seconds: float, every: float, clients: int) -> dict[str, Any]:
    import aiohttp

    messages = [0] * clients
    connected = asyncio.Event()
    ready = [False] * clients

    async def follow(index: int, session: aiohttp.ClientSession) -> None:
        async with session.get(stream_url) as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    messages[index] += 1
                    if not ready[index]:
                        ready[index] = True
                        if all(ready):
                            connected.set()

    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        followers = [asyncio.create_task(follow(i, session)) for i in range(clients)]
        if clients:
            await asyncio.wait_for(connected.wait(), 30)
            counted_from = list(messages)
        loop = asyncio.get_running_loop()
        started = next_at = loop.time()
        while loop.time() - started < seconds:
            began = time.perf_counter()
            try:
                async with session.get(url, headers=HEADERS) as response:
                    await response.read()
                    if response.status == 200:
                        latencies.append(time.perf_counter() - began)
                    else:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            next_at += every
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at, loop.time())
        elapsed = loop.time() - started
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    rates = [(messages[i] - counted_from[i]) / elapsed for i in range(clients)] if clients else []
    return {"latencies": latencies, "errors": errors, "message_rates": rates}


# -- the daemon, here --------------------------------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def main(args: argparse.Namespace) -> int:
    from helpers.fake_nvml import FakeNVML, eight_gpus

    import exporter.sources.nvml.source
    from exporter.config.loader import parse_config
    from exporter.core.logs import configure
    from exporter.runtime.daemon import Daemon

    configure("warning", "console")
    fake = FakeNVML(eight_gpus())
    exporter.sources.nvml.source.load_binding = lambda: fake
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=child_main, args=(theirs, args.targets), daemon=True)
    child.start()
    loop = asyncio.get_running_loop()
    base = (await loop.run_in_executor(None, ours.recv))["base"]
    targets = "".join(
        f"  - {{name: vllm-{i}, type: http, url: '{base}/vllm/{i}/metrics'}}\n" for i in range(args.targets)
    )
    config = parse_config(
        f"defaults: {{interval: 1s, timeout: 900ms}}\ntargets:\n{targets}  - {{name: gpus, type: nvml}}\n"
    )
    daemon = Daemon(config, config_path=None, listen=f"127.0.0.1:{free_port()}")
    reports: list[float] = []  # seconds each report the streams asked for took to make and encode
    encoded = daemon.overview.encoded

    def timed(window: float) -> bytes:
        began = time.perf_counter()
        try:
            return encoded(window)
        finally:
            reports.append(time.perf_counter() - began)

    daemon.overview.encoded = timed  # type: ignore[method-assign]
    await daemon.start()
    host, port = daemon.bound[0][:2]
    url, stream = f"http://{host}:{port}/metrics", f"http://{host}:{port}/api/overview/stream"
    pooled: dict[int, dict[str, list]] = {
        0: {"lat": [], "cpu": [], "rates": []},
        args.clients: {"lat": [], "cpu": [], "rates": []},
    }
    turns: list[tuple[int, float | None, float | None]] = []
    report_costs: list[tuple[int, int, float | None, float | None]] = []
    try:
        await asyncio.sleep(3)  # every target polled, windows filling
        for clients in (0, args.clients, args.clients, 0):
            reports.clear()
            cpu, wall = cpu_seconds(), time.monotonic()
            ours.send(
                {"url": url, "stream_url": stream, "seconds": args.seconds / 2, "every": args.every, "clients": clients}
            )
            result = await loop.run_in_executor(None, ours.recv)
            share = (cpu_seconds() - cpu) / (time.monotonic() - wall)
            pooled[clients]["lat"] += result["latencies"]
            pooled[clients]["cpu"].append(share)
            pooled[clients]["rates"] += result["message_rates"]
            turns.append((clients, percentile(result["latencies"], 0.5), percentile(result["latencies"], 0.99)))
            if clients:
                made = [took for took in reports if took > 50e-6]  # the rest were served from the second's cache
                report_costs.append((len(reports), len(made), percentile(made, 0.5), max(made, default=None)))
            if result["errors"]:
                print(f"note: {result['errors']} scrapes failed with {clients} clients")
    finally:
        ours.send(None)
        await daemon.close()
        child.join(10)
    load = os.getloadavg()
    print(
        f"/metrics with and without {args.clients} /api/overview/stream clients: {args.targets} simulated vLLM backends "
        f"with traffic + 8 GPUs (fake NVML), all polled every 1 s; /metrics every {args.every:g} s for {args.seconds:g} s "
        f"per kind (two turns each, interleaved); {os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print()
    print("| stream clients | scrapes | p50 | p90 | p99 | max | daemon CPU (one core) | messages/s per client |")
    print("|---|---|---|---|---|---|---|---|")
    for clients, data in pooled.items():
        lat = data["lat"]
        rates = data["rates"]
        points = [percentile(lat, share) for share in (0.5, 0.9, 0.99, 1.0)]  # all None where there is no scrape
        cells = [f"{point * 1000:.2f} ms" if point is not None else "–" for point in points]
        per_client = f"{min(rates):.2f}–{max(rates):.2f}" if rates else "–"
        cpu = sum(data["cpu"]) / len(data["cpu"]) * 100
        print(f"| {clients} | {len(lat)} | {' | '.join(cells)} | {cpu:.1f}% | {per_client} |")
    print()
    print(
        "each turn, in order (clients: p50 / p99): "
        + ", ".join(
            f"{clients}: {p50 * 1000:.2f} / {p99 * 1000:.2f} ms"
            for clients, p50, p99 in turns
            if p50 is not None and p99 is not None
        )
    )
    for asked, made_count, median, most in report_costs:
        if median is not None and most is not None:
            print(
                f"reports in a turn with clients: {asked} asked for, {made_count} made (the rest shared), "
                f"each made and encoded in {median * 1000:.2f} ms (median), {most * 1000:.2f} ms at most"
            )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per kind (split into two turns)")
    parser.add_argument("--clients", type=int, default=10, help="stream clients in the runs with clients")
    parser.add_argument("--targets", type=int, default=8, help="simulated vLLM backends")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between scrapes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
