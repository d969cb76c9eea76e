"""The fixtures and hooks every test can use: real servers (an upstream playing every kind of
backend, the daemon, nats-server) and the secrets search over every log line and page. What tests
import lives in tests/helpers/."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from typing import TextIO, cast

import pytest
import structlog
from aiohttp import web
from helpers.leaks import LEAKS, SearchedHandler, SearchedLog
from helpers.support import free_port
from helpers.upstream import Upstream

import exporter.runtime.daemon
from exporter.config.loader import parse_config
from exporter.core.logs import configure
from exporter.runtime.daemon import Daemon
from exporter.sources import Shared


@pytest.fixture(autouse=True, scope="session")
def _logs():
    """Debug logs, every line of which is also searched for secrets (see helpers/leaks.py)."""
    configure("debug", "console")
    searched = cast(TextIO, SearchedLog(sys.stderr))  # the PrintLogger only writes and flushes it
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=searched))
    handler = SearchedHandler()
    logging.getLogger().addHandler(handler)
    yield
    logging.getLogger().removeHandler(handler)


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


@pytest.fixture
async def shared() -> AsyncIterator[Shared]:
    """What a test's sources share (exporter.sources.Shared: the HTTP session), closed after it."""
    resources = Shared()
    yield resources
    await resources.close()


@pytest.fixture
async def upstream(aiohttp_server) -> AsyncIterator[Upstream]:
    """helpers.upstream.Upstream on a loopback port, for this test."""
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
    from helpers.nats_server import NATSServer

    server = await NATSServer(tmp_path).start()
    yield server
    await server.stop()
