"""Serve simulators over HTTP on loopback, each on its own port, the way the real server answers.

A `PythonSimulator` is answered by prometheus_client's own ASGI app (`make_asgi_app`, what vLLM
mounts at /metrics), called from aiohttp through a minimal ASGI bridge, so content negotiation,
escaping and gzip are prometheus_client's. A `TextSimulator` answers its text whatever is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip

from aiohttp import web
from prometheus_client import make_asgi_app

from exporter.simulate.base import PythonSimulator, Simulator

#: How often a started server's simulator ticks, in seconds.
TICK_EVERY = 1.0


class SimulatedServer:
    """One simulator behind its own aiohttp server; ticks once a second while `ticking`."""

    def __init__(self, simulator: Simulator, *, ticking: bool = True, tick_every: float = TICK_EVERY) -> None:
        self.simulator = simulator
        self.ticking = ticking
        self.tick_every = tick_every
        self.url = ""
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None
        self._asgi = make_asgi_app(simulator.exposed) if isinstance(simulator, PythonSimulator) else None

    def app(self) -> web.Application:
        app = web.Application()
        path = self.simulator.path.rstrip("/")
        app.router.add_get(path, self._serve)
        app.router.add_get(path + "/", self._serve)  # vLLM's Starlette mount answers /metrics/
        return app

    async def _serve(self, request: web.Request) -> web.Response:
        self.requests += 1
        return await answer(self.simulator, request, self._asgi)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}{self.simulator.path}"
        if self.ticking:
            self._ticker = asyncio.create_task(self._tick_forever(), name=f"simulated {self.simulator.profile}")
        return self.url

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_every)
            self.simulator.advance()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def answer(simulator: Simulator, request: web.Request, asgi=None) -> web.Response:
    """The response the real server gives `request`: prometheus_client's ASGI app for a Python
    backend (`asgi`, made once per registry, or a new one), the backend's text otherwise."""
    if isinstance(simulator, PythonSimulator):
        return await _call_asgi(asgi or make_asgi_app(simulator.exposed), request)
    body, content_type = simulator.render(request.headers.get("Accept", ""))
    headers = {"Content-Type": content_type}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    return web.Response(body=body, headers=headers)


async def _call_asgi(app, request: web.Request) -> web.Response:
    """Answer one aiohttp request with an ASGI app (HTTP, one request body, one response)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.encode(),
        "query_string": request.query_string.encode(),
        "root_path": "",
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in request.headers.items()
        ],
        "client": None,
        "server": None,
    }
    body = await request.read()
    received = False

    async def receive() -> dict:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    status, headers, chunks = 500, [], []

    async def send(message: dict) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    response = web.Response(status=status, body=b"".join(chunks))
    for name, value in headers:
        response.headers[name] = value  # Content-Type with its parameters, Content-Encoding, as sent
    return response
