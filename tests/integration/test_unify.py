"""The unified vocabulary on every payload of both corpora (the simulated backends, the real captures):
which profile is detected, and each unified series.

Expected values are computed here from the raw payload with prometheus_client's own parser, following
the per-backend expectations written out below (which upstream series feeds which concept, in which
unit): not from exporter code. Each payload is served by a real upstream and polled through the
daemon's poll path.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from helpers.support import (
    REPO,
    TEXT_0_0_4,
    Body,
    capture,
    created_series_simulator,
    daemon_url,
    fixture_files,
    poll_target,
    served_samples,
    simulated,
    simulated_profiles,
    simulated_value,
    wait_until,
    without_cut_off_line,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import profiles
from exporter.simulate import OPENMETRICS_ACCEPT, OPENMETRICS_UTF8_ACCEPT, TEXT_ACCEPT

#: The unified family names, as the issue fixes them (no prefix configured in these tests).
UNIFIED = {
    "requests_running",
    "requests_waiting",
    "kv_cache_usage_ratio",
    "prefix_cache_hit_tokens_total",
    "prefix_cache_query_tokens_total",
    "time_to_first_token_seconds",
    "inter_token_latency_seconds",
    "e2e_request_latency_seconds",
    "request_queue_time_seconds",
    "prompt_tokens_total",
    "generation_tokens_total",
    "requests_finished_total",
    "requests_preempted_total",
    "kv_cache_capacity_tokens",
    "requests_running_limit",
    "speculative_draft_tokens_total",
    "speculative_accepted_tokens_total",
    "request_prefill_time_seconds",
    "request_decode_time_seconds",
    "request_time_per_output_token_seconds",
}
SUCCESS = {"stop": "success", "length": "success", "repetition": "success", "abort": "abort", "error": "error"}

# -- the oracle: upstream samples read with prometheus_client, mapped by the rules written below ----------------


def raw_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample prometheus_client reads (a cut-off last line left out), with the names as written."""
    text = without_cut_off_line(text)
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            # prometheus_client's text parser appends `_total` to a counter written without it (Triton, TGI)
            if family.type == "counter" and name.endswith("_total") and not text_has_sample(text, name):
                name = name[: -len("_total")]
            out.append((name, dict(sample.labels), sample.value))
    return out


def text_has_sample(text: str, name: str) -> bool:
    return f"\n{name}{{" in text or f"\n{name} " in text or text.startswith((name + "{", name + " "))


@dataclass
class Backend:
    """How the test reads one backend: its profile name and the label (if any) naming the model."""

    profile: str
    model_label: str | None
    model: str | None = None  # the target's `model:`, for backends that name none
    #: The one model the payload names, for its series that name none (filled from the payload).
    payload_model: str | None = None

    def model_of(self, labels: dict[str, str]) -> str | None:
        return (labels.get(self.model_label) if self.model_label else None) or self.model or self.payload_model

    def labels(self, labels: dict[str, str], **extra: str) -> dict[str, str]:
        model = self.model_of(labels)
        return {"backend": self.profile, **({"model": model} if model else {}), **extra}


@dataclass
class Gauge_:
    metric: str
    match: dict[str, str] = field(default_factory=dict)
    minus: str | None = None

    def expect(self, concept, backend, raw):
        out = {}
        for name, labels, value in raw:
            if name == self.metric and self.match.items() <= labels.items():
                key = frozenset(backend.labels(labels).items())
                assert key not in out, "each fixture has one upstream series per model"
                out[key] = value
        if self.minus:
            for name, labels, value in raw:
                if name == self.minus:
                    out[frozenset(backend.labels(labels).items())] -= value
        return {(concept, key): value for key, value in out.items()}


@dataclass
class Counter_:
    """A counter read from `metric` (as written: `_total` or not, or a histogram's `_sum`), with outcomes."""

    metric: str
    outcome: str | None = None
    outcome_label: str | None = None
    rename: dict[str, str] = field(default_factory=dict)

    def expect(self, concept, backend, raw):
        out: dict = defaultdict(float)
        for name, labels, value in raw:
            if name == self.metric:
                extra = {}
                if self.outcome:
                    extra["outcome"] = self.outcome
                elif self.outcome_label:
                    extra["outcome"] = self.rename.get(labels[self.outcome_label], labels[self.outcome_label])
                out[(concept, frozenset(backend.labels(labels, **extra).items()))] += value
        return dict(out)


@dataclass
class Histogram_:
    """A histogram (or a summary: its count becomes the only, +Inf, bucket), converted by `divisor`."""

    metric: str
    divisor: float = 1.0
    match: dict[str, str] = field(default_factory=dict)

    def expect(self, concept, backend, raw):
        out: dict = defaultdict(float)  # series of one model (by target model, engine...) add up
        raw = [(name, labels, value) for name, labels, value in raw if self.match.items() <= labels.items()]
        for name, labels, value in raw:
            model_labels = backend.labels(labels)
            if name == self.metric + "_bucket":
                le = float(labels["le"])
                out[
                    (
                        concept + "_bucket",
                        frozenset({**model_labels, "le": le if math.isinf(le) else le / self.divisor}.items()),
                    )
                ] += value
            elif name == self.metric + "_count":
                out[(concept + "_count", frozenset(model_labels.items()))] += value
                if not any(n == self.metric + "_bucket" for n, _, _ in raw):
                    out[(concept + "_bucket", frozenset({**model_labels, "le": math.inf}.items()))] += value
            elif name == self.metric + "_sum":
                out[(concept + "_sum", frozenset(model_labels.items()))] += value / self.divisor
        return dict(out)


@dataclass
class Product_:
    """A gauge whose value is the product of label values (an info gauge), or of two gauges of the same
    labels less the labels each is matched by."""

    metric: str
    value_labels: tuple[str, ...] = ()
    match: dict[str, str] = field(default_factory=dict)
    times: str | None = None
    times_match: dict[str, str] = field(default_factory=dict)

    def expect(self, concept, backend, raw):
        out = {}
        for name, labels, value in raw:
            if name != self.metric or not self.match.items() <= labels.items():
                continue
            if self.value_labels:
                value = math.prod(float(labels[label]) for label in self.value_labels)
            else:
                rest = {k: v for k, v in labels.items() if k not in self.match}
                value *= next(
                    v
                    for n, named, v in raw
                    if n == self.times
                    and self.times_match.items() <= named.items()
                    and {k: x for k, x in named.items() if k not in self.times_match} == rest
                )
            out[(concept, frozenset(backend.labels(labels).items()))] = value
        return out


