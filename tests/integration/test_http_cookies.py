"""`type: http` keeps no cookies: a Set-Cookie from a hostile upstream is never stored, so it is never
sent back to it nor to another target on the same host (cookies do not tell ports apart); a `Cookie`
header configured for a target is sent as configured. And a target whose Content-Type changes between
polls is read by the Content-Type of each poll."""

from __future__ import annotations

import json

from aiohttp import web

from exporter.config.loader import parse_config
from exporter.sources.http import HTTPSource

TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_1_0_0 = "application/openmetrics-text; version=1.0.0"


def http_target(name: str, url: str, extra: str = ""):
    text = f"targets:\n  - name: {name}\n    type: http\n    url: {json.dumps(url)}\n"
    if extra:
        text += f"    {extra}\n"
    return parse_config(text).targets[0]


async def test_a_set_cookie_from_an_upstream_is_never_sent_to_it_or_to_another_target(aiohttp_server, shared):
    seen: list[tuple[str, str | None]] = []

    async def planting(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Cookie")))
        response = web.Response(body=b"up_gauge 1\n", headers={"Content-Type": TEXT_0_0_4})
        response.set_cookie("session", "planted-by-upstream", path="/")
        response.headers.add("Set-Cookie", "other=also; Domain=localhost; Path=/")
        return response

    app = web.Application()
    app.router.add_get("/a/metrics", planting)
    app.router.add_get("/b/metrics", planting)
    server = await aiohttp_server(app, host="127.0.0.1")
    # By name, not by address: aiohttp's default jar kept no cookie from an IP address, so only a host
    # name shows whether cookies are kept.
    base = f"http://localhost:{server.port}"
    first = HTTPSource(http_target("a", f"{base}/a/metrics"), shared)
    second = HTTPSource(http_target("b", f"{base}/b/metrics"), shared)
    for _ in range(2):
        await first.poll()
        await second.poll()

    assert seen == [("/a/metrics", None), ("/b/metrics", None)] * 2
    session = shared.get("http.session", lambda: None)
    assert session is not None and len(session.cookie_jar) == 0


async def test_a_configured_cookie_header_is_sent_as_configured_on_every_poll(aiohttp_server, shared):
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(body=b"up_gauge 1\n", headers={"Content-Type": TEXT_0_0_4})
        response.set_cookie("session", "replaced-by-upstream")
        return response

    app = web.Application()
    app.router.add_get("/metrics", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    target = http_target("t", f"http://localhost:{server.port}/metrics", 'headers: {Cookie: "session=configured"}')
    source = HTTPSource(target, shared)
    for _ in range(3):
        await source.poll()

    assert seen == ["session=configured"] * 3


async def test_each_poll_is_read_by_its_own_content_type(aiohttp_server, shared):
    answers = iter(
        [OPENMETRICS_1_0_0, TEXT_0_0_4, TEXT_0_0_4 + "; escaping=underscores", "application/json", OPENMETRICS_1_0_0]
    )

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"up_gauge 1\n", headers={"Content-Type": next(answers)})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    source = HTTPSource(http_target("t", str(server.make_url("/metrics"))), shared)
    read = []
    for _ in range(5):
        payload = await source.poll()
        assert payload.exposition is not None
        read.append((payload.exposition.openmetrics, payload.exposition.escaping, payload.content_type))

    assert read == [
        (True, None, OPENMETRICS_1_0_0),
        (False, None, TEXT_0_0_4),
        (False, "underscores", TEXT_0_0_4 + "; escaping=underscores"),
        (False, None, "application/json"),
        (True, None, OPENMETRICS_1_0_0),
    ]
