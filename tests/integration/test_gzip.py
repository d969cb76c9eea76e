"""/metrics gzipped from pieces deflated once per poll: always exactly the uncompressed body, to every reader."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import aiohttp
import pytest
from aiohttp import web
from helpers.support import (
    body_of,
    corpora,
    every_body,
    missing,
    poll_target,
    published,
    require_tool,
    simulated_bodies,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporter.pipeline.exposition as exposition
import exporter.serve.web
from exporter.pipeline.exposition import (
    Body,
    Chunks,
    SeriesFamily,
    openmetrics_parts,
    render_openmetrics,
    render_text,
    text_parts,
)
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.collector import Collector
from exporter.serve.store import Store
from exporter.serve.web import build_app
from exporter.sources import Shared


def rendered(family: SeriesFamily) -> Chunks:
    """The text the pipeline rendered for a served family (every one it serves has it)."""
    assert family.chunks is not None
    return family.chunks


OPENMETRICS = "application/openmetrics-text; version=1.0.0"
FORMATS = {"openmetrics": (openmetrics_parts, render_openmetrics), "text": (text_parts, render_text)}


def one_member(body: bytes) -> bytes:
    """The text of a body that must be exactly one gzip member, read as Go's and Python's readers do."""
    assert body[:3] == b"\x1f\x8b\x08"
    reader = zlib.decompressobj(wbits=31)
    text = reader.decompress(body) + reader.flush()
    assert reader.eof and reader.unused_data == b""
    assert gzip.decompress(body) == text
    return text


def gzip_of(collector: Collector, fmt: str) -> tuple[bytes, bytes]:
    """(gzip body, uncompressed body) from the same merged families, as one scrape takes them."""
    parts, render = FORMATS[fmt]
    merged = collector.merged()
    return Body(parts(merged), gzip=True).finish(), render(merged)


async def fixture_store(upstream, bodies) -> Store:
    """A store of one target per body, polled once (a poller deflates nothing: scrapes do)."""
    store = Store()
    for body in bodies:
        store.publish(await poll_target(f"{{name: {body.stem[:60]}, type: http, url: '{upstream.serve(body)}'}}"))
    return store


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("payload", corpora())
async def test_gzip_body_is_exactly_the_uncompressed_body_for_every_payload(upstream, payload, fmt):
    collector = Collector(await fixture_store(upstream, [body_of(payload)]), process_metrics=False)
    cold, plain = gzip_of(collector, fmt)  # every deflated twin made by this scrape
    assert one_member(cold) == plain
    warm, _ = gzip_of(collector, fmt)  # every twin kept from the first
    assert warm == cold


@pytest.mark.parametrize("fmt", FORMATS)
async def test_gzip_body_of_many_targets_mixing_kept_and_new_pieces(upstream, fmt):
    store = await fixture_store(upstream, simulated_bodies())
    families = [family for snap in store.snapshots() for family in snap.families]
    large = [family for family in families if len(exposition.chunks(family).openmetrics) >= exposition.DEFLATE_ALONE]
    assert len(large) > 20  # chunks deflated alone, and smaller ones deflated in runs
    for family in families[::2]:  # half as an earlier scrape left them, half for this scrape to deflate
        for key in ("openmetrics", "inside", *rendered(family).outside):
            rendered(family).deflated(key)
    collector = Collector(store)  # with process metrics: our own families, deflated by each scrape
    body, plain = gzip_of(collector, fmt)
    text = one_member(body)
    # process_cpu_seconds_total and the like may move between the two renders; everything else may not.
    moving = (b"process_", b"python_gc")
    assert [line for line in text.splitlines() if not line.startswith(moving)] == [
        line for line in plain.splitlines() if not line.startswith(moving)
    ]
    assert len(body) < len(plain) / 5


@pytest.mark.parametrize("fmt", FORMATS)
def test_gzip_body_of_an_empty_store(fmt):
    body, plain = gzip_of(Collector(Store(), process_metrics=False), fmt)
    assert one_member(body) == plain and b"inference_exporter_build_info" in plain
    assert one_member(Body(iter(()), gzip=True).finish()) == b""


async def test_a_new_poll_is_never_served_from_the_previous_polls_deflated_text(aiohttp_server):
    """Twins live with the (immutable) families of one poll: the next poll's new values are what gzip serves."""
    value = 0

    async def metrics(request):
        # Large enough that each family's chunk is deflated alone and kept.
        lines = "".join(f'requests_total{{path="/p{i:03d}"}} {value + i}\n' for i in range(200))
        return web.Response(text=f"# TYPE requests_total counter\n{lines}", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = await aiohttp_server(app, host="127.0.0.1")
    from exporter.config.loader import parse_config

    config = parse_config(f"targets: [{{name: changing, type: http, url: '{server.make_url('/metrics')}'}}]\n")
    store, shared = Store(), Shared()
    try:
        poller = TargetPoller(config.targets[0], store, shared)
        collector = Collector(store, process_metrics=False)
        for value in (0, 1000, 2000):
            await poller.poll()
            for fmt in FORMATS:
                body, plain = gzip_of(collector, fmt)
                assert one_member(body) == plain
                assert f'requests_total{{path="/p007",target="changing"}} {value + 7}.0\n'.encode() in plain
            (family,) = list(published(store, "changing").families)
            assert rendered(family).twin("openmetrics") is not None and rendered(family).twin("inside") is not None
    finally:
        await shared.close()


async def test_a_poll_is_deflated_by_its_first_gzip_scrape_in_each_format_and_never_by_its_poller(upstream):
    """Pollers are told nothing of scrapes: the first gzip scrape of a poll deflates its large chunks in
    the format it asked for, and later scrapes of that poll take them as they are."""
    from exporter.config.loader import parse_config

    config = parse_config(f"targets: [{{name: vllm, type: http, url: '{upstream.url}/simulated/vllm'}}]\n")
    store, shared = Store(), Shared()

    def deflated() -> set[str]:
        return {
            key
            for family in published(store, "vllm").families
            for key in ("openmetrics", "inside", *rendered(family).outside)
            if rendered(family).twin(key) is not None
        }

    try:
        poller = TargetPoller(config.targets[0], store, shared)
        await poller.poll()
        assert deflated() == set()
        collector = Collector(store, process_metrics=False)
        render_openmetrics(collector.merged())  # an uncompressed scrape wants no deflated twins
        assert deflated() == set()
        first, _ = gzip_of(collector, "text")
        got = deflated()
        print(
            "MADE",
            [
                (
                    f.name,
                    rendered(f).twin("inside") is not None,
                    rendered(f).twin("openmetrics") is not None,
                    len(rendered(f).text("inside")),
                )
                for f in published(store, "vllm").families
            ][:12],
        )
        assert got == {"inside"}
        kept = {family.name: rendered(family).twin("inside") for family in published(store, "vllm").families}
        again, _ = gzip_of(collector, "text")
        assert again == first
        assert all(rendered(family).twin("inside") is kept[family.name] for family in published(store, "vllm").families)
        gzip_of(collector, "openmetrics")
        assert deflated() == {"inside", "openmetrics"}
        await poller.poll()  # a new poll: new text, nothing deflated yet
        assert deflated() == set()
    finally:
        await shared.close()


@pytest.fixture
async def still_server(upstream, aiohttp_server):
    """/metrics over a store that holds still: every payload of both corpora as a target, no process metrics."""
    store = await fixture_store(upstream, every_body())
    app = build_app(store, Collector(store, process_metrics=False), is_ready=lambda: True)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/metrics"))


@pytest.mark.parametrize("accept", [OPENMETRICS, "text/plain"])
async def test_curl_and_aiohttp_read_the_gzipped_metrics(still_server, accept):
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(still_server, headers={"Accept": accept, "Accept-Encoding": "identity"}) as response:
            assert "Content-Encoding" not in response.headers
            plain = await response.read()
        async with session.get(still_server, headers={"Accept": accept, "Accept-Encoding": "gzip"}) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert response.headers["Vary"] == "Accept-Encoding"
            compressed = await response.read()
    assert len(compressed) < len(plain) / 5
    assert one_member(compressed) == plain
    async with aiohttp.ClientSession() as session:  # decompressing as it reads
        async with session.get(still_server, headers={"Accept": accept, "Accept-Encoding": "gzip"}) as response:
            assert await response.read() == plain
    curl = require_tool("curl")
    process = await asyncio.create_subprocess_exec(
        curl,
        "--silent",
        "--show-error",
        "--fail",
        "--compressed",
        "--header",
        f"Accept: {accept}",
        "--write-out",
        "%{size_download}",
        "--output",
        "-",
        still_server,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    size = out[len(plain) :]
    assert out[: len(plain)] == plain and int(size) == len(compressed)  # curl downloaded it compressed


async def test_the_serving_side_deflates_a_poll_ahead_only_while_gzip_scrapes_take_the_polls_before(upstream):
    """/metrics tells the ahead deflater of gzip scrapes; the poll published after one is deflated in that
    scrape's format before any scrape asks, and a poll after an unscraped one is not (a family whose
    text did not change is the last poll's, and keeps the twins it had). The upstream's values move
    with every request, as a live server's do."""
    from exporter.config.loader import parse_config
    from exporter.pipeline.exposition import DEFLATE_ALONE

    config = parse_config(f"targets: [{{name: vllm, type: http, url: '{upstream.url}/simulated/vllm?live=1'}}]\n")
    store, shared = Store(), Shared()
    app = build_app(store, Collector(store, process_metrics=False), is_ready=lambda: True)
    ahead = app[exporter.serve.web.AHEAD_KEY]
    last: list = []  # the last poll's families

    async def poll() -> tuple[list, list]:
        """(this poll's families large enough to be deflated ahead, those of them it made)"""
        await poller.poll()
        if ahead.pending is not None:
            ahead.pending.result()  # what it was given so far is done
        families = list(published(store, "vllm").families)
        made = [family for family in families if not any(family is old for old in last)]
        last[:] = families
        large = [family for family in families if len(rendered(family).openmetrics) >= DEFLATE_ALONE]
        return large, made

    def twins(families: list, key: str) -> list[bool]:
        return [rendered(family).twin(key) is not None for family in families]

    try:
        poller = TargetPoller(config.targets[0], store, shared)
        large, made = await poll()
        assert large and not any(twins(made, "openmetrics") + twins(made, "inside"))
        ahead.scraped(openmetrics=True)  # a gzip scrape took that poll (as /metrics says)
        large, made = await poll()
        assert all(twins(large, "openmetrics")) and not any(twins(made, "inside"))
        large, made = await poll()  # no scrape since the last poll: nothing deflated ahead
        assert made and not any(twins(made, "openmetrics") + twins(made, "inside"))
        ahead.scraped(openmetrics=False)
        large, made = await poll()
        assert all(twins(large, "inside"))
    finally:
        await shared.close()


def test_the_ahead_deflater_forgets_targets_that_left_the_store():
    from exporter.pipeline.exposition import AheadDeflater

    alive: list[str] = []
    ahead = AheadDeflater(lambda: alive)
    for number in range(1000):  # targets come and go, as reloads rename them
        alive[:] = [f"t{number}"]
        ahead.observe([], f"t{number}")
    assert len(ahead._published) <= 2 * len(alive) + 16


@pytest.fixture(params=["zlib-ng", "zlib"])
def backend(request, monkeypatch):
    """Each zlib the daemon may deflate with (exporter.core.compression): zlib-ng's where installed, the
    standard library's otherwise; each thread's compressor made anew by the one under test."""
    import exporter.core.compression as compression

    if request.param == "zlib-ng":
        if compression.BACKEND != "zlib-ng":
            missing("zlib-ng is not installed (a dependency: pip install the package)")
        module = compression.zlib
    else:
        module = zlib
    monkeypatch.setattr(exposition, "zlib", module)
    monkeypatch.setattr(exposition, "_compressors", type(exposition._compressors)())
    return module


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.one_of(st.binary(max_size=3000), st.sampled_from([b"", b"a", b"x 1.0\n" * 400])), max_size=12))
def test_pieces_deflated_apart_join_into_the_one_body_with_either_zlib(backend, texts):
    """What the scrape's gzip rests on: pieces each deflated with a full flush, by one compressor reused,
    join into one stream that inflates to the pieces joined, and each is the bytes a fresh compressor
    makes, whichever zlib deflated them."""
    pieces = [exposition.deflate(text) for text in texts]
    for text, piece in zip(texts, pieces):
        fresh = backend.compressobj(1, backend.DEFLATED, -exposition.WINDOW_BITS, exposition.MEMORY_LEVEL)
        assert piece == fresh.compress(text) + fresh.flush(backend.Z_FULL_FLUSH)
    body = Body([(text, None, "") for text in texts], gzip=True).finish()
    assert one_member(body) == b"".join(texts)
