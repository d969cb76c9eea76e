"""Soak: the daemon under every kind of trouble at once, for minutes; does anything it holds grow?

    .venv/bin/python bench/soak.py [--minutes 3] [--sample 10] [--scrapers 3] [--no-release] [--calm]

One `inference-exporter run` (a child process, as in production) polls, together:

- steady: 8 HTTP targets of 1,500 series at 1 s, whose polls are counted for schedule slips;
- churning: 2 HTTP targets of 1,000 series whose label values change every poll, at 2 s;
- failing-large: an endless body and a gzip bomb (each cut at the 16 MiB body_size_limit) at 2 s,
  a 50,000-line body that fails to parse and one over its sample_limit at 5 s;
- slow: one upstream that never answers (timeout 2 s) and one that trickles its body over 3 s;
- NATS-flooding (where `nats-server` is installed): 20 responders answering one gathering target
  at 2 s, and one responder answering a runtime_stats reply of 100,000 gauges (2.6 MB) at 1 s;

while 3 clients scrape /metrics back to back (Prometheus's headers: OpenMetrics, gzip) and the
config is reloaded (SIGHUP) every 15 s, alternating a target in and out and the NATS targets'
server URL (a new shared connection each time). Every `--sample` seconds the table gives the
daemon's RSS, CPU (share of one core), open files, threads, asyncio tasks, the share of the
steady targets' polls that slipped past their interval, /metrics p50/p99, and the longest pause
of the daemon's garbage collector (which stops every thread), and the blocks Python's allocator
holds (flat while RSS grows: the C heap; growing: Python objects kept). At the end: the
slope of RSS after warm-up (the first third, at least a minute), by least squares, in MB per
minute (goal: flat within noise), and RSS after the scrapes stopped for 25 s (memory given back).
`--no-release` runs the daemon without the arena cap and malloc_trim, and `--calm` with only the
steady and churning targets, to compare.

Upstreams, responders and scrapers run in this process and a child; the machine may be shared,
so its load average is printed too. No assertions: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import logging
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.support import free_port  # noqa: E402

STEADY, STEADY_SERIES, CHURN_SERIES = 8, 1500, 1000
SCRAPERS = 3
RELOAD_EVERY = 15.0
#: The daemon, with a task that writes, every second, how many asyncio tasks it has and the garbage
#: collector's pauses of the last minute (gc.callbacks), as JSON.
WRAPPER = """
import os
if os.environ.get("SOAK_SLOW"):
    exec(open(os.environ["SOAK_SLOW"]).read())
import asyncio, gc, json, sys, time
pauses, began = [], [0.0]
def timed(phase, info):
    if phase == "start":
        began[0] = time.monotonic()
    else:
        pauses.append((time.monotonic(), time.monotonic() - began[0], info["generation"]))
gc.callbacks.append(timed)
if sys.argv[2] == "no-release":
    import exporter.runtime.release as release
    release.limit_arenas = lambda *args: False
    release.HeapTrim.available = property(lambda self: False)
import exporter.runtime.daemon as daemon
start = daemon.Daemon.start
async def counted(self):
    await start(self)
    async def count():
        while True:
            now = time.monotonic()
            pauses[:] = [p for p in pauses if p[0] > now - 60]
            with open(sys.argv[1] + ".new", "w") as out:
                json.dump({"tasks": len(asyncio.all_tasks()), "now": now, "pauses": pauses, "blocks": sys.getallocatedblocks()}, out)
            import os
            os.replace(sys.argv[1] + ".new", sys.argv[1])
            await asyncio.sleep(1)
    self._bench_count = asyncio.create_task(count())
daemon.Daemon.start = counted
from exporter.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _lines(count: int, name: str = "soak_gauge", label: str = "i", tag: str = "") -> bytes:
    return "".join(f'{name}{{{label}="{tag}{i}"}} {i}\n' for i in range(count)).encode()


# -- the upstreams, in a child process --------------------------------------------------------


def upstreams(port: int, nats_url: str | None, ready) -> None:
    asyncio.run(_upstreams(port, nats_url, ready))


