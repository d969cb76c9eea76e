"""Hugging Face Text Generation Inference's router, written by Rust's metrics-exporter-prometheus.

Names, labels and HELP follow router/src/server.rs (`metrics::counter!`/`gauge!`/`histogram!`
calls and their `describe_*`) and docs/source/reference/metrics.md of TGI 3.x; buckets are those
server.rs gives `PrometheusBuilder::set_buckets_for_metric` (durations: 35 steps of x1.5 from
0.0001 s; token lengths: 100 steps up to max_input_tokens / max_total_tokens). A histogram given no
buckets is written as a summary (`tgi_request_skipped_tokens`), and two counters have no HELP, as a
TGI server answers. TGI names no model in its series: its target needs `model:`.
"""

from __future__ import annotations

import random

from exporter.simulate.base import TextSimulator, register
from exporter.simulate.load import Load
from exporter.simulate.textformat import METRICS_EXPORTER_PROMETHEUS

MAX_INPUT_TOKENS = 4095
MAX_TOTAL_TOKENS = 4096


def _duration_buckets() -> tuple[float, ...]:
    value, buckets = 0.0001, []
    for _ in range(35):
        value *= 1.5
        buckets.append(value)
    return tuple(buckets)


def _length_buckets(maximum: int) -> tuple[float, ...]:
    return tuple((maximum / 100.0) * (x + 1) for x in range(100))


DURATION_BUCKETS = _duration_buckets()


@register
class TGISimulator(TextSimulator):
    profile = "tgi"
    backend = "Text Generation Inference 3.x (router)"
    library = "metrics-exporter-prometheus (Rust)"
    style = METRICS_EXPORTER_PROMETHEUS
    content_type = "text/plain; charset=utf-8"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        m, d = self.metric, DURATION_BUCKETS
        self.load = Load(capacity=32)
        self.success = m("tgi_request_success", "counter", "Number of successful requests")
        self.batch_concat = m("tgi_batch_concat", "counter", None, ("reason",))
        self.count = m("tgi_request_count", "counter", "Total number of requests")
        self.failure = m("tgi_request_failure", "counter", None, ("err",))
        self.inference_success = m(
            "tgi_batch_inference_success",
            "counter",
            "Number of successful inference calls per method (prefill or decode)",
            ("method",),
        )
        self.inference_count = m(
            "tgi_batch_inference_count", "counter", "Inference calls per method (prefill or decode)", ("method",)
        )
        self.queue_size = m("tgi_queue_size", "gauge", "Current queue size")
        self.max_tokens = m("tgi_batch_current_max_tokens", "gauge", "Maximum tokens for the current batch")
        self.batch_size = m("tgi_batch_current_size", "gauge", "Current batch size")
        self.input_length = m(
            "tgi_request_input_length",
            "histogram",
            "Input token length per request",
            buckets=_length_buckets(MAX_INPUT_TOKENS),
        )
        self.max_new_tokens = m(
            "tgi_request_max_new_tokens",
            "histogram",
            "Maximum new tokens per request",
            buckets=_length_buckets(MAX_TOTAL_TOKENS),
        )
        self.generated = m(
            "tgi_request_generated_tokens",
            "histogram",
            "Generated tokens per request",
            buckets=_length_buckets(MAX_TOTAL_TOKENS),
        )
        self.duration = m("tgi_request_duration", "histogram", "Request duration", buckets=d)
        self.validation = m("tgi_request_validation_duration", "histogram", "Request validation duration", buckets=d)
        self.queue = m("tgi_request_queue_duration", "histogram", "Request queue duration", buckets=d)
        self.inference = m("tgi_request_inference_duration", "histogram", "Request inference duration", buckets=d)
        self.per_token = m(
            "tgi_request_mean_time_per_token_duration", "histogram", "Mean time per token per request", buckets=d
        )
        self.forward = m(
            "tgi_batch_forward_duration",
            "histogram",
            "Batch forward duration per method (prefill or decode)",
            ("method",),
            buckets=d,
        )
        self.skipped = m("tgi_request_skipped_tokens", "summary", "Speculated tokens per request")
        for metric in (self.success, self.count, self.queue_size, self.max_tokens, self.batch_size):
            metric.labels()

    def tick(self, rng: random.Random) -> None:
        load = self.load
        finished = load.step(rng)
        self.queue_size.set(load.waiting)
        self.batch_size.set(load.running)
        self.max_tokens.set(load.running * rng.randint(200, 600))
        prefills = rng.randint(1, 4)
        decodes = rng.randint(20, 40)
        for method, calls in (("prefill", prefills), ("decode", decodes)):
            self.inference_count.labels(method).inc(calls)
            self.inference_success.labels(method).inc(calls)
            for _ in range(calls):
                self.forward.labels(method).observe(rng.lognormvariate(-3.5, 0.4))
        self.batch_concat.labels("backpressure" if load.waiting else "wait_exceeded").inc(rng.randint(0, prefills))
        for request in finished:
            self.count.inc()
            if request.finished_reason in ("error", "abort"):
                self.failure.labels("validation" if request.finished_reason == "abort" else "generation").inc()
                continue
            self.success.inc()
            self.input_length.observe(min(request.prompt_tokens, MAX_INPUT_TOKENS))
            self.max_new_tokens.observe(request.max_tokens)
            self.generated.observe(request.generation_tokens)
            self.duration.observe(request.e2e_seconds)
            self.validation.observe(rng.uniform(0.0002, 0.002))
            self.queue.observe(request.queue_seconds)
            self.inference.observe(request.e2e_seconds - request.queue_seconds)
            self.per_token.observe(request.itl_seconds)
            self.skipped.observe(0)
