"""LMDeploy's api_server (`lmdeploy serve api_server --enable-metrics`).

Names, types, HELP, labels and buckets follow lmdeploy/metrics/loggers.py (`PrometheusStatLogger`,
LMDeploy 0.16.0): the labels `model_name` and `engine`, `finished_reason` written as
`str(ResponseType.X)` (lmdeploy/messages.py). The api_server mounts prometheus_client's
`make_asgi_app()` at /metrics.
"""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from exporter.simulate.base import PythonSimulator, register
from exporter.simulate.load import Load

MODEL = "internlm/internlm3-8b-instruct"
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
    0.005,
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
#: The ResponseType a simulated request ends with, by vLLM-style reason.
RESPONSE = {
    "stop": "ResponseType.FINISH",
    "length": "ResponseType.FINISH",
    "abort": "ResponseType.CANCEL",
    "error": "ResponseType.INTERNAL_ENGINE_ERROR",
}
RESPONSE_TYPES = (
    "SUCCESS",
    "FINISH",
    "ENGINE_STOP_ERROR",
    "SESSION_REPEAT",
    "SESSION_NOT_EXIST",
    "HANDLER_NOT_EXIST",
    "INPUT_LENGTH_ERROR",
    "INTERNAL_ENGINE_ERROR",
    "CANCEL",
    "PREFIX_CACHE_CONFLICT",
    "NO_QUEUE",
    "NOT_SUPPORTED",
    "OUT_OF_MEMORY",
)


@register
class LMDeploySimulator(PythonSimulator):
    profile = "lmdeploy"
    backend = "LMDeploy 0.16 api_server"
    model = MODEL

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        r, labels = self.registry, ("model_name", "engine")
        self.load = Load(capacity=128)
        self.running = Gauge(
            "lmdeploy:num_requests_running", "Number of requests currently running.", labels, registry=r
        )
        self.waiting = Gauge("lmdeploy:num_requests_waiting", "Number of requests waiting.", labels, registry=r)
        self.kv_usage = Gauge(
            "lmdeploy:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", labels, registry=r
        )
        self.prompt_tokens = Counter(
            "lmdeploy:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "lmdeploy:generation_tokens", "Number of generation tokens processed.", labels, registry=r
        )
        self.cached_tokens = Counter(
            "lmdeploy:cached_tokens", "Total prefix-cached input tokens served.", labels, registry=r
        )
        self.draft_tokens = Counter(
            "lmdeploy:spec_decode_num_draft_tokens", "Number of draft tokens.", labels, registry=r
        )
        self.accepted_tokens = Counter(
            "lmdeploy:spec_decode_num_accepted_tokens", "Number of accepted tokens.", labels, registry=r
        )
        self.success = Counter(
            "lmdeploy:request_success",
            "Count of successfully processed requests.",
            (*labels, "finished_reason"),
            registry=r,
        )
        self.ttft = Histogram(
            "lmdeploy:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "lmdeploy:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "lmdeploy:iter_token_latency", "Histogram of inter-token latency", labels, buckets=TPOT_BUCKETS, registry=r
        )
        latency: dict[str, Any] = {"buckets": LATENCY_BUCKETS, "registry": r}
        self.e2e = Histogram(
            "lmdeploy:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", labels, **latency
        )
        self.queue = Histogram(
            "lmdeploy:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            labels,
            **latency,
        )
        self.prefill = Histogram(
            "lmdeploy:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            labels,
            **latency,
        )
        self.decode = Histogram(
            "lmdeploy:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            labels,
            **latency,
        )
        self.of = {"model_name": MODEL, "engine": "0"}
        for kind in RESPONSE_TYPES:  # every reason from the start, as loggers.py creates them
            self.success.labels(**self.of, finished_reason=f"ResponseType.{kind}")
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
        self.kv_usage.labels(**of).set(load.kv_usage)
        drafted = rng.randint(20, 80)
        self.draft_tokens.labels(**of).inc(drafted)
        self.accepted_tokens.labels(**of).inc(rng.randint(0, drafted))
        for _ in range(rng.randint(5, 20)):
            gap = rng.lognormvariate(-3.9, 0.3)
            self.itl.labels(**of).observe(gap)
            self.tpot.labels(**of).observe(gap / rng.randint(1, 3))
        for request in finished:
            self.success.labels(**of, finished_reason=RESPONSE[request.finished_reason]).inc()
            self.prompt_tokens.labels(**of).inc(request.prompt_tokens)
            self.generation_tokens.labels(**of).inc(request.generation_tokens)
            self.cached_tokens.labels(**of).inc(request.cached_tokens)
            self.ttft.labels(**of).observe(request.ttft_seconds)
            self.e2e.labels(**of).observe(request.e2e_seconds)
            self.queue.labels(**of).observe(request.queue_seconds)
            self.prefill.labels(**of).observe(request.prefill_seconds)
            self.decode.labels(**of).observe(request.decode_seconds)
