"""NVIDIA Triton Inference Server running the TensorRT-LLM backend, written by prometheus-cpp.

Triton's own families follow src/metrics.cc and src/metric_model_reporter.cc of Triton 2.5x
(counters without `_total`, latencies in microseconds; the `*_summary_us` summaries with
`--metrics-config summary_latencies=true`, `nv_inference_first_response_histogram_ms` with
`histogram_latencies=true`, both labelled model and version). The TensorRT-LLM backend's gauges
follow inflight_batcher_llm/src/custom_metrics_reporter/custom_metrics_reporter.cc of
tensorrtllm_backend 0.1x (`nv_trt_llm_*`, one label naming the field); the token-length histograms
`nv_llm_input_token_len` / `nv_llm_output_token_len` come from the backend's Python model
(all_models/inflight_batcher_llm/tensorrt_llm/1/model.py) through Triton's metrics API.
"""

from __future__ import annotations

import random

from exporter.simulate.base import TextSimulator, register
from exporter.simulate.load import Load
from exporter.simulate.textformat import PROMETHEUS_CPP

MODEL = "tensorrt_llm"
KV_BLOCKS = 6239
TOKENS_PER_BLOCK = 64
#: Triton's default first-response histogram buckets, milliseconds (src/metric_model_reporter.cc).
FIRST_RESPONSE_BUCKETS = (100.0, 500.0, 2000.0, 5000.0)
TOKEN_BUCKETS = (10.0, 50.0, 100.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


@register
class TritonSimulator(TextSimulator):
    profile = "triton"
    backend = "Triton Inference Server 2.5x with the TensorRT-LLM backend"
    library = "prometheus-cpp"
    model = MODEL
    style = PROMETHEUS_CPP
    content_type = "text/plain; charset=utf-8"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        m, mv = self.metric, ("model", "version")
        self.load = Load(capacity=512, kv_blocks=KV_BLOCKS)
        self.request_metrics = m(
            "nv_trt_llm_request_metrics", "gauge", "TRT LLM request metrics", ("model", "request_type", "version")
        )
        self.memory = m(
            "nv_trt_llm_runtime_memory_metrics",
            "gauge",
            "TRT LLM runtime memory metrics",
            ("memory_type", "model", "version"),
        )
        self.kv_blocks = m(
            "nv_trt_llm_kv_cache_block_metrics",
            "gauge",
            "TRT LLM KV cache block metrics",
            ("kv_cache_block_type", "model", "version"),
        )
        self.batcher = m(
            "nv_trt_llm_inflight_batcher_metrics",
            "gauge",
            "TRT LLM inflight_batcher-specific metrics",
            ("inflight_batcher_specific_metric", "model", "version"),
        )
        self.general = m(
            "nv_trt_llm_general_metrics", "gauge", "General TRT LLM metrics", ("general_type", "model", "version")
        )
        self.success = m(
            "nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes", mv
        )
        self.failure = m(
            "nv_inference_request_failure",
            "counter",
            "Number of failed inference requests, all batch sizes",
            ("model", "reason", "version"),
        )
        self.count = m(
            "nv_inference_count", "counter", "Number of inferences performed (does not include cached requests)", mv
        )
        self.exec_count = m(
            "nv_inference_exec_count",
            "counter",
            "Number of model executions performed (does not include cached requests)",
            mv,
        )
        self.pending = m(
            "nv_inference_pending_request_count",
            "gauge",
            "Instantaneous number of pending requests awaiting execution per-model.",
            mv,
        )
        self.request_us = m(
            "nv_inference_request_duration_us",
            "counter",
            "Cumulative inference request duration in microseconds (includes cached requests)",
            mv,
        )
        self.queue_us = m(
            "nv_inference_queue_duration_us",
            "counter",
            "Cumulative inference queuing duration in microseconds (includes cached requests)",
            mv,
        )
        self.request_summary = m(
            "nv_inference_request_summary_us",
            "summary",
            "Summary of inference request duration in microseconds (includes cached requests)",
            mv,
            quantiles=SUMMARY_QUANTILES,
        )
        self.queue_summary = m(
            "nv_inference_queue_summary_us",
            "summary",
            "Summary of inference queuing duration in microseconds (includes cached requests)",
            mv,
            quantiles=SUMMARY_QUANTILES,
        )
        self.first_response = m(
            "nv_inference_first_response_histogram_ms",
            "histogram",
            "Duration from request to first response in milliseconds",
            mv,
            buckets=FIRST_RESPONSE_BUCKETS,
        )
        self.input_tokens = m(
            "nv_llm_input_token_len", "histogram", "TRT LLM input token length per request", mv, buckets=TOKEN_BUCKETS
        )
        self.output_tokens = m(
            "nv_llm_output_token_len", "histogram", "TRT LLM output token length per request", mv, buckets=TOKEN_BUCKETS
        )
        self.gpu_utilization = m("nv_gpu_utilization", "gauge", "GPU utilization rate [0.0 - 1.0)", ("gpu_uuid",))
        self.gpu_memory_used = m("nv_gpu_memory_used_bytes", "gauge", "GPU used memory, in bytes", ("gpu_uuid",))
        self.iterations = 0
        self.kv_blocks.labels("max", MODEL, "1").set(KV_BLOCKS)
        self.kv_blocks.labels("tokens_per", MODEL, "1").set(TOKENS_PER_BLOCK)
        self.request_metrics.labels(MODEL, "max", "1").set(512)
        self.memory.labels("gpu", MODEL, "1").set(1610236)
        for series in (self.success, self.count, self.exec_count, self.pending):
            series.labels(MODEL, "1")

    def tick(self, rng: random.Random) -> None:
        load, of = self.load, (MODEL, "1")
        finished = load.step(rng)
        used = int(load.kv_usage * KV_BLOCKS)
        for kind, value in (
            ("active", load.running),
            ("waiting", load.waiting),
            ("context", rng.randint(0, 4)),
            ("scheduled", load.running),
        ):
            self.request_metrics.labels(MODEL, kind, "1").set(value)
        for kind, blocks in (("fraction", round(used / KV_BLOCKS, 4)), ("used", used), ("free", KV_BLOCKS - used)):
            self.kv_blocks.labels(kind, MODEL, "1").set(blocks)
        self.batcher.labels("generation_requests", MODEL, "1").set(load.running)
        self.batcher.labels("total_context_tokens", MODEL, "1").set(rng.randint(0, 4) * 512)
        self.batcher.labels("micro_batch_id", MODEL, "1").set(0)
        self.iterations += rng.randint(20, 40)
        self.general.labels("iteration_counter", MODEL, "1").set(self.iterations)
        self.general.labels("timestamp", MODEL, "1").set(1_760_000_000 + self.ticks)
        self.pending.labels(*of).set(load.waiting)
        self.exec_count.labels(*of).inc(rng.randint(20, 40))
        self.gpu_utilization.labels("GPU-5f1a9c2e-0000-4000-8000-000000000000").set(
            round(min(1.0, load.running / 64 + 0.2), 2)
        )
        self.gpu_memory_used.labels("GPU-5f1a9c2e-0000-4000-8000-000000000000").set(72_000_000_000 + used * 1_000_000)
        for request in finished:
            if request.finished_reason == "error":
                self.failure.labels(MODEL, "BACKEND", "1").inc()
                continue
            self.success.labels(*of).inc()
            self.count.labels(*of).inc()
            e2e_us, queue_us = int(request.e2e_seconds * 1e6), int(request.queue_seconds * 1e6)
            self.request_us.labels(*of).inc(e2e_us)
            self.queue_us.labels(*of).inc(queue_us)
            self.request_summary.labels(*of).observe(e2e_us)
            self.queue_summary.labels(*of).observe(queue_us)
            self.first_response.labels(*of).observe(request.ttft_seconds * 1000)
            self.input_tokens.labels(*of).observe(request.prompt_tokens)
            self.output_tokens.labels(*of).observe(request.generation_tokens)
