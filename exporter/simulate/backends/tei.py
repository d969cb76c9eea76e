"""Hugging Face text-embeddings-inference's router, written by Rust's metrics-exporter-prometheus.

Names and labels follow router/src/lib.rs (`ResponseMetadata::record_metrics`), router/src/http/server.rs
and core/src/{infer,queue,tokenization}.rs of TEI 1.9.3 (commit 0d124dc); buckets those
router/src/prometheus.rs sets (durations: 35 steps of x1.5 from 0.0001 s; input lengths: 20 steps of x2
from 1). Counters without `_total`, no HELP (TEI describes none). No model label: its target needs `model:`.
"""

from __future__ import annotations

import random

from exporter.simulate.base import TextSimulator, register
from exporter.simulate.load import Load
from exporter.simulate.textformat import METRICS_EXPORTER_PROMETHEUS


def _steps(start: float, factor: float, count: int) -> tuple[float, ...]:
    value, out = start, []
    for _ in range(count):
        value *= factor
        out.append(value)
    return tuple(out)


DURATION_BUCKETS = _steps(0.0001, 1.5, 35)
INPUT_LENGTH_BUCKETS = _steps(1.0, 2.0, 20)
BATCH_BUCKETS = _steps(1.0, 2.0, 20)


@register
class TEISimulator(TextSimulator):
    profile = "tei"
    backend = "text-embeddings-inference 1.9.3 (router)"
    library = "metrics-exporter-prometheus (Rust)"
    style = METRICS_EXPORTER_PROMETHEUS
    content_type = "text/plain; charset=utf-8"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        m, d = self.metric, DURATION_BUCKETS
        self.load = Load(capacity=32)
        self.count = m("te_request_count", "counter", None, ("method",))
        self.success = m("te_request_success", "counter", None, ("method",))
        self.failure = m("te_request_failure", "counter", None, ("err",))
        self.embed_count = m("te_embed_count", "counter", None)
        self.embed_success = m("te_embed_success", "counter", None)
        self.queue_size = m("te_queue_size", "gauge", None)
        self.input_length = m("te_request_input_length", "histogram", None, buckets=INPUT_LENGTH_BUCKETS)
        self.batch_size = m("te_batch_next_size", "histogram", None, buckets=BATCH_BUCKETS)
        self.batch_tokens = m("te_batch_next_tokens", "histogram", None, buckets=_steps(1.0, 2.0, 20))
        self.duration = m("te_request_duration", "histogram", None, buckets=d)
        self.tokenization = m("te_request_tokenization_duration", "histogram", None, buckets=d)
        self.queue = m("te_request_queue_duration", "histogram", None, buckets=d)
        self.inference = m("te_request_inference_duration", "histogram", None, buckets=d)
        self.embed_duration = m("te_embed_duration", "histogram", None, buckets=d)
        self.queue_size.set(0)

    def tick(self, rng: random.Random) -> None:
        load = self.load
        finished = load.step(rng)
        self.queue_size.set(load.waiting + rng.randint(0, load.running // 4))  # TEI queues before batching
        for _ in range(rng.randint(1, 5)):
            size = rng.randint(1, 32)
            self.batch_size.observe(size)
            self.batch_tokens.observe(size * rng.randint(16, 512))
        for request in finished:
            method = "batch" if rng.random() < 0.3 else "single"
            self.count.labels(method).inc()
            self.embed_count.inc()
            if request.finished_reason in ("error", "abort"):
                self.failure.labels("validation" if request.finished_reason == "abort" else "inference").inc()
                continue
            seconds = request.prefill_seconds + rng.uniform(0.001, 0.01)
            self.input_length.observe(request.prompt_tokens)
            self.duration.observe(seconds)
            self.tokenization.observe(seconds * 0.1)
            self.queue.observe(request.queue_seconds)
            self.inference.observe(seconds * 0.8)
            self.embed_duration.observe(seconds)
            self.success.labels(method).inc()
            self.embed_success.inc()
