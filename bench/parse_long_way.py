"""The long way's parse on a first poll: `parse()` without caches, on the 199k-sample payload.

Prints samples per CPU-second (best of --repeat, one core) for the line reader alone (what `parse`
did before it read plain lines many at once: `exporter.format.parse._parse_by_line`), for `parse`, and for
prometheus_client's parser on the same bytes, with ratios measured in this run. Three bodies: the
payload in the text format, the same families rendered by prometheus_client's OpenMetrics writer, and
the text body with `keep` dropping about half of the families. No assertions:

    .venv/bin/python bench/parse_long_way.py [--samples N] [--repeat N] [--body FILE] [--default-gc]

By default the garbage collector runs as the daemon sets it (exporter.runtime.daemon.tune_garbage_collection);
--default-gc keeps CPython's thresholds, which make each parse pay several full collections.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import zlib
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from scenarios import bench_vllm_body, scaled_body  # noqa: E402

from exporter.format.parse import _decode, _parse_by_line, parse  # noqa: E402
from exporter.runtime.daemon import tune_garbage_collection  # noqa: E402


def payload(samples: int) -> bytes:
    """The vLLM fixture repeated with a new `replica` label value per copy (as bench/scenarios.py does)."""
    _, body = bench_vllm_body()
    return scaled_body(body.decode(), samples, "r")[0]


#: The names an OpenMetrics family of each type takes (prometheus_client.openmetrics.parser refuses a
#: second family that takes one of them).
SUFFIXES = {
    "counter": ["_total", "_created"],
    "summary": ["_count", "_sum", "_created"],
    "histogram": ["_count", "_sum", "_bucket", "_created"],
    "gaugehistogram": ["_gcount", "_gsum", "_bucket"],
    "info": ["_info"],
}


def as_openmetrics(body: bytes) -> bytes:
    """The same families in OpenMetrics (counters named without `_total`, `unknown` for untyped, `# EOF`),
    less any family whose names clash with an earlier one's (vLLM's `x_created` gauges beside its
    counters and histograms `x`), which prometheus_client's strict parser refuses."""
    lines: list[str] = []
    taken: set[str] = set()
    for family in parse(body).families:
        kind = "unknown" if family.type == "untyped" else family.type
        name = family.name[: -len("_total")] if kind == "counter" and family.name.endswith("_total") else family.name
        names = {name + suffix for suffix in ["", *SUFFIXES.get(kind, [])]}
        if names & taken or not family.samples:
            continue
        taken |= names
        lines += [f"# HELP {name} {escaped(family.help)}", f"# TYPE {name} {kind}"]
        for sample in family.samples:
            labels = ",".join(f'{key}="{escaped(value)}"' for key, value in sample.labels.items())
            lines.append(
                f"{sample.name}{{{labels}}} {number(sample.value)}"
                if labels
                else f"{sample.name} {number(sample.value)}"
            )
    return ("\n".join(lines) + "\n# EOF\n").encode()


def escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    if value != value:
        return "NaN"
    return {float("inf"): "+Inf", float("-inf"): "-Inf"}.get(value) or repr(value)


def half_the_families(name: str) -> bool:
    return zlib.crc32(name.encode()) % 2 == 0


def best_cpu(work, repeat: int) -> float:
    """The least CPU time of `repeat` runs of `work`, its result dropped before the next."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        result = work()
        best = min(best, time.process_time() - start)
        del result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=199_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--body", type=Path, help="a text-format body to read instead of the scaled fixture")
    parser.add_argument("--default-gc", action="store_true", help="keep CPython's collector thresholds")
    args = parser.parse_args()
    if not args.default_gc:
        tune_garbage_collection()
    text_body = args.body.read_bytes() if args.body else payload(args.samples)
    om_body = as_openmetrics(text_body)
    cases = [
        ("text", text_body, False, None, text_string_to_metric_families),
        ("OpenMetrics", om_body, True, None, openmetrics_families),
        ("text, keep half", text_body, False, half_the_families, text_string_to_metric_families),
    ]
    print(
        f"garbage collector: {'CPython defaults' if args.default_gc else 'as the daemon sets it'} {gc.get_threshold()}"
    )
    header = f"{'body':16} {'samples':>8} {'line reader/s':>14} {'parse/s':>10} {'prom_client/s':>14} {'parse/line':>10} {'parse/prom':>10}"
    print(header)
    print("-" * len(header))
    for label, body, openmetrics, keep, reference in cases:
        result = parse(body, openmetrics=openmetrics, keep=keep)
        samples = sum(len(family.samples) for family in result.families)
        text, truncated = _decode(body)
        line_reader = best_cpu(
            lambda: _parse_by_line(text, truncated, openmetrics, None, keep, {}, None, None), args.repeat
        )
        ours = best_cpu(lambda: parse(body, openmetrics=openmetrics, keep=keep), args.repeat)
        if keep is None:
            theirs = best_cpu(lambda: list(reference(body.decode())), args.repeat)
            reference_columns = f"{samples / theirs:>14,.0f} {line_reader / ours:>9.2f}x {theirs / ours:>9.2f}x"
        else:  # it has no `keep`: reading every family is not the same work
            reference_columns = f"{'-':>14} {line_reader / ours:>9.2f}x {'-':>10}"
        print(f"{label:16} {samples:>8} {samples / line_reader:>14,.0f} {samples / ours:>10,.0f} {reference_columns}")
    print("line reader: parse before it read plain lines many at once (exporter.format.parse._parse_by_line)")


if __name__ == "__main__":
    main()
