"""Real servers for the tests: upstreams serving the simulated backends (and the real captures, where
they are), misbehaving upstreams, the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import TextIO, cast

import pytest
import structlog
from aiohttp import web
from leaks import LEAKS
from support import FIXTURES, SIMULATED_TICKS, created_series_simulator, free_port, simulated

import exporter.runtime.daemon
from exporter.config.loader import parse_config
from exporter.core.logs import configure
from exporter.runtime.daemon import Daemon
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.store import Snapshot, Store
from exporter.sources import Shared

TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture(autouse=True, scope="session")
def _logs():
    """Debug logs, every line of which is also searched for secrets (see leaks.py)."""
    configure("debug", "console")
    searched = cast(TextIO, _SearchedLog(sys.stderr))  # the PrintLogger only writes and flushes it
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=searched))
    handler = _SearchedHandler()
    logging.getLogger().addHandler(handler)
    yield
    logging.getLogger().removeHandler(handler)


class _SearchedLog:
    def __init__(self, file) -> None:
        self.file = file

    def write(self, text: str) -> int:
        LEAKS.search("log", text)
        return self.file.write(text)

    def flush(self) -> None:
        self.file.flush()


class _SearchedHandler(logging.Handler):
    """The standard library's log records (aiohttp, asyncio), searched too."""

    def emit(self, record: logging.LogRecord) -> None:
        LEAKS.search("log", self.format(record))


@pytest.fixture(autouse=True, scope="session")
def _pages_searched():
    """Every response of every daemon the tests start in-process is searched for secrets."""

    @web.middleware
    async def search_pages(request, handler):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            LEAKS.search("page", exc.text or "")
            raise
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            LEAKS.search("page", response.body)
        return response

    build_app = exporter.runtime.daemon.build_app

    def searched_app(*args, **kwargs):
        app = build_app(*args, **kwargs)
        app.middlewares.insert(0, search_pages)
        return app

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exporter.runtime.daemon, "build_app", searched_app)
        yield


@pytest.fixture(autouse=True)
def _name_leaks(request):
    LEAKS.test = request.node.nodeid


def pytest_collection_modifyitems(items):
    """Tests marked `after_all` run last: they check what the others produced."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


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
        """A real capture, as text/plain 0.0.4 (tests that use one call support.capture() first)."""
        self.hits[request.path] += 1
        path = FIXTURES / request.match_info["name"]
        if not path.is_file():
            return web.Response(status=404, text=f"no capture {path.name} in {FIXTURES}\n")
        return web.Response(body=path.read_bytes(), headers={"Content-Type": TEXT_0_0_4})

    def serve(self, body) -> str:
        """Serve a support.Body at /body/{its name}; returns its URL."""
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


@pytest.fixture
async def upstream(aiohttp_server) -> AsyncIterator[Upstream]:
    up = Upstream()
    server = await aiohttp_server(up.app, host="127.0.0.1")
    up.url = str(server.make_url("")).rstrip("/")
    yield up
    up.release.set()


@pytest.fixture
async def start_daemon(tmp_path):
    """Start a Daemon from YAML text in this test's event loop; stopped at the end of the test."""
    daemons: list[Daemon] = []

    async def start(yaml_text: str, **kwargs) -> Daemon:
        path = tmp_path / "config.yaml"
        path.write_text(yaml_text)
        config = parse_config(yaml_text, str(path))
        daemon = Daemon(config, config_path=path, listen=f"127.0.0.1:{free_port()}", **kwargs)
        await daemon.start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        await daemon.close()


@pytest.fixture
async def natsd(tmp_path):
    """One real nats-server on loopback ports, killed at the end."""
    from nats_server import NATSServer

    server = await NATSServer(tmp_path).start()
    yield server
    await server.stop()


def daemon_url(daemon: Daemon, path: str = "/metrics") -> str:
    host, port = daemon.bound[0][:2]
    return f"http://{host}:{port}{path}"


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll `predicate` until it is truthy; fail the test with a clear message if it never is."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def poll_target(target_yaml: str) -> Snapshot:
    """Poll one target, given as the YAML of one `targets:` item, once through the daemon's own poll path."""
    config = parse_config(
        "defaults: {interval: 5s, timeout: 2s, retries: 0}\ntargets:\n  - " + target_yaml.strip() + "\n"
    )
    shared = Shared()
    try:
        poller = TargetPoller(config.targets[0], Store(), shared)
        return await poller.poll()
    finally:
        await shared.close()


def served_samples(snapshot: Snapshot) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value for every series the snapshot serves."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in snapshot.families
        for sample in family.samples
    }
