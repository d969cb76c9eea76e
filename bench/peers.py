"""inference-exporter beside its peers on a GPU host: vmagent and Prometheus's agent mode, doing the same scrapes.

    .venv/bin/python bench/peers.py [--seconds 40] [--rounds 2] [--only exporter,vmagent,prometheus]
                                    [--first-poll] [--json FILE]

Eight upstreams serve the vLLM V1 payload (the real capture where it is, else the simulated
backend), each answer's values different from the last one's, from bench/scenarios.py's child
process. Each system polls all eight every second:

- inference-exporter (`python -m exporter run`), itself scraped every 5 s by the bench as
  Prometheus 3 would (OpenMetrics preferred, gzip);
- vmagent (Debian's `victoria-metrics` package ships it), remote-writing to a sink;
- Prometheus in agent mode (`prometheus --agent`, `--enable-feature=agent` before 3.0; Debian's `prometheus`), remote-writing to the
  same sink. The sink is an aiohttp server in this process that reads each POST and answers 204.

Each system runs as its own process, one at a time, in rounds (round 2 in the reverse order, so
that a drift in the machine's load weighs on each alike). A run starts the process, waits until it
has every target up, warms up for 5 s, then measures a window of --seconds: CPU is utime+stime
from /proc/<pid>/stat over the window as a share of one core (every thread); peak RSS is VmHWM
from /proc/<pid>/status, reset at the window's start (clear_refs), and median RSS is VmRSS read
every second. The table shows the median over rounds. Missing `vmagent` or `prometheus` is
installed with apt-get (as root, or with sudo), and the bench says so.

--first-poll: the cost every target pays after each start (and a target whose series change pays
on every poll). `inference-exporter once` on a ~199k-sample payload (the vLLM payload repeated with
new `replica` label values, `body_size_limit: 64MiB`), whole process, against the naive pipeline a
user would write (urllib, prometheus_client's parser, a collector, `generate_latest`), both run as
subprocesses fetching the same bytes from the same loopback server; wall time, median of 3.

The checkout's exporter package is byte-compiled first, as installing it does (its libraries are):
under PYTHONDONTWRITEBYTECODE, as in a development shell, every start would compile it again.

No assertions: the figures depend on the machine, which may be shared; the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

from helpers.support import bench_vllm_body, free_port  # noqa: E402
from scenarios import PROMETHEUS_HEADERS, Upstreams, compiled, machine, scaled_body  # noqa: E402

SYSTEMS = ("exporter", "vmagent", "prometheus")
TARGETS = 8
#: The exporter is scraped this often; vmagent and Prometheus push on their own schedules.
SCRAPE_EVERY = 5.0
WARM_UP = 5.0
#: Debian package -> the command it ships that the bench needs.
PACKAGES = {"victoria-metrics": "vmagent", "prometheus": "prometheus"}
FIRST_POLL_SAMPLES = 199_000
FIRST_POLL_REPEATS = 3

NAIVE_PIPELINE = """
import sys, urllib.request
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

families = list(text_string_to_metric_families(urllib.request.urlopen(sys.argv[1]).read().decode()))

class Upstream:
    def collect(self):
        return families

registry = CollectorRegistry(auto_describe=False)
registry.register(Upstream())
sys.stdout.buffer.write(generate_latest(registry))
"""


# -- tools --------------------------------------------------------------------------------------


def ensure_tools(systems: list[str]) -> None:
    """apt-get install the Debian packages whose commands are missing, saying so."""
    wanted = {"vmagent": "victoria-metrics", "prometheus": "prometheus"}
    missing = sorted({wanted[s] for s in systems if s in wanted and shutil.which(PACKAGES[wanted[s]]) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"bench/peers.py: please install {' '.join(missing)} (no apt-get here)")
    print(f"bench/peers.py: installing {' '.join(missing)} with apt-get", file=sys.stderr, flush=True)
    root = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*root, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"


# -- the remote-write sink (this process) -------------------------------------------------------


class Sink:
    """Accepts remote-write POSTs on a loopback port; counts them and their bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Sink:
        from aiohttp import web

        async def write(request: web.Request) -> web.Response:
            body = await request.read()
            self.requests += 1
            self.bytes += len(body)
            return web.Response(status=204)

        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", write)
        self._runner = runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/api/v1/write"
        return self

    async def stop(self) -> None:
        assert self._runner is not None, "stopped before it started"
        await self._runner.cleanup()


