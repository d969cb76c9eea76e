"""An upstream's gzip bomb costs the poll a bounded piece of it, not the inflated body.

`HTTPSource._read_body` counts what aiohttp hands it against `body_size_limit` before keeping it; what
bounds the memory of one inflated piece is aiohttp's own decompression, which produces at most a bounded
piece per call since 3.13.3 (GHSA-6mq8-rvhq-8wgg, CVE-2025-69223; before it, one 64 kB read of a bomb
inflated whole, ~64 MB). pyproject.toml must not let an older aiohttp in.
"""

from __future__ import annotations

import gzip
import re
import tomllib
import tracemalloc

from aiohttp import web
from helpers.support import REPO
from packaging.version import Version

from exporter.config.loader import parse_config
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.store import Store
from exporter.sources import Shared

#: 64 MiB of newlines: ~64 kB gzipped, one socket read.
BOMB = gzip.compress(b"\n" * (64 * 1024 * 1024), 9)
#: The first aiohttp whose inflating is bounded (3.13.3), and whose header and trailer counts are (3.13.4).
BOUNDED_AIOHTTP = Version("3.13.4")


def test_pyproject_asks_for_an_aiohttp_that_inflates_a_bounded_piece_at_a_time():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = next(re.fullmatch(r"aiohttp>=([0-9.]+)", d) for d in dependencies if d.startswith("aiohttp"))
    assert floor is not None and Version(floor[1]) >= BOUNDED_AIOHTTP


async def test_a_gzip_bomb_costs_the_poll_a_bounded_piece_of_it(aiohttp_server):
    async def bomb(request: web.Request) -> web.Response:
        return web.Response(body=BOMB, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    app = web.Application()
    app.router.add_get("/metrics", bomb)
    server = await aiohttp_server(app)
    config = f"targets:\n  - {{name: b, type: http, url: '{server.make_url('/metrics')}', body_size_limit: 1MiB}}\n"
    shared = Shared()
    try:
        poller = TargetPoller(parse_config(config).targets[0], Store(), shared)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            snapshot = await poller.poll()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        await shared.close()
    assert (snapshot.up, snapshot.last_reason) == (False, "body_too_large")
    assert peak < 16 * 1024 * 1024, f"{peak} bytes at the peak of a poll refused at 1 MiB"
