"""The vLLM production-stack router (`vllm-router`), which routes to several vLLM engines.

Names, types, HELP and labels follow src/vllm_router/services/metrics_service/__init__.py and the
/metrics handler in src/vllm_router/routers/metrics_router.py (production-stack vllm-stack-0.1.12):
`vllm:*` gauges labelled `server` (one per engine URL), refreshed at each scrape from the router's own
request statistics, and per-model counters and a latency histogram. Served with prometheus_client's
`generate_latest()`.
"""

from __future__ import annotations

import random

from prometheus_client import Counter, Gauge, Histogram

from exporter.simulate.base import PythonSimulator, register
from exporter.simulate.load import Load

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SERVERS = ("http://vllm-engine-0.vllm:8000", "http://vllm-engine-1.vllm:8000")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@register
class VLLMRouterSimulator(PythonSimulator):
    profile = "vllm-router"
    backend = "vLLM production-stack router (vllm-stack-0.1.12)"
    model = MODEL

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        r, server = self.registry, ("server",)
        self.loads = [Load(capacity=64) for _ in SERVERS]
        self.running = Gauge("vllm:num_requests_running", "Number of running requests", server, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of waiting requests", server, registry=r)
        self.hit_rate = Gauge("vllm:gpu_prefix_cache_hit_rate", "GPU Prefix Cache Hit Rate", server, registry=r)
        self.current_qps = Gauge("vllm:current_qps", "Current Queries Per Second", server, registry=r)
        self.avg_decoding_length = Gauge("vllm:avg_decoding_length", "Average Decoding Length", server, registry=r)
        self.prefill = Gauge("vllm:num_prefill_requests", "Number of Prefill Requests", server, registry=r)
        self.decoding = Gauge("vllm:num_decoding_requests", "Number of Decoding Requests", server, registry=r)
        self.incoming = Counter(
            "vllm:num_incoming_requests",
            "Total valid incoming requests to router (including when no backends available).",
            ("model",),
            registry=r,
        )
        self.healthy = Gauge("vllm:healthy_pods_total", "Number of healthy vLLM pods", server, registry=r)
        self.avg_latency = Gauge("vllm:avg_latency", "Average end-to-end request latency", server, registry=r)
        self.avg_itl = Gauge("vllm:avg_itl", "Average Inter-Token Latency", server, registry=r)
        self.input_tokens = Counter(
            "vllm:input_tokens_total", "Total input tokens processed", ("server", "model"), registry=r
        )
        self.output_tokens = Counter(
            "vllm:output_tokens_total", "Total output tokens generated", ("server", "model"), registry=r
        )
        self.errors = Counter(
            "vllm:request_errors_total", "Total request errors", ("server", "model", "error_type"), registry=r
        )
        self.latency = Histogram(
            "vllm:request_latency_seconds",
            "End-to-end request latency observed at the router",
            ("server", "model", "status"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        for server_url in SERVERS:
            self.healthy.labels(server_url).set(1)

    def tick(self, rng: random.Random) -> None:
        for server_url, load in zip(SERVERS, self.loads):
            finished = load.step(rng)
            prefill = rng.randint(0, max(0, load.running // 4))
            self.prefill.labels(server_url).set(prefill)
            self.decoding.labels(server_url).set(load.running - prefill)
            self.running.labels(server_url).set(load.running)  # in prefill plus decoding, as metrics_router.py sets it
            self.current_qps.labels(server_url).set(len(finished))
            self.hit_rate.labels(server_url).set(round(rng.uniform(0.1, 0.5), 4))
            lengths = [request.generation_tokens for request in finished]
            self.avg_decoding_length.labels(server_url).set(sum(lengths) / len(lengths) if lengths else 0)
            self.avg_latency.labels(server_url).set(
                sum(r.e2e_seconds for r in finished) / len(finished) if finished else 0
            )
            self.avg_itl.labels(server_url).set(sum(r.itl_seconds for r in finished) / len(finished) if finished else 0)
            for request in finished:
                self.incoming.labels(MODEL).inc()
                status = "error" if request.finished_reason == "error" else "success"
                if status == "error":
                    self.errors.labels(server_url, MODEL, "ClientResponseError").inc()
                else:
                    self.input_tokens.labels(server_url, MODEL).inc(request.prompt_tokens)
                    self.output_tokens.labels(server_url, MODEL).inc(request.generation_tokens)
                self.latency.labels(server_url, MODEL, status).observe(request.e2e_seconds)