@dataclass
class MeanFromCounters_:
    """A running total and a count of observations as a histogram with only its +Inf bucket."""

    total: str
    count: str
    divisor: float = 1.0

    def expect(self, concept, backend, raw):
        out = {}
        counts = {frozenset(named.items()): v for n, named, v in raw if n == self.count}
        for name, labels, value in raw:
            if name == self.total and frozenset(labels.items()) in counts:
                model_labels = backend.labels(labels)
                count = counts[frozenset(labels.items())]
                out[(concept + "_bucket", frozenset({**model_labels, "le": math.inf}.items()))] = count
                out[(concept + "_count", frozenset(model_labels.items()))] = count
                out[(concept + "_sum", frozenset(model_labels.items()))] = value / self.divisor
        return out


@dataclass
class Sum_:
    """Several rules' series added up, series of the same labels together (a profile's `all:`)."""

    parts: tuple

    def expect(self, concept, backend, raw):
        out: dict = defaultdict(float)
        for part in self.parts:
            for key, value in part.expect(concept, backend, raw).items():
                out[key] += value
        return dict(out)


def outcomes(*parts: Counter_) -> list[Counter_]:
    return list(parts)


VLLM_V1 = {
    "requests_running": Gauge_("vllm:num_requests_running"),
    "requests_waiting": Gauge_("vllm:num_requests_waiting"),
    "kv_cache_usage_ratio": Gauge_("vllm:kv_cache_usage_perc"),
    "prefix_cache_hit_tokens_total": Counter_("vllm:prefix_cache_hits_total"),
    "prefix_cache_query_tokens_total": Counter_("vllm:prefix_cache_queries_total"),
    "time_to_first_token_seconds": Histogram_("vllm:time_to_first_token_seconds"),
    "inter_token_latency_seconds": Histogram_("vllm:inter_token_latency_seconds"),
    "e2e_request_latency_seconds": Histogram_("vllm:e2e_request_latency_seconds"),
    "request_queue_time_seconds": Histogram_("vllm:request_queue_time_seconds"),
    "prompt_tokens_total": Counter_("vllm:prompt_tokens_total"),
    "generation_tokens_total": Counter_("vllm:generation_tokens_total"),
    "requests_finished_total": Counter_("vllm:request_success_total", outcome_label="finished_reason", rename=SUCCESS),
    "requests_preempted_total": Counter_("vllm:num_preemptions_total"),
    "kv_cache_capacity_tokens": Product_("vllm:cache_config_info", ("num_gpu_blocks", "block_size")),
    "speculative_draft_tokens_total": Counter_("vllm:spec_decode_num_draft_tokens_total"),
    "speculative_accepted_tokens_total": Counter_("vllm:spec_decode_num_accepted_tokens_total"),
    "request_prefill_time_seconds": Histogram_("vllm:request_prefill_time_seconds"),
    "request_decode_time_seconds": Histogram_("vllm:request_decode_time_seconds"),
    "request_time_per_output_token_seconds": Histogram_("vllm:request_time_per_output_token_seconds"),
}
#: vLLM V0 payloads: the KV cache under its deprecated name, no histograms the profile maps (the aibrix
#: fragment's only histogram is vllm:iteration_tokens_total, and it is cut off).
VLLM_V0 = {
    "requests_running": Gauge_("vllm:num_requests_running"),
    "requests_waiting": Gauge_("vllm:num_requests_waiting"),
    "kv_cache_usage_ratio": Gauge_("vllm:gpu_cache_usage_perc"),
    "prompt_tokens_total": Counter_("vllm:prompt_tokens_total"),
    "generation_tokens_total": Counter_("vllm:generation_tokens_total"),
    "requests_finished_total": Counter_("vllm:request_success_total", outcome_label="finished_reason", rename=SUCCESS),
    "requests_preempted_total": Counter_("vllm:num_preemptions_total"),
    "kv_cache_capacity_tokens": Product_("vllm:cache_config_info", ("num_gpu_blocks", "block_size")),
}
SGLANG = {
    "requests_running": Gauge_("sglang:num_running_reqs"),
    "requests_waiting": Gauge_("sglang:num_queue_reqs"),
    "kv_cache_usage_ratio": Gauge_("sglang:token_usage"),
    "prefix_cache_hit_tokens_total": Counter_("sglang:cached_tokens_total"),
    "time_to_first_token_seconds": Histogram_("sglang:time_to_first_token_seconds"),
    "inter_token_latency_seconds": Histogram_("sglang:inter_token_latency_seconds"),
    "e2e_request_latency_seconds": Histogram_("sglang:e2e_request_latency_seconds"),
    "request_queue_time_seconds": Histogram_("sglang:queue_time_seconds"),
    "prompt_tokens_total": Counter_("sglang:prompt_tokens_total"),
    "generation_tokens_total": Counter_("sglang:generation_tokens_total"),
    "requests_finished_total": Counter_("sglang:num_requests_total", outcome="success"),
    "kv_cache_capacity_tokens": Gauge_("sglang:max_total_num_tokens"),
}
#: The older SGLang of the docs: inter-token latency under its old name, no cache or request counters.
SGLANG_DOCS = {
    "requests_running": Gauge_("sglang:num_running_reqs"),
    "requests_waiting": Gauge_("sglang:num_queue_reqs"),
    "kv_cache_usage_ratio": Gauge_("sglang:token_usage"),
    "time_to_first_token_seconds": Histogram_("sglang:time_to_first_token_seconds"),
    "inter_token_latency_seconds": Histogram_("sglang:time_per_output_token_seconds"),
    "e2e_request_latency_seconds": Histogram_("sglang:e2e_request_latency_seconds"),
    "prompt_tokens_total": Counter_("sglang:prompt_tokens_total"),
    "generation_tokens_total": Counter_("sglang:generation_tokens_total"),
}
TGI_PREFIX = {
    "requests_running": Gauge_("tgi_batch_current_size"),
    "requests_waiting": Gauge_("tgi_queue_size"),
    "prompt_tokens_total": Counter_("tgi_request_input_length_sum"),
    "requests_finished_total": outcomes(
        Counter_("tgi_request_success", outcome="success"), Counter_("tgi_request_failure", outcome="error")
    ),
}
TGIS = {"requests_running": Gauge_("tgi_batch_current_size"), "requests_waiting": Gauge_("tgi_queue_size")}
NIM = {
    "requests_running": Gauge_("num_requests_running"),
    "requests_waiting": Gauge_("num_requests_waiting"),
    "kv_cache_usage_ratio": Gauge_("gpu_cache_usage_perc"),
    "time_to_first_token_seconds": Histogram_("time_to_first_token_seconds"),
    "inter_token_latency_seconds": Histogram_("time_per_output_token_seconds"),
    "e2e_request_latency_seconds": Histogram_("e2e_request_latency_seconds"),
    "prompt_tokens_total": Counter_("prompt_tokens_total"),
    "generation_tokens_total": Counter_("generation_tokens_total"),
    "requests_finished_total": outcomes(
        Counter_("request_success_total", outcome="success"), Counter_("request_failure_total", outcome="error")
    ),
    "requests_running_limit": Gauge_("num_request_max"),
}
DYNAMO_FRONTEND = {
    "requests_running": Gauge_("dynamo_frontend_inflight_requests", minus="dynamo_frontend_queued_requests"),
    "requests_waiting": Gauge_("dynamo_frontend_queued_requests"),
    "time_to_first_token_seconds": Histogram_("dynamo_frontend_time_to_first_token_seconds"),
    "inter_token_latency_seconds": Histogram_("dynamo_frontend_inter_token_latency_seconds"),
    "e2e_request_latency_seconds": Histogram_("dynamo_frontend_request_duration_seconds"),
    "prompt_tokens_total": Counter_("dynamo_frontend_input_sequence_tokens_sum"),
    "generation_tokens_total": Counter_("dynamo_frontend_output_tokens_total"),
    "requests_finished_total": Counter_("dynamo_frontend_requests_total", outcome_label="status"),
}
TRITON_TRTLLM = {
    "requests_running": Gauge_("nv_trt_llm_request_metrics", {"request_type": "active"}),
    "requests_waiting": Gauge_("nv_trt_llm_request_metrics", {"request_type": "waiting"}),
    "kv_cache_usage_ratio": Gauge_("nv_trt_llm_kv_cache_block_metrics", {"kv_cache_block_type": "fraction"}),
    "kv_cache_capacity_tokens": Product_(
        "nv_trt_llm_kv_cache_block_metrics",
        match={"kv_cache_block_type": "max"},
        times="nv_trt_llm_kv_cache_block_metrics",
        times_match={"kv_cache_block_type": "tokens_per"},
    ),
    "requests_running_limit": Gauge_("nv_trt_llm_request_metrics", {"request_type": "max"}),
}
TRITON_COUNTERS = {
    "requests_waiting": Gauge_("nv_inference_pending_request_count"),
    "requests_finished_total": outcomes(
        Counter_("nv_inference_request_success", outcome="success"),
        Counter_("nv_inference_request_failure", outcome="error"),  # no `reason` before Triton 2.49
    ),
    # a default server's latency counters: their mean, as a +Inf-only histogram
    "e2e_request_latency_seconds": MeanFromCounters_(
        "nv_inference_request_duration_us", "nv_inference_request_success", 1e6
    ),
    "request_queue_time_seconds": MeanFromCounters_(
        "nv_inference_queue_duration_us", "nv_inference_request_success", 1e6
    ),
}
GIE = Backend("gie-epp", "model_name")
#: Triton's docs sample is malformed (buckets without `_bucket`): only its `_count` and `_sum` are a histogram.
TRITON_HISTOGRAM = {"time_to_first_token_seconds": Histogram_("nv_inference_first_response_histogram_ms", 1e3)}
TRITON_SUMMARY = {"request_queue_time_seconds": Histogram_("nv_inference_queue_summary_us", 1e6)}

