"""One target's steady-state poll, in process: the CPU a poll of a body whose values alone changed
costs from the bytes to what is served and what the overview reads. No network, no event loop: the
work a poll of a GPU host's vLLM target repeats every second, measured alone.

    .venv/bin/python bench/steady_poll.py [--polls N] [--repeat N] [--idle] [--compare OTHER_CHECKOUT]

Prints microseconds of CPU per poll (the best of --repeat runs of --polls polls). With --compare,
runs this checkout and OTHER_CHECKOUT's copy of the same work alternately, each in its own process,
and prints both: a before/after on one machine in one command (shared machines are noisy: compare
the two columns of one run, not figures across runs). With --idle, every poll has the same values (an idle
server's counters and gauges stay where they were); else each body's values are raised by one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Bodies polled in turn: the same series, each version's values raised by one (as a live server's are).
VERSIONS = 8


def measure(polls: int, repeat: int, idle: bool = False) -> dict:
    try:
        from helpers.support import bench_vllm_body, with_values_moved
    except ImportError:  # a checkout from before tests/helpers/ (--compare)
        from support import bench_vllm_body, with_values_moved  # type: ignore[import-not-found,no-redef]

    from exporter.config.loader import parse_config

    name, body = bench_vllm_body()
    config = parse_config(
        "defaults: {interval: 1s, timeout: 1s, retries: 0}\n"
        "targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/metrics', profile: vllm}\n"
    )
    ingest = _ingest(config.targets[0])
    bodies = [with_values_moved(body, step) for step in range(VERSIONS)]
    if idle:
        bodies = [bodies[0]] * VERSIONS
    overview = _overview(config.targets[0])
    polled = itertools.count()

    def poll(data: bytes) -> None:
        overview(ingest(data), 1000.0 + next(polled))

    for data in bodies[:4]:  # the third body of one shape makes the fast path and the template
        poll(data)
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for number in range(polls):
            poll(bodies[number % VERSIONS])
        best = min(best, time.process_time() - start)
    return {"body": name, "us_per_poll": best / polls * 1e6}


def _overview(target):
    """(families, poll time) -> what the overview does with a poll: its windows' observe, as the store
    calls it; in a checkout from before the windows, a read of the unified families' samples."""
    try:
        from exporter.serve.overview.windows import Windows
        from exporter.serve.store import Snapshot
    except ImportError:
        from exporter.serve.overview.windows import _wanted_names  # --compare's

        wanted = _wanted_names("").families

        def read(families, at: float) -> None:
            for family in families:
                if family.name in wanted:
                    list(family.samples)

        return read
    windows = Windows(spacing=0)

    def observe(families, at: float) -> None:
        windows.observe(Snapshot(target, tuple(families), up=True, last_poll=at, profile="vllm"))

    return observe


def _ingest(target):
    """body -> served families, deflated for one gzip OpenMetrics scrape, as the checkout under test does it:
    its target pipeline (exporter.pipeline.target), or before there was one, the source's reader and the poller's stages."""
    try:
        from exporter.pipeline.exposition import DEFLATE_ALONE
        from exporter.pipeline.target import Pipeline
        from exporter.sources.base import Exposition
    except ImportError:
        return _ingest_before_the_pipeline(target)
    pipeline = Pipeline(target)

    def ingest(data: bytes):
        families = pipeline.run(exposition=Exposition(data)).families
        for family in families:  # what a gzip scrape of every poll deflates (older checkouts did it in the poll)
            chunks = family.chunks
            assert chunks is not None  # the pipeline renders every family it serves
            if len(chunks.openmetrics) >= DEFLATE_ALONE:
                chunks.deflated("openmetrics")
        return families

    return ingest


def _ingest_before_the_pipeline(target):
    from exporter.format.parse import BodyReader  # type: ignore[attr-defined]  # an older checkout's (--compare)
    from exporter.runtime.scheduler import TargetPoller
    from exporter.serve.store import Store
    from exporter.sources import Shared
    from exporter.sources.base import Payload

    poller = TargetPoller(target, Store(), Shared())
    reader = BodyReader()

    def ingest(data: bytes):
        result = reader.parse(data)
        payload = Payload(result.families, problems=result.problems)
        return poller._ingest(payload, {"openmetrics"})[2].families  # type: ignore[attr-defined]  # --compare's

    return ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="alternations with --compare (default 5)")
    parser.add_argument("--compare", metavar="CHECKOUT", help="another checkout of this repository to run alternately")
    parser.add_argument("--idle", action="store_true", help="the same values every poll (an idle server)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one figure, for --compare
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # whose exporter to import
    args = parser.parse_args()
    sys.path[:0] = [str(args.root), str(args.root / "tests")]
    if args.compare is None:
        figures = measure(args.polls, args.repeat, args.idle)
        if args.json:
            print(json.dumps(figures))
        else:
            print(
                f"{figures['body']}: {figures['us_per_poll']:.0f} us CPU per steady poll (best of {args.repeat} x {args.polls})"
            )
        return
    checkouts = {"this": ROOT, "other": Path(args.compare).resolve()}
    script = Path(__file__).resolve()
    runs: dict[str, list[float]] = {"this": [], "other": []}
    for _ in range(args.rounds):
        for label in ("other", "this"):
            command = [sys.executable, str(script), "--polls", str(args.polls), "--repeat", str(args.repeat), "--json"]
            command += ["--idle"] if args.idle else []
            command += ["--root", str(checkouts[label])]
            out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=checkouts[label])
            runs[label].append(json.loads(out.stdout.strip().splitlines()[-1])["us_per_poll"])
    print(f"{'checkout':<40} {'us CPU per steady poll, each round':<50} {'median':>8}")
    for label in ("other", "this"):
        ordered = sorted(runs[label])
        print(
            f"{checkouts[label]!s:<40} {' '.join(f'{v:7.0f}' for v in runs[label]):<50} {ordered[len(ordered) // 2]:8.0f}"
        )
    print("(alternated old/new in separate processes on a shared, noisy machine: compare the medians of this run)")


if __name__ == "__main__":
    main()
