"""`run --demo`: a simulated vLLM-style backend on loopback, so a newcomer sees the daemon work with no GPU.

Its numbers are made up and move every second; its target carries `demo="true"` on every series,
and the logs say so, so that nobody mistakes it for a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

log = structlog.get_logger("exporter.demo")

DEMO_TARGET = "demo-vllm"
MODEL = "demo/simulated-model"
_LABELS = {"model_name": MODEL, "engine": "0"}


class DemoBackend:
    """Serves vLLM V1 metric names from a private prometheus_client registry, updated once a second."""

    def __init__(self, seed: int | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._random = random.Random(seed)
        names = list(_LABELS)
        self.running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.", names, registry=self.registry)
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", names, registry=self.registry)
        self.kv_cache = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", names, registry=self.registry)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", names, registry=self.registry)
        self.generation_tokens = Counter("vllm:generation_tokens", "Number of generation tokens processed.", names, registry=self.registry)
        self.success = Counter(
            "vllm:request_success", "Count of successfully processed requests.", [*names, "finished_reason"], registry=self.registry
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", names,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=self.registry,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", names,
            buckets=(0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0), registry=self.registry,
        )
        for metric in (self.running, self.waiting, self.kv_cache, self.prompt_tokens, self.generation_tokens, self.ttft, self.e2e):
            metric.labels(**_LABELS)  # series exist from the first scrape, at zero
        self._running = 8
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None
        self.url = ""

    def tick(self) -> None:
        """One second of simulated traffic."""
        rnd = self._random
        self._running = running = max(0, min(64, self._running + rnd.randint(-3, 3)))
        self.running.labels(**_LABELS).set(running)
        self.waiting.labels(**_LABELS).set(max(0, rnd.randint(-4, 4)))
        self.kv_cache.labels(**_LABELS).set(round(min(1.0, running / 64 + rnd.uniform(0, 0.1)), 4))
        finished = rnd.randint(1, 1 + running // 4)
        for _ in range(finished):
            self.prompt_tokens.labels(**_LABELS).inc(rnd.randint(50, 2000))
            self.generation_tokens.labels(**_LABELS).inc(rnd.randint(10, 500))
            self.success.labels(**_LABELS, finished_reason=rnd.choice(("stop", "stop", "stop", "length"))).inc()
            self.ttft.labels(**_LABELS).observe(rnd.lognormvariate(-2.5, 0.6))
            self.e2e.labels(**_LABELS).observe(rnd.lognormvariate(1.0, 0.5))

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}/metrics"
        self.tick()
        self._ticker = asyncio.create_task(self._tick_forever(), name="demo backend")
        log.warning("demo backend started: simulated vLLM numbers, not a real server", url=self.url, target=DEMO_TARGET)
        return self.url

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.tick()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._runner is not None:
            await self._runner.cleanup()
