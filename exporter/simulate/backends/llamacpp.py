"""llama.cpp's llama-server (started with --metrics), whose /metrics text is written by hand.

tools/server/server.cpp (llama.cpp b6xxx, `handle_metrics`) builds a JSON list of counters then
gauges (name, help, value) and writes each as `# HELP llamacpp:<name> <help>`, `# TYPE ...` and
`llamacpp:<name> <value>` with a std::stringstream: values are doubles at the stream's default
precision, so a counter past 999999 reads `1.23457e+06`. No labels, no histograms, no model name
(its target needs `model:`); the KV-cache gauges are gone from builds since the unified KV cache.

Prompt tokens as llama.cpp master counts them today: tools/server/server-context.cpp (ggml-org/llama.cpp,
struct server_metrics: `n_prompt_tokens_processed_total` adds a slot's `n_prompt_tokens_processed`,
the tokens it evaluated, and `n_prompt_tokens_cached_total` its `n_prompt_tokens_cache`, the tokens
reused from the cache), served as `llamacpp:prompt_tokens_total` (cached tokens excluded) and
`llamacpp:prompt_tokens_cached_total`. `LlamaCppBeforeCachedSimulator` is an older build: no cached
counter, every prompt token in `prompt_tokens_total`.
"""

from __future__ import annotations

import random
from typing import ClassVar

from exporter.simulate.base import TextSimulator, register
from exporter.simulate.load import Load
from exporter.simulate.textformat import LLAMACPP


@register
class LlamaCppSimulator(TextSimulator):
    profile = "llamacpp"
    backend = "llama.cpp llama-server b6xxx (--metrics)"
    library = "hand-written (server.cpp)"
    style = LLAMACPP
    #: Whether the build counts cached prompt tokens apart (`llamacpp:prompt_tokens_cached_total`).
    cached_counter: ClassVar[bool] = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        m = self.metric
        self.load = Load(capacity=4)
        self.prompt_tokens = m("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.")
        self.prompt_cached = (
            m("llamacpp:prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache.")
            if self.cached_counter
            else None
        )
        self.prompt_seconds = m("llamacpp:prompt_seconds_total", "counter", "Prompt process time")
        self.predicted = m("llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.")
        self.predicted_seconds = m("llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time")
        self.decodes = m("llamacpp:n_decode_total", "counter", "Total number of llama_decode() calls")
        self.busy_slots = m(
            "llamacpp:n_busy_slots_per_decode", "counter", "Average number of busy slots per llama_decode() call"
        )
        self.prompt_rate = m("llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.")
        self.predicted_rate = m(
            "llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s."
        )
        self.processing = m("llamacpp:requests_processing", "gauge", "Number of requests processing.")
        self.deferred = m("llamacpp:requests_deferred", "gauge", "Number of requests deferred.")
        for metric in self.metrics:
            metric.labels()

    def tick(self, rng: random.Random) -> None:
        load = self.load
        finished = load.step(rng)
        self.processing.set(load.running)
        self.deferred.set(load.waiting)
        decodes = rng.randint(20, 60)
        self.decodes.inc(decodes)
        self.busy_slots.set(round(max(1, load.running) * rng.uniform(0.8, 1.0), 5))
        for request in finished:
            prompt_ms = request.prompt_tokens * rng.uniform(0.2, 0.6)
            predict_ms = request.generation_tokens * request.itl_seconds * 1000
            if self.prompt_cached is not None:
                self.prompt_tokens.inc(request.prompt_tokens - request.cached_tokens)
                self.prompt_cached.inc(request.cached_tokens)
            else:
                self.prompt_tokens.inc(request.prompt_tokens)
            self.prompt_seconds.inc(prompt_ms / 1e3)
            self.predicted.inc(request.generation_tokens)
            self.predicted_seconds.inc(predict_ms / 1e3)
        if self.prompt_seconds.labels().value:
            self.prompt_rate.set(self.prompt_tokens.labels().value / self.prompt_seconds.labels().value)
        if self.predicted_seconds.labels().value:
            self.predicted_rate.set(self.predicted.labels().value / self.predicted_seconds.labels().value)


class LlamaCppBeforeCachedSimulator(LlamaCppSimulator):
    """A llama-server build from before the cached-token counter. Not registered (the profile's
    simulator is today's build); tests use it for the profile's fallback."""

    backend = "llama.cpp llama-server before the cached-token counter (--metrics)"
    cached_counter = False
