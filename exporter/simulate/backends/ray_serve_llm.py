"""Ray Serve LLM: a vLLM engine in a Ray Serve replica, its metrics recorded through Ray.

vLLM's `RayPrometheusStatLogger` (vllm/v1/metrics/ray_wrappers.py) records vLLM's own metrics as
`ray.util.metrics`, with `:` replaced by `_` (Ray does not allow it); Ray's metrics agent exports them
with its `ray_` prefix and its own labels (`WorkerId`, `ReplicaId`, `SessionName`...) beside vLLM's
`model_name` and `engine` (ray python/ray/llm, Ray 2.5x). The agent serves them with prometheus_client.
"""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from exporter.simulate.backends.vllm import ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS
from exporter.simulate.base import PythonSimulator, register
from exporter.simulate.load import Load

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
#: Two replicas of the model, each an engine in its own Ray worker.
REPLICAS = (
    ("SERVE_REPLICA::default#LLMServer:llama#a1b2", "04ab7c1e"),
    ("SERVE_REPLICA::default#LLMServer:llama#c3d4", "91fe2d30"),
)


@register
class RayServeLLMSimulator(PythonSimulator):
    profile = "ray-serve-llm"
    backend = "Ray Serve LLM (Ray 2.5x, vLLM V1 engine)"
    model = MODEL

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        r = self.registry
        labels = ("model_name", "engine", "ReplicaId", "WorkerId", "SessionName")
        self.loads = [Load(capacity=128, kv_blocks=8192) for _ in REPLICAS]
        self.running = Gauge(
            "ray_vllm_num_requests_running", "Number of requests in model execution batches.", labels, registry=r
        )
        self.waiting = Gauge(
            "ray_vllm_num_requests_waiting", "Number of requests waiting to be processed.", labels, registry=r
        )
        self.kv_usage = Gauge(
            "ray_vllm_kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, registry=r
        )
        self.prefix_queries = Counter(
            "ray_vllm_prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            labels,
            registry=r,
        )
        self.prefix_hits = Counter(
            "ray_vllm_prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", labels, registry=r
        )
        self.preemptions = Counter(
            "ray_vllm_num_preemptions", "Cumulative number of preemption from the engine.", labels, registry=r
        )
        self.prompt_tokens = Counter(
            "ray_vllm_prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "ray_vllm_generation_tokens", "Number of generation tokens processed.", labels, registry=r
        )
        self.success = Counter(
            "ray_vllm_request_success",
            "Count of successfully processed requests.",
            (*labels, "finished_reason"),
            registry=r,
        )
        self.ttft = Histogram(
            "ray_vllm_time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "ray_vllm_inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            labels,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "ray_vllm_request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            labels,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        latency: dict[str, Any] = {"buckets": REQUEST_LATENCY_BUCKETS, "registry": r}
        self.e2e = Histogram(
            "ray_vllm_e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", labels, **latency
        )
        self.queue = Histogram(
            "ray_vllm_request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            labels,
            **latency,
        )
        self.prefill = Histogram(
            "ray_vllm_request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            labels,
            **latency,
        )
        self.decode = Histogram(
            "ray_vllm_request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            labels,
            **latency,
        )
        self.of = [
            {
                "model_name": MODEL,
                "engine": "0",
                "ReplicaId": replica,
                "WorkerId": worker,
                "SessionName": "session_2026-12-04_17-00-00_000000_1",
            }
            for replica, worker in REPLICAS
        ]
        for of in self.of:
            for reason in ("stop", "length", "abort", "error", "repetition"):
                self.success.labels(**of, finished_reason=reason)

    def tick(self, rng: random.Random) -> None:
        for of, load in zip(self.of, self.loads):
            finished = load.step(rng)
            self.running.labels(**of).set(load.running)
            self.waiting.labels(**of).set(load.waiting)
            self.kv_usage.labels(**of).set(load.kv_usage)
            self.preemptions.labels(**of).inc(load.preempted)
            for request in finished:
                reason = (
                    "repetition"
                    if request.finished_reason == "stop" and rng.random() < 0.05
                    else request.finished_reason
                )
                self.success.labels(**of, finished_reason=reason).inc()
                self.prefix_queries.labels(**of).inc(request.prompt_tokens)
                self.prefix_hits.labels(**of).inc(request.cached_tokens)
                self.prompt_tokens.labels(**of).inc(request.prompt_tokens)
                self.generation_tokens.labels(**of).inc(request.generation_tokens)
                self.ttft.labels(**of).observe(request.ttft_seconds)
                self.itl.labels(**of).observe(request.itl_seconds)
                self.tpot.labels(**of).observe(request.itl_seconds)
                self.e2e.labels(**of).observe(request.e2e_seconds)
                self.queue.labels(**of).observe(request.queue_seconds)
                self.prefill.labels(**of).observe(request.prefill_seconds)
                self.decode.labels(**of).observe(request.decode_seconds)