#: The simulated backends (exporter/simulate): every concept their profile maps, from their own names.
SIMULATED_SGLANG = {
    **SGLANG,
    "requests_finished_total": outcomes(
        Counter_("sglang:num_requests_total", outcome="success"),
        Counter_("sglang:num_aborted_requests_total", outcome="abort"),
    ),
}
SIMULATED_TGI = {
    **TGI_PREFIX,
    "request_time_per_output_token_seconds": Histogram_("tgi_request_mean_time_per_token_duration"),  # per request
    "e2e_request_latency_seconds": Histogram_("tgi_request_duration"),
    "request_queue_time_seconds": Histogram_("tgi_request_queue_duration"),
    "generation_tokens_total": Counter_("tgi_request_generated_tokens_sum"),
}
SIMULATED_TRITON = {
    **TRITON_TRTLLM,
    "time_to_first_token_seconds": Histogram_("nv_inference_first_response_histogram_ms", 1e3),
    "e2e_request_latency_seconds": Histogram_("nv_inference_request_summary_us", 1e6),
    "request_queue_time_seconds": Histogram_("nv_inference_queue_summary_us", 1e6),
    "prompt_tokens_total": Counter_("nv_llm_input_token_len_sum"),
    "generation_tokens_total": Counter_("nv_llm_output_token_len_sum"),
    "requests_finished_total": outcomes(
        Counter_("nv_inference_request_success", outcome="success"),
        Counter_(
            "nv_inference_request_failure",
            outcome_label="reason",
            rename={"CANCELED": "abort", "REJECTED": "error", "BACKEND": "error", "OTHER": "error"},
        ),
    ),
}
#: Dynamo 1.6's worker: the KV gauge without its `kvstats_` prefix, labelled with the model.
DYNAMO_WORKER = {
    "requests_running": Gauge_("dynamo_component_inflight_requests", {"dynamo_endpoint": "generate"}),
    "kv_cache_usage_ratio": Gauge_("dynamo_component_gpu_cache_usage_percent"),
    "e2e_request_latency_seconds": Histogram_(
        "dynamo_component_request_duration_seconds", match={"dynamo_endpoint": "generate"}
    ),
}
#: A Dynamo 0.x worker: the deprecated `kvstats_` gauge, which names no model.
DYNAMO_WORKER_DEPRECATED = {
    **DYNAMO_WORKER,
    "kv_cache_usage_ratio": Gauge_("dynamo_component_kvstats_gpu_cache_usage_percent"),
}
#: llama.cpp today: `prompt_tokens_total` excludes the cached tokens, which `prompt_tokens_cached_total` counts.
LLAMACPP = {
    "requests_running": Gauge_("llamacpp:requests_processing"),
    "requests_waiting": Gauge_("llamacpp:requests_deferred"),
    "prompt_tokens_total": Sum_(
        (Counter_("llamacpp:prompt_tokens_total"), Counter_("llamacpp:prompt_tokens_cached_total"))
    ),
    "prefix_cache_query_tokens_total": Sum_(
        (Counter_("llamacpp:prompt_tokens_total"), Counter_("llamacpp:prompt_tokens_cached_total"))
    ),
    "prefix_cache_hit_tokens_total": Counter_("llamacpp:prompt_tokens_cached_total"),
    "generation_tokens_total": Counter_("llamacpp:tokens_predicted_total"),
}
#: A build without the cached counter: every prompt token in `prompt_tokens_total`, no hits known.
LLAMACPP_BEFORE_CACHED = {
    "requests_running": Gauge_("llamacpp:requests_processing"),
    "requests_waiting": Gauge_("llamacpp:requests_deferred"),
    "prompt_tokens_total": Counter_("llamacpp:prompt_tokens_total"),
    "prefix_cache_query_tokens_total": Counter_("llamacpp:prompt_tokens_total"),
    "generation_tokens_total": Counter_("llamacpp:tokens_predicted_total"),
}


