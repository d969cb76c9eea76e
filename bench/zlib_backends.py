"""The standard library's zlib beside zlib-ng's (exporter/core/compression.py) on a real payload.

    .venv/bin/python bench/zlib_backends.py [--fixture /work/shared/fixtures/vllm-v1-dynamo-worker-metrics_examples-vllm.prom]

Prints, for each, the best of five rounds per call: a served piece deflated as exporter.pipeline.exposition
deflates one (level 1, its window and memory level, a full flush) and its size, an upstream's gzip body
(level 6) inflated as aiohttp inflates one, and a CRC-32 of the text. No assertions: the machine may be
shared; the load average is printed.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
import zlib
from pathlib import Path

from exporter.pipeline.exposition import MEMORY_LEVEL, WINDOW_BITS

FIXTURE = Path("/work/shared/fixtures/vllm-v1-dynamo-worker-metrics_examples-vllm.prom")


def best(call, count: int = 200) -> float:
    """The best of five rounds, in µs a call."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            call()
        rounds.append((time.perf_counter() - started) / count)
    return min(rounds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    data = parser.parse_args().fixture.read_bytes()
    body = gzip.compress(data, 6)
    backends = [("zlib", zlib)]
    try:
        from zlib_ng import zlib_ng

        backends.append(("zlib-ng", zlib_ng))
    except ImportError:
        print("zlib-ng is not installed: the standard library's alone")
    print(f"{len(data)} bytes of text, {len(body)} gzipped; load average {os.getloadavg()[0]:.2f}")
    print("| zlib | deflate, level 1 | its size | inflate | CRC-32 |")
    print("|---|---:|---:|---:|---:|")
    for name, module in backends:
        compressor = module.compressobj(1, module.DEFLATED, -WINDOW_BITS, MEMORY_LEVEL)

        def deflate(compressor=compressor, module=module) -> bytes:
            return compressor.compress(data) + compressor.flush(module.Z_FULL_FLUSH)

        size = len(deflate())
        inflate = best(lambda module=module: module.decompressobj(16 + 15).decompress(body))
        crc = best(lambda module=module: module.crc32(data))
        print(f"| {name} | {best(deflate):.0f} µs | {size} B | {inflate:.0f} µs | {crc:.1f} µs |")


if __name__ == "__main__":
    main()
