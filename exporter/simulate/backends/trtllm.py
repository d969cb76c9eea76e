"""TensorRT-LLM's OpenAI server, `trtllm-serve`, with its Prometheus metrics on.

Names, types, HELP, labels and buckets follow tensorrt_llm/metrics/collector.py (`MetricsCollector`,
TensorRT-LLM main of 2026, commit 050f80d): the prefix `trtllm_`, the labels `model_name` and
`engine_type`, `finished_reason` on the success counter. trtllm-serve serves its prometheus_client
registry with `make_asgi_app()` mounted at /prometheus/metrics (tensorrt_llm/serve/openai_server.py).
"""

from __future__ import annotations

import random

from prometheus_client import Counter, Gauge, Histogram

from exporter.simulate.base import PythonSimulator, register
from exporter.simulate.load import Load

MODEL = "nvidia/Llama-3.1-8B-Instruct-FP8"
KV_MAX_BLOCKS = 4096
TOKENS_PER_BLOCK = 32
MAX_ACTIVE = 256
#: collector.py's default buckets.
LATENCY_BUCKETS = (
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
TPOT_BUCKETS = (
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
PREFILL_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
#: What the OpenAI server writes as finished_reason (the engine's FinishReason, lowercased).
REASONS = {"stop": "stop", "length": "length", "abort": "cancelled", "error": "timeout"}


@register
class TRTLLMServeSimulator(PythonSimulator):
    profile = "trtllm"
    backend = "TensorRT-LLM trtllm-serve (main of 2026)"
    model = MODEL
    path = "/prometheus/metrics"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        r, labels = self.registry, ("model_name", "engine_type")
        self.load = Load(capacity=MAX_ACTIVE, kv_blocks=KV_MAX_BLOCKS)
        self.success = Counter(
            "trtllm_request_success",
            "Count of successfully processed requests.",
            (*labels, "finished_reason"),
            registry=r,
        )
        self.e2e = Histogram(
            "trtllm_e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "trtllm_time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "trtllm_time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "trtllm_request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prefill = Histogram(
            "trtllm_request_prefill_time_seconds",
            "Histogram of prefill (context) phase duration in seconds (first_token_time - first_scheduled_time).",
            labels,
            buckets=PREFILL_BUCKETS,
            registry=r,
        )
        self.decode = Histogram(
            "trtllm_request_decode_time_seconds",
            "Histogram of decode (generation) phase duration in seconds (last_token_time - first_token_time).",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "trtllm_prompt_tokens", "Cumulative number of prompt (input) tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "trtllm_generation_tokens", "Cumulative number of generation (output) tokens produced.", labels, registry=r
        )
        self.cached_tokens = Counter(
            "trtllm_prompt_cached_tokens",
            "Process-lifetime total prompt tokens served from KV cache. Resets only when the serving process restarts, "
            "not when the KV cache is flushed or evicted.",
            labels,
            registry=r,
        )
        self.kv_utilization = Gauge("trtllm_kv_cache_utilization", "KV cache utilization", labels, registry=r)
        self.kv_hit_rate = Gauge("trtllm_kv_cache_hit_rate", "KV cache hit rate", labels, registry=r)
        self.running = Gauge("trtllm_num_requests_running", "Number of active requests", labels, registry=r)
        self.waiting = Gauge("trtllm_num_requests_waiting", "Number of queued requests", labels, registry=r)
        self.completed = Counter(
            "trtllm_num_requests_completed", "Total number of completed requests across iterations", labels, registry=r
        )
        self.max_active = Gauge(
            "trtllm_max_num_active_requests", "Maximum number of active requests", labels, registry=r
        )
        self.max_blocks = Gauge("trtllm_kv_cache_max_blocks", "Maximum number of KV cache blocks", labels, registry=r)
        self.used_blocks = Gauge("trtllm_kv_cache_used_blocks", "Number of used KV cache blocks", labels, registry=r)
        self.tokens_per_block = Gauge(
            "trtllm_kv_cache_tokens_per_block", "Number of tokens per KV cache block", labels, registry=r
        )
        self.draft_tokens = Counter(
            "trtllm_spec_decode_num_draft_tokens",
            "Total number of draft tokens in speculative decoding",
            labels,
            registry=r,
        )
        self.accepted_tokens = Counter(
            "trtllm_spec_decode_num_accepted_tokens",
            "Total number of accepted tokens in speculative decoding",
            labels,
            registry=r,
        )
        self.errors = Counter(
            "trtllm_request_error",
            "Total request errors, labeled by HTTP status code.",
            (*labels, "http_code"),
            registry=r,
        )
        self.of = {"model_name": MODEL, "engine_type": "trtllm"}
        self.max_active.labels(**self.of).set(MAX_ACTIVE)
        self.max_blocks.labels(**self.of).set(KV_MAX_BLOCKS)
        self.tokens_per_block.labels(**self.of).set(TOKENS_PER_BLOCK)
        for metric in (
            self.prompt_tokens,
            self.generation_tokens,
            self.cached_tokens,
            self.draft_tokens,
            self.accepted_tokens,
        ):
            metric.labels(**self.of)

    def tick(self, rng: random.Random) -> None:
        of, load = self.of, self.load
        finished = load.step(rng)
        self.running.labels(**of).set(load.running)
        self.waiting.labels(**of).set(load.waiting)
        self.kv_utilization.labels(**of).set(load.kv_usage)
        self.used_blocks.labels(**of).set(round(load.kv_usage * KV_MAX_BLOCKS))
        self.kv_hit_rate.labels(**of).set(round(rng.uniform(0.2, 0.6), 4))
        drafted = rng.randint(50, 200)
        self.draft_tokens.labels(**of).inc(drafted)
        self.accepted_tokens.labels(**of).inc(rng.randint(0, drafted))
        for request in finished:
            if request.finished_reason == "error" and rng.random() < 0.5:
                self.errors.labels(**of, http_code="500").inc()
                continue
            self.completed.labels(**of).inc()
            self.success.labels(**of, finished_reason=REASONS[request.finished_reason]).inc()
            self.e2e.labels(**of).observe(request.e2e_seconds)
            self.ttft.labels(**of).observe(request.ttft_seconds)
            self.tpot.labels(**of).observe(request.itl_seconds)
            self.queue.labels(**of).observe(request.queue_seconds)
            self.prefill.labels(**of).observe(request.prefill_seconds)
            self.decode.labels(**of).observe(request.decode_seconds)
            self.prompt_tokens.labels(**of).inc(request.prompt_tokens)
            self.generation_tokens.labels(**of).inc(request.generation_tokens)
            self.cached_tokens.labels(**of).inc(request.cached_tokens)
