"""NVIDIA Dynamo: its HTTP frontend and a worker's system port, both written by the Rust
`prometheus` crate's TextEncoder.

Frontend (`python -m dynamo.frontend`, a Rust HTTP service): names, labels, HELP and buckets follow
lib/llm/src/http/service/metrics.rs of Dynamo 0.6 (`dynamo_frontend_*`; model names lower-cased in
request series, as given in the per-model config gauges). Worker (DYN_SYSTEM_PORT): the runtime's
`dynamo_component_*` work-handler families (lib/runtime/src/metrics.rs), labelled dynamo_namespace,
dynamo_component, dynamo_endpoint and model, and the KV gauges as Dynamo 1.6 names them:
lib/runtime/src/metrics/prometheus_names.rs (ai-dynamo/dynamo at 04070c75, `mod kvstats`:
TOTAL_BLOCKS "total_blocks", GPU_CACHE_USAGE_PERCENT "gpu_cache_usage_percent"; `mod labels`: MODEL,
DP_RANK), labelled model, dynamo_component and dp_rank. `kvstats_active_blocks` and
`kvstats_gpu_prefix_cache_hit_rate` are gone from that module; `DeprecatedDynamoWorkerSimulator`
serves the 0.x `kvstats_*` names instead, so the profile's fallbacks stay tested. This worker passes
no engine metrics through (a vLLM or SGLang worker that does is read by that engine's profile).
"""

from __future__ import annotations

import random
from typing import ClassVar

from exporter.simulate.base import TextSimulator, register
from exporter.simulate.load import Load
from exporter.simulate.textformat import RUST_PROMETHEUS

MODEL = "Qwen/Qwen3-0.6B"

#: lib/llm/src/http/service/metrics.rs, Dynamo 0.6.
TTFT_BUCKETS = (0, 0.0022, 0.0047, 0.01, 0.022, 0.047, 0.1, 0.22, 0.47, 1, 2.2, 4.7, 10, 22, 48, 100, 220, 480)
ITL_BUCKETS = (0, 0.0019, 0.0035, 0.0067, 0.013, 0.024, 0.045, 0.084, 0.16, 0.3, 0.56, 1.1, 2)
DURATION_BUCKETS = (0, 1.9, 3.4, 6.3, 12, 22, 40, 75, 140, 260)
INPUT_TOKEN_BUCKETS = (0, 100, 210, 430, 870, 1800, 3600, 7400, 15000, 31000, 63000, 130000)
OUTPUT_TOKEN_BUCKETS = (0, 100, 210, 430, 880, 1800, 3700, 7600, 16000, 32000)
#: The prometheus crate's default buckets (lib/runtime/src/metrics.rs uses them for request durations).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@register
class DynamoFrontendSimulator(TextSimulator):
    profile = "dynamo-frontend"
    backend = "NVIDIA Dynamo 0.6 frontend"
    library = "prometheus (Rust crate)"
    model = MODEL.lower()
    style = RUST_PROMETHEUS

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        m, model = self.metric, ("model",)
        self.load = Load(capacity=64)
        self.disconnected = m("dynamo_frontend_disconnected_clients", "gauge", "Number of disconnected clients")
        self.inflight = m("dynamo_frontend_inflight_requests", "gauge", "Number of inflight requests", model)
        self.queued = m(
            "dynamo_frontend_queued_requests", "gauge", "Number of requests in HTTP processing queue", model
        )
        self.input_tokens = m(
            "dynamo_frontend_input_sequence_tokens",
            "histogram",
            "Input sequence length in tokens",
            model,
            buckets=INPUT_TOKEN_BUCKETS,
        )
        self.output_tokens = m(
            "dynamo_frontend_output_sequence_tokens",
            "histogram",
            "Output sequence length in tokens",
            model,
            buckets=OUTPUT_TOKEN_BUCKETS,
        )
        self.output_total = m(
            "dynamo_frontend_output_tokens_total",
            "counter",
            "Total number of output tokens generated (updates in real-time)",
            model,
        )
        self.itl = m(
            "dynamo_frontend_inter_token_latency_seconds",
            "histogram",
            "Inter-token latency in seconds",
            model,
            buckets=ITL_BUCKETS,
        )
        self.ttft = m(
            "dynamo_frontend_time_to_first_token_seconds",
            "histogram",
            "Time to first token in seconds",
            model,
            buckets=TTFT_BUCKETS,
        )
        self.duration = m(
            "dynamo_frontend_request_duration_seconds",
            "histogram",
            "Duration of LLM requests",
            model,
            buckets=DURATION_BUCKETS,
        )
        self.requests = m(
            "dynamo_frontend_requests_total",
            "counter",
            "Total number of LLM requests processed",
            ("endpoint", "model", "request_type", "status"),
        )
        for name, help_, value in (
            ("context_length", "Maximum context length in tokens for a worker serving the model", 40960),
            ("kv_cache_block_size", "KV cache block size in tokens for a worker serving the model", 16),
            ("max_num_seqs", "Maximum number of sequences for a worker serving the model", 256),
            ("total_kv_blocks", "Total KV cache blocks available for a worker serving the model", 92962),
        ):
            m(f"dynamo_frontend_model_{name}", "gauge", help_, model).labels(MODEL).set(value)
        self.disconnected.labels()
        self.inflight.labels(self.model)

    def tick(self, rng: random.Random) -> None:
        load, model = self.load, self.model
        finished = load.step(rng)
        self.inflight.labels(model).set(load.running + load.waiting)
        self.queued.labels(model).set(load.waiting)
        for request in finished:
            status = "error" if request.finished_reason == "error" else "success"
            endpoint = rng.choice(("chat_completions", "chat_completions", "completions"))
            self.requests.labels(endpoint, model, rng.choice(("stream", "unary")), status).inc()
            if status == "error":
                continue
            self.input_tokens.labels(model).observe(request.prompt_tokens)
            self.output_tokens.labels(model).observe(request.generation_tokens)
            self.output_total.labels(model).inc(request.generation_tokens)
            self.ttft.labels(model).observe(request.ttft_seconds)
            for _ in range(min(8, request.generation_tokens - 1)):
                self.itl.labels(model).observe(rng.lognormvariate(-3.9, 0.3))
            self.duration.labels(model).observe(request.e2e_seconds)
        if rng.random() < 0.05:
            self.disconnected.set(self.disconnected.labels().value + 1)


