"""Scenarios 2-4 of the performance issue: a GPU host, an aggregator of 200 backends, a hanging target.

    .venv/bin/python bench/scenarios.py [--seconds 60] [--only gpu-host,aggregator,isolation]
                                        [--json FILE] [--scrape-headers prometheus|plain] [--profile DIR]

The daemon is `inference-exporter run` in a process of its own (bench/daemon_process.py: the
CLI's main, with the fake NVML host where a scenario has GPUs), started afresh for each run and
listening on a loopback port, so that its CPU time (/proc/PID/stat, every thread) and its peak
RSS (VmHWM: since it started, its imports included) are its own and nothing of the bench's.
Everything else runs in other processes whose CPU is not counted:
upstream HTTP servers serving the real captures, or the simulated backends where those are absent (pre-rendered and pre-gzipped, answered gzipped
when asked, as prometheus_client does; each answer's values differ from the last one's, as a live
server's do, so nothing can be reused from a poll whose body is byte for byte the same), a nats-server with nats-py responders, and the scraper
that GETs /metrics and times each response to its last byte. CPU is a share of one core: CPU
seconds over wall seconds of the measured window, which starts once every target has been
polled and one interval of scraping has warmed the daemon up (a note gives the slowest warm-up
scrape); a note says when the daemon fell behind its polls. Each scenario is measured beside a
baseline run in the same invocation (the same daemon with no targets, or without the hanging
target), and the difference is printed.

- gpu-host: 8 vLLM V1 HTTP targets, 8 GPUs through the fake NVML host (tests/helpers/fake_nvml.py), and
  2 NATS runtime_stats targets, all at 1 s; scraped every 5 s. Goals: <= 2% of one core, <= 55 MB peak RSS.
  Without `type: nats` in this checkout the NATS targets are left out, and the table says so.
- aggregator: 200 HTTP targets of ~1,000 samples each at 5 s (the captures or simulated bodies in turn, repeated with
  new `replica` label values); scraped every second. Goals: <= 50% of one core, p99 < 100 ms.
- isolation: 8 vLLM targets at 1 s with and without one upstream that never answers (5 s
  interval, 4 s timeout); scraped every 0.2 s, in four turns of half the time each (without,
  with, with, without) so that a change in the machine's load weighs on both alike. Goal: the
  hanging target adds nothing measurable to /metrics latency.

The scrape sends Prometheus 3's default headers (OpenMetrics preferred, gzip); `--scrape-headers
plain` asks for text 0.0.4 uncompressed, as curl would. Scenarios run in the order above. The
bench reads the daemon's /api/targets before and after the window (polls, failures, state),
never during it. No assertions: figures depend on the machine, and this one may be shared, so the load
average is printed too. `--profile DIR` writes a profile of each measured run (the daemon's main
thread, turned on and off by signals):
pyinstrument's sampling profile where it is installed (`pip install '.[bench]'`), else cProfile's,
which slows the daemon so that its figures are not the ones to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import multiprocessing
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.sources import TargetConfig

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.support import NIM_REPLY, bench_bodies, bench_vllm_body, free_port, with_values_moved  # noqa: E402

SCENARIOS = ("gpu-host", "aggregator", "isolation")
#: What Prometheus 3 sends by default (scrape_protocols: OpenMetrics 1.0.0 and 0.0.1, then text 1.0.0 and 0.0.4).
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/3.0.0",
}
PLAIN_HEADERS = {"Accept": "text/plain", "Accept-Encoding": "identity", "User-Agent": "bench"}


# -- upstream bodies (child process) ------------------------------------------------------------


def fixture_families(text: str) -> list[tuple[list[str], list[str]]]:
    """Exposition text -> [(HELP/TYPE lines, sample lines)] per family, in order."""
    families: list[tuple[list[str], list[str]]] = []
    current: tuple[str | None, list[str], list[str]] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("# EOF"):
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            name = parts[2] if len(parts) > 2 and parts[1] in ("HELP", "TYPE", "UNIT") else None
            if current is None or (name is not None and name != current[0]) or current[2]:
                current = (name, [], [])
                families.append((current[1], current[2]))
            current[1].append(line)
        else:
            if current is None:
                current = (None, [], [])
                families.append((current[1], current[2]))
            current[2].append(line)
    return families


def with_label(line: str, label: str, value: str) -> str:
    """A sample line with one more label, first in its label set."""
    pair = f'{label}="{value}"'
    brace, space = line.find("{"), line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        rest = line[brace + 1 :]
        return f"{line[: brace + 1]}{pair}{'' if rest.startswith('}') else ','}{rest}"
    return f"{line[:space]}{{{pair}}}{line[space:]}"


def scaled_body(text: str, samples: int, tag: str) -> tuple[bytes, int]:
    """The fixture repeated with a new `replica` label value per copy until about `samples` samples, families whole.

    Full copies first; the last copy takes whole families while they fit. A last line cut off
    before its value (one fixture is an excerpt that ends so) is left out. Returns (body, samples).
    """
    head, _, last = text.rpartition("\n")
    if last and " " not in last.strip():  # cut off before its value: a copy of it would sit mid-body
        text = head
    families = fixture_families(text)
    per_copy = sum(len(lines) for _, lines in families)
    copies, left = divmod(samples, per_copy)
    out: list[str] = []
    total = 0
    for header, lines in families:
        extra = len(lines) <= left
        if extra:
            left -= len(lines)
        n = copies + (1 if extra else 0)
        if not n or not lines:
            continue
        out += header
        for copy in range(n):
            out += [with_label(line, "replica", f"{tag}-{copy}") for line in lines]
        total += n * len(lines)
    return ("\n".join(out) + "\n").encode(), total


def upstream_bodies(spec: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, int]]:
    """Path -> body for every HTTP upstream the scenario needs, and path -> samples."""
    bodies: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    _, vllm = bench_vllm_body()
    for index in range(spec.get("vllm", 0)):
        bodies[f"/vllm/{index}/metrics"] = vllm
        counts[f"/vllm/{index}/metrics"] = sum(len(lines) for _, lines in fixture_families(vllm.decode()))
    payloads = bench_bodies()
    for index in range(spec.get("backends", 0)):
        _, payload = payloads[index % len(payloads)]
        path = f"/backend/{index}/metrics"
        bodies[path], counts[path] = scaled_body(payload.decode(), spec["samples"], f"b{index}")
    return bodies, counts


# -- child process: upstreams, NATS responders, scraper -----------------------------------------


def child_main(conn: Any, spec: dict[str, Any]) -> None:
    """Entry point of the child process (multiprocessing, spawn)."""
    asyncio.run(_child(conn, spec))


def _interval(target: TargetConfig) -> float:
    assert target.interval is not None  # the config resolves it for every target
    return target.interval


async def _receive(conn: Any) -> Any:
    """The next message on a multiprocessing pipe, waited for without a thread or a busy loop."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


