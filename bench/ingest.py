"""Ingest benchmark: parse + normalize throughput on the real captures (else the simulated backends) and a 100k-sample payload.

Prints samples per second per core for our pipeline, prometheus_client's parser on the same bytes,
and promtool's Go parser on the same file, with ratios measured in this run. No assertions:

    .venv/bin/python bench/ingest.py [--repeat N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.support import bench_bodies, bench_vllm_body, with_values_moved  # noqa: E402

from exporter.config.loader import parse_config  # noqa: E402
from exporter.format.parse import parse  # noqa: E402
from exporter.pipeline.target import Pipeline  # noqa: E402
from exporter.runtime.daemon import tune_garbage_collection  # noqa: E402
from exporter.sources.base import Exposition  # noqa: E402

#: Versions of each payload polled in turn: the same series, each version's values raised by one.
VERSIONS = 4
#: Below this, promtool's run is mostly its process start, and subtracting that leaves noise.
PROMTOOL_MIN_SAMPLES = 10_000


def scaled_payload(samples_wanted: int) -> bytes:
    """A Dynamo vLLM worker's body (the capture, else simulated) repeated with a new `replica` label
    value per copy, families kept whole."""
    families = parse(bench_vllm_body()[1]).families
    per_copy = sum(len(f.samples) for f in families)
    copies = -(-samples_wanted // per_copy)
    lines = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {family.help or family.name}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for copy in range(copies):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in {**sample.labels, "replica": str(copy)}.items())
                lines.append(f"{sample.name}{{{labels}}} {sample.value!r}")
    return ("\n".join(lines) + "\n").encode()


def cpu_rate(work, samples: int, repeat: int) -> float:
    """Samples per CPU-second: the best of `repeat` runs, CPU time of this process (one core). `work` is
    a callable, or (callable, polls it runs)."""
    work, polls = work if isinstance(work, tuple) else (work, 1)
    samples *= polls
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return samples / best if best > 0 else float("inf")


#: Polls per measured warm run: the body's versions in turn, each with other values.
WARM_POLLS = 8


def ours(data: bytes, *, warm: bool, unified: bool = False):
    """What one poll of a target costs us: its body through the target's pipeline (parse, normalize,
    render; with `unified`, the unified vocabulary too, from the profile detected), as the poller does.
    Warm is the steady state: the pipeline has the shape of earlier polls of the same series, and every
    poll's values are new (the body's versions in turn, see VERSIONS). Cold is a first poll: nothing
    remembered."""
    versions = [with_values_moved(data, step) for step in range(VERSIONS)]

    profile = "" if unified else ", profile: none"
    target = parse_config(
        f"targets:\n  - {{name: bench, type: http, url: 'http://127.0.0.1:9/metrics', labels: {{site: bench}}{profile}}}\n"
    ).targets[0]

    def pipeline():
        own = Pipeline(target)
        return lambda body: own.run(exposition=Exposition(body))

    if not warm:
        return lambda: pipeline()(versions[0]), 1
    poll = pipeline()
    for body in versions:
        poll(body)

    def run():
        for number in range(WARM_POLLS):
            poll(versions[number % VERSIONS])

    return run, WARM_POLLS


def promtool_seconds(path: Path, promtool: str, repeat: int) -> float:
    """Wall seconds for `promtool check metrics < file`, less the same for an empty file (process start)."""

    def run(file: Path) -> float:
        best = float("inf")
        for _ in range(repeat):
            with file.open("rb") as stdin:
                start = time.perf_counter()
                subprocess.run([promtool, "check", "metrics"], stdin=stdin, capture_output=True)
                best = min(best, time.perf_counter() - start)
        return best

    with tempfile.NamedTemporaryFile(suffix=".prom") as empty:
        baseline = run(Path(empty.name))
    return max(run(path) - baseline, 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best is kept")
    args = parser.parse_args()
    tune_garbage_collection()  # as the daemon does when it starts
    promtool = shutil.which("promtool")

    cases: list[tuple[str, bytes]] = []
    for name, data in bench_bodies():  # the real captures where they are, else the simulated backends
        if not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]  # promtool refuses a body without its final newline
        cases.append((name, data))
    cases.append(("all payloads, one after another", b"".join(data for _, data in cases)))
    cases.append(("scaled vLLM V1, 100k samples", scaled_payload(100_000)))

    header = (
        f"{'payload':<52} {'samples':>8} {'ours warm/s':>12} {'ours cold/s':>12} {'unified warm/s':>15} {'client/s':>10}"
        f" {'x client':>9} {'promtool/s':>11} {'x promtool':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, data in cases:
        text = data.decode()
        samples = sum(len(f.samples) for f in parse(data).families)
        repeat = args.repeat if samples < 10_000 else max(2, args.repeat // 2)
        warm = cpu_rate(ours(data, warm=True), samples, repeat)
        cold = cpu_rate(ours(data, warm=False), samples, repeat)
        unified = cpu_rate(ours(data, warm=True, unified=True), samples, repeat)
        try:
            client = cpu_rate(lambda: list(text_string_to_metric_families(text)), samples, repeat)
        except Exception:  # the client's parser refuses a few hand-edited fixtures
            client = float("nan")
        row = f"{name[:52]:<52} {samples:>8} {warm:>12,.0f} {cold:>12,.0f} {unified:>15,.0f} {client:>10,.0f} {warm / client:>9.1f}"
        if promtool and samples >= PROMTOOL_MIN_SAMPLES:
            with tempfile.NamedTemporaryFile(suffix=".prom") as file:
                Path(file.name).write_bytes(data)
                go = samples / promtool_seconds(Path(file.name), promtool, repeat)
            row += f" {go:>11,.0f} {warm / go:>10.2f}"
        print(row)
    print(
        "\nours = the body through a target's pipeline (parse, normalize, render; `profile: none`), as one poll does; samples per CPU-second of one core;"
        "\nwarm = steady state: the same series as the last poll, every value new; cold = a target's first poll;"
        "\nunified warm = the same with the unified vocabulary (the profile detected), which is computed anew every poll;"
        "\nx client = ours warm / prometheus_client's text parser; x promtool = ours warm / `promtool check metrics`"
        "\n(its process start subtracted; it also lints, so it is an upper bound on Go's parse time; only for >= 10k samples)."
    )


if __name__ == "__main__":
    main()