@register
class DynamoWorkerSimulator(TextSimulator):
    profile = "dynamo-worker"
    backend = "NVIDIA Dynamo 1.6 worker (system port)"
    library = "prometheus (Rust crate)"
    model = MODEL
    style = RUST_PROMETHEUS
    ENDPOINTS = ("clear_kv_blocks", "generate", "load_lora")
    #: Serve the KV gauges under Dynamo 0.x's `kvstats_*` names (no model, no dp_rank) instead.
    deprecated_names: ClassVar[bool] = False

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        m = self.metric
        self.load = Load(capacity=64, kv_blocks=5943)
        endpoint = ("dynamo_component", "dynamo_endpoint", "dynamo_namespace", "model")
        self.inflight = m(
            "dynamo_component_inflight_requests",
            "gauge",
            "Number of requests currently being processed by work handler",
            endpoint,
        )
        if self.deprecated_names:
            # lib/runtime/src/metrics/prometheus_names.rs, Dynamo 0.6: `kvstats_` names, no model label.
            kv: tuple[str, ...] = ("dynamo_component", "dynamo_namespace")
            self.kv_labels: tuple[str, ...] = ("backend", "dynamo")
            self.active_blocks = m(
                "dynamo_component_kvstats_active_blocks",
                "gauge",
                "Number of active KV cache blocks currently in use",
                kv,
            )
            self.usage = m(
                "dynamo_component_kvstats_gpu_cache_usage_percent",
                "gauge",
                "GPU cache usage as a percentage (0.0-1.0)",
                kv,
            )
            self.hit_rate = m(
                "dynamo_component_kvstats_gpu_prefix_cache_hit_rate",
                "gauge",
                "GPU prefix cache hit rate as a percentage (0.0-1.0)",
                kv,
            )
            self.total_blocks = m(
                "dynamo_component_kvstats_total_blocks", "gauge", "Total number of KV cache blocks available", kv
            )
        else:
            kv = ("dp_rank", "dynamo_component", "model")
            self.kv_labels = ("0", "backend", MODEL)
            self.usage = m(
                "dynamo_component_gpu_cache_usage_percent", "gauge", "GPU cache usage as a percentage (0.0-1.0)", kv
            )
            self.total_blocks = m(
                "dynamo_component_total_blocks", "gauge", "Total number of KV cache blocks available on the worker", kv
            )
        self.request_bytes = m(
            "dynamo_component_request_bytes_total",
            "counter",
            "Total number of bytes received in requests by work handler",
            endpoint,
        )
        self.duration = m(
            "dynamo_component_request_duration_seconds",
            "histogram",
            "Time spent processing requests by work handler",
            endpoint,
            buckets=DEFAULT_BUCKETS,
        )
        self.requests = m(
            "dynamo_component_requests_total", "counter", "Total number of requests processed by work handler", endpoint
        )
        self.response_bytes = m(
            "dynamo_component_response_bytes_total",
            "counter",
            "Total number of bytes sent in responses by work handler",
            endpoint,
        )
        self.uptime = m("dynamo_component_uptime_seconds", "gauge", "Total uptime of the DistributedRuntime in seconds")
        self.total_blocks.labels(*self.kv_labels).set(self.load.kv_blocks)
        for name in self.ENDPOINTS:
            for metric in (self.inflight, self.request_bytes, self.requests, self.response_bytes, self.duration):
                metric.labels("backend", name, "dynamo", MODEL)

    def tick(self, rng: random.Random) -> None:
        load = self.load
        finished = load.step(rng)
        generate = ("backend", "generate", "dynamo", MODEL)
        self.uptime.set(self.ticks + 1 + rng.random())
        self.inflight.labels(*generate).set(load.running)
        self.usage.labels(*self.kv_labels).set(load.kv_usage)
        if self.deprecated_names:
            self.active_blocks.labels(*self.kv_labels).set(int(load.kv_usage * load.kv_blocks))
            prompt = sum(request.prompt_tokens for request in finished)
            self.hit_rate.labels(*self.kv_labels).set(
                sum(request.cached_tokens for request in finished) / prompt if prompt else 0.0
            )
        for request in finished:
            self.requests.labels(*generate).inc()
            self.request_bytes.labels(*generate).inc(request.prompt_tokens * 4 + 600)
            self.response_bytes.labels(*generate).inc(request.generation_tokens * 120)
            self.duration.labels(*generate).observe(request.e2e_seconds)


class DeprecatedDynamoWorkerSimulator(DynamoWorkerSimulator):
    """A Dynamo 0.x worker: the KV gauges as `kvstats_*`, labelled without model or dp_rank. Not
    registered (the profile's simulator is today's worker); tests use it for the profile's fallbacks."""

    backend = "NVIDIA Dynamo 0.6 worker (system port)"
    deprecated_names = True
