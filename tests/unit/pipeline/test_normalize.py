"""Normalization: names Prometheus accepts, the prefix once, types kept, target labels, duplicates collapsed."""

from __future__ import annotations

import re

from helpers.support import simulated

from exporter.core.family import Family, Sample
from exporter.pipeline.normalize import apply_prefix, normalize, sanitize_name


def fam(name, kind, *samples, help=""):
    return Family(name, kind, help, "", [Sample(n, dict(labels), value) for n, labels, value in samples])


def by_name(normalized):
    return {family.name: family for family in normalized.families}


def test_colons_and_other_invalid_characters_become_underscores():
    assert sanitize_name("vllm:num_requests_running") == "vllm_num_requests_running"
    assert sanitize_name("lmcache:a.b-c") == "lmcache_a_b_c"
    assert sanitize_name("9lives") == "_9lives"
    assert sanitize_name("ok_name") == "ok_name"


def test_prefix_is_applied_once():
    assert apply_prefix("vllm_x", "host") == "host_vllm_x"
    assert apply_prefix("host_vllm_x", "host") == "host_vllm_x"
    assert apply_prefix("vllm_x", "host_") == "host_vllm_x"
    assert apply_prefix("vllm_x", "") == "vllm_x"


def test_every_sample_gets_target_and_static_labels_and_clashing_upstream_labels_are_renamed():
    out = normalize(
        [fam("up_gauge", "gauge", ("up_gauge", {"target": "upstream", "pool": "a", "model": "m"}, 1.0))],
        target="vllm",
        labels={"pool": "chat"},
    )
    sample = by_name(out)["up_gauge"].samples[0]
    assert sample.labels == {
        "exported_target": "upstream",
        "exported_pool": "a",
        "model": "m",
        "target": "vllm",
        "pool": "chat",
    }


def test_counter_without_total_is_served_with_total():
    out = normalize([fam("nv_inference_count", "counter", ("nv_inference_count", {"model": "m"}, 3.0))], target="t")
    family = by_name(out)["nv_inference_count"]
    assert family.type == "counter"
    assert [s.name for s in family.samples] == ["nv_inference_count_total"]


def test_counter_named_with_total_keeps_one_total_and_its_created():
    out = normalize(
        [
            fam(
                "vllm:prompt_tokens",
                "counter",
                ("vllm:prompt_tokens_total", {}, 5.0),
                ("vllm:prompt_tokens_created", {}, 17.0),
            )
        ],
        target="t",
        prefix="gpu",
    )
    family = by_name(out)["gpu_vllm_prompt_tokens"]
    assert [s.name for s in family.samples] == ["gpu_vllm_prompt_tokens_total", "gpu_vllm_prompt_tokens_created"]


def test_histogram_keeps_buckets_sum_and_count_in_any_order_and_its_help():
    out = normalize(
        [
            fam(
                "ttft_seconds",
                "histogram",
                ("ttft_seconds_count", {}, 2.0),
                ("ttft_seconds_bucket", {"le": "+Inf"}, 2.0),
                ("ttft_seconds_sum", {}, 0.5),
                ("ttft_seconds_bucket", {"le": "0.1"}, 1.0),
                help="Time to first token.",
            )
        ],
        target="t",
    )
    family = by_name(out)["ttft_seconds"]
    assert family.type == "histogram" and family.help == "Time to first token."
    assert sorted(s.name for s in family.samples) == [
        "ttft_seconds_bucket",
        "ttft_seconds_bucket",
        "ttft_seconds_count",
        "ttft_seconds_sum",
    ]


def test_histogram_with_buckets_lacking_le_is_served_as_untyped_families():
    out = normalize([fam("h", "histogram", ("h_bucket", {}, 1.0), ("h_sum", {}, 2.0))], target="t")
    assert {name: f.type for name, f in by_name(out).items()} == {"h_bucket": "unknown", "h_sum": "unknown"}


def test_family_without_help_gets_one_and_empty_families_vanish():
    out = normalize([fam("a", "gauge", ("a", {}, 1.0)), fam("empty", "gauge")], target="t")
    assert list(by_name(out)) == ["a"]
    assert by_name(out)["a"].help


