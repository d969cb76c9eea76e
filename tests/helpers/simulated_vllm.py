"""A vLLM-named backend the overview tests drive step by step: a real aiohttp server serving a
prometheus_client registry, whose counters can be reset (a restarted server) and which can be made to
fail (a server that is down), and the raw values it served, for the tests to compute from themselves."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
E2E_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": TTFT_BUCKETS,
    "vllm:inter_token_latency_seconds": ITL_BUCKETS,
    "vllm:e2e_request_latency_seconds": E2E_BUCKETS,
}


@dataclass
class Served:
    """What one answer carried: counters by name (request_success by finished_reason), buckets by histogram."""

    counters: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)


class SimulatedVLLM:
    def __init__(self, model: str = "sim/model-a", seed: int = 3) -> None:
        self.model = model
        self.random = random.Random(seed)
        self.down = False
        self.url = ""
        self._new_registry()

    def _new_registry(self) -> None:
        """A fresh registry: every counter and bucket back at zero, as after a restart."""
        self.registry = registry = CollectorRegistry(auto_describe=True)
        labels = ["model_name", "engine"]
        self.running = Gauge("vllm:num_requests_running", "Running.", labels, registry=registry)
        self.waiting = Gauge("vllm:num_requests_waiting", "Waiting.", labels, registry=registry)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV cache.", labels, registry=registry)
        self.prompt = Counter("vllm:prompt_tokens", "Prompt tokens.", labels, registry=registry)
        self.generation = Counter("vllm:generation_tokens", "Generation tokens.", labels, registry=registry)
        self.finished = Counter("vllm:request_success", "Finished.", [*labels, "finished_reason"], registry=registry)
        self.histograms = {
            name: Histogram(name, "Latency.", labels, buckets=buckets, registry=registry)
            for name, buckets in HISTOGRAMS.items()
        }
        for reason in ("stop", "length", "abort", "error"):
            self.finished.labels(self.model, "0", reason)

    def restart(self) -> None:
        self._new_registry()

    def step(self, requests: int, *, errors: int = 0, aborts: int = 0) -> None:
        """Some traffic: `requests` finished (some with errors or aborts), latencies observed, gauges moved."""
        rnd, labels = self.random, (self.model, "0")
        self.running.labels(*labels).set(rnd.randint(0, 40))
        self.waiting.labels(*labels).set(rnd.randint(0, 5))
        self.kv.labels(*labels).set(round(rnd.uniform(0.1, 0.9), 3))
        for index in range(requests):
            reason = (
                "error" if index < errors else "abort" if index < errors + aborts else rnd.choice(("stop", "length"))
            )
            self.finished.labels(*labels, reason).inc()
            self.prompt.labels(*labels).inc(rnd.randint(10, 900))
            self.generation.labels(*labels).inc(rnd.randint(5, 300))
            self.histograms["vllm:time_to_first_token_seconds"].labels(*labels).observe(rnd.lognormvariate(-2.5, 0.8))
            self.histograms["vllm:e2e_request_latency_seconds"].labels(*labels).observe(rnd.lognormvariate(1.0, 0.6))
            for _ in range(rnd.randint(1, 4)):
                self.histograms["vllm:inter_token_latency_seconds"].labels(*labels).observe(rnd.lognormvariate(-4, 0.7))

    def served(self) -> Served:
        """The raw values the registry serves now, read from the registry itself."""
        out = Served()
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                if metric.type == "counter":
                    key = sample.name + (
                        f"/{sample.labels['finished_reason']}" if "finished_reason" in sample.labels else ""
                    )
                    out.counters[key] = sample.value
                elif metric.type == "gauge":
                    out.gauges[sample.name] = sample.value
                elif sample.name.endswith("_bucket"):
                    out.buckets.setdefault(metric.name, {})[float(sample.labels["le"])] = sample.value
        return out

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503, text="down on purpose\n")
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": "text/plain; version=0.0.4"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        return app