@dataclass
class Gauges_:
    """A gauge whose series of one model add up (`sum`) or of which the fullest counts (`max`)."""

    metric: str
    combine: str = "sum"

    def expect(self, concept, backend, raw):
        out: dict = {}
        for name, labels, value in raw:
            if name == self.metric:
                key = (concept, frozenset(backend.labels(labels).items()))
                out[key] = (
                    (max(out[key], value) if self.combine == "max" else out[key] + value) if key in out else value
                )
        return out


G, C, H = Gauges_, Counter_, Histogram_
VLLM_REASONS = {"stop": "success", "length": "success", "repetition": "success", "abort": "abort", "error": "error"}
#: lmdeploy/messages.py's ResponseType, as str() writes it, and what each means for a finished request.
LMDEPLOY_REASONS = {
    f"ResponseType.{kind}": outcome
    for kind, outcome in {
        "SUCCESS": "success",
        "FINISH": "success",
        "CANCEL": "abort",
        "ENGINE_STOP_ERROR": "error",
        "SESSION_REPEAT": "error",
        "SESSION_NOT_EXIST": "error",
        "HANDLER_NOT_EXIST": "error",
        "INPUT_LENGTH_ERROR": "error",
        "INTERNAL_ENGINE_ERROR": "error",
        "PREFIX_CACHE_CONFLICT": "error",
        "NO_QUEUE": "error",
        "NOT_SUPPORTED": "error",
        "OUT_OF_MEMORY": "error",
    }.items()
}

#: The profiles added for today's backends, each read from its simulator: how it names the model and
#: where each concept comes from.
NEW_PROFILES: dict[str, tuple[Backend, dict]] = {
    "trtllm": (
        Backend("trtllm", "model_name"),
        {
            "requests_running": G("trtllm_num_requests_running"),
            "requests_waiting": G("trtllm_num_requests_waiting"),
            "kv_cache_usage_ratio": G("trtllm_kv_cache_utilization", "max"),
            "prefix_cache_hit_tokens_total": C("trtllm_prompt_cached_tokens_total"),
            "time_to_first_token_seconds": H("trtllm_time_to_first_token_seconds"),
            "e2e_request_latency_seconds": H("trtllm_e2e_request_latency_seconds"),
            "request_queue_time_seconds": H("trtllm_request_queue_time_seconds"),
            "prompt_tokens_total": C("trtllm_prompt_tokens_total"),
            "generation_tokens_total": C("trtllm_generation_tokens_total"),
            "requests_finished_total": [
                C(
                    "trtllm_request_success_total",
                    outcome_label="finished_reason",
                    rename={"stop": "success", "length": "success", "cancelled": "abort", "timeout": "error"},
                ),
                C("trtllm_request_error_total", outcome="error"),
            ],
            "kv_cache_capacity_tokens": Product_(
                "trtllm_kv_cache_max_blocks", times="trtllm_kv_cache_tokens_per_block"
            ),
            "requests_running_limit": G("trtllm_max_num_active_requests"),
            "speculative_draft_tokens_total": C("trtllm_spec_decode_num_draft_tokens_total"),
            "speculative_accepted_tokens_total": C("trtllm_spec_decode_num_accepted_tokens_total"),
            "request_prefill_time_seconds": H("trtllm_request_prefill_time_seconds"),
            "request_decode_time_seconds": H("trtllm_request_decode_time_seconds"),
            "request_time_per_output_token_seconds": H("trtllm_time_per_output_token_seconds"),
        },
    ),
    "lmdeploy": (
        Backend("lmdeploy", "model_name"),
        {
            "requests_running": G("lmdeploy:num_requests_running"),
            "requests_waiting": G("lmdeploy:num_requests_waiting"),
            "kv_cache_usage_ratio": G("lmdeploy:gpu_cache_usage_perc", "max"),
            "prefix_cache_hit_tokens_total": C("lmdeploy:cached_tokens_total"),
            "time_to_first_token_seconds": H("lmdeploy:time_to_first_token_seconds"),
            "inter_token_latency_seconds": H("lmdeploy:time_per_output_token_seconds"),
            "e2e_request_latency_seconds": H("lmdeploy:e2e_request_latency_seconds"),
            "request_queue_time_seconds": H("lmdeploy:request_queue_time_seconds"),
            "prompt_tokens_total": C("lmdeploy:prompt_tokens_total"),
            "generation_tokens_total": C("lmdeploy:generation_tokens_total"),
            "requests_finished_total": C(
                "lmdeploy:request_success_total", outcome_label="finished_reason", rename=LMDEPLOY_REASONS
            ),
            "speculative_draft_tokens_total": C("lmdeploy:spec_decode_num_draft_tokens_total"),
            "speculative_accepted_tokens_total": C("lmdeploy:spec_decode_num_accepted_tokens_total"),
            "request_prefill_time_seconds": H("lmdeploy:request_prefill_time_seconds"),
            "request_decode_time_seconds": H("lmdeploy:request_decode_time_seconds"),
        },
    ),
    "ray-serve-llm": (
        Backend("ray-serve-llm", "model_name"),
        {
            "requests_running": G("ray_vllm_num_requests_running"),
            "requests_waiting": G("ray_vllm_num_requests_waiting"),
            "kv_cache_usage_ratio": G("ray_vllm_kv_cache_usage_perc", "max"),
            "prefix_cache_hit_tokens_total": C("ray_vllm_prefix_cache_hits_total"),
            "prefix_cache_query_tokens_total": C("ray_vllm_prefix_cache_queries_total"),
            "time_to_first_token_seconds": H("ray_vllm_time_to_first_token_seconds"),
            "inter_token_latency_seconds": H("ray_vllm_inter_token_latency_seconds"),
            "e2e_request_latency_seconds": H("ray_vllm_e2e_request_latency_seconds"),
            "request_queue_time_seconds": H("ray_vllm_request_queue_time_seconds"),
            "prompt_tokens_total": C("ray_vllm_prompt_tokens_total"),
            "generation_tokens_total": C("ray_vllm_generation_tokens_total"),
            "requests_finished_total": C(
                "ray_vllm_request_success_total", outcome_label="finished_reason", rename=VLLM_REASONS
            ),
            "requests_preempted_total": C("ray_vllm_num_preemptions_total"),
            "request_prefill_time_seconds": H("ray_vllm_request_prefill_time_seconds"),
            "request_decode_time_seconds": H("ray_vllm_request_decode_time_seconds"),
            "request_time_per_output_token_seconds": H("ray_vllm_request_time_per_output_token_seconds"),
        },
    ),
    # The router's gauges name no model (only `server`): they take the one model its counters name.
    "vllm-router": (
        Backend("vllm-router", "model"),
        {
            "requests_running": G("vllm:num_requests_running"),
            "e2e_request_latency_seconds": H("vllm:request_latency_seconds"),
            "prompt_tokens_total": C("vllm:input_tokens_total"),
            "generation_tokens_total": C("vllm:output_tokens_total"),
            "requests_finished_total": C(
                "vllm:request_latency_seconds_count",
                outcome_label="status",
                rename={"success": "success", "error": "error"},
            ),
        },
    ),
    "gie-epp": (
        Backend("gie-epp", "model_name"),
        {
            "requests_running": G("inference_objective_running_requests"),
            "kv_cache_usage_ratio": G("inference_pool_average_kv_cache_utilization", "max"),
            "time_to_first_token_seconds": H("inference_objective_request_ttft_seconds"),
            "e2e_request_latency_seconds": H("inference_objective_request_duration_seconds"),
            "prompt_tokens_total": C("inference_objective_input_tokens_sum"),
            "generation_tokens_total": C("inference_objective_output_tokens_sum"),
            "requests_finished_total": [
                C("inference_objective_request_duration_seconds_count", outcome="success"),
                C("inference_objective_request_error_total", outcome="error"),
            ],
            "request_time_per_output_token_seconds": H("inference_objective_normalized_time_per_output_token_seconds"),
        },
    ),
    "tei": (
        Backend("tei", None),
        {
            "requests_waiting": G("te_queue_size"),
            "e2e_request_latency_seconds": H("te_request_duration"),
            "request_queue_time_seconds": H("te_request_queue_duration"),
            "prompt_tokens_total": C("te_request_input_length_sum"),
            "requests_finished_total": [
                C("te_request_success", outcome="success"),
                C("te_request_failure", outcome="error"),
            ],
        },
    ),
}
SIMULATED: dict[str, tuple[Backend, dict]] = {
    "dynamo-frontend": (Backend("dynamo-frontend", "model"), DYNAMO_FRONTEND),
    "dynamo-worker": (Backend("dynamo-worker", "model"), DYNAMO_WORKER),
    "llamacpp": (Backend("llamacpp", None), LLAMACPP),
    "nim": (Backend("nim", "model_name"), NIM),
    "sglang": (Backend("sglang", "model_name"), SIMULATED_SGLANG),
    "tgi": (Backend("tgi", None), SIMULATED_TGI),
    "triton": (Backend("triton", "model"), SIMULATED_TRITON),
    "vllm": (Backend("vllm", "model_name"), VLLM_V1),
    **NEW_PROFILES,
}