# -- one system as a process --------------------------------------------------------------------


def scrape_config(base: str, paths: list[str], sink: str | None) -> str:
    """The Prometheus-format config vmagent and Prometheus read: one job per upstream, every 1 s (JSON is YAML).
    vmagent takes its remote-write URL as a flag and refuses the section (sink None)."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": f"vllm-{i}",
                "metrics_path": path,
                "static_configs": [{"targets": [base.removeprefix("http://")]}],
            }
            for i, path in enumerate(paths)
        ],
    }
    if sink is not None:
        config["remote_write"] = [{"url": sink}]
    return json.dumps(config, indent=1)


def exporter_config(base: str, paths: list[str]) -> str:
    return json.dumps(
        {
            "defaults": {"interval": "1s"},
            "targets": [{"name": f"vllm-{i}", "type": "http", "url": base + path} for i, path in enumerate(paths)],
        },
        indent=1,
    )


def command_for(system: str, folder: Path, base: str, paths: list[str], sink: str, port: int) -> list[str]:
    if system == "exporter":
        config = folder / "exporter.yaml"
        config.write_text(exporter_config(base, paths))
        return [
            sys.executable,
            "-m",
            "exporter",
            "run",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "error",
            "--log-format",
            "json",
        ]
    config = folder / f"{system}.yaml"
    config.write_text(scrape_config(base, paths, None if system == "vmagent" else sink))
    data = folder / f"{system}-data"
    if system == "vmagent":
        return [
            "vmagent",
            f"-promscrape.config={config}",
            f"-remoteWrite.url={sink}",
            f"-remoteWrite.tmpDataPath={data}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-loggerLevel=ERROR",
        ]
    # Prometheus 2.x (Debian bookworm's 2.42) spells agent mode --enable-feature=agent; 3.x, --agent.
    agent = "--agent" if AGENT_FLAG else "--enable-feature=agent"
    return [
        "prometheus",
        agent,
        f"--config.file={config}",
        f"--storage.agent.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=error",
    ]


AGENT_FLAG = False


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of `pid`, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) * 1024
    return found


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


async def targets_up(system: str, port: int) -> int:
    """How many of the system's targets were up at their last poll, by the system's own account."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            if system == "exporter":
                async with session.get(
                    f"http://127.0.0.1:{port}/metrics", headers={"Accept": "text/plain"}
                ) as response:
                    text = await response.text()
                return sum(
                    1
                    for line in text.splitlines()
                    if line.startswith("inference_exporter_target_up{") and line.endswith(" 1.0")
                )
            async with session.get(f"http://127.0.0.1:{port}/api/v1/targets") as response:
                document = await response.json(content_type=None)
            return sum(1 for t in document["data"]["activeTargets"] if t.get("health") == "up")
    except (TimeoutError, aiohttp.ClientError, KeyError, ValueError, TypeError):
        return 0


@dataclass
class Run:
    system: str
    round: int
    seconds: float
    cpu_seconds: float
    peak_rss: int
    median_rss: int
    sink_requests: int
    sink_bytes: int
    scrapes: int
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.seconds


