"""A broken target never hurts the others or the scrape; each failure is counted with its own reason."""

from __future__ import annotations

import asyncio

import aiohttp
from helpers.support import daemon_url, free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families


def series(text: str, name: str) -> dict[str, float]:
    """target -> value of one self-metric, or of `name{reason=...}` keyed target/reason."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels["target"]
                if "reason" in sample.labels:
                    key += "/" + sample.labels["reason"]
                values[key] = sample.value
    return values


async def get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def test_broken_targets_are_down_with_their_own_reason_and_healthy_ones_untouched(upstream, start_daemon):
    refused = free_port()
    daemon = await start_daemon(
        f"""
defaults: {{interval: 3s, timeout: 1s, retries: 0}}
targets:
  - {{name: healthy-vllm, type: http, url: "{upstream.url}/simulated/vllm"}}
  - {{name: healthy-sglang, type: http, url: "{upstream.url}/simulated/sglang"}}
  - {{name: http-500, type: http, url: "{upstream.url}/status/500"}}
  - {{name: garbage, type: http, url: "{upstream.url}/garbage"}}
  - {{name: hangs, type: http, url: "{upstream.url}/hang", timeout: 500ms}}
  - {{name: refused, type: http, url: "http://127.0.0.1:{refused}/metrics"}}
  - {{name: too-big, type: http, url: "{upstream.url}/big", body_size_limit: 100KiB}}
  - {{name: too-many, type: http, url: "{upstream.url}/simulated/vllm", sample_limit: 10}}
"""
    )
    await wait_until(lambda: all(snap.up is not None for snap in daemon.store.snapshots()))
    text = await get(daemon_url(daemon))

    assert series(text, "inference_exporter_target_up") == {
        "healthy-vllm": 1,
        "healthy-sglang": 1,
        "http-500": 0,
        "garbage": 0,
        "hangs": 0,
        "refused": 0,
        "too-big": 0,
        "too-many": 0,
    }
    errors = series(text, "inference_exporter_target_poll_errors_total")
    assert errors == {
        "http-500/http_status": 1,
        "garbage/parse": 1,
        "hangs/timeout": 1,
        "refused/connect": 1,
        "too-big/body_too_large": 1,
        "too-many/sample_limit": 1,
    }
    reasons = {snap.target.name: snap.last_error for snap in daemon.store.snapshots() if not snap.up}
    assert "500" in reasons["http-500"] and "line 1" in reasons["garbage"]
    assert "102400 bytes" in reasons["too-big"] and "sample_limit" in reasons["too-many"]

    # Healthy targets serve every sample, and failed ones serve nothing but their self-metrics.
    samples = series(text, "inference_exporter_target_samples")
    assert samples["healthy-vllm"] > 100 and samples["healthy-sglang"] > 10
    assert all(samples[name] == 0 for name in ("http-500", "garbage", "hangs", "refused", "too-big", "too-many"))
    assert "vllm_num_requests_running{" in text and 'target="healthy-vllm"' in text
    upstream_targets = {
        sample.labels.get("target")
        for family in text_string_to_metric_families(text)
        if not family.name.startswith(("inference_exporter_", "process_", "python_"))
        for sample in family.samples
    }
    assert upstream_targets == {"healthy-vllm", "healthy-sglang"}


async def test_scrape_does_not_wait_for_a_hanging_target(upstream, start_daemon):
    daemon = await start_daemon(
        f"""
defaults: {{interval: 10s, timeout: 8s, retries: 0}}
targets:
  - {{name: healthy, type: http, url: "{upstream.url}/simulated/vllm", interval: 1s}}
  - {{name: hangs, type: http, url: "{upstream.url}/hang"}}
"""
    )
    await wait_until(lambda: upstream.hits["/hang"] >= 1 and daemon.store.get("healthy").up, timeout=15)
    text = await asyncio.wait_for(get(daemon_url(daemon)), timeout=5)
    assert daemon.store.get("hangs").up is None, "the hanging poll must still be in flight during the scrape"
    assert series(text, "inference_exporter_target_up") == {"healthy": 1}
    async with aiohttp.ClientSession() as session, session.get(daemon_url(daemon, "/readyz")) as response:
        assert response.status == 503 and "hangs" in await response.text()


async def test_failed_target_drops_its_series_instead_of_repeating_old_values(upstream, start_daemon):
    daemon = await start_daemon(
        f"""
defaults: {{interval: 1s, timeout: 500ms, retries: 0}}
targets:
  - {{name: flaky, type: http, url: "{upstream.url}/switch/flaky"}}
"""
    )
    await wait_until(lambda: daemon.store.get("flaky").up)
    assert "vllm_num_requests_running" in await get(daemon_url(daemon))
    upstream.broken.add("flaky")
    await wait_until(lambda: daemon.store.get("flaky").up is False, timeout=5)
    text = await get(daemon_url(daemon))
    assert "vllm_num_requests_running" not in text
    assert series(text, "inference_exporter_target_up") == {"flaky": 0}