#: The real captures: what each yields.
EXPECTED: dict[str, tuple[Backend | None, dict]] = {
    "dcgm-exporter-datadog-fixture-metrics.prom": (None, {}),
    "dynamo-frontend-metrics_examples-fe.prom": (Backend("dynamo-frontend", "model"), DYNAMO_FRONTEND),
    "nim-datadog-fixture-nim_metrics.prom": (Backend("nim", "model_name"), NIM),
    "sglang-datadog-fixture-sglang_metrics.prom": (Backend("sglang", "model_name"), SGLANG),
    "sglang-docs-production_metrics.prom": (Backend("sglang", "model_name"), SGLANG_DOCS),
    "tgi-datadog-fixture-payload-PREFIX.prom": (Backend("tgi", None), TGI_PREFIX),
    "tgis-ibm-vllm-pr18-excerpt-TRUNCATED.prom": (Backend("tgi", None), TGIS),
    "triton-server-docs-histogram.prom": (Backend("triton", "model"), TRITON_HISTOGRAM),
    "triton-server-docs-summary.prom": (Backend("triton", "model"), TRITON_SUMMARY),
    "triton-trtllm-backend-readme-ifb.prom": (Backend("triton", "model"), TRITON_TRTLLM),
    "triton-trtllm-backend-readme-nv_inference.prom": (Backend("triton", "model"), TRITON_COUNTERS),
    "triton-trtllm-backend-readme-v1.prom": (Backend("triton", "model"), {}),
    "vllm-v0-aibrix-docs-runtime.prom": (Backend("vllm", "model_name"), VLLM_V0),
    "vllm-v0fork-batchinggap-cache_config_server_0.prom": (Backend("vllm", "model_name"), VLLM_V0),
    "vllm-v1-dynamo-worker-metrics_examples-vllm.prom": (Backend("vllm", "model_name"), VLLM_V1),
    # The endpoint picker's golden files, one family each (pkg/epp/metrics/testdata, release-1.5)
    "gie-epp-testdata-input_tokens_metric.prom": (
        GIE,
        {"prompt_tokens_total": Counter_("inference_objective_input_tokens_sum")},
    ),
    "gie-epp-testdata-kv_cache_avg_metrics.prom": (
        GIE,
        {"kv_cache_usage_ratio": Gauge_("inference_pool_average_kv_cache_utilization")},
    ),
    "gie-epp-testdata-output_tokens_metric.prom": (
        GIE,
        {"generation_tokens_total": Counter_("inference_objective_output_tokens_sum")},
    ),
    "gie-epp-testdata-queue_avg_size_metrics.prom": (GIE, {}),  # an average per pod, not requests waiting
    "gie-epp-testdata-request_duration_seconds_metric.prom": (
        GIE,
        {
            "e2e_request_latency_seconds": Histogram_("inference_objective_request_duration_seconds"),
            "requests_finished_total": Counter_(
                "inference_objective_request_duration_seconds_count", outcome="success"
            ),
        },
    ),
    "gie-epp-testdata-request_error_total_metric.prom": (
        GIE,
        {
            "requests_finished_total": Counter_("inference_objective_request_error_total", outcome="error"),
        },
    ),
    "gie-epp-testdata-request_total_metric.prom": (GIE, {}),  # requests received, not finished
    "gie-epp-testdata-request_ttft_seconds_metric.prom": (
        GIE,
        {
            "time_to_first_token_seconds": Histogram_("inference_model_request_ttft_seconds"),
        },
    ),
    "gie-epp-testdata-running_requests_metrics.prom": (
        GIE,
        {"requests_running": Gauge_("inference_objective_running_requests")},
    ),
}


def expected_series(backend: Backend | None, rules: dict, text: str, target: str) -> dict:
    raw = raw_samples(text)
    if backend is not None and backend.model_label and not backend.model:
        named = {labels[backend.model_label] for _, labels, _ in raw if labels.get(backend.model_label)}
        backend = Backend(
            backend.profile, backend.model_label, payload_model=next(iter(named)) if len(named) == 1 else None
        )
    out = {}
    for concept, rule in rules.items():
        for part in rule if isinstance(rule, list) else [rule]:
            for (name, labels), value in part.expect(concept, backend, raw).items():
                out[(name, frozenset({**dict(labels), "target": target}.items()))] = value
    return out


def unified_served(snapshot) -> dict:
    """The unified series served, `le` read as a number so that `0.1` and `0.10` compare equal."""
    return {
        (name, frozenset((k, float(v) if k == "le" else v) for k, v in labels)): value
        for (name, labels), value in served_samples(snapshot).items()
        if dict(labels).get("backend")
    }