async def _upstreams(port: int, nats_url: str | None, ready) -> None:
    from aiohttp import web

    steady = b"# TYPE soak_gauge gauge\n" + _lines(STEADY_SERIES)
    bomb = gzip.compress(b"\n" * (64 * 1024 * 1024), 1)
    unparsable = _lines(50_000) + b"{{{ not exposition text\n"
    many = _lines(30_000)
    churns = [0]

    async def fixed(body: bytes, **headers) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4", **headers})

    async def churn(request):
        churns[0] += 1
        return await fixed(_lines(CHURN_SERIES, "soak_churn", "gen", f"{churns[0]}-"))

    async def endless(request):
        response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        await response.prepare(request)
        chunk = _lines(4000)
        with contextlib.suppress(ConnectionError):  # the daemon hangs up at its body_size_limit
            while True:
                await response.write(chunk)
        return response

    async def hang(request):
        await asyncio.sleep(3600)

    async def slow(request):
        response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        await response.prepare(request)
        for piece in range(0, len(steady), len(steady) // 10):
            await response.write(steady[piece : piece + len(steady) // 10])
            await asyncio.sleep(0.3)
        return response

    app = web.Application()
    app.router.add_get("/steady/{i}", lambda r: fixed(steady))
    app.router.add_get("/churn/{i}", churn)
    app.router.add_get("/endless", endless)
    app.router.add_get("/bomb", lambda r: fixed(bomb, **{"Content-Encoding": "gzip"}))
    app.router.add_get("/unparsable", lambda r: fixed(unparsable))
    app.router.add_get("/many", lambda r: fixed(many))
    app.router.add_get("/hang", hang)
    app.router.add_get("/slow", slow)
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    clients = []
    if nats_url:
        import nats

        async def quiet(exc):
            pass

        small = json.dumps({"worker_id": "w", "metrics": {"gauges": {f"g{i}": i for i in range(50)}}}).encode()
        huge = json.dumps(
            {"worker_id": "huge", "metrics": {"gauges": {f"gauge_{i}": i for i in range(100_000)}}}
        ).encode()
        for index in range(21):
            client = await nats.connect(nats_url, error_cb=quiet)
            clients.append(client)
            body = huge if index == 20 else small.replace(b'"w"', f'"w{index}"'.encode())

            async def answer(msg, body=body):
                await msg.respond(body)

            await client.subscribe("huge" if index == 20 else "flood", cb=answer)
            await client.flush()
    ready.set()
    await asyncio.Event().wait()


# -- the daemon's config ----------------------------------------------------------------------


def config(listen: str, up: str, nats_url: str | None, turn: int, calm: bool = False) -> str:
    lines = [f"listen: {listen}", "defaults: {interval: 1s, timeout: 800ms, retries: 1, backoff: 50ms}", "targets:"]
    lines += [f"  - {{name: steady-{i}, type: http, url: '{up}/steady/{i}'}}" for i in range(STEADY)]
    lines += [f"  - {{name: churn-{i}, type: http, url: '{up}/churn/{i}', interval: 2s}}" for i in range(2 + turn % 2)]
    if calm:
        return "\n".join(lines) + "\n"
    lines += [
        f"  - {{name: endless, type: http, url: '{up}/endless', interval: 2s, timeout: 1500ms}}",
        f"  - {{name: bomb, type: http, url: '{up}/bomb', interval: 2s, timeout: 1500ms}}",
        f"  - {{name: unparsable, type: http, url: '{up}/unparsable', interval: 5s, timeout: 4s}}",
        f"  - {{name: too-many, type: http, url: '{up}/many', interval: 5s, timeout: 4s, sample_limit: 1000}}",
        f"  - {{name: hang, type: http, url: '{up}/hang', interval: 5s, timeout: 2s}}",
        f"  - {{name: slow, type: http, url: '{up}/slow', interval: 5s, timeout: 4s}}",
    ]
    if nats_url:
        server = nats_url if turn % 2 == 0 else nats_url.replace("127.0.0.1", "localhost")
        lines += [
            f"  - {{name: nats-flood, type: nats, servers: ['{server}'], subject: flood, gather: true, interval: 2s, timeout: 1500ms, gather_window: 1s}}",
            f"  - {{name: nats-huge, type: nats, servers: ['{server}'], subject: huge}}",
        ]
    skip = [name for name in os.environ.get("SOAK_SKIP", "").split(",") if name]
    return "\n".join(line for line in lines if not any(f"name: {name}," in line for name in skip)) + "\n"


# -- measuring --------------------------------------------------------------------------------


class Process:
    """The daemon's figures from /proc."""

    def __init__(self, pid: int):
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.cpu_at = (time.monotonic(), self.cpu())

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / self.ticks

    def rss_mb(self) -> float:
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * self.page / 2**20

    def cpu_share(self) -> float:
        now, cpu = time.monotonic(), self.cpu()
        (then, before), self.cpu_at = self.cpu_at, (now, cpu)
        return (cpu - before) / (now - then)

    def files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return 0


async def scrape(url: str, latencies: list[tuple[float, float]], stop: asyncio.Event) -> None:
    import aiohttp

    headers = {
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        "Accept-Encoding": "gzip",
    }
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                latencies.append((time.monotonic(), time.monotonic() - started))
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.05)


async def steady_polls(api: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(api) as response:
        targets = await response.json()
    return sum(t["polls"] for t in targets if t["name"].startswith("steady-"))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per minute."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between rows (default 10)")
    parser.add_argument("--no-release", action="store_true", help="no arena cap and no malloc_trim, to compare")
    parser.add_argument("--calm", action="store_true", help="only the steady and churning targets, to compare")
    parser.add_argument(
        "--scrapers", type=int, default=SCRAPERS, help=f"clients scraping back to back (default {SCRAPERS})"
    )
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    nats_process = None
    nats_url = None
    binary = shutil.which("nats-server")
    if binary:
        nats_port = free_port()
        (folder / "nats.conf").write_text(f"listen: 127.0.0.1:{nats_port}\nmax_payload: 8MB\n")
        nats_process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(folder / "nats.conf"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        nats_url = f"nats://127.0.0.1:{nats_port}"
        await asyncio.sleep(0.5)
    up_port, port = free_port(), free_port()
    ready = multiprocessing.Event()
    child = multiprocessing.Process(target=upstreams, args=(up_port, nats_url, ready), daemon=True)
    child.start()
    ready.wait(60)
    listen, up = f"127.0.0.1:{port}", f"http://127.0.0.1:{up_port}"
    path, tasks_file = folder / "config.yaml", folder / "tasks"
    path.write_text(config(listen, up, nats_url, 0, args.calm))
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRAPPER,
        str(tasks_file),
        "no-release" if args.no_release else "release",
        "run",
        "--config",
        str(path),
        "--log-format",
        "json",
        "--log-level",
        "error",
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=open(folder / "daemon.log", "wb"),  # noqa: SIM115 (open for the daemon's whole life)
    )
    proc = Process(daemon.pid)
    await asyncio.sleep(3)
    latencies: list[tuple[float, float]] = []
    stop = asyncio.Event()
    scrapers = [asyncio.create_task(scrape(f"http://{listen}/metrics", latencies, stop)) for _ in range(args.scrapers)]

    async def reloads() -> None:
        turn = 0
        while True:
            await asyncio.sleep(RELOAD_EVERY)
            turn += 1
            path.write_text(config(listen, up, nats_url, turn, args.calm))
            daemon.send_signal(signal.SIGHUP)

    reloader = asyncio.create_task(reloads())
    print(
        f"soak: {args.minutes:g} min, a row every {args.sample:g} s; NATS {'on' if nats_url else 'off (no nats-server)'}; "
        f"release {'off' if args.no_release else 'on'}{'; calm: steady and churning targets only' if args.calm else ''}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    header = (
        f"{'t s':>5} {'RSS MB':>7} {'CPU %':>6} {'files':>5} {'thr':>4} {'tasks':>5} {'slips %':>7} {'scrapes':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'GC max ms':>9} {'py blocks k':>11}"
    )
    print(header)
    started = time.monotonic()
    polls_before, rows = await steady_polls(f"http://{listen}/api/targets"), []
    window_start = time.monotonic()
    while time.monotonic() - started < args.minutes * 60:
        await asyncio.sleep(args.sample)
        now = time.monotonic()
        polls = await steady_polls(f"http://{listen}/api/targets")
        expected = STEADY * (now - window_start)
        slips = max(0.0, 100 * (1 - (polls - polls_before) / expected))
        polls_before, window_start = polls, now
        window = [seconds for at, seconds in latencies if at > now - args.sample]
        counted: dict[str, Any] = (
            json.loads(tasks_file.read_text()) if tasks_file.exists() else {"tasks": 0, "now": 0, "pauses": []}
        )
        gc_max = max((p[1] for p in counted["pauses"] if p[0] > counted["now"] - args.sample), default=0.0)
        row = (
            now - started,
            proc.rss_mb(),
            100 * proc.cpu_share(),
            proc.files(),
            proc.threads(),
            counted["tasks"],
            slips,
            len(window),
            1000 * percentile(window, 0.5),
            1000 * percentile(window, 0.99),
            1000 * gc_max,
            counted.get("blocks", 0) // 1000,
        )
        rows.append(row)
        print(
            f"{row[0]:5.0f} {row[1]:7.1f} {row[2]:6.1f} {row[3]:5d} {row[4]:4d} {row[5]:5d} {row[6]:7.1f} {row[7]:7d} "
            f"{row[8]:7.1f} {row[9]:7.1f} {row[10]:9.1f} {row[11]:11d}",
            flush=True,
        )
    stop.set()
    reloader.cancel()
    await asyncio.gather(*scrapers, reloader, return_exceptions=True)
    loaded = proc.rss_mb()
    await asyncio.sleep(25)
    idle = proc.rss_mb()
    warm = max(60.0, args.minutes * 60 / 3)
    after = [(row[0], row[1]) for row in rows if row[0] >= warm]
    all_latencies = [seconds for _, seconds in latencies]
    print()
    print(
        f"RSS slope after warm-up ({warm:.0f} s on): {slope(after):+.2f} MB/min over {len(after)} rows; "
        f"RSS range then {min(r[1] for r in after):.1f}-{max(r[1] for r in after):.1f} MB"
        if len(after) > 1
        else "too short for a slope"
    )
    print(f"RSS at the end of the load {loaded:.1f} MB, after 25 s without scrapes {idle:.1f} MB")
    print(
        f"/metrics over the run: {len(all_latencies)} scrapes, p50 {1000 * percentile(all_latencies, 0.5):.1f} ms, "
        f"p99 {1000 * percentile(all_latencies, 0.99):.1f} ms; mean CPU {statistics.fmean(r[2] for r in rows):.1f}% of one core; "
        f"mean slips {statistics.fmean(r[6] for r in rows):.1f}%; load average {os.getloadavg()[0]:.1f}"
    )
    daemon.send_signal(signal.SIGTERM)
    await daemon.wait()
    child.terminate()
    if nats_process is not None:
        nats_process.kill()
        await nats_process.wait()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
