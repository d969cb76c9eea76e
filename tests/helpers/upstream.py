"""The upstream the `upstream` fixture starts: one aiohttp server playing every kind of backend, good
and bad, on a loopback port (the fixture is in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import defaultdict

from aiohttp import web

from helpers.support import FIXTURES, SIMULATED_TICKS, TEXT_0_0_4, Body, created_series_simulator, simulated


class Upstream:
    """One aiohttp server playing every kind of backend, good and bad, on a loopback port."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = defaultdict(int)
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/fixture/{name}", self.fixture)
        self.app.router.add_get("/simulated/{profile}", self.simulated)
        self.app.router.add_get("/body/{name}", self.body)
        self.app.router.add_get("/status/{code}", self.status)
        self.app.router.add_get("/garbage", self.garbage)
        self.app.router.add_get("/hang", self.hang)
        self.app.router.add_get("/big", self.big)
        self.app.router.add_get("/flaky/{key}/{failures}", self.flaky)
        self.app.router.add_get("/switch/{key}", self.switch)
        #: keys of /switch/{key} routes that answer 503 until removed again
        self.broken: set[str] = set()
        #: profile -> its live simulator, for /simulated/{profile}?live=1
        self.simulators: dict = {}
        #: name -> (body, Content-Type) served at /body/{name}: see `serve`
        self.bodies: dict[str, tuple[bytes, str]] = {}
        self.url = ""

    async def fixture(self, request: web.Request) -> web.Response:
        """A real capture, as text/plain 0.0.4 (tests that use one call helpers.support.capture() first)."""
        self.hits[request.path] += 1
        path = FIXTURES / request.match_info["name"]
        if not path.is_file():
            return web.Response(status=404, text=f"no capture {path.name} in {FIXTURES}\n")
        return web.Response(body=path.read_bytes(), headers={"Content-Type": TEXT_0_0_4})

    def serve(self, body) -> str:
        """Serve a helpers.support.Body at /body/{its name}; returns its URL."""
        self.bodies[body.name] = (body.data, body.content_type)
        return f"{self.url}/body/{body.name}"

    async def body(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        data, content_type = self.bodies[request.match_info["name"]]
        return web.Response(body=data, headers={"Content-Type": content_type})

    async def simulated(self, request: web.Request) -> web.Response:
        """`profile`'s simulated backend. By default the same text/plain 0.0.4 body on every request
        (after SIMULATED_TICKS seconds, seed 0); with `?live=1` a simulator that ticks once per
        request and answers as the real server does, `Accept` negotiation included; with `?created=1`
        a prometheus_client server that serves its `_created` series, answering as the real one does."""
        from exporter.simulate import simulator
        from exporter.simulate.server import answer

        self.hits[request.path] += 1
        profile = request.match_info["profile"]
        try:
            if request.query.get("created"):
                return await answer(created_series_simulator(profile), request)
            if request.query.get("live"):
                sim = self.simulators.get(profile)
                if sim is None:
                    sim = self.simulators[profile] = simulator(profile, ticks=SIMULATED_TICKS)
                sim.advance()
                return await answer(sim, request)
            return web.Response(body=simulated(profile), headers={"Content-Type": TEXT_0_0_4})
        except KeyError as exc:
            return web.Response(status=404, text=f"{exc}\n")

    async def status(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(status=int(request.match_info["code"]), text="upstream error\n")

    async def garbage(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(text="<html><body>502 Bad Gateway</body></html>\n", content_type="text/html")

    async def hang(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.release.wait(), 30)
        return web.Response(text="late 1\n")

    async def big(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        response = web.StreamResponse(headers={"Content-Type": TEXT_0_0_4})
        await response.prepare(request)
        line = b'big_gauge{i="%d"} 1\n'
        for chunk in range(64):
            await response.write(b"".join(line % (chunk * 1000 + i) for i in range(1000)))
        return response

    async def flaky(self, request: web.Request) -> web.Response:
        """Fails with 503 the first `failures` times it is asked, then serves the simulated vLLM."""
        self.hits[request.path] += 1
        if self.hits[request.path] <= int(request.match_info["failures"]):
            return web.Response(status=503, text="warming up\n")
        return self.simulated_vllm()

    async def switch(self, request: web.Request) -> web.Response:
        """Serves the simulated vLLM while its key is not in `broken`, then 503s."""
        self.hits[request.path] += 1
        if request.match_info["key"] in self.broken:
            return web.Response(status=503, text="broken on purpose\n")
        return self.simulated_vllm()

    def simulated_vllm(self) -> web.Response:
        return web.Response(body=simulated("vllm"), headers={"Content-Type": TEXT_0_0_4})


def target_name(body: Body) -> str:
    """A target name made from a payload's name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", body.name)[:100]


def fixtures_config(upstream: Upstream, bodies: list[Body]) -> str:
    """A config with one http target per payload, each served by `upstream`."""
    targets = "".join(
        f"""
  - name: {target_name(body)}
    type: http
    url: {upstream.serve(body)}
    labels: {{site: lab, fixture: "{body.name}"}}"""
        for body in bodies
    )
    return f"defaults: {{interval: 2s, timeout: 1s, retries: 0}}\ntargets:{targets}\n"