def assert_same_series(served: dict, expected: dict) -> None:
    assert served.keys() == expected.keys(), (
        f"served but not expected: {sorted(served.keys() - expected.keys(), key=str)[:5]}; "
        f"expected but not served: {sorted(expected.keys() - served.keys(), key=str)[:5]}"
    )
    for key, value in expected.items():
        assert math.isclose(served[key], value, rel_tol=1e-12, abs_tol=1e-15), f"{key}: {served[key]} != {value}"


def test_every_simulated_backend_has_an_expectation():
    assert set(simulated_profiles()) == set(SIMULATED)


def test_every_fixture_has_an_expectation():
    if not fixture_files():
        capture(None)  # skipped without the captures, failed under CI
    assert {path.name for path in fixture_files()} == set(EXPECTED)


@pytest.mark.parametrize("profile", sorted(SIMULATED))
async def test_each_simulated_backend_is_detected_and_yields_each_unified_series_from_its_raw_payload(
    upstream, profile
):
    backend, rules = SIMULATED[profile]
    snapshot = await poll_target(f'{{name: t, type: http, url: "{upstream.url}/simulated/{profile}"}}')
    assert snapshot.up, snapshot.last_error
    assert snapshot.profile == profile
    expected = expected_series(backend, rules, simulated(profile).decode(), "t")
    assert len({name for name, _ in expected}) >= 3
    assert_same_series(unified_served(snapshot), expected)


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
async def test_each_fixture_is_detected_and_yields_each_unified_series_from_its_raw_payload(upstream, fixture):
    backend, rules = EXPECTED[fixture]
    text = capture(fixture).read_text()
    snapshot = await poll_target(f'{{name: t, type: http, url: "{upstream.url}/fixture/{fixture}"}}')
    assert snapshot.up, snapshot.last_error
    assert snapshot.profile == (backend.profile if backend else None)
    expected = expected_series(backend, rules, text, "t")
    assert_same_series(unified_served(snapshot), expected)
    assert {name for name, _ in expected} <= {n + s for n in UNIFIED for s in ("", "_bucket", "_count", "_sum")}


# -- preference, overrides, and what the raw series become -------------------------------------------------