async def measure(system: str, round_: int, upstreams: Upstreams, sink: Sink, seconds: float, folder: Path) -> Run:
    base = upstreams.info["http"]
    paths = [f"/vllm/{i}/metrics" for i in range(TARGETS)]
    port = free_port()
    workdir = folder / f"{system}-{round_}"
    workdir.mkdir()
    log = (workdir / "log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *command_for(system, workdir, base, paths, sink.url, port),
        cwd=REPO,
        stdout=log,
        stderr=log,
        stdin=asyncio.subprocess.DEVNULL,
    )
    notes: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while (up := await targets_up(system, port)) < TARGETS:
            if process.returncode is not None or time.monotonic() > deadline:
                log.flush()
                tail = (workdir / "log").read_text(errors="replace")[-1500:]
                raise SystemExit(f"{system} did not bring its {TARGETS} targets up ({up} up); its log ends:\n{tail}")
            await asyncio.sleep(0.2)
        url = f"http://127.0.0.1:{port}/metrics"
        if (
            system == "exporter"
        ):  # warm-up: scraped for a while, as Prometheus has been doing before any window one looks at
            await upstreams.scrape(url, WARM_UP, SCRAPE_EVERY, PROMETHEUS_HEADERS)
        else:
            await asyncio.sleep(WARM_UP)
        if not reset_peak(process.pid):
            notes.append("peak RSS is since the process started (clear_refs not writable)")
        requests0, bytes0 = sink.requests, sink.bytes
        rss: list[int] = []

        async def sample_rss() -> None:
            while True:
                rss.append(status(process.pid)["VmRSS"])
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample_rss())
        cpu0, wall0 = cpu_seconds(process.pid), time.perf_counter()
        scrapes = 0
        if system == "exporter":
            scraped = await upstreams.scrape(url, seconds, SCRAPE_EVERY, PROMETHEUS_HEADERS)
            scrapes = len(scraped["latencies"])
            if scraped["error_count"]:
                notes.append(f"{scraped['error_count']} scrapes failed: {'; '.join(scraped['errors'])}")
        else:
            await asyncio.sleep(seconds)
        cpu1, wall1 = cpu_seconds(process.pid), time.perf_counter()
        peak = status(process.pid)["VmHWM"]
        sampler.cancel()
        if (up := await targets_up(system, port)) < TARGETS:
            notes.append(f"only {up} of {TARGETS} targets up at the window's end")
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
    if system != "exporter" and sink.requests == requests0:
        notes.append("nothing reached the sink in the window")
    return Run(
        system=system,
        round=round_,
        seconds=wall1 - wall0,
        cpu_seconds=cpu1 - cpu0,
        peak_rss=peak,
        median_rss=int(statistics.median(rss)),
        sink_requests=sink.requests - requests0,
        sink_bytes=sink.bytes - bytes0,
        scrapes=scrapes,
        notes=notes,
    )


# -- first poll ---------------------------------------------------------------------------------