#: Versions of each upstream body served in turn: the same series, other values.
VARIANTS = 4


async def _child(conn: Any, spec: dict[str, Any]) -> None:
    from aiohttp import web

    bodies, counts = upstream_bodies(spec)
    variants = {path: [with_values_moved(body, step) for step in range(VARIANTS)] for path, body in bodies.items()}
    zipped = {path: [gzip.compress(body, 6) for body in versions] for path, versions in variants.items()}
    answered: dict[str, int] = {}
    never = asyncio.Event()

    async def serve(request: web.Request) -> web.Response:
        path = request.path
        if path == "/hang/metrics":
            await never.wait()  # accepts the request and never answers
        if path not in bodies:
            raise web.HTTPNotFound()
        turn = answered[path] = (answered.get(path, -1) + 1) % VARIANTS
        headers = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=zipped[path][turn], headers={**headers, "Content-Encoding": "gzip"})
        return web.Response(body=variants[path][turn], headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    nats = await NATSResponders.start(spec.get("nats", 0)) if spec.get("nats") else None
    conn.send({"http": f"http://127.0.0.1:{port}", "nats": nats.url if nats else None, "samples": counts})
    try:
        while True:
            message = await _receive(conn)
            if message.get("stop"):
                break
            conn.send(await scrape_for(message["url"], message["seconds"], message["every"], message["headers"]))
    finally:
        never.set()
        if nats is not None:
            await nats.stop()
        await runner.cleanup()


class NATSResponders:
    """A nats-server on a loopback port, and one nats-py client answering each runtime_stats subject."""

    def __init__(self, process: asyncio.subprocess.Process, url: str, clients: list):
        self.process, self.url, self.clients = process, url, clients

    @classmethod
    async def start(cls, count: int) -> NATSResponders:
        import shutil

        import nats

        binary = shutil.which("nats-server")
        if binary is None:
            raise SystemExit("nats-server is not installed (Debian: apt-get install nats-server)")
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        url = f"nats://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline or process.returncode is not None:
                    raise SystemExit(f"nats-server did not start on port {port}") from None
                await asyncio.sleep(0.05)
        clients = []
        for index in range(count):
            client = await nats.connect(url)
            counter = {"requests": 0}

            async def reply(msg, worker=f"w-{index}", counter=counter):
                counter["requests"] += 1
                body = {**NIM_REPLY, "worker_id": worker, "ts": int(time.time())}
                body["metrics"] = {
                    "gauges": {"kv_cache_usage_perc": 0.3, "active_requests": counter["requests"] % 7},
                    "counters": {"total_requests": 120 + counter["requests"]},
                }
                await msg.respond(json.dumps(body).encode())

            await client.subscribe(nats_subject(index), cb=reply)
            await client.flush()
            clients.append(client)
        return cls(process, url, clients)

    async def stop(self) -> None:
        for client in self.clients:
            await client.close()
        self.process.kill()
        await self.process.wait()


def nats_subject(index: int) -> str:
    return f"bench.nim.{index}.runtime_stats"


async def scrape_for(url: str, seconds: float, every: float, headers: dict[str, str]) -> dict[str, Any]:
    """GET url every `every` seconds for `seconds`; each response timed to its last byte, left compressed."""
    import aiohttp

    latencies: list[float] = []
    sizes: list[int] = []
    errors: list[str] = []
    last, last_headers = b"", {}
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        started = next_at = loop.time()
        while loop.time() - started < seconds:
            began = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                    took = time.perf_counter() - began
                    if response.status == 200:
                        latencies.append(took)
                        sizes.append(len(body))
                        last, last_headers = body, dict(response.headers)
                    else:
                        errors.append(f"HTTP {response.status}")
            except aiohttp.ClientError as exc:
                errors.append(repr(exc))
            next_at += every
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at, loop.time())  # after an overrun the next scrape starts at once
    text = gzip.decompress(last) if last_headers.get("Content-Encoding") == "gzip" else last
    series = sum(1 for line in text.split(b"\n") if line and not line.startswith(b"#"))
    return {
        "latencies": latencies,
        "sizes": sizes,
        "errors": errors[:5],
        "error_count": len(errors),
        "series": series,
        "content_type": last_headers.get("Content-Type", ""),
        "content_encoding": last_headers.get("Content-Encoding", ""),
        "uncompressed": len(text),
    }