@pytest.fixture
async def bodies(aiohttp_server):
    """An upstream serving bodies the test made (with prometheus_client, never by hand) at /{name}."""
    served: dict[str, bytes] = {}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=served[request.match_info["name"]], headers={"Content-Type": TEXT_0_0_4})

    app = web.Application()
    app.router.add_get("/{name}", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")

    def serve(name: str, registry: CollectorRegistry) -> str:
        served[name] = generate_latest(registry)
        return f"{base}/{name}"

    return serve


async def test_a_current_and_a_deprecated_name_yield_one_series_from_the_current_one(bodies):
    registry = CollectorRegistry()
    Gauge("vllm:kv_cache_usage_perc", "current", ["model_name"], registry=registry).labels("m").set(0.75)
    Gauge("vllm:gpu_cache_usage_perc", "deprecated", ["model_name"], registry=registry).labels("m").set(0.25)
    Histogram("vllm:inter_token_latency_seconds", "current", ["model_name"], buckets=[0.1], registry=registry).labels(
        "m"
    ).observe(0.05)
    old = Histogram(
        "vllm:time_per_output_token_seconds", "deprecated", ["model_name"], buckets=[0.1], registry=registry
    )
    for _ in range(3):
        old.labels("m").observe(0.5)
    snapshot = await poll_target(f'{{name: t, type: http, url: "{bodies("both", registry)}"}}')
    served = served_samples(snapshot)
    model = {"backend": "vllm", "model": "m", "target": "t"}
    assert [v for (n, _), v in served.items() if n == "kv_cache_usage_ratio"] == [0.75]
    assert [v for (n, _), v in served.items() if n == "inter_token_latency_seconds_count"] == [1.0]
    assert served[("inter_token_latency_seconds_sum", frozenset(model.items()))] == 0.05


async def test_a_deprecated_name_is_used_when_the_current_one_is_absent(bodies):
    registry = CollectorRegistry()  # an older SGLang: inter-token latency under its old name only
    Gauge("sglang:num_running_reqs", "The number of running requests.", ["model_name"], registry=registry).labels(
        "m"
    ).set(2)
    old = Histogram("sglang:time_per_output_token_seconds", "old", ["model_name"], buckets=[0.1], registry=registry)
    for _ in range(7):
        old.labels("m").observe(0.02)
    served = served_samples(await poll_target(f'{{name: t, type: http, url: "{bodies("old", registry)}"}}'))
    assert [v for (n, _), v in served.items() if n == "inter_token_latency_seconds_count"] == [7.0]


def dynamo_vllm_worker(upstream) -> tuple[str, str]:
    """A Dynamo vLLM worker's system port: the runtime's dynamo_component_* families, then vLLM's own
    passed through (as Dynamo's capture of one shows); its URL on `upstream` and its text."""
    text = simulated("dynamo-worker") + simulated("vllm")
    return upstream.serve(Body("dynamo-vllm-worker.prom", text)), text.decode()


async def test_profile_in_the_config_overrides_detection(upstream):
    url, text = dynamo_vllm_worker(upstream)
    assert (await poll_target(f'{{name: t, type: http, url: "{url}"}}')).profile == "vllm"  # detected: the engine
    snapshot = await poll_target(f'{{name: t, type: http, url: "{url}", profile: dynamo-worker, model: from-config}}')
    assert snapshot.profile == "dynamo-worker"
    backend = Backend("dynamo-worker", "model", model="from-config")  # a series naming no model takes the config's
    assert_same_series(unified_served(snapshot), expected_series(backend, DYNAMO_WORKER, text, "t"))


async def test_profile_none_serves_no_unified_series(upstream):
    snapshot = await poll_target(f'{{name: t, type: http, url: "{upstream.url}/simulated/vllm", profile: none}}')
    assert snapshot.profile is None and unified_served(snapshot) == {}
    assert (
        "vllm_num_requests_running",
        frozenset({"engine": "0", "model_name": "Qwen/Qwen3-0.6B", "target": "t"}.items()),
    ) in served_samples(snapshot)


async def test_raw_false_serves_only_the_unified_vocabulary(upstream):
    snapshot = await poll_target(f'{{name: t, type: http, url: "{upstream.url}/simulated/vllm", raw: false}}')
    assert {family.name for family in snapshot.families} == {
        "requests_running",
        "requests_waiting",
        "kv_cache_usage_ratio",
        "prefix_cache_hit_tokens",
        "prefix_cache_query_tokens",
        "time_to_first_token_seconds",
        "inter_token_latency_seconds",
        "e2e_request_latency_seconds",
        "request_queue_time_seconds",
        "prompt_tokens",
        "generation_tokens",
        "requests_finished",
        "kv_cache_capacity_tokens",
        "requests_preempted",
        "request_prefill_time_seconds",
        "request_decode_time_seconds",
        "request_time_per_output_token_seconds",
    }


async def test_a_raw_family_named_like_a_unified_one_is_served_once_as_the_unified_series(upstream):
    snapshot = await poll_target(f'{{name: t, type: http, url: "{upstream.url}/simulated/nim"}}')
    prompt = {
        labels: value for (name, labels), value in served_samples(snapshot).items() if name == "prompt_tokens_total"
    }
    assert prompt == {
        frozenset({"backend": "nim", "model": "meta/llama-3.1-8b-instruct", "target": "t"}.items()): simulated_value(
            "nim", "prompt_tokens_total"
        )
    }
    assert snapshot.dropped == {}


@pytest.mark.parametrize("accept", [TEXT_ACCEPT, OPENMETRICS_ACCEPT, OPENMETRICS_UTF8_ACCEPT])
async def test_a_namesake_histograms_created_series_leaves_its_unified_family_whole(upstream, accept):
    """NIM's histograms are namesakes of unified ones; a NIM that serves prometheus_client's `_created`
    series (the text format writes them as separate `X_created` gauges) still gets its unified
    histograms, and no raw family is served split apart."""
    snapshot = await poll_target(
        f'{{name: t, type: http, url: "{upstream.url}/simulated/nim?created=1", headers: {{Accept: "{accept}"}}}}'
    )
    assert snapshot.up and snapshot.profile == "nim"
    text = created_series_simulator("nim").render(TEXT_ACCEPT)[0].decode()
    assert "time_to_first_token_seconds_created{" in text
    backend, rules = SIMULATED["nim"]
    assert_same_series(unified_served(snapshot), expected_series(backend, rules, text, "t"))
    assert [(f.name, f.type) for f in snapshot.families if f.type in ("unknown", "untyped")] == []
    for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
        (family,) = [f for f in snapshot.families if f.name == name]
        assert family.type == "histogram" and all(dict(s.labels)["backend"] == "nim" for s in family.samples)


async def test_a_raw_namesake_the_profile_does_not_read_is_served_as_it_is(bodies):
    registry = CollectorRegistry()
    Gauge("vllm:num_requests_running", "engine", ["model_name"], registry=registry).labels("m").set(3)
    Gauge("requests_running", "an app's own gauge", ["app"], registry=registry).labels("proxy").set(9)
    served = served_samples(await poll_target(f'{{name: t, type: http, url: "{bodies("mixed", registry)}"}}'))
    running = {labels: value for (name, labels), value in served.items() if name == "requests_running"}
    assert running == {
        frozenset({"backend": "vllm", "model": "m", "target": "t"}.items()): 3.0,
        frozenset({"app": "proxy", "target": "t"}.items()): 9.0,
    }


async def test_the_model_comes_from_the_config_where_the_backend_names_none(upstream):
    snapshot = await poll_target(
        f'{{name: t, type: http, url: "{upstream.url}/simulated/tgi", model: bigscience/bloom}}'
    )
    models = {dict(labels).get("model") for (_, labels) in unified_served(snapshot)}
    assert models == {"bigscience/bloom"}


async def test_prefix_applies_to_unified_families_too(upstream):
    snapshot = await poll_target(f'{{name: t, type: http, url: "{upstream.url}/simulated/sglang", prefix: llm}}')
    names = {name for name, _ in unified_served(snapshot)}
    assert "llm_requests_running" in names and "llm_time_to_first_token_seconds_bucket" in names


async def test_llamacpp_names_map_to_the_vocabulary(bodies):
    registry = CollectorRegistry()  # llama-server's own names and types, with the KV gauge older builds had
    Counter("llamacpp:prompt_tokens", "Number of prompt tokens processed.", registry=registry).inc(6886)
    Counter("llamacpp:tokens_predicted", "Number of generation tokens processed.", registry=registry).inc(3469)
    Gauge("llamacpp:requests_processing", "Number of requests processing.", registry=registry).set(2)
    Gauge("llamacpp:requests_deferred", "Number of requests deferred.", registry=registry).set(1)
    Gauge("llamacpp:kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage.", registry=registry).set(0.5)
    snapshot = await poll_target(f'{{name: t, type: http, url: "{bodies("llama", registry)}", model: qwen2.5-7b}}')
    labels = frozenset({"backend": "llamacpp", "model": "qwen2.5-7b", "target": "t"}.items())
    assert snapshot.profile == "llamacpp"
    assert unified_served(snapshot) == {
        ("requests_running", labels): 2.0,
        ("requests_waiting", labels): 1.0,
        ("kv_cache_usage_ratio", labels): 0.5,
        ("prompt_tokens_total", labels): 6886.0,
        ("generation_tokens_total", labels): 3469.0,
        # a build from before the cached-tokens counter: every prompt token was looked up in the cache
        ("prefix_cache_query_tokens_total", labels): 6886.0,
    }


async def test_engines_and_ranks_of_one_model_add_up_and_the_kv_cache_takes_the_fullest(bodies):
    registry = CollectorRegistry()
    running = Gauge("vllm:num_requests_running", "r", ["model_name", "engine"], registry=registry)
    usage = Gauge("vllm:kv_cache_usage_perc", "u", ["model_name", "engine"], registry=registry)
    ttft = Histogram(
        "vllm:time_to_first_token_seconds", "t", ["model_name", "engine"], buckets=[0.1, 1], registry=registry
    )
    for engine, (count, ratio, seconds) in enumerate([(3, 0.5, 0.05), (4, 0.9, 0.5)]):
        running.labels("m", str(engine)).set(count)
        usage.labels("m", str(engine)).set(ratio)
        ttft.labels("m", str(engine)).observe(seconds)
    served = unified_served(await poll_target(f'{{name: t, type: http, url: "{bodies("dp", registry)}"}}'))
    model = {"backend": "vllm", "model": "m", "target": "t"}
    assert served[("requests_running", frozenset(model.items()))] == 7.0
    assert served[("kv_cache_usage_ratio", frozenset(model.items()))] == 0.9
    buckets = {dict(labels)["le"]: value for (name, labels), value in served.items() if name.endswith("_bucket")}
    assert buckets == {0.1: 1.0, 1.0: 2.0, math.inf: 2.0}


async def test_families_denied_in_the_config_are_not_served_and_detection_sees_the_rest(upstream):
    url, _ = dynamo_vllm_worker(upstream)
    snapshot = await poll_target(
        f'{{name: t, type: http, url: "{url}", deny_families: ["dynamo_component_.*", "vllm_request_params_.*"]}}'
    )
    names = {name for name, _ in served_samples(snapshot)}
    assert not any(name.startswith(("dynamo_component_", "vllm_request_params_")) for name in names)
    assert "vllm_request_prompt_tokens_bucket" in names and snapshot.profile == "vllm"


async def test_an_allowlist_reads_only_the_families_it_names(upstream):
    url, _ = dynamo_vllm_worker(upstream)
    snapshot = await poll_target(
        f'{{name: t, type: http, url: "{url}", '
        'allow_families: ["vllm:num_requests_.*", "dynamo_component_uptime_seconds"], deny_families: [".*waiting"]}'
    )
    assert {name for name, _ in served_samples(snapshot)} == {
        "vllm_num_requests_running",
        "dynamo_component_uptime_seconds",
        "requests_running",
    }


# -- where the profile shows ---------------------------------------------------------------------------------


async def test_targets_api_shows_the_profile_each_target_uses(upstream, bodies, start_daemon):
    gpu = CollectorRegistry()  # an exporter no profile reads
    Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", ["gpu"], registry=gpu).labels("0").set(42)
    daemon = await start_daemon(
        f"""
defaults: {{interval: 1s}}
targets:
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}
  - {{name: gpu, type: http, url: "{bodies("gpu", gpu)}"}}
"""
    )
    await wait_until(lambda: all(snap.up for snap in daemon.store.snapshots()))
    async with aiohttp.ClientSession() as session, session.get(daemon_url(daemon, "/api/targets")) as response:
        states = {state["name"]: state["profile"] for state in await response.json()}
    assert states == {"vllm": "vllm", "gpu": None}


async def test_once_says_on_stderr_which_profile_each_target_uses(upstream, tmp_path):
    config = tmp_path / "once.yaml"
    config.write_text(f'targets:\n  - {{name: nim, type: http, url: "{upstream.url}/simulated/nim"}}\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "once",
        "--config",
        str(config),
        "--log-format",
        "json",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert process.returncode == 0
    assert {"event": "profile in use", "target": "nim", "profile": "nim"}.items() <= next(
        e for e in events if e["event"] == "profile in use"
    ).items()
    running = simulated_value("nim", "num_requests_running")
    assert (
        f'requests_running{{backend="nim",model="meta/llama-3.1-8b-instruct",target="nim"}} {running!r}' in out.decode()
    )


def test_every_profile_file_loads_and_names_a_distinct_backend():
    loaded = profiles.profiles()
    assert len({profile.name for profile in loaded}) == len(list(Path(profiles.DIRECTORY).glob("*.yaml"))) == 14


def target_error(extra: str) -> str:
    from exporter.config.loader import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(f"targets:\n  - name: a\n    type: http\n    url: http://a/metrics\n{extra}", "c.yaml")
    return str(caught.value)


def test_an_unknown_profile_is_a_config_error_that_lists_the_known_ones():
    assert target_error("    profile: vlm\n") == (
        "c.yaml:5: targets[0].profile: unknown profile 'vlm'; expected one of: "
        + ", ".join(p.name for p in profiles.profiles())
        + ", none"
    )


def test_raw_false_with_profile_none_is_refused_as_it_would_serve_nothing():
    assert "raw: false with profile: none would serve nothing" in target_error("    profile: none\n    raw: false\n")


def test_an_invalid_family_pattern_is_a_config_error_with_its_line():
    assert target_error("    deny_families:\n      - ok_.*\n      - 'bad(['\n").startswith(
        "c.yaml:7: targets[0].deny_families[1]: invalid regular expression 'bad(['"
    )


# -- docs/vocabulary.md's table is the profiles' --------------------------------------------------------------


def vocabulary_table() -> str:
    """docs/vocabulary.md's table, concept by backend, rendered from the profile files."""
    loaded = sorted(profiles.profiles(), key=lambda p: p.priority)

    def source(s: profiles.Source) -> str:
        match = ",".join(f'{k}="{v}"' for k, v in s.match.items())
        text = f"`{s.metric}{'_' + s.part if s.part else ''}{'{' + match + '}' if match else ''}`"
        if s.minus:
            text += f" − `{s.minus}`"
        if s.times:
            factor = ",".join(f'{k}="{v}"' for k, v in s.times.match.items())
            text += f" × `{s.times.metric}{'{' + factor + '}' if factor else ''}`"
        if s.value_labels:
            text += " (" + " × ".join(f"`{label}`" for label in s.value_labels) + ")"
        if s.count:
            text += f" ÷ `{s.count}` (mean)"
        if s.unit:
            text += {"milliseconds": " (ms)", "microseconds": " (µs)"}[s.unit]
        if s.outcome_label:
            renamed = ", ".join(f"{k} → {v}" for k, v in s.outcomes.items())
            if s.others:
                renamed += (", " if renamed else "") + f"others → {s.others}"
            labels = " else ".join(f"`{label}`" for label in s.outcome_labels)
            text += f" by {labels}" + (f" ({renamed})" if renamed else "")
            if s.outcome:
                text += f", without it → {s.outcome}"
        elif s.outcome:
            text += f" → {s.outcome}"
        return text

    def cell(profile: profiles.Profile, concept: str) -> str:
        choices = profile.series.get(concept, [])
        if not choices:
            return "–"
        return "<br>else ".join(" + ".join(source(s) for s in profiles.sources_of(c)) for c in choices)

    lines = [
        "| unified family | " + " | ".join(f"`{p.name}`" for p in loaded) + " |",
        "|---|" + "---|" * len(loaded),
    ]
    for concept in profiles.CONCEPTS:
        lines.append(f"| `{concept}` | " + " | ".join(cell(p, concept) for p in loaded) + " |")
    lines.append(
        "| *model label* | "
        + " | ".join(f"`{p.model_label}`" if p.model_label else "config `model:`" for p in loaded)
        + " |"
    )
    return "\n".join(lines) + "\n"


def test_the_readme_vocabulary_table_is_the_one_the_profiles_make():
    table = vocabulary_table()
    assert table in (REPO / "docs" / "vocabulary.md").read_text(), (
        "docs/vocabulary.md's table is stale; it should read:\n" + table
    )


def test_merged_histograms_count_at_each_bound_the_most_each_series_holds_up_to_it():
    """Series of one model with other bounds merge as the rule says, checked against the rule written
    out plainly on random buckets (cumulative, and not: a broken upstream must not break the sum)."""
    import random

    from exporter.pipeline.unify import _Histogram

    rng = random.Random(8)
    for _ in range(200):
        parts: list[tuple[dict[float, float], float, float | None]] = []
        for _ in range(rng.randint(1, 4)):
            bounds = rng.sample([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf], rng.randint(1, 7))
            parts.append(({bound: float(rng.randint(-3, 50)) for bound in bounds}, 0.0, None))
        union = sorted({bound for buckets, _, _ in parts for bound in buckets})
        expected = [
            sum(max((v for le, v in buckets.items() if le <= bound), default=0.0) for buckets, _, _ in parts)
            for bound in union
        ]
        got = [s.value for s in _Histogram(parts).samples("x", {}) if s.name == "x_bucket"]
        assert got == expected, parts
