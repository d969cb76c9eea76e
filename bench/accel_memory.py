"""The compiled accelerator's memory over many calls: RSS after each round of split and fill calls
(on the vLLM body, a body with a value float() refuses, a body cut mid-line, and a fill whose values
go through every rule and one with too few values) should stay flat: a reference leaked per call
would grow it by megabytes a round. Prints a table; asserts nothing:

    .venv/bin/python bench/accel_memory.py [--calls 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.support import bench_vllm_body  # noqa: E402

from exporter.format import accel  # noqa: E402
from exporter.format.accel import GO_EXPONENTS, go_float  # noqa: E402


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000, help="calls of each kind in all (default 100000)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name, data = bench_vllm_body()
    refused = data.replace(b" 0.0\n", b" 0x0\n", 1)
    values, count, _, _ = accel.split(data)
    assert values is not None
    mixed: list = [v if i % 3 else float(i) * 1e7 for i, v in enumerate(values)]
    mixed[:4] = [1, True, float("nan"), -float("inf")]
    heads = (b'x{a="b"} ',) * count
    sizes = (count // 2, count - count // 2)
    print(f"accelerator: {accel.IMPLEMENTATION}; body: {name} ({len(data):,} bytes, {count} sample lines)")
    print(f"{'calls':>10} {'RSS KiB':>10}")
    print(f"{0:>10} {rss_kib():>10}")
    per_round = max(1, args.calls // args.rounds)
    for number in range(1, args.rounds + 1):
        for _ in range(per_round):
            accel.split(data)
            accel.split(refused)
            accel.split(data[:777])
            accel.fill(heads, sizes, mixed, go_float, GO_EXPONENTS)
            try:
                accel.fill(heads, sizes, mixed[:3], go_float, GO_EXPONENTS)
            except ValueError:
                pass
        gc.collect()
        print(f"{number * per_round:>10,} {rss_kib():>10}", flush=True)


if __name__ == "__main__":
    main()
