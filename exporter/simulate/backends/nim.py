"""NVIDIA NIM for LLMs: vLLM's V0 metrics under names without the `vllm:` prefix, plus NIM's own
`num_request_max` and `request_finish_total`, from a prometheus_client registry with the default
process and platform collectors.

Names, labels and HELP follow NIM for LLMs 1.x's metrics reference (docs.nvidia.com/nim/large-
language-models, "Observability": num_requests_running, num_requests_waiting, num_request_max,
gpu_cache_usage_perc, prompt_tokens_total, generation_tokens_total, time_to_first_token_seconds,
time_per_output_token_seconds, e2e_request_latency_seconds, request_prompt_tokens,
request_generation_tokens, request_finish_total, request_success_total, request_failure_total);
buckets are vLLM 0.5's (vllm/engine/metrics.py), which NIM 1.x wraps.
"""

from __future__ import annotations

import random

from prometheus_client import Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

from exporter.simulate.base import PythonSimulator, register
from exporter.simulate.load import Load

MODEL = "meta/llama-3.1-8b-instruct"
MAX_REQUESTS = 64

#: vllm/engine/metrics.py, vLLM 0.5 (V0).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


@register
class NIMSimulator(PythonSimulator):
    profile = "nim"
    backend = "NVIDIA NIM for LLMs 1.x"
    model = MODEL
    created_series = False  # NIM's captured /metrics has no `_created` series

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        r, labels = self.registry, ("model_name",)
        # NIM serves the default registry, with the process and platform collectors; no GC collector
        # here, whose numbers would be this process's own garbage collector.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.load = Load(capacity=MAX_REQUESTS)
        self.running = Gauge("num_requests_running", "Number of requests currently running on GPU.", labels, registry=r)
        self.waiting = Gauge("num_requests_waiting", "Number of requests waiting to be processed.", labels, registry=r)
        self.max_requests = Gauge("num_request_max", "Max number of concurrently running requests.", labels, registry=r)
        self.kv_usage = Gauge(
            "gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", labels, registry=r
        )
        self.prompt_tokens = Counter("prompt_tokens", "Number of prefill tokens processed.", labels, registry=r)
        self.generation_tokens = Counter(
            "generation_tokens", "Number of generation tokens processed.", labels, registry=r
        )
        self.ttft = Histogram(
            "time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.request_prompt = Histogram(
            "request_prompt_tokens", "Number of prefill tokens processed.", labels, buckets=TOKEN_BUCKETS, registry=r
        )
        self.request_generation = Histogram(
            "request_generation_tokens",
            "Number of generation tokens processed.",
            labels,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.finish = Counter(
            "request_finish",
            "Count of finished requests, differentiated by finish reason as label.",
            (*labels, "finished_reason"),
            registry=r,
        )
        self.success = Counter("request_success", "Count of successful requests.", labels, registry=r)
        self.failure = Counter("request_failure", "Count of failed requests.", labels, registry=r)
        self.max_requests.labels(MODEL).set(MAX_REQUESTS)
        for metric in (
            self.running,
            self.waiting,
            self.kv_usage,
            self.prompt_tokens,
            self.generation_tokens,
            self.success,
            self.failure,
        ):
            metric.labels(MODEL)

    def tick(self, rng: random.Random) -> None:
        load = self.load
        finished = load.step(rng)
        self.running.labels(MODEL).set(load.running)
        self.waiting.labels(MODEL).set(load.waiting)
        self.kv_usage.labels(MODEL).set(load.kv_usage)
        for request in finished:
            self.prompt_tokens.labels(MODEL).inc(request.prompt_tokens)
            self.generation_tokens.labels(MODEL).inc(request.generation_tokens)
            self.ttft.labels(MODEL).observe(request.ttft_seconds)
            self.tpot.labels(MODEL).observe(request.itl_seconds)
            self.e2e.labels(MODEL).observe(request.e2e_seconds)
            self.request_prompt.labels(MODEL).observe(request.prompt_tokens)
            self.request_generation.labels(MODEL).observe(request.generation_tokens)
            self.finish.labels(MODEL, request.finished_reason).inc()
            (self.failure if request.finished_reason == "error" else self.success).labels(MODEL).inc()