class Upstreams:
    """The child process, driven over a pipe."""

    def __init__(self, spec: dict[str, Any]):
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=child_main, args=(child_conn, spec), name="bench upstreams", daemon=True)
        self.info: dict[str, Any] = {}

    async def start(self) -> Upstreams:
        self.process.start()
        self.info = await self._answer()
        return self

    async def scrape(self, url: str, seconds: float, every: float, headers: dict[str, str]) -> dict[str, Any]:
        self.conn.send({"url": url, "seconds": seconds, "every": every, "headers": headers})
        return await self._answer()

    async def _answer(self) -> Any:
        try:
            return await _receive(self.conn)
        except EOFError:
            self.process.join(5)
            raise SystemExit(
                f"the upstreams process ended (exit code {self.process.exitcode}); its traceback is above"
            ) from None

    def stop(self) -> None:
        if self.process.is_alive():
            self.conn.send({"stop": True})
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# -- the daemon (a process of its own) ----------------------------------------------------------


def compiled(checkout: Path | None) -> None:
    """Byte-compile the daemon's exporter package (and the fake NVML host) into __pycache__, as installing
    the package does: a daemon that compiles its modules from source at import (PYTHONDONTWRITEBYTECODE,
    as in a development shell) peaks ~2 MB higher from the compiler's work alone."""
    import compileall

    for folder in ((checkout or REPO) / "exporter", REPO / "tests" / "helpers"):
        compileall.compile_dir(folder, quiet=1)


