"""How long NATS polls take, and what a nats-server kill and restart leaves behind. Prints figures.

    .venv/bin/python bench/nats_poll.py [--polls 200] [--cycles 5]

Starts a real nats-server on a loopback port, responders built with nats-py, `nats.micro`
instances and, when ai-dynamo-runtime is installed, two Dynamo workers (tests/helpers/dynamo_worker.py).
Not a test: nothing is asserted, numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("DYN_LOG", "error")  # before anything imports Dynamo's runtime

import nats  # noqa: E402
from helpers.nats_server import NATSServer  # noqa: E402
from nats.micro import add_service  # noqa: E402

from exporter.config.loader import parse_config  # noqa: E402
from exporter.core.logs import configure  # noqa: E402
from exporter.runtime.scheduler import TargetPoller  # noqa: E402
from exporter.serve.store import Store  # noqa: E402
from exporter.sources import Shared  # noqa: E402
from exporter.sources.nats import NATSTarget  # noqa: E402

REPLY = {
    "worker_id": "w-1",
    "backend": "vllm",
    "metrics": {"gauges": {"kv_cache_usage_perc": 0.3, "active_requests": 5}, "counters": {"total_requests": 120}},
}


def targets(url: str, discovery: str) -> str:
    return f"""
defaults: {{interval: 5s, timeout: 2s, retries: 0}}
targets:
  - {{name: first-reply, type: nats, servers: ["{url}"], subject: nim.backend.runtime_stats}}
  - {{name: gather-3, type: nats, servers: ["{url}"], subject: nim.backend.runtime_stats, gather: true, gather_window: 100ms}}
  - {{name: micro-3, type: nats, servers: ["{url}"], protocol: micro, service: inference, gather_window: 100ms}}
  - {{name: dynamo-2, type: nats, servers: ["{url}"], protocol: dynamo, endpoint: demo.backend.runtime_stats,
     discovery: file, discovery_dir: "{discovery}", request_plane: nats, gather_window: 500ms}}
"""


async def start_backends(url: str, discovery: str) -> tuple[list, list]:
    clients: list = []
    workers: list[asyncio.subprocess.Process] = []

    async def quiet(exc: Exception) -> None:
        pass

    for worker in ("w-1", "w-2", "w-3"):
        client = await nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1, error_cb=quiet)
        body = json.dumps({**REPLY, "worker_id": worker}).encode()

        async def reply(msg, body=body):
            await msg.respond(body)

        await client.subscribe("nim.backend.runtime_stats", cb=reply)
        service = await add_service(client, name="inference", version="1.0.0")

        async def generate(request):
            await request.respond(b"ok")

        await service.add_endpoint(name="generate", handler=generate)
        clients.append(client)
    try:
        import dynamo.runtime  # noqa: F401
    except ImportError:
        print("ai-dynamo-runtime is not installed: no dynamo figures")
        return clients, workers
    env = {**os.environ, "NATS_SERVER": url, "DYN_FILE_KV": discovery, "DYN_LOG": "error"}
    for worker in ("w-1", "w-2"):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "tests" / "helpers" / "dynamo_worker.py"),
            "demo.backend.runtime_stats",
            worker,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert process.stdout is not None
        await asyncio.wait_for(process.stdout.readline(), 30)
        workers.append(process)
    return clients, workers


async def main(polls: int, cycles: int) -> None:
    configure("error", "console")
    folder = Path(tempfile.mkdtemp(prefix="nats-bench-"))
    discovery = folder / "discovery"
    discovery.mkdir()
    server = await NATSServer(folder).start()
    clients, workers = await start_backends(server.url, str(discovery))
    store, shared = Store(), Shared()
    configured = parse_config(targets(server.url, str(discovery))).targets
    nats_targets = [target for target in configured if isinstance(target, NATSTarget)]
    assert len(nats_targets) == len(configured)
    pollers = [TargetPoller(target, store, shared) for target in nats_targets if workers or target.protocol != "dynamo"]
    try:
        print(f"{'target':<12} {'polls':>5} {'median ms':>10} {'p99 ms':>8} {'samples':>8}")
        for poller in pollers:
            await poller.poll()  # connect, create Dynamo's runtime
            durations = []
            target = poller.target
            assert isinstance(target, NATSTarget)
            for _ in range(polls if target.protocol == "runtime_stats" and not target.gather else polls // 10):
                started = time.perf_counter()
                snapshot = await poller.poll()
                durations.append((time.perf_counter() - started) * 1000)
                assert snapshot.up, snapshot.last_error
            durations.sort()
            p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))]
            print(
                f"{poller.target.name:<12} {len(durations):>5} {statistics.median(durations):>10.2f} {p99:>8.2f} "
                f"{snapshot.sample_count:>8}"
            )

        tasks_before = len(asyncio.all_tasks())
        connections_before = await server.exporter_connections()
        print(
            f"\nbefore {cycles} kill/restart cycles: {tasks_before} asyncio tasks, "
            f"{connections_before} exporter connection(s) in /connz"
        )
        for cycle in range(cycles):
            await server.stop()
            down = await asyncio.gather(*(poller.poll() for poller in pollers))
            reasons = sorted({snapshot.last_reason for snapshot in down})
            await server.start()
            started = time.perf_counter()
            while not all(snapshot.up for snapshot in await asyncio.gather(*(poller.poll() for poller in pollers))):
                await asyncio.sleep(0.1)
            print(
                f"cycle {cycle + 1}: down with {reasons}; every target up again {time.perf_counter() - started:.2f}s "
                f"after the restart"
            )
        await asyncio.sleep(0.5)
        print(
            f"after: {len(asyncio.all_tasks())} asyncio tasks, {await server.exporter_connections()} exporter connection(s)"
        )
    finally:
        for poller in pollers:
            await poller.close()
        await shared.close()
        for client in clients:
            await client.close()
        for process in workers:
            process.kill()
            await process.wait()
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.polls, args.cycles))
