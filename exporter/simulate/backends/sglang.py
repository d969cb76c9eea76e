"""SGLang's server (`python -m sglang.launch_server --enable-metrics`).

Names, types, labels and HELP follow python/sglang/srt/metrics/collector.py of SGLang 0.5.x
(`SchedulerMetricsCollector`: gauges labelled model_name and tp_rank, multiprocess mode
"mostrecent"; `TokenizerMetricsCollector`: counters and histograms, model_name only for the
histograms) and the HTTP middleware's `sglang:http_requests_active`. SGLang serves
prometheus_client's `make_asgi_app()` at /metrics (python/sglang/srt/utils/common.py,
`add_prometheus_middleware`).
"""

from __future__ import annotations

import random

from prometheus_client import Counter, Gauge, Histogram

from exporter.simulate.base import PythonSimulator, register
from exporter.simulate.load import Load

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MAX_TOTAL_TOKENS = 430839

#: collector.py, SGLang 0.5.x (the defaults when no SGLANG_*_BUCKETS variable is set).
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
ITL_BUCKETS = (
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.035,
    0.04,
    0.06,
    0.08,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1.0,
    2.0,
    4.0,
    6.0,
    8.0,
)
E2E_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 1200, 1800, 2400)
QUEUE_BUCKETS = (
    0.0,
    0.1,
    0.2,
    0.5,
    1,
    2,
    3,
    4,
    5,
    10,
    15,
    20,
    30,
    40,
    50,
    60,
    70,
    80,
    90,
    100,
    200,
    300,
    400,
    500,
    600,
    700,
    800,
    900,
    1000,
    1200,
    1400,
    1600,
    1800,
    2000,
    2500,
    3000,
)
TOKEN_BUCKETS = (
    100,
    300,
    500,
    700,
    1000,
    1500,
    2000,
    3000,
    4000,
    5000,
    6000,
    7000,
    8000,
    9000,
    10000,
    12000,
    15000,
    20000,
    22000,
    25000,
    30000,
    35000,
    40000,
)


@register
class SGLangSimulator(PythonSimulator):
    profile = "sglang"
    backend = "SGLang 0.5 (--enable-metrics)"
    model = MODEL

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        r = self.registry
        self.load = Load(capacity=128)
        rank = ("model_name", "tp_rank")
        self.http_active = Gauge(
            "sglang:http_requests_active",
            "Number of currently active HTTP requests",
            ("endpoint", "method"),
            registry=r,
            multiprocess_mode="livesum",
        )

        def gauge(name: str, help_: str) -> Gauge:
            return Gauge(name, help_, rank, registry=r, multiprocess_mode="mostrecent")

        self.running = gauge("sglang:num_running_reqs", "The number of running requests.")
        self.queued = gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.")
        self.used_tokens = gauge("sglang:num_used_tokens", "The number of used tokens.")
        self.token_usage = gauge("sglang:token_usage", "The token usage.")
        self.cache_hit_rate = gauge("sglang:cache_hit_rate", "The prefix cache hit rate.")
        self.max_tokens = gauge("sglang:max_total_num_tokens", "Maximum total number of tokens in the KV cache pool.")
        self.throughput = gauge("sglang:gen_throughput", "The generation throughput (token/s).")
        self.retracted = gauge("sglang:num_retracted_reqs", "The number of currently retracted requests.")
        self.prompt_tokens = Counter("sglang:prompt_tokens", "Number of prefill tokens processed.", rank, registry=r)
        self.generation_tokens = Counter(
            "sglang:generation_tokens", "Number of generation tokens processed.", rank, registry=r
        )
        self.cached_tokens = Counter("sglang:cached_tokens", "Number of cached prompt tokens.", rank, registry=r)
        self.requests = Counter("sglang:num_requests", "Number of requests processed.", rank, registry=r)
        self.aborted = Counter("sglang:num_aborted_requests", "Number of requests aborted.", rank, registry=r)
        model = ("model_name",)
        self.ttft = Histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            model,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            model,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            model,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "sglang:queue_time_seconds",
            "Histogram of queueing time in seconds.",
            model,
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.prompt_histogram = Histogram(
            "sglang:prompt_tokens_histogram",
            "Histogram of prompt token length.",
            model,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.generation_histogram = Histogram(
            "sglang:generation_tokens_histogram",
            "Histogram of generation token length.",
            model,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.of = {"model_name": MODEL, "tp_rank": "0"}
        self.max_tokens.labels(**self.of).set(MAX_TOTAL_TOKENS)
        for metric in (
            self.running,
            self.queued,
            self.used_tokens,
            self.token_usage,
            self.cache_hit_rate,
            self.throughput,
            self.retracted,
            self.prompt_tokens,
            self.generation_tokens,
            self.cached_tokens,
            self.requests,
            self.aborted,
        ):
            metric.labels(**self.of)

    def tick(self, rng: random.Random) -> None:
        of, model, load = self.of, {"model_name": MODEL}, self.load
        finished = load.step(rng)
        self.http_active.labels("/generate", "POST").set(load.running + load.waiting)
        self.running.labels(**of).set(load.running)
        self.queued.labels(**of).set(load.waiting)
        self.used_tokens.labels(**of).set(int(load.kv_usage * MAX_TOTAL_TOKENS))
        self.token_usage.labels(**of).set(round(load.kv_usage, 2))
        self.retracted.labels(**of).set(load.preempted)
        generated = sum(request.generation_tokens for request in finished)
        prompt = sum(request.prompt_tokens for request in finished)
        cached = sum(request.cached_tokens for request in finished)
        self.throughput.labels(**of).set(round(generated * rng.uniform(0.9, 1.1), 1))
        self.cache_hit_rate.labels(**of).set(cached / prompt if prompt else 0.0)
        for request in finished:
            self.prompt_tokens.labels(**of).inc(request.prompt_tokens)
            self.generation_tokens.labels(**of).inc(request.generation_tokens)
            self.cached_tokens.labels(**of).inc(request.cached_tokens)
            self.requests.labels(**of).inc()
            if request.finished_reason == "abort":
                self.aborted.labels(**of).inc()
            self.ttft.labels(**model).observe(request.ttft_seconds)
            for _ in range(min(8, request.generation_tokens - 1)):
                self.itl.labels(**model).observe(rng.lognormvariate(-3.9, 0.3))
            self.e2e.labels(**model).observe(request.e2e_seconds)
            self.queue.labels(**model).observe(request.queue_seconds)
            self.prompt_histogram.labels(**model).observe(request.prompt_tokens)
            self.generation_histogram.labels(**model).observe(request.generation_tokens)