def proc_figures(pid: int) -> dict[str, float]:
    """A process's CPU seconds (every thread, /proc/PID/stat), VmHWM (peak RSS since it started) and VmRSS, in bytes."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {"cpu": (int(fields[11]) + int(fields[12])) / ticks}  # utime, stime
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) * 1024
    return found


class DaemonProcess:
    """`inference-exporter run` on a config, in a process of its own (bench/daemon_process.py), read from outside."""

    #: What the process runs (a probe may put a wrapper of its own in its place).
    program = REPO / "bench" / "daemon_process.py"

    #: Another checkout whose exporter package the daemon runs (--checkout), or None for this one.
    checkout: Path | None = None

    def __init__(self, config_text: str, *, fake_nvml: bool, profile: Path | None, workdir: Path):
        self.config = workdir / "config.yaml"
        self.config.write_text(config_text)
        self.log = workdir / "daemon.log"
        self.listen = f"127.0.0.1:{free_port()}"
        self.fake_nvml, self.profile = fake_nvml, profile
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> DaemonProcess:
        ours = [
            *(["--fake-nvml"] if self.fake_nvml else []),
            *(["--profile", str(self.profile)] if self.profile else []),
        ]
        command = [sys.executable, str(self.program), *ours, "--"]
        command += ["run", "--config", str(self.config), "--listen", self.listen, "--log-level", "error"]
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while await self.targets() is None:
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start; its log:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.1)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def targets(self) -> list[dict[str, Any]] | None:
        """/api/targets, or None while the daemon does not answer."""
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://{self.listen}/api/targets") as response:
                    return await response.json() if response.status == 200 else None
        except aiohttp.ClientError:
            return None

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@dataclass
class RunResult:
    label: str
    targets: int
    seconds: float
    cpu_seconds: float
    peak_rss: int
    rss_end: int
    targets_up: int
    store_samples: int
    polls: int
    #: Polls the targets' intervals call for in the window; fewer ran when the daemon fell behind.
    polls_due: float
    failed_polls: int
    scrape_errors: int
    series: int
    #: Seconds from sending each scrape to its last byte.
    latencies: list[float]
    bytes_per_scrape: float
    uncompressed: int
    content: str
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.seconds

    @property
    def scrapes(self) -> int:
        return len(self.latencies)

    @property
    def p50(self) -> float | None:
        return percentile(self.latencies, 0.5)

    @property
    def p99(self) -> float | None:
        return percentile(self.latencies, 0.99)

    @property
    def max(self) -> float | None:
        return max(self.latencies, default=None)

    def figures(self) -> dict[str, Any]:
        """Everything, for --json."""
        derived = {name: getattr(self, name) for name in ("cpu_share", "scrapes", "p50", "p99", "max")}
        return {**asdict(self), **derived}


def pooled(label: str, runs: list[RunResult]) -> RunResult:
    """Runs of one condition taken in turns with another's, as one: sums, the last state, every latency."""
    seconds = sum(run.seconds for run in runs)
    scrapes = sum(run.scrapes for run in runs)
    notes = [note for run in runs for note in run.notes]
    notes.append("p99 per turn: " + ", ".join(ms(run.p99) + " ms" for run in runs))
    last = runs[-1]
    return RunResult(
        label=label,
        targets=last.targets,
        seconds=seconds,
        cpu_seconds=sum(run.cpu_seconds for run in runs),
        peak_rss=max(run.peak_rss for run in runs),
        rss_end=last.rss_end,
        targets_up=last.targets_up,
        store_samples=last.store_samples,
        polls=sum(run.polls for run in runs),
        polls_due=sum(run.polls_due for run in runs),
        failed_polls=sum(run.failed_polls for run in runs),
        scrape_errors=sum(run.scrape_errors for run in runs),
        series=last.series,
        latencies=[x for run in runs for x in run.latencies],
        bytes_per_scrape=sum(run.bytes_per_scrape * run.scrapes for run in runs) / max(1, scrapes),
        uncompressed=last.uncompressed,
        content=last.content,
        notes=notes,
    )


