"""A real Prometheus server scrapes the daemon: the target is up and the simulated values come back from queries."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from helpers.support import free_port, require_tool, simulated_value, wait_until


@contextlib.asynccontextmanager
async def prometheus_scraping(daemon_port: int, tmp_path):
    binary = require_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: inference-exporter
    static_configs: [{{targets: ["127.0.0.1:{daemon_port}"]}}]
"""
    )
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()


async def api(session: aiohttp.ClientSession, base: str, path: str, **params):
    try:
        async with session.get(base + path, params=params) as response:
            if response.status != 200:
                return None
            return (await response.json())["data"]
    except aiohttp.ClientConnectionError:
        return None  # Prometheus is still starting


async def query(session, base, promql: str) -> dict[str, float]:
    data = await api(session, base, "/api/v1/query", query=promql)
    if not data:
        return {}
    return {result["metric"].get("target", ""): float(result["value"][1]) for result in data["result"]}


async def test_prometheus_scrapes_the_daemon_and_reads_upstream_values(upstream, start_daemon, tmp_path, monkeypatch):
    import exporter.serve.web

    bodies: list[exporter.serve.web.Body] = []

    class Seen(exporter.serve.web.Body):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bodies.append(self)

    monkeypatch.setattr(exporter.serve.web, "Body", Seen)
    daemon = await start_daemon(
        f"""
defaults: {{interval: 1s, timeout: 800ms}}
targets:
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", labels: {{pool: chat}}}}
  - {{name: triton, type: http, url: "{upstream.url}/simulated/triton"}}
  - {{name: broken, type: http, url: "{upstream.url}/status/500"}}
"""
    )
    daemon_port = daemon.bound[0][1]
    async with prometheus_scraping(daemon_port, tmp_path) as base, aiohttp.ClientSession() as session:

        async def scraped_up():
            data = await api(session, base, "/api/v1/targets")
            return data and [t["health"] for t in data["activeTargets"]] == ["up"]

        await wait_until(scraped_up, timeout=60, interval=0.5)

        running = await wait_until(
            lambda: query(session, base, 'vllm_num_requests_running{model_name="Qwen/Qwen3-0.6B",pool="chat"}'),
            timeout=30,
            interval=0.5,
        )
        assert running == {"vllm": simulated_value("vllm", "vllm:num_requests_running")}
        assert await query(session, base, "vllm_prompt_tokens_total") == {
            "vllm": simulated_value("vllm", "vllm:prompt_tokens_total")
        }
        # Triton's counter has no _total upstream; Prometheus stores it under the conventional name.
        assert await query(session, base, 'nv_inference_request_success_total{model="tensorrt_llm"}') == {
            "triton": simulated_value("triton", "nv_inference_request_success")
        }
        assert await query(session, base, "inference_exporter_target_up") == {"vllm": 1.0, "triton": 1.0, "broken": 0.0}
    # Prometheus asked for gzip, and Go's gzip reader took our member of pieces deflated apart.
    assert bodies and all(body.gzip for body in bodies)
    assert any(len(body.out) > 10 for body in bodies)
