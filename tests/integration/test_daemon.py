"""The daemon's own surface: readiness, the targets API and page, and SIGHUP reloads."""

from __future__ import annotations

import aiohttp
from helpers.support import daemon_url, wait_until


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_readyz_waits_for_every_first_poll_and_healthz_does_not(upstream, start_daemon):
    daemon = await start_daemon(
        f'defaults: {{interval: 1s}}\ntargets:\n  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}\n'
    )
    assert (await get(daemon_url(daemon, "/healthz")))[0] == 200
    await wait_until(lambda: daemon.store.get("vllm").up)
    assert await get(daemon_url(daemon, "/readyz")) == (200, "ready\n")


async def test_targets_api_and_page_show_each_target_state_and_error_without_secrets(upstream, start_daemon, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    daemon = await start_daemon(
        f"""
defaults: {{interval: 1s, retries: 0}}
targets:
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", bearer_token_file: "{token}"}}
  - {{name: broken, type: http, url: "{upstream.url}/status/502", bearer_token: "inline-s3cr3t"}}
"""
    )
    await wait_until(lambda: all(snap.up is not None for snap in daemon.store.snapshots()))
    async with aiohttp.ClientSession() as session, session.get(daemon_url(daemon, "/api/targets")) as response:
        states = {state["name"]: state for state in await response.json()}
    assert states["vllm"]["state"] == "up" and states["vllm"]["samples"] > 100
    assert states["broken"]["state"] == "down" and states["broken"]["last_error_reason"] == "http_status"
    assert "502" in states["broken"]["last_error"]
    status, page = await get(daemon_url(daemon, "/targets"))
    assert status == 200 and "1 of 2 up" in page and "http_status" in page
    for text in (str(states), page):
        assert "s3cr3t" not in text


async def test_reload_applies_a_new_config_per_target_and_a_bad_one_keeps_the_running_config(upstream, start_daemon):
    first = f"""
defaults: {{interval: 1s}}
targets:
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}
  - {{name: gone, type: http, url: "{upstream.url}/simulated/vllm"}}
"""
    daemon = await start_daemon(first)
    await wait_until(lambda: all(snap.up for snap in daemon.store.snapshots()))
    polls_before = daemon.store.get("vllm").polls

    daemon.config_path.write_text(
        f"""
defaults: {{interval: 1s}}
targets:
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}
  - {{name: sglang, type: http, url: "{upstream.url}/simulated/sglang"}}
"""
    )
    assert await daemon.reload() is True
    await wait_until(lambda: daemon.store.get("sglang") is not None and daemon.store.get("sglang").up)
    assert daemon.store.get("gone") is None
    assert daemon.store.get("vllm").polls >= polls_before, "an unchanged target keeps its state"
    _, text = await get(daemon_url(daemon))
    assert 'target="gone"' not in text and 'target="sglang"' in text
    assert "inference_exporter_config_last_reload_successful 1.0" in text

    daemon.config_path.write_text("targets:\n  - {name: vllm, type: htp}\n")
    assert await daemon.reload() is False
    _, text = await get(daemon_url(daemon))
    assert "inference_exporter_config_last_reload_successful 0.0" in text
    assert 'target="sglang"' in text, "the running config stays"