async def first_poll(folder: Path) -> dict[str, Any]:
    """`once` on a ~199k-sample body against the naive pipeline, both as subprocesses on the same bytes."""
    from aiohttp import web

    _, vllm = bench_vllm_body()
    body, samples = scaled_body(vllm.decode(), FIRST_POLL_SAMPLES, "r")
    app = web.Application()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/metrics"
    config = folder / "first-poll.yaml"
    config.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "name": "big",
                        "type": "http",
                        "url": url,
                        "body_size_limit": "64MiB",
                        "interval": "120s",
                        "timeout": "120s",
                    }
                ]
            }
        )
    )
    commands = {
        "inference-exporter once": [
            sys.executable,
            "-m",
            "exporter",
            "once",
            "--config",
            str(config),
            "--log-level",
            "error",
        ],
        "naive: urllib + prometheus_client parser + collector + generate_latest": [
            sys.executable,
            "-c",
            NAIVE_PIPELINE,
            url,
        ],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    lines: dict[str, int] = {}
    try:
        for _ in range(FIRST_POLL_REPEATS):
            for name, command in commands.items():  # in turns, so that a drift in load weighs on both alike
                began = time.perf_counter()
                process = await asyncio.create_subprocess_exec(
                    *command,
                    cwd=REPO,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await process.communicate()
                times[name].append(time.perf_counter() - began)
                if process.returncode != 0:
                    raise SystemExit(
                        f"{name} failed (exit {process.returncode}): {err.decode(errors='replace')[-1500:]}"
                    )
                lines[name] = sum(1 for line in out.split(b"\n") if line and not line.startswith(b"#"))
    finally:
        await runner.cleanup()
    return {"samples": samples, "bytes": len(body), "times": times, "lines": lines}


# -- report -------------------------------------------------------------------------------------

LABELS = {
    "exporter": "inference-exporter (scraped every 5 s)",
    "vmagent": "vmagent, same scrapes, remote-writing to a sink",
    "prometheus": "Prometheus in agent mode, same scrapes and sink",
}


def report(runs: list[Run], versions: dict[str, str]) -> list[str]:
    lines = [
        "| system | CPU, share of one core | peak RSS | median RSS | CPU per round | pushed to sink per s |",
        "|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        mine = [run for run in runs if run.system == system]
        if not mine:
            continue
        cpu = statistics.median(run.cpu_share for run in mine)
        peak = statistics.median(run.peak_rss for run in mine)
        rss = statistics.median(run.median_rss for run in mine)
        rounds = ", ".join(f"{run.cpu_share:.2%}" for run in mine)
        pushed = (
            "-"
            if system == "exporter"
            else (
                f"{statistics.median(run.sink_requests / run.seconds for run in mine):.2f} req, "
                f"{statistics.median(run.sink_bytes / run.seconds for run in mine) / 1024:.1f} KiB"
            )
        )
        lines.append(
            f"| {LABELS[system]} ({versions.get(system, '')}) | {cpu:.2%} | {peak / 1e6:.1f} MB | {rss / 1e6:.1f} MB | {rounds} | {pushed} |"
        )
    for run in runs:
        lines += [f"note ({run.system}, round {run.round}): {note}" for note in run.notes]
    return lines


def first_poll_report(result: dict[str, Any]) -> list[str]:
    lines = [
        f"First poll: {result['samples']:,} samples, {result['bytes'] / 1e6:.1f} MB, fetched from loopback; "
        f"wall time of the whole process, median of {FIRST_POLL_REPEATS}",
        "",
        "| pipeline | seconds (median) | runs | sample lines out |",
        "|---|---|---|---|",
    ]
    medians = {name: statistics.median(times) for name, times in result["times"].items()}
    for name, times in result["times"].items():
        lines.append(
            f"| {name} | {medians[name]:.2f} | {', '.join(f'{t:.2f}' for t in times)} | {result['lines'][name]:,} |"
        )
    once, naive = medians.values()
    lines.append(f"\n`once` is {naive / once:.2f}x the naive pipeline's speed (goal: >= 3x)")
    return lines


async def main(args: argparse.Namespace) -> int:
    ensure_tools(args.only)
    versions = {
        "exporter": "this checkout",
        "vmagent": "vmagent " + version(["dpkg-query", "-W", "-f", "${Version}", "victoria-metrics"])
        if "vmagent" in args.only
        else "",
        "prometheus": version(["prometheus", "--version"]).split(" (")[0] if "prometheus" in args.only else "",
    }
    global AGENT_FLAG
    if "prometheus" in args.only:
        AGENT_FLAG = "--agent " in subprocess.run(["prometheus", "--help"], capture_output=True, text=True).stderr
    info = machine()
    source, _ = bench_vllm_body()
    print(
        f"payload: {source}, served by {TARGETS} upstreams, values moved on every answer; each system polls every 1 s"
    )
    print(
        f"machine: {info['cores']} cores ({info['usable_cores']} usable), {info['cpu']}, {info['memory_gb']} GiB; {info['platform']}"
    )
    print(f"python {info['python']}; load average at start {' '.join(f'{x:.2f}' for x in info['load_average'])}")
    print(f"command: {info['command']}")
    print(
        f"windows of {args.seconds:g} s after {WARM_UP:g} s of warm-up, {args.rounds} rounds (even rounds in reverse order); medians\n",
        flush=True,
    )
    compiled(None)  # as an installed package is: a development shell's PYTHONDONTWRITEBYTECODE compiles every start
    runs: list[Run] = []
    document: dict[str, Any] = {"machine": info, "seconds": args.seconds, "versions": versions}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        folder = Path(tmp)
        if args.rounds:
            sink = await Sink().start()
            upstreams = await Upstreams({"vllm": TARGETS}).start()
            try:
                for round_ in range(1, args.rounds + 1):
                    order = args.only if round_ % 2 else list(reversed(args.only))
                    for system in order:
                        run = await measure(system, round_, upstreams, sink, args.seconds, folder)
                        runs.append(run)
                        print(
                            f"  round {round_} {system}: CPU {run.cpu_share:.2%}, peak RSS {run.peak_rss / 1e6:.1f} MB, "
                            f"median RSS {run.median_rss / 1e6:.1f} MB",
                            flush=True,
                        )
            finally:
                upstreams.stop()
                await sink.stop()
            print("\n" + "\n".join(report(runs, versions)) + "\n", flush=True)
            document["runs"] = [{**asdict(run), "cpu_share": run.cpu_share} for run in runs]
        if args.first_poll:
            result = await first_poll(folder)
            print("\n".join(first_poll_report(result)) + "\n", flush=True)
            document["first_poll"] = result
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="measured seconds per run (default 40)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs of each system, in turns (default 2; 0: only --first-poll)"
    )
    parser.add_argument(
        "--only", default=",".join(SYSTEMS), help=f"comma-separated systems (default: {','.join(SYSTEMS)})"
    )
    parser.add_argument(
        "--first-poll",
        action="store_true",
        help="also time `once` on a ~199k-sample payload against the naive pipeline",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
