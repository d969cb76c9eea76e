"""What a target's Pipeline keeps between polls, part by part, in bytes per served series (tracemalloc).

    .venv/bin/python bench/pipeline_memory.py [--samples 1000] [--large 100000]

Two cases: the aggregator scenario's targets (bench/scenarios.py: every payload repeated to ~--samples
samples, one Pipeline each, summed), and one vLLM body of ~--large samples (bench/ingest.py's
`scaled_payload`, which has no Steady: its unified arithmetic is more than a trace compiles). Each
Pipeline polls five bodies whose values alone move (the third makes the fast path), then its parts
are dropped one at a time, and what each drop frees is its share. A part shared with one dropped
later is counted with the later one: the order is the table's.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from helpers.support import bench_bodies, with_values_moved  # noqa: E402
from ingest import scaled_payload  # noqa: E402
from scenarios import scaled_body  # noqa: E402

from exporter.config.loader import parse_config  # noqa: E402
from exporter.pipeline.target import Output, Pipeline  # noqa: E402
from exporter.sources.base import Exposition  # noqa: E402

POLLS = 5


def _steady_drop(pipeline: Pipeline, *names: str) -> None:
    steady = pipeline._shape.steady if pipeline._shape is not None else None
    if steady is not None:
        for name in names:
            setattr(steady, name, None)


def _drop_steady(pipeline: Pipeline) -> None:
    if pipeline._shape is not None:
        pipeline._shape.steady = None


def _drop_skeleton(pipeline: Pipeline) -> None:
    pipeline._shape = None


def _drop_template(pipeline: Pipeline) -> None:
    pipeline._template = pipeline._last_shapes = None


def _drop_conform(pipeline: Pipeline) -> None:
    pipeline.conform = None  # type: ignore[assignment]


#: (part, how to drop it from a pipeline): in the order they are dropped (the output goes first).
PARTS = (
    ("steady: unify plan (compiled)", lambda p: _steady_drop(p, "_replay")),
    ("steady: conform's rules", lambda p: _steady_drop(p, "_kept", "_broken", "_conformed")),
    ("steady: template", lambda p: _steady_drop(p, "_template")),
    ("steady: the rest (reading, ...)", _drop_steady),
    ("skeleton", _drop_skeleton),
    ("template (sources' families)", _drop_template),
    ("conform", _drop_conform),
    ("unifier, relabel, the rest", lambda p: p.__dict__.clear()),
)


def breakdown(bodies: list[bytes]) -> tuple[int, dict[str, int], bool]:
    """(series served, bytes each part holds, whether every pipeline had a Steady)."""
    target = parse_config("targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/metrics'}\n").targets[0]
    versions = [[with_values_moved(body, step) for step in range(4)] for body in bodies]
    gc.collect()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    pipelines: list[Pipeline] = []
    outputs: list[Output] = []
    for moved in versions:
        pipeline = Pipeline(target)
        for poll in range(POLLS):
            output = pipeline.run(exposition=Exposition(moved[poll % len(moved)]))
        pipelines.append(pipeline)
        outputs.append(output)
    steady = all(p._shape is not None and p._shape.steady is not None for p in pipelines)
    series = sum(output.sample_count for output in outputs)
    del output
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    sizes = {"all": held - start}
    outputs.clear()
    gc.collect()
    now, _ = tracemalloc.get_traced_memory()
    sizes["output (served text)"], held = held - now, now
    for part, drop in PARTS:
        for pipeline in pipelines:
            drop(pipeline)
        gc.collect()
        now, _ = tracemalloc.get_traced_memory()
        sizes[part] = held - now
        held = now
    tracemalloc.stop()
    return series, sizes, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    cases = {
        f"aggregator ({len(bench_bodies())} payloads x ~{args.samples})": [
            scaled_body(payload.decode(), args.samples, f"b{index}")[0]
            for index, (_, payload) in enumerate(bench_bodies())
        ],
        f"vLLM x ~{args.large:,}": [scaled_payload(args.large)],
    }
    columns = {name: breakdown(bodies) for name, bodies in cases.items()}
    print("bytes per served series that a target keeps between polls (tracemalloc)\n")
    print(f"| part | {' | '.join(columns)} |")
    print(f"|---|{'---:|' * len(columns)}")
    for part in ("all", "output (served text)", *(name for name, _ in PARTS)):
        cells = [f"{sizes[part] / series:,.0f}" for series, sizes, _ in columns.values()]
        print(f"| {part} | {' | '.join(cells)} |")
    print(f"| series served | {' | '.join(f'{series:,}' for series, _, _ in columns.values())} |")
    print(f"| every target has a Steady | {' | '.join(str(s) for _, _, s in columns.values())} |")


if __name__ == "__main__":
    main()