def percentile(values: list[float], share: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def measure(
    label: str,
    config_text: str,
    upstreams: Upstreams,
    *,
    seconds: float,
    every: float,
    headers: dict[str, str],
    wait_for: set[str] | None = None,
    profile: Path | None = None,
    fake_nvml: bool = False,
) -> RunResult:
    """Start a daemon on `config_text`, wait until `wait_for` targets are up, measure `seconds` of it being scraped."""
    import signal
    import tempfile

    from exporter.config.loader import parse_config

    config = parse_config(config_text, "<bench>")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as workdir:
        daemon = await DaemonProcess(config_text, fake_nvml=fake_nvml, profile=profile, workdir=Path(workdir)).start()
        try:
            listen = daemon.listen
            wanted = {t.name for t in config.targets} if wait_for is None else wait_for
            longest = max((_interval(t) for t in config.targets), default=0.0)
            deadline = time.monotonic() + longest + 15
            while time.monotonic() < deadline:
                states = {t["name"]: t["state"] for t in await daemon.targets() or []}
                if all(states.get(name) == "up" for name in wanted):
                    break
                await asyncio.sleep(0.2)
            else:
                down = sorted(name for name in wanted if states.get(name) != "up")
                notes.append(f"not up when measuring began: {', '.join(down[:5])}{' ...' if len(down) > 5 else ''}")
            if config.targets:
                # Warm-up, not measured: scraping for one interval, as Prometheus has been doing before any
                # window one would look at. The first gzip scrapes deflate every target's text themselves,
                # until each target's poller sees it scraped and deflates its next poll (exporter.pipeline.exposition).
                warm = await upstreams.scrape(f"http://{listen}/metrics", longest, every, headers)
                if warm["latencies"]:
                    notes.append(
                        f"warm-up (one interval of scrapes, not measured): {len(warm['latencies'])} scrapes, "
                        f"slowest {ms(max(warm['latencies']))} ms"
                    )
            before = {t["name"]: (t["polls"], sum(t["errors"].values())) for t in await daemon.targets() or []}
            if profile is not None:
                daemon.signal(signal.SIGUSR1)
            cpu0, wall0 = proc_figures(daemon.pid)["cpu"], time.perf_counter()
            scraped = await upstreams.scrape(f"http://{listen}/metrics", seconds, every, headers)
            figures, wall1 = proc_figures(daemon.pid), time.perf_counter()
            if profile is not None:
                daemon.signal(signal.SIGUSR2)
            states_end = await daemon.targets() or []
        finally:
            await daemon.stop()
        if profile is not None:
            written = [line for line in daemon.log.read_text().splitlines() if line.startswith("profile: ")]
            notes += written or [f"no profile written; the daemon's log: {daemon.log.read_text()[-500:]}"]
    if len(scraped["latencies"]) >= 10:
        # Where in the window the slowest scrapes fell: early ones point at start-up work spilling over.
        slowest = sorted(enumerate(scraped["latencies"], 1), key=lambda pair: -pair[1])[:3]
        notes.append(
            "slowest scrapes: " + ", ".join(f"#{n} of {len(scraped['latencies'])} {ms(took)} ms" for n, took in slowest)
        )
    due = sum((wall1 - wall0) / t["interval_seconds"] for t in states_end)
    polls = sum(t["polls"] - before.get(t["name"], (0, 0))[0] for t in states_end)
    failed = sum(sum(t["errors"].values()) - before.get(t["name"], (0, 0))[1] for t in states_end)
    if scraped["error_count"]:
        notes.append(f"{scraped['error_count']} scrapes failed: {'; '.join(scraped['errors'])}")
    if polls < 0.9 * due:
        notes.append(
            f"the daemon fell behind: {polls} polls ran of {due:.0f} due (its event loop was saturated, "
            "so the CPU share is a floor on what this load needs)"
        )
    return RunResult(
        label=label,
        targets=len(config.targets),
        seconds=wall1 - wall0,
        cpu_seconds=figures["cpu"] - cpu0,
        peak_rss=int(figures.get("VmHWM", 0)),
        rss_end=int(figures.get("VmRSS", 0)),
        targets_up=sum(1 for t in states_end if t["state"] == "up"),
        store_samples=sum(t["samples"] for t in states_end),
        polls=polls,
        polls_due=due,
        failed_polls=failed,
        scrape_errors=scraped["error_count"],
        series=scraped["series"],
        latencies=scraped["latencies"],
        bytes_per_scrape=sum(scraped["sizes"]) / max(1, len(scraped["sizes"])),
        uncompressed=scraped["uncompressed"],
        content=f"{scraped['content_type'].split(';')[0]}{', ' + scraped['content_encoding'] if scraped['content_encoding'] else ''}",
        notes=notes,
    )


def config_yaml(targets: list[dict[str, Any]], interval: str) -> str:
    """A config file's text (JSON is YAML)."""
    return json.dumps({"defaults": {"interval": interval}, "targets": targets}, indent=1)


def http_targets(base: str, paths: list[str], name: str) -> list[dict[str, Any]]:
    return [{"name": f"{name}-{i:03d}", "type": "http", "url": base + path} for i, path in enumerate(paths)]


def nats_available() -> bool:
    from exporter.sources import KINDS

    return "nats" in KINDS


# -- scenarios ----------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    title: str
    runs: list[RunResult]
    goals: list[str]
    notes: list[str] = field(default_factory=list)


async def gpu_host(args: argparse.Namespace) -> ScenarioResult:
    with_nats = nats_available()
    notes = []
    if not with_nats:
        notes.append(
            "NATS targets left out: this checkout has no `type: nats` (exporter/sources/nats/, branch nats); "
            "the responders are ready for when it is merged"
        )
    upstreams = await Upstreams({"vllm": 8, "nats": 2 if with_nats else 0}).start()
    try:
        info = upstreams.info
        targets = http_targets(info["http"], [f"/vllm/{i}/metrics" for i in range(8)], "vllm")
        targets.append({"name": "gpus", "type": "nvml"})
        if with_nats:
            targets += [
                {
                    "name": f"nim-{i}",
                    "type": "nats",
                    "servers": [info["nats"]],
                    "protocol": "runtime_stats",
                    "subject": nats_subject(i),
                }
                for i in range(2)
            ]
        common = {"seconds": args.seconds, "every": 5.0, "headers": args.headers}
        idle = await measure("idle daemon (no targets)", config_yaml([], "1s"), upstreams, **common)
        loaded = await measure(
            "8 vLLM + 8 GPUs" + (" + 2 NATS" if with_nats else ""),
            config_yaml(targets, "1s"),
            upstreams,
            profile=args.profile / "gpu-host.prof" if args.profile else None,
            fake_nvml=True,  # the daemon's NVML source reads the fake host (bench/daemon_process.py)
            **common,
        )
    finally:
        upstreams.stop()
    samples = next(iter(info["samples"].values()))
    title = (
        f"GPU host: 8 vLLM V1 HTTP targets ({samples} samples each), 8 GPUs (fake NVML)"
        f"{', 2 NATS runtime_stats targets' if with_nats else ''}, all at 1 s; /metrics every 5 s"
    )
    goals = [
        goal("CPU", loaded.cpu_share * 100, 2.0, "%", "of one core"),
        goal("peak RSS", loaded.peak_rss / 1e6, 55.0, " MB", ""),
    ]
    return ScenarioResult("gpu-host", title, [idle, loaded], goals, notes)


async def aggregator(args: argparse.Namespace) -> ScenarioResult:
    count, samples = 200, 1000
    upstreams = await Upstreams({"backends": count, "samples": samples}).start()
    try:
        info = upstreams.info
        paths = sorted(info["samples"], key=lambda p: int(p.split("/")[2]))
        targets = http_targets(info["http"], paths, "backend")
        common = {"seconds": args.seconds, "every": 1.0, "headers": args.headers}
        idle = await measure("idle daemon (no targets)", config_yaml([], "5s"), upstreams, **common)
        loaded = await measure(
            f"{count} targets x ~{samples} samples",
            config_yaml(targets, "5s"),
            upstreams,
            profile=args.profile / "aggregator.prof" if args.profile else None,
            **common,
        )
    finally:
        upstreams.stop()
    upstream_total = sum(info["samples"].values())
    title = (
        f"Aggregator: {count} HTTP targets at 5 s, {upstream_total:,} upstream samples in all (the {len(bench_bodies())} "
        f"payloads in turn, each repeated with new replica labels to ~{samples}); /metrics every 1 s"
    )
    goals = [
        goal("CPU", loaded.cpu_share * 100, 50.0, "%", "of one core"),
        goal("/metrics p99", (loaded.p99 or math.nan) * 1000, 100.0, " ms", f"with {loaded.series:,} series served"),
    ]
    return ScenarioResult("aggregator", title, [idle, loaded], goals)


async def isolation(args: argparse.Namespace) -> ScenarioResult:
    upstreams = await Upstreams({"vllm": 8}).start()
    try:
        info = upstreams.info
        targets = http_targets(info["http"], [f"/vllm/{i}/metrics" for i in range(8)], "vllm")
        hanging = {
            "name": "hanging",
            "type": "http",
            "url": info["http"] + "/hang/metrics",
            "interval": "5s",
            "timeout": "4s",
        }
        common = {
            "seconds": args.seconds / 2,
            "every": 0.2,
            "headers": args.headers,
            "wait_for": {t["name"] for t in targets},
        }
        turns: dict[bool, list[RunResult]] = {False: [], True: []}
        for hang in (False, True, True, False):  # ABBA: a drift in the machine's load weighs on both alike
            config = config_yaml([*targets, hanging] if hang else targets, "1s")
            profile = args.profile / f"isolation-{len(turns[hang])}.prof" if args.profile and hang else None
            turns[hang].append(await measure("", config, upstreams, profile=profile, **common))
    finally:
        upstreams.stop()
    without = pooled("8 vLLM, none hanging", turns[False])
    with_hang = pooled("8 vLLM + 1 hanging (5 s, timeout 4 s)", turns[True])
    title = (
        "Isolation: 8 vLLM V1 targets at 1 s, with and without one upstream that never answers; /metrics every 0.2 s; "
        "each run is two turns of half the time, taken in the order without, with, with, without"
    )
    goals = []
    for name in ("p50", "p99"):
        a, b = getattr(without, name), getattr(with_hang, name)
        if a and b:
            goals.append(
                f"/metrics {name} with the hanging target {b * 1000:.2f} ms vs {a * 1000:.2f} ms without: "
                f"ratio {b / a:.2f} (goal: nothing measurable, about 1.00)"
            )
    return ScenarioResult("isolation", title, [without, with_hang], goals)


def goal(what: str, value: float, limit: float, unit: str, context: str) -> str:
    verdict = "met" if value <= limit else f"MISSED by {value / limit:.2f}x"
    shown = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    return f"{what} {shown}{unit}{' ' + context if context else ''} (goal <= {limit:g}{unit}): {verdict}"


# -- report -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "command": shlex.join(sys.orig_argv),
        "load_average": os.getloadavg(),
    }


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def table(result: ScenarioResult) -> list[str]:
    header = (
        f"  {'run':<40} {'targets':>7} {'up':>4} {'polls':>6} {'failed':>6} {'CPU':>7} {'peak RSS':>9} {'RSS end':>8} "
        f"{'series':>8} {'scrapes':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'KB/scrape':>9}"
    )
    lines = [result.title, header]
    for run in result.runs:
        lines.append(
            f"  {run.label:<40} {run.targets:>7} {run.targets_up:>4} {run.polls:>6} {run.failed_polls:>6} "
            f"{run.cpu_share:>7.2%} {run.peak_rss / 1e6:>6.1f} MB {run.rss_end / 1e6:>5.1f} MB {run.series:>8,} "
            f"{run.scrapes:>7} {ms(run.p50):>7} {ms(run.p99):>7} {ms(run.max):>7} {run.bytes_per_scrape / 1024:>9.1f}"
        )
    base, run = result.runs
    ratio = f"  ({run.cpu_share / base.cpu_share:.1f}x)" if base.cpu_share > 0 else ""
    lines.append(
        f"  {'difference (second run - first)':<40} {'':>7} {'':>4} {'':>6} {'':>6} "
        f"{(run.cpu_share - base.cpu_share) * 100:>+6.2f}p {(run.peak_rss - base.peak_rss) / 1e6:>+6.1f} MB "
        f"{(run.rss_end - base.rss_end) / 1e6:>+5.1f} MB {run.series - base.series:>+8,}{ratio}"
    )
    lines.append(
        f"  measured {run.seconds:.1f} s per run; /metrics answered as {run.content}, {run.uncompressed / 1e6:.2f} MB uncompressed"
    )
    lines += [f"  goal: {line}" for line in result.goals]
    for run_ in result.runs:
        lines += [f"  note ({run_.label}): {note}" for note in run_.notes]
    lines += [f"  note: {note}" for note in result.notes]
    return lines


