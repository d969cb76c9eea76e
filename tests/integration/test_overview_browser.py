"""/overview in a real browser: headless Chromium driven over the DevTools protocol (aiohttp websockets).

The daemon runs as `run --demo` does; the page must show every backend the demo starts, take live
updates from the stream without reloading, and leave a screenshot in tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
from pathlib import Path

import aiohttp
import pytest
from helpers.fake_nvml import FakeNVML, eight_gpus
from helpers.simulated_vllm import SimulatedVLLM
from helpers.support import REPO, daemon_url, free_port, require_tool, wait_until

from exporter.sources.nvml import source as nvml_source

ARTIFACTS = REPO / "tests" / "artifacts"


class DevTools:
    """One page of a headless Chromium, by the DevTools protocol over its websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params):
        ident = next(self._ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        async with asyncio.timeout(30):
            async for message in self.ws:
                data = json.loads(message.data)
                if data.get("id") == ident:
                    assert "error" not in data, data["error"]
                    return data["result"]
        raise AssertionError(f"the browser closed the connection during {method}")

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def chromium(url: str, profile: Path):
    """Headless Chromium on loopback showing `url`, with DevTools on a free loopback port."""
    binary = require_tool("chromium")
    port = free_port()
    flags = [
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}",
        "--remote-debugging-address=127.0.0.1",
        "--window-size=1920,1600",
    ]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")
    process = await asyncio.create_subprocess_exec(
        binary, *flags, url, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as session:

            async def page_socket():
                try:
                    async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                        pages = [t for t in await response.json() if t["type"] == "page"]
                except aiohttp.ClientError:
                    return None
                return pages[0]["webSocketDebuggerUrl"] if pages else None

            socket_url = await wait_until(page_socket, timeout=60, interval=0.2)
            async with session.ws_connect(socket_url, max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        process.terminate()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(process.wait(), 20)


@pytest.fixture
async def busy_backend(aiohttp_server):
    """A simulated vLLM with traffic every half second, beside the demo's (so the picture has numbers that move)."""
    sim = SimulatedVLLM(model="sim/llama-3-8b")
    server = await aiohttp_server(sim.app(), host="127.0.0.1")
    sim.url = str(server.make_url("/metrics"))

    async def traffic():
        while True:
            sim.step(sim.random.randint(5, 15), errors=sim.random.randint(0, 1))
            await asyncio.sleep(0.5)

    task = asyncio.create_task(traffic())
    yield sim
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_the_overview_shows_every_demo_backend_and_updates_live_without_a_reload(
    start_daemon, busy_backend, monkeypatch, tmp_path
):
    monkeypatch.setattr(nvml_source, "load_binding", lambda: FakeNVML(eight_gpus()))
    daemon = await start_daemon(
        "defaults: {interval: 1s}\ntargets:\n"
        f"  - {{name: llama, type: http, url: '{busy_backend.url}'}}\n"
        "  - {name: gpus, type: nvml}\n",
        demo=True,
    )
    await wait_until(lambda: all(snapshot.up is not None for snapshot in daemon.store.snapshots()), timeout=20)
    backends = {snapshot.target.name for snapshot in daemon.store.snapshots() if snapshot.target.type != "nvml"}
    assert backends, "the demo starts at least one backend"
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "overview.png"
    screenshot.unlink(missing_ok=True)

    async with chromium(daemon_url(daemon, "/overview"), tmp_path / "chromium") as page:
        await page.call("Runtime.enable")
        # the first message from the stream has been drawn
        await wait_until(
            lambda: page.evaluate("document.body ? Number(document.body.dataset.updates) : 0"), timeout=30, interval=0.1
        )
        before = await page.evaluate(
            "({origin: performance.timeOrigin, updates: Number(document.body.dataset.updates),"
            " generated: Number(document.getElementById('updated').dataset.generated),"
            " live: document.getElementById('live').textContent})"
        )
        await asyncio.sleep(2.0)
        after = await page.evaluate(
            "({origin: performance.timeOrigin, updates: Number(document.body.dataset.updates),"
            " generated: Number(document.getElementById('updated').dataset.generated),"
            " rows: [...document.querySelectorAll('#backend-rows tr')].map(r => r.dataset.target),"
            " health: [...document.querySelectorAll('#backend-rows .badge')].map(b => b.textContent),"
            " gpus: document.querySelectorAll('#gpu-rows tr[data-gpu]').length})"
        )
        shot = await page.call("Page.captureScreenshot", format="png")

        # the same page with scripts off: read through the DOM domain, which needs no script
        await page.call("Emulation.setScriptExecutionDisabled", value=True)
        await page.call("Page.navigate", url=daemon_url(daemon, "/overview?window=5m"))

        async def served():
            try:
                root = (await page.call("DOM.getDocument", depth=0))["root"]["nodeId"]
                text = (await page.call("DOM.getOuterHTML", nodeId=root))["outerHTML"]
            except AssertionError:  # the document was replaced in between: the navigation is under way
                return None
            return text if 'data-window="5m"' in text and "</html>" in text else None

        text = await wait_until(served, timeout=30, interval=0.2)
        served_without_script = {"html": text, "rows": set(re.findall(r'<tr data-target="([^"]+)" data-model', text))}
    screenshot.write_bytes(base64.b64decode(shot["data"]))

    assert before["live"] == "live"
    assert after["origin"] == before["origin"], "the page was not reloaded"
    assert after["updates"] > before["updates"] and after["generated"] > before["generated"], "updated within 2 s"
    assert set(after["rows"]) == backends, "every backend the demo started, and the configured one"
    assert after["gpus"] == len(eight_gpus())
    assert all(text in ("HEALTHY", "DEGRADED", "UNHEALTHY", "UNKNOWN") for text in after["health"])
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000

    assert served_without_script["rows"] == backends, "with scripts off, the page as served has every row"
    assert 'http-equiv="refresh"' in served_without_script["html"], "... and refreshes itself"
    assert 'data-updates="0"' in served_without_script["html"], "no script ran"
