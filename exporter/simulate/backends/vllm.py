"""vLLM's OpenAI-compatible server (`vllm serve`), V1 engine.

Names, types, labels, HELP and buckets follow vllm/v1/metrics/loggers.py (`PrometheusStatLogger`)
of vLLM 0.11: every series carries `model_name` and `engine` (the engine index); token histograms
use `build_1_2_5_buckets(max_model_len)`. vLLM serves the registry with prometheus_client's
`make_asgi_app()` mounted at /metrics (vllm/entrypoints/openai/api_server.py, `mount_metrics`).
"""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from exporter.simulate.base import PythonSimulator, register
from exporter.simulate.load import Load

MODEL = "Qwen/Qwen3-0.6B"
MAX_MODEL_LEN = 32768

#: vllm/v1/metrics/loggers.py, vLLM 0.11.
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
N_BUCKETS = (1, 2, 5, 10, 20)


def build_1_2_5_buckets(maximum: int) -> tuple[float, ...]:
    """vllm/v1/metrics/loggers.py `build_1_2_5_buckets`: 1, 2, 5, 10, 20, 50, ... up to `maximum`."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > maximum:
                return tuple(buckets)
            buckets.append(value)
        exponent += 1


@register
class VLLMSimulator(PythonSimulator):
    profile = "vllm"
    backend = "vLLM 0.11 (V1 engine)"
    model = MODEL

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        r, labels = self.registry, ("model_name", "engine")
        self.load = Load(capacity=256, kv_blocks=5943)
        self.running = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels,
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            labels,
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            labels,
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.prefix_queries = Counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            labels,
            registry=r,
        )
        self.prefix_hits = Counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", labels, registry=r
        )
        self.preemptions = Counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine.", labels, registry=r
        )
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=r
        )
        self.success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*labels, "finished_reason"),
            registry=r,
        )
        token_buckets = build_1_2_5_buckets(MAX_MODEL_LEN)
        self.request_prompt = Histogram(
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            labels,
            buckets=token_buckets,
            registry=r,
        )
        self.request_generation = Histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            labels,
            buckets=token_buckets,
            registry=r,
        )
        self.iteration_tokens = Histogram(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            labels,
            buckets=ITERATION_TOKEN_BUCKETS,
            registry=r,
        )
        self.max_generation = Histogram(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            labels,
            buckets=token_buckets,
            registry=r,
        )
        self.params_n = Histogram(
            "vllm:request_params_n", "Histogram of the n request parameter.", labels, buckets=N_BUCKETS, registry=r
        )
        self.params_max_tokens = Histogram(
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            labels,
            buckets=token_buckets,
            registry=r,
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            labels,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            labels,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        latency: dict[str, Any] = {"buckets": REQUEST_LATENCY_BUCKETS, "registry": r}
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", labels, **latency
        )
        self.queue = Histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            labels,
            **latency,
        )
        self.inference = Histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            labels,
            **latency,
        )
        self.prefill = Histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            labels,
            **latency,
        )
        self.decode = Histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            labels,
            **latency,
        )
        config = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            (
                "block_size",
                "cache_dtype",
                "enable_prefix_caching",
                "gpu_memory_utilization",
                "num_gpu_blocks",
                "engine",
            ),
            registry=r,
        )
        config.labels("16", "auto", "True", "0.9", "5943", "0").set(1)
        self.of = {"model_name": MODEL, "engine": "0"}
        for metric in (
            self.running,
            self.waiting,
            self.kv_usage,
            self.prefix_queries,
            self.prefix_hits,
            self.preemptions,
            self.prompt_tokens,
            self.generation_tokens,
        ):
            metric.labels(**self.of)  # every series from the first scrape, at zero, as vLLM does
        for reason in ("stop", "length", "abort", "error"):
            self.success.labels(**self.of, finished_reason=reason)

    def tick(self, rng: random.Random) -> None:
        of, load = self.of, self.load
        finished = load.step(rng)
        self.running.labels(**of).set(load.running)
        self.waiting.labels(**of).set(load.waiting)
        self.kv_usage.labels(**of).set(load.kv_usage)
        self.preemptions.labels(**of).inc(load.preempted)
        for _ in range(rng.randint(20, 40)):  # engine steps this second
            self.iteration_tokens.labels(**of).observe(
                max(1, load.running + rng.randint(0, 512) * (rng.random() < 0.1))
            )
        for request in finished:
            self.prefix_queries.labels(**of).inc(request.prompt_tokens)
            self.prefix_hits.labels(**of).inc(request.cached_tokens)
            self.prompt_tokens.labels(**of).inc(request.prompt_tokens)
            self.generation_tokens.labels(**of).inc(request.generation_tokens)
            self.success.labels(**of, finished_reason=request.finished_reason).inc()
            self.request_prompt.labels(**of).observe(request.prompt_tokens)
            self.request_generation.labels(**of).observe(request.generation_tokens)
            self.max_generation.labels(**of).observe(request.max_tokens)
            self.params_n.labels(**of).observe(1)
            self.params_max_tokens.labels(**of).observe(request.max_tokens)
            self.ttft.labels(**of).observe(request.ttft_seconds)
            for _ in range(min(8, request.generation_tokens - 1)):  # a sample of its token gaps
                self.itl.labels(**of).observe(rng.lognormvariate(-3.9, 0.3))
            self.tpot.labels(**of).observe(request.itl_seconds)
            self.e2e.labels(**of).observe(request.e2e_seconds)
            self.queue.labels(**of).observe(request.queue_seconds)
            self.inference.labels(**of).observe(request.e2e_seconds - request.queue_seconds)
            self.prefill.labels(**of).observe(request.prefill_seconds)
            self.decode.labels(**of).observe(request.decode_seconds)