def test_duplicate_series_are_collapsed_last_wins_and_counted():
    out = normalize(
        [fam("g", "gauge", ("g", {"a": "1"}, 1.0), ("g", {"a": "1"}, 2.0), ("g", {"a": "2"}, 3.0))], target="t"
    )
    assert [s.value for s in by_name(out)["g"].samples] == [2.0, 3.0]
    assert out.dropped == {"duplicate": 1}


def test_two_upstream_names_that_sanitize_alike_with_different_types_keep_the_first():
    out = normalize([fam("a:b", "gauge", ("a:b", {}, 1.0)), fam("a_b", "counter", ("a_b_total", {}, 1.0))], target="t")
    assert by_name(out)["a_b"].type == "gauge"
    assert out.dropped == {"type_conflict": 1}


def test_created_gauges_of_the_classic_text_format_are_folded_into_their_counter():
    out = normalize(
        [
            fam("req_total", "counter", ("req_total", {"a": "1"}, 1.0), ("req_total", {"a": "2"}, 2.0)),
            fam("req_created", "gauge", ("req_created", {"a": "1"}, 10.0), ("req_created", {"a": "2"}, 20.0)),
        ],
        target="t",
    )
    assert list(by_name(out)) == ["req"]
    assert [(s.name, s.labels["a"]) for s in by_name(out)["req"].samples] == [
        ("req_total", "1"),
        ("req_created", "1"),
        ("req_total", "2"),
        ("req_created", "2"),
    ]


def _poll(families):
    return normalize(families, target="t", labels={"pool": "a"})


def _served(normalized):
    return [(f.name, f.type, [(s.name, s.labels, s.value) for s in f.samples], f.heads) for f in normalized.families]


def test_a_target_polled_again_with_the_same_series_is_served_exactly_as_before_with_its_new_values():
    from exporter.format.parse import parse

    body = simulated("vllm")
    first = _poll(parse(body).families)
    again = _poll(parse(body).families)
    assert _served(again) == _served(first)
    assert again.dropped == first.dropped

    moved = re.sub(
        rb'(\nvllm:num_requests_running\{engine="0",model_name="Qwen/Qwen3-0.6B"\}) [^\n]+', rb"\1 7777.0", body
    )
    assert moved != body
    running = {f.name: f for f in _poll(parse(moved).families).families}["vllm_num_requests_running"]
    assert [s.value for s in running.samples] == [7777.0]


def test_two_upstream_families_served_under_one_name_are_merged_heads_and_all():
    one = [fam("a:b", "gauge", ("a:b", {"x": "1"}, 1.0))]
    both = [fam("a:b", "gauge", ("a:b", {"x": "1"}, 2.0)), fam("a_b", "gauge", ("a_b", {"x": "2"}, 3.0))]
    assert [s.value for s in by_name(_poll(one))["a_b"].samples] == [1.0]
    merged = by_name(_poll(both))["a_b"]
    assert sorted((s.labels["x"], s.value) for s in merged.samples) == [("1", 2.0), ("2", 3.0)]
    assert merged.heads == tuple(f'a_b{{pool="a",target="t",x="{s.labels["x"]}"}} ' for s in merged.samples)


def test_an_upstream_target_label_beside_an_exported_target_label_is_renamed_apart_as_prometheus_does():
    """Prometheus (scrape.go, mutateSampleLabels) puts `exported_` in front of a scraped label that clashes
    with a target label until the name is free: both upstream labels are served, whatever their order."""
    samples = [
        Sample("h", {"target": "1", "exported_target": "x"}, 1.0),
        Sample("h", {"exported_target": "y", "target": "2"}, 2.0),
    ]
    out = normalize([Family("h", "gauge", "H.", samples=samples)], target="t")
    assert [s.labels for s in out.families[0].samples] == [
        {"exported_exported_target": "1", "exported_target": "x", "target": "t"},
        {"exported_exported_target": "2", "exported_target": "y", "target": "t"},
    ]
