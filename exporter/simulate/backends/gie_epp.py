"""The Gateway API Inference Extension's endpoint picker (EPP; llm-d's too), written by client_golang.

Names, types, HELP and labels follow pkg/epp/metrics/metrics.go of kubernetes-sigs/gateway-api-inference-extension
(release-1.5): `inference_objective_*` by `model_name` and `target_model_name`, `inference_pool_*` by
pool `name`; the golden files in pkg/epp/metrics/testdata show how client_golang writes them (families
sorted by name, labels sorted, `_sum` and `_count` after the buckets). Served by controller-runtime's
metrics server (promhttp).
"""

from __future__ import annotations

import math
import random
from decimal import Decimal

from exporter.simulate.base import TextSimulator, register
from exporter.simulate.load import Load
from exporter.simulate.textformat import TextStyle

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
#: The objective's requests go to two target models (a base model and a LoRA adapter).
TARGETS = ("meta-llama/Llama-3.1-8B-Instruct", "food-review-lora")
POOL = "vllm-llama3-8b-instruct"
DURATION_BUCKETS = (
    0.005,
    0.025,
    0.05,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1.0,
    1.25,
    1.5,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    15,
    20,
    30,
    45,
    60,
    120,
    180,
    240,
    300,
    360,
    480,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
)
INPUT_BUCKETS = (
    1,
    8,
    16,
    32,
    64,
    128,
    256,
    512,
    1024,
    2048,
    4096,
    8192,
    16384,
    32778,
    65536,
    131072,
    262144,
    524288,
    1048576,
)
OUTPUT_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
NTPOT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def go_float(value: float) -> str:
    """client_golang's writeFloat: strconv.FormatFloat(f, 'g', -1, 64): the shortest digits, with an
    exponent from 1e+06 up and below 1e-04 (`1.048576e+06`, as the golden files show), `+Inf`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)  # a finite value's: NaN and the infinities were written above
    text = "".join(map(str, digits))
    exp = len(digits) + exponent - 1
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{'-' if sign else ''}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return format(Decimal(repr(float(value))).normalize(), "f")


#: client_golang's text encoder (expfmt): families sorted by name, labels sorted, _sum then _count last.
CLIENT_GOLANG = TextStyle(number=go_float, sort_families=True)


@register
class EndpointPickerSimulator(TextSimulator):
    profile = "gie-epp"
    backend = "Gateway API Inference Extension endpoint picker (release-1.5)"
    library = "client_golang"
    model = MODEL
    style = CLIENT_GOLANG
    content_type = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        m, objective = self.metric, ("model_name", "target_model_name")
        alpha = "[ALPHA] "
        self.load = Load(capacity=96)
        self.requests = m(
            "inference_objective_request_total",
            "counter",
            alpha + "Counter of inference objective requests broken out for each model and target model.",
            ("model_name", "priority", "target_model_name"),
        )
        self.errors = m(
            "inference_objective_request_error_total",
            "counter",
            alpha + "Counter of inference objective requests errors broken out for each model and target model.",
            ("error_code", "model_name", "target_model_name"),
        )
        self.duration = m(
            "inference_objective_request_duration_seconds",
            "histogram",
            alpha + "Inference objective response latency distribution in seconds for each model and target model.",
            objective,
            buckets=DURATION_BUCKETS,
        )
        self.ttft = m(
            "inference_objective_request_ttft_seconds",
            "histogram",
            alpha + "Inference objective TTFT distribution in seconds for each model and target model.",
            objective,
            buckets=DURATION_BUCKETS,
        )
        self.ntpot = m(
            "inference_objective_normalized_time_per_output_token_seconds",
            "histogram",
            alpha
            + "Inference objective latency divided by number of output tokens in seconds for each model and target model.",
            objective,
            buckets=NTPOT_BUCKETS,
        )
        self.input_tokens = m(
            "inference_objective_input_tokens",
            "histogram",
            alpha + "Inference objective input token count distribution for requests in each model.",
            objective,
            buckets=INPUT_BUCKETS,
        )
        self.output_tokens = m(
            "inference_objective_output_tokens",
            "histogram",
            alpha + "Inference objective output token count distribution for requests in each model.",
            objective,
            buckets=OUTPUT_BUCKETS,
        )
        self.running = m(
            "inference_objective_running_requests",
            "gauge",
            alpha + "Inference objective number of running requests in each model.",
            ("model_name",),
        )
        self.kv_cache = m(
            "inference_pool_average_kv_cache_utilization",
            "gauge",
            alpha + "The average kv cache utilization for an inference server pool.",
            ("name",),
        )
        self.queue = m(
            "inference_pool_average_queue_size",
            "gauge",
            alpha + "The average number of requests pending in the model server queue.",
            ("name",),
        )
        self.ready = m(
            "inference_pool_ready_pods",
            "gauge",
            alpha + "The number of ready pods in the inference server pool.",
            ("name",),
        )
        self.ready.labels(POOL).set(4)

    def tick(self, rng: random.Random) -> None:
        load = self.load
        finished = load.step(rng)
        self.running.labels(MODEL).set(load.running)
        self.kv_cache.labels(POOL).set(load.kv_usage)
        self.queue.labels(POOL).set(load.waiting / 4)
        for request in finished:
            target = rng.choice(TARGETS)
            self.requests.labels(MODEL, "0", target).inc()
            if request.finished_reason in ("error", "abort"):
                self.errors.labels(
                    "Internal" if request.finished_reason == "error" else "ResourceExhausted", MODEL, target
                ).inc()
                continue
            self.duration.labels(MODEL, target).observe(request.e2e_seconds)
            self.ttft.labels(MODEL, target).observe(request.ttft_seconds)
            self.ntpot.labels(MODEL, target).observe(request.e2e_seconds / request.generation_tokens)
            self.input_tokens.labels(MODEL, target).observe(request.prompt_tokens)
            self.output_tokens.labels(MODEL, target).observe(request.generation_tokens)
