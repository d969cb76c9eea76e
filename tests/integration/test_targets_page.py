"""/targets, /targets/<name> and /api/targets: what a person debugging a target sees, in a real browser too."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
from pathlib import Path

import aiohttp
from helpers.leaks import LEAKS
from helpers.support import REPO, daemon_url, require_tool, simulated, wait_until

from exporter.runtime.scheduler import first_poll_offset

#: Screenshots land here (gitignored), for a person or CI to look at.
ARTIFACTS = REPO / "tests" / "artifacts"
PENDING_INTERVAL = 600.0


def pending_name() -> str:
    """A target name whose first poll falls at least five minutes into its interval: it stays pending."""
    return next(f"later-{i}" for i in range(100) if first_poll_offset(f"later-{i}", PENDING_INTERVAL) > 300)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def targets_json(daemon) -> dict[str, dict]:
    async with aiohttp.ClientSession() as session, session.get(daemon_url(daemon, "/api/targets")) as response:
        return {state["name"]: state for state in await response.json()}


async def three_states(upstream, start_daemon):
    """A daemon with a target up, one down and one not polled yet."""
    daemon = await start_daemon(
        f"""
defaults: {{interval: 1s, retries: 0}}
targets:
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", labels: {{pool: chat}}}}
  - {{name: broken, type: http, url: "{upstream.url}/garbage"}}
  - {{name: {pending_name()}, type: http, url: "{upstream.url}/simulated/vllm", interval: {PENDING_INTERVAL:g}s}}
"""
    )
    await wait_until(lambda: daemon.store.get("vllm").up and daemon.store.get("broken").up is False)
    return daemon


async def browser(*args: str, url: str, profile: Path) -> str:
    """Debian's chromium, headless, on loopback only; returns what it prints (the DOM for --dump-dom)."""
    chromium = require_tool("chromium")
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
    ]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # chromium refuses to run as root with its sandbox (CI containers)
    process = await asyncio.create_subprocess_exec(
        chromium, *flags, *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-2000:]
    LEAKS.search("page", out)
    return out.decode()


ROW = re.compile(r'<tr data-target="([^"]+)" data-state="(\w+)" data-samples="(\d+)">(.*?)</tr>', re.S)


async def test_the_targets_page_in_a_browser_shows_every_target_with_its_state_as_the_json_does(
    upstream, start_daemon, tmp_path
):
    daemon = await three_states(upstream, start_daemon)
    url = daemon_url(daemon, "/targets")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "targets.png"
    screenshot.unlink(missing_ok=True)

    dom = await browser("--dump-dom", url=url, profile=tmp_path / "chromium")
    await browser(f"--screenshot={screenshot}", "--window-size=1600,700", url=url, profile=tmp_path / "chromium")
    states = await targets_json(daemon)

    rows = {name: (state, int(samples), cells) for name, state, samples, cells in ROW.findall(dom)}
    assert set(rows) == set(states) == {"vllm", "broken", pending_name()}
    for name, (state, samples, cells) in rows.items():
        assert state == states[name]["state"]
        assert samples == states[name]["samples"]
        assert f">{state.upper()}</span>" in cells
        if states[name]["last_error_reason"]:
            assert states[name]["last_error_reason"] in cells
    assert [rows[name][0] for name in ("vllm", "broken", pending_name())] == ["up", "down", "pending"]
    assert "1 of 3 up" in dom and "1 down" in dom and "1 pending" in dom
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000

    debugging = ARTIFACTS / "target-broken.png"
    await browser(
        f"--screenshot={debugging}",
        "--window-size=1200,1400",
        url=daemon_url(daemon, "/targets/broken"),
        profile=tmp_path / "chromium",
    )
    assert debugging.read_bytes().startswith(b"\x89PNG")


async def test_the_pages_use_no_external_assets(upstream, start_daemon):
    daemon = await three_states(upstream, start_daemon)
    for path in ("/", "/targets", "/targets/vllm", "/targets/broken"):
        status, page = await get(daemon_url(daemon, path))
        assert status == 200
        assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
        assert not re.search(r'(src|href)="(https?:)?//', page), path


async def test_a_targets_debugging_page_shows_its_config_events_last_payload_and_series(
    upstream, start_daemon, tmp_path
):
    token = tmp_path / "token"
    token.write_text("page-token-s3cr3t\n")
    daemon = await start_daemon(
        f"""
defaults: {{interval: 1s, retries: 1, backoff: 10ms}}
targets:
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", labels: {{pool: chat}}, bearer_token_file: "{token}"}}
  - {{name: broken, type: http, url: "{upstream.url}/garbage", bearer_token: "inline-page-s3cr3t"}}
"""
    )
    await wait_until(lambda: daemon.store.get("vllm").up and daemon.store.get("broken").up is False)

    status, page = await get(daemon_url(daemon, "/targets/vllm"))
    assert status == 200
    assert "bearer_token_file: " + str(token) in page, "the config, secret files by path"
    assert "target started" in page, "recent log events"
    first_line = simulated("vllm").decode().splitlines()[0]
    assert html.escape(first_line) in page, "the raw payload as received"
    assert "vllm_num_requests_running{" in page and "pool=&quot;chat&quot;" in page, "the normalized series"

    status, page = await get(daemon_url(daemon, "/targets/broken"))
    assert status == 200
    assert "bearer_token: &lt;secret&gt;" in page
    assert "poll failed" in page and "poll attempt failed, retrying" in page, "debug events shown at any log level"
    assert "502 Bad Gateway" in page, "the body that failed to parse"
    assert "no series" in page


async def test_the_debugging_json_matches_the_page(upstream, start_daemon):
    daemon = await three_states(upstream, start_daemon)
    async with aiohttp.ClientSession() as session:
        async with session.get(daemon_url(daemon, "/api/targets/broken")) as response:
            detail = await response.json()
    assert detail["state"] == "down" and detail["last_error_reason"] == "parse"
    assert "502 Bad Gateway" in detail["raw"]["text"]
    assert any(event["event"] == "poll failed" and event["fields"]["reason"] == "parse" for event in detail["events"])
    assert detail["series"] == ""
    json.dumps(detail)


async def test_an_unknown_target_is_a_404_that_names_the_known_ones(upstream, start_daemon):
    daemon = await three_states(upstream, start_daemon)
    status, text = await get(daemon_url(daemon, "/targets/vlm"))
    assert status == 404 and "no target named 'vlm'" in text and "vllm" in text


async def test_the_unhealthy_filter_hides_targets_that_are_up(upstream, start_daemon):
    daemon = await three_states(upstream, start_daemon)
    _, page = await get(daemon_url(daemon, "/targets?state=unhealthy"))
    assert 'data-target="broken"' in page and f'data-target="{pending_name()}"' in page
    assert 'data-target="vllm"' not in page
