"""Fault bench: hostile upstreams, clients and configs against a real daemon, and what everyone else saw.

For each fault a fresh daemon (`python -m exporter run`, file handles limited to 1,024 as under
systemd's default) polls three healthy targets every second plus the fault's own, while this script
scrapes /metrics ten times a second. The table says, per fault: /metrics latency (p50, p99) and scrapes
that failed, the healthy targets' series kept (of what they serve when nothing is wrong) and whether
they stayed up, whether our own `target_up` stayed ours (one series per target, no more), the daemon's
RSS at the end and at its peak, and what the fault itself was answered with. No assertions; a
regression shows as a number. About two minutes:

    .venv/bin/python bench/faults.py [--seconds 8] [--only slowloris,yaml-bomb]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import re
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.openmetrics.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "vllm-v1-dynamo-worker-metrics_examples-vllm.prom"
SECRET = "bench-s3cr3t-pw"
HEALTHY = 3
#: The checkout whose daemon runs (--daemon-root: another one, to compare); whether it predates `server:`.
DAEMON_ROOT = ROOT
BEFORE_LIMITS = False


def healthy_body() -> bytes:
    if FIXTURE.is_file():
        return FIXTURE.read_bytes()
    from exporter.simulate.base import render

    return render("vllm", seed=1)[0]


class Upstreams:
    """Healthy backends and hostile ones, on one loopback aiohttp server in this process."""

    def __init__(self) -> None:
        self.body = healthy_body()
        self.polls = 0
        app = web.Application()
        app.router.add_get("/healthy/{i}", self.healthy)
        app.router.add_get("/hostile/{kind}", self.hostile)
        self.app, self.url = app, ""

    async def start(self) -> web.AppRunner:
        runner = web.AppRunner(app=self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return runner

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(body=self.body, content_type="text/plain")

    async def hostile(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        self.polls += 1
        if kind == "names":  # item 1, 2: reserved label and metric names
            text = (
                'evil{__name__="other",__x="y"} 1\n'
                'inference_exporter_target_up{target="healthy-0"} 0\n'
                "# TYPE inference_exporter_build_info counter\ninference_exporter_build_info_total 5\n"
            )
            return web.Response(text=text)
        if kind == "invalid":  # item 3: what strict readers reject
            text = (
                "# TYPE c counter\nc_total -1\n# TYPE i info\ni_info 0\n# TYPE s stateset\ns 1\n"
                '# TYPE h histogram\nh_bucket{le="NaN"} 1\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 1\n'
                "vllm:time_to_first_token_seconds_count 2.5\n"
            )
            return web.Response(text=text)
        if kind == "echo":  # item 4, 5: an error page quoting the request
            lines = [f"{key}: {value}" for key, value in request.headers.items()]
            return web.Response(status=502, text=f"bad gateway for {request.url}\n" + "\n".join(lines))
        if kind == "huge":  # over the 16 MiB body_size_limit
            response = web.StreamResponse()
            await response.prepare(request)
            chunk = b"".join(b'big{i="%d"} 1\n' % i for i in range(20000))
            with contextlib.suppress(ConnectionError):
                for _ in range(20 * 1024 * 1024 // len(chunk) + 1):
                    await response.write(chunk)
            return response
        if kind == "comments":  # item 8: 8 MB of comment and HELP lines, new every poll
            poll = self.polls
            lines = [f"# HELP m{i} changing help text number {poll} {i}" for i in range(60_000)]
            lines += [f"# a comment that changes every poll: {poll} {i} " + "x" * 40 for i in range(60_000)]
            return web.Response(text="\n".join(lines) + "\nm0 1\n")
        if kind == "hang":
            await asyncio.sleep(30)
            return web.Response(text="late 1\n")
        if kind == "drip":  # one byte every 50 ms, forever
            response = web.StreamResponse()
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                for _ in range(10_000):
                    await response.write(b"a")
                    await asyncio.sleep(0.05)
            return response
        raise web.HTTPNotFound()


def config(upstream: Upstreams, fault: str) -> str:
    server = "server: {header_timeout: 3s}\n" if fault == "slowloris" and not BEFORE_LIMITS else ""
    targets = [f'  - {{name: healthy-{i}, type: http, url: "{upstream.url}/healthy/{i}"}}' for i in range(HEALTHY)]
    hostile = {
        "names": f'  - {{name: hostile, type: http, url: "{upstream.url}/hostile/names"}}',
        "invalid": f'  - {{name: hostile, type: http, url: "{upstream.url}/hostile/invalid"}}',
        "secret-echo": (
            f'  - {{name: hostile, type: http, url: "{upstream.url}/hostile/echo", '
            f'basic_auth: {{username: scraper, password: "{SECRET}"}}}}'
        ),
        "huge-body": f'  - {{name: hostile, type: http, url: "{upstream.url}/hostile/huge"}}',
        "comment-churn": f'  - {{name: hostile, type: http, url: "{upstream.url}/hostile/comments"}}',
        "hung": f'  - {{name: hostile, type: http, url: "{upstream.url}/hostile/hang"}}',
        "drip": f'  - {{name: hostile, type: http, url: "{upstream.url}/hostile/drip"}}',
    }.get(fault)
    return (
        server
        + "defaults: {interval: 1s, timeout: 900ms, retries: 0}\ntargets:\n"
        + "\n".join(targets + ([hostile] if hostile else []))
        + "\n"
    )


def merge_bomb(depth: int = 22) -> str:
    lines = ["x-a0: &a0 {k: 1}"] + [
        f"x-a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: 1}}" for i in range(1, depth + 1)
    ]
    return "\n".join(lines) + f"\nx-bomb: *a{depth}\ntargets: []\n"


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


async def slowloris(host: str, port: int, clients: int, stop: asyncio.Event) -> dict:
    """Clients that send one header byte a second and never finish."""
    held, closed, refused = [], 0, 0

    async def one() -> None:
        nonlocal closed, refused
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            refused += 1
            return
        held.append(writer)
        try:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(100), 1.0)
                except TimeoutError:
                    continue
                if data.startswith(b"HTTP/1.1 503"):
                    refused += 1
                else:
                    closed += 1
                return
        except (ConnectionError, OSError):
            closed += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"closed by daemon": closed, "refused": refused}


async def run_fault(fault: str, upstream: Upstreams, seconds: float, baseline: int | None) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="faults-"))
    path = folder / "config.yaml"
    path.write_text(config(upstream, fault))
    from helpers.support import free_port

    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "run",
        "--config",
        str(path),
        "--listen",
        f"127.0.0.1:{port}",
        "--log-format",
        "json",
        cwd=DAEMON_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=limit_files,
    )
    url = f"http://127.0.0.1:{port}"
    log_lines = 0
    tracebacks = 0

    async def read_log() -> None:
        nonlocal log_lines, tracebacks
        assert process.stderr is not None
        async for line in process.stderr:
            log_lines += 1
            tracebacks += b"Traceback" in line

    logger = asyncio.create_task(read_log())
    latencies, failures, note = [], 0, ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for _ in range(100):
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url + "/readyz") as response:
                    if response.status == 200:
                        break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # every target polled
        stop = asyncio.Event()
        extra: asyncio.Task | None = None
        if fault == "slowloris":
            extra = asyncio.create_task(slowloris("127.0.0.1", port, 1100, stop))
        if fault == "yaml-bomb":

            async def bomb() -> None:
                text = path.read_text()
                while not stop.is_set():
                    path.write_text(merge_bomb())
                    process.send_signal(signal.SIGHUP)
                    await asyncio.sleep(2)
                path.write_text(text)

            extra = asyncio.create_task(bomb())
        end = time.monotonic() + seconds
        text = ""
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                async with session.get(url + "/metrics") as response:
                    body = await response.text()
                    if response.status == 200:
                        text = body
                    else:
                        failures += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                failures += 1
            latencies.append((time.monotonic() - started) * 1000)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
        stop.set()
        strict = "-"
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(
                url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            ) as response:
                om = await response.text()
            try:
                list(text_string_to_metric_families(om))
                strict = "ok"
            except Exception as exc:  # what a strict reader (Prometheus) says to the whole scrape
                strict = f"REJECTED ({str(exc)[:40]})"
        if extra is not None:
            result = await extra
            note = (
                f"1100 clients: {result}" + ("" if BEFORE_LIMITS else ", header_timeout 3s")
                if fault == "slowloris"
                else ("a 622-byte merge-key bomb + SIGHUP every 2s")
            )
        if fault == "secret-echo":
            shown = ""
            for page in ("/targets", "/targets/hostile", "/api/targets/hostile"):
                async with session.get(url + page) as response:
                    shown += await response.text()
            forms = [SECRET, base64.b64encode(f"scraper:{SECRET}".encode()).decode()]
            note = "secret shown: " + ("YES" if any(form in shown for form in forms) else "no") + " (pages, JSON)"
    rss, peak = rss_mb(process.pid)
    process.send_signal(signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 10)
    if process.returncode is None:
        process.kill()
        await process.wait()
    logger.cancel()
    shutil.rmtree(folder, ignore_errors=True)
    healthy, ups, own_up = 0, [], 0
    for line in text.splitlines():
        if line.startswith("inference_exporter_target_up{"):
            own_up += 1
            if 'target="healthy-' in line:
                ups.append(line.rsplit(" ", 1)[1])
        elif re.search(r'[{,]target="healthy-', line) and not line.startswith(("#", "inference_exporter_")):
            healthy += 1
    if fault in ("secret-echo", "huge-body", "comment-churn", "hung", "drip", "names", "invalid") and not note:
        note = "hostile target: " + ("up" if 'inference_exporter_target_up{target="hostile"} 1' in text else "down")
        if fault == "names":
            note += "; exported_* names: " + str(
                sum(line.startswith("exported_inference_exporter") for line in text.splitlines())
            )
    return {
        "fault": fault,
        "scrapes": len(latencies),
        "p50 ms": statistics.median(latencies) if latencies else float("nan"),
        "p99 ms": sorted(latencies)[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        "failed": failures,
        "healthy series": f"{healthy}/{baseline if baseline is not None else healthy}",
        "healthy up": "all"
        if ups and all(value in ("1", "1.0") for value in ups) and len(ups) == HEALTHY
        else ",".join(ups) or "none",
        "target_up rows": own_up,
        "strict OpenMetrics": strict,
        "RSS MB": f"{rss:.0f} (peak {peak:.0f})",
        "log lines": f"{log_lines} ({tracebacks} tracebacks)",
        "note": note,
    }


FAULTS = [
    "baseline",
    "names",
    "invalid",
    "secret-echo",
    "huge-body",
    "comment-churn",
    "hung",
    "drip",
    "slowloris",
    "yaml-bomb",
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each fault runs (default 8)")
    parser.add_argument("--only", help="comma-separated faults to run (baseline always runs first)")
    parser.add_argument("--daemon-root", type=Path, help="run the daemon of another checkout (e.g. an older commit)")
    args = parser.parse_args()
    global DAEMON_ROOT, BEFORE_LIMITS
    if args.daemon_root:
        DAEMON_ROOT = args.daemon_root.resolve()
        BEFORE_LIMITS = not (DAEMON_ROOT / "exporter" / "listener.py").exists()
    faults = FAULTS if not args.only else ["baseline", *[f for f in args.only.split(",") if f != "baseline"]]
    upstream = Upstreams()
    runner = await upstream.start()
    rows, baseline = [], None
    try:
        for fault in faults:
            row = await run_fault(fault, upstream, args.seconds, baseline)
            if fault == "baseline":
                baseline = int(row["healthy series"].split("/")[0])
                row["healthy series"] = f"{baseline}/{baseline}"
            rows.append(row)
            print(f"  {fault}: done", file=sys.stderr, flush=True)
    finally:
        await runner.cleanup()
    columns = list(rows[0])
    cells = [[f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    print(
        f"\n{HEALTHY} healthy targets + the fault's, interval 1s; /metrics scraped every 100 ms for {args.seconds:g}s; "
        f"daemon limited to 1024 file handles; {os.cpu_count()} CPUs."
    )


if __name__ == "__main__":
    asyncio.run(main())