async def main(args: argparse.Namespace) -> int:
    from exporter.core.logs import configure

    configure("error", "console")
    source, _ = bench_vllm_body()
    print(
        f"payloads: {source} and {len(bench_bodies())} others (the real captures where they are, else the simulated backends)"
    )
    info = machine()
    print(
        f"machine: {info['cores']} cores ({info['usable_cores']} usable), {info['cpu']}, {info['memory_gb']} GiB; {info['platform']}"
    )
    print(f"python {info['python']}; load average at start {' '.join(f'{x:.2f}' for x in info['load_average'])}")
    print(f"command: {info['command']}")
    print(f"scrape headers: {json.dumps(args.headers)}")
    print(
        "CPU: the daemon process (every thread) over the measured window, as a share of one core; peak RSS: its VmHWM "
        "since it started; the daemon is `inference-exporter run` in a process of its own, upstreams and scraper "
        "run in another\n"
    )
    DaemonProcess.checkout = args.checkout
    compiled(args.checkout)
    runners = {"gpu-host": gpu_host, "aggregator": aggregator, "isolation": isolation}
    results = []
    for name in SCENARIOS:
        if name in args.only:
            result = await runners[name](args)
            results.append(result)
            print("\n".join(table(result)) + "\n", flush=True)
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        document = {
            "machine": info,
            "seconds": args.seconds,
            "scenarios": [{**asdict(r), "runs": [run.figures() for run in r.runs]} for r in results],
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="measured seconds per run (two runs per scenario; default 60)"
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated scenarios to run (default: {','.join(SCENARIOS)})"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument(
        "--scrape-headers",
        choices=("prometheus", "plain"),
        default="prometheus",
        help="prometheus: OpenMetrics preferred and gzip, as Prometheus 3 asks (default); plain: text 0.0.4, uncompressed",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="write a profile of each measured run to DIR: pyinstrument's where installed, else cProfile's",
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        metavar="DIR",
        help="run the daemon from another checkout's exporter package (the bench, upstreams and fake NVML stay this one's)",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.headers = PROMETHEUS_HEADERS if args.scrape_headers == "prometheus" else PLAIN_HEADERS
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
