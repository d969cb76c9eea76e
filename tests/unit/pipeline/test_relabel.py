"""metric_relabel_configs per target: each action as Prometheus applies it, anchored regexes, and what is served.

Rule semantics are checked on one series at a time (`Relabeler.process`), the way Prometheus's own
relabel tests do; what a target then serves is checked through the daemon's poll path on real payloads.
"""

from __future__ import annotations

import pytest
from helpers.support import poll_target, served_samples

from exporter.config.loader import ConfigError, parse_config
from exporter.pipeline.relabel import RelabelConfig, Relabeler

SERIES = {"target": "vllm", "model_name": "Qwen/Qwen3-0.6B", "engine": "0", "pool": "chat"}


def relabel(name: str = "vllm_num_requests_running", labels: dict | None = None, *rules: dict):
    return Relabeler([RelabelConfig(**rule) for rule in rules]).process(
        name, dict(SERIES if labels is None else labels)
    )


# -- keep and drop ------------------------------------------------------------------------------------------


def test_keep_keeps_only_series_whose_source_labels_match():
    rule = {"action": "keep", "source_labels": ["__name__"], "regex": "vllm_num_requests_.*"}
    assert relabel("vllm_num_requests_running", None, rule) is not None
    assert relabel("vllm_prompt_tokens_total", None, rule) is None


def test_drop_drops_series_whose_source_labels_match():
    rule = {"action": "drop", "source_labels": ["engine"], "regex": "0"}
    assert relabel("vllm_num_requests_running", None, rule) is None
    assert relabel("vllm_num_requests_running", {**SERIES, "engine": "1"}, rule) is not None


def test_source_labels_are_joined_with_the_separator_and_a_missing_label_reads_empty():
    rule = {"action": "keep", "source_labels": ["engine", "missing", "pool"], "separator": "/", "regex": "0//chat"}
    assert relabel("x", None, rule) is not None


def test_regex_is_fully_anchored_as_in_prometheus():
    partial = {"action": "keep", "source_labels": ["__name__"], "regex": "vllm_num_requests"}
    assert relabel("vllm_num_requests_running", None, partial) is None
    inner = {"action": "drop", "source_labels": ["model_name"], "regex": "Qwen"}
    assert relabel("x", None, inner) is not None
    alternatives = {"action": "keep", "source_labels": ["pool"], "regex": "ch|chat"}  # `^(?:ch|chat)$`, not `^ch|chat$`
    assert relabel("x", None, alternatives) is not None
    assert relabel("x", {**SERIES, "pool": "chatty"}, alternatives) is None


def test_dot_matches_a_newline_in_a_label_value_as_re2s_s_flag_does():
    rule = {"action": "keep", "source_labels": ["note"], "regex": "a.b"}
    assert relabel("x", {**SERIES, "note": "a\nb"}, rule) is not None


# -- replace ---------------------------------------------------------------------------------------------------


def test_replace_writes_the_expanded_replacement_to_the_target_label():
    rule = {
        "source_labels": ["model_name"],
        "regex": "(?P<org>[^/]+)/(.*)",
        "target_label": "model",
        "replacement": "${2}@$org",
    }
    assert relabel("x", None, rule)[1]["model"] == "Qwen3-0.6B@Qwen"


def test_replace_reads_dollar_digit_letters_as_one_group_name_like_go():
    rule = {"source_labels": ["engine"], "regex": "(.*)", "target_label": "engine_id", "replacement": "$1x-${1}x-$$"}
    assert relabel("x", None, rule)[1]["engine_id"] == "-0x-$"  # `$1x` is the group named "1x": empty


def test_replace_without_a_match_changes_nothing():
    rule = {"source_labels": ["pool"], "regex": "batch", "target_label": "pool", "replacement": "offline"}
    assert relabel("x", None, rule) == ("x", SERIES)


def test_replace_with_an_empty_result_removes_the_target_label():
    rule = {"source_labels": ["engine"], "regex": "0", "target_label": "engine", "replacement": ""}
    assert "engine" not in relabel("x", None, rule)[1]


def test_replace_can_rename_a_series_through_its_name_label():
    rule = {"source_labels": ["__name__"], "regex": "vllm_(.*)", "target_label": "__name__", "replacement": "engine_$1"}
    assert relabel("vllm_num_requests_running", None, rule)[0] == "engine_num_requests_running"


# -- label actions ----------------------------------------------------------------------------------------------


def test_labeldrop_removes_matching_labels_but_never_target():
    _name, labels = relabel("x", None, {"action": "labeldrop", "regex": "engine|target|pool"})
    assert labels == {"target": "vllm", "model_name": "Qwen/Qwen3-0.6B"}


def test_labelkeep_keeps_matching_labels_and_target():
    name, labels = relabel("x", None, {"action": "labelkeep", "regex": "model_.*"})
    assert (name, labels) == ("x", {"target": "vllm", "model_name": "Qwen/Qwen3-0.6B"})


def test_labelmap_copies_matching_labels_under_the_replacement_name():
    _, labels = relabel("x", None, {"action": "labelmap", "regex": "model_(.*)", "replacement": "llm_$1"})
    assert labels["llm_name"] == labels["model_name"] == "Qwen/Qwen3-0.6B"


def test_rules_apply_in_order_each_seeing_the_last_ones_result():
    copy = {"source_labels": ["pool"], "target_label": "tier"}
    keep = {"action": "keep", "source_labels": ["tier"], "regex": "chat"}
    assert relabel("x", None, copy, keep) is not None
    assert relabel("x", None, keep, copy) is None


# -- config -------------------------------------------------------------------------------------------------


def config_error(rules_yaml: str) -> str:
    text = (
        f"targets:\n  - name: a\n    type: http\n    url: http://a/metrics\n    metric_relabel_configs:\n{rules_yaml}"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    return str(caught.value)


def test_an_invalid_regex_is_a_config_error_with_its_line():
    assert config_error("      - {action: keep, source_labels: [a]}\n      - {action: drop, regex: 'a('}\n").startswith(
        "c.yaml:7: targets[0].metric_relabel_configs[1].regex: invalid regular expression 'a('"
    )


def test_replace_needs_a_target_label_and_may_not_change_target():
    assert "action replace needs a target_label" in config_error("      - {source_labels: [a]}\n")
    assert "relabeling cannot change it" in config_error("      - {source_labels: [a], target_label: target}\n")


def test_labeldrop_takes_only_a_regex_and_unknown_actions_are_named():
    assert "action labeldrop takes only regex" in config_error("      - {action: labeldrop, source_labels: [a]}\n")
    error = config_error("      - {action: hashmod, source_labels: [a]}\n")
    assert "metric_relabel_configs[0].action" in error and "'labelmap'" in error


# -- what the target serves -------------------------------------------------------------------------------------


async def test_a_target_serves_only_the_series_its_rules_keep(upstream):
    snapshot = await poll_target(
        f"""{{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", profile: none,
        metric_relabel_configs: [{{action: keep, source_labels: [__name__], regex: "vllm_num_requests_.*"}}]}}"""
    )
    assert {name for name, _ in served_samples(snapshot)} == {"vllm_num_requests_running", "vllm_num_requests_waiting"}


async def test_rules_apply_to_the_unified_series_too(upstream):
    snapshot = await poll_target(
        f"""{{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", raw: false,
        metric_relabel_configs: [{{action: drop, source_labels: [__name__], regex: "requests_.*"}}]}}"""
    )
    names = {name for name, _ in served_samples(snapshot)}
    assert "kv_cache_usage_ratio" in names and not any(name.startswith("requests_") for name in names)


async def test_a_histogram_renamed_whole_stays_a_histogram(upstream):
    snapshot = await poll_target(
        f"""{{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", profile: none,
        metric_relabel_configs: [{{source_labels: [__name__], regex: "vllm_time_to_first_token_seconds(_.*)",
                                   target_label: __name__, replacement: "ttft_seconds$1"}}]}}"""
    )
    (family,) = [f for f in snapshot.families if f.name == "ttft_seconds"]
    assert family.type == "histogram"
    assert {s.name for s in family.samples} == {
        "ttft_seconds_bucket",
        "ttft_seconds_count",
        "ttft_seconds_sum",
        "ttft_seconds_created",
    }
    assert not [f for f in snapshot.families if f.name.startswith("vllm_time_to_first_token")]


async def test_a_histogram_a_rule_breaks_is_served_as_untyped_series(upstream):
    snapshot = await poll_target(
        f"""{{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", profile: none,
        metric_relabel_configs: [{{action: drop, source_labels: [__name__, le],
                                   regex: "vllm_time_to_first_token_seconds_bucket;\\\\+Inf"}}]}}"""
    )
    kinds = {f.name: f.type for f in snapshot.families if f.name.startswith("vllm_time_to_first_token_seconds")}
    assert kinds == {
        "vllm_time_to_first_token_seconds_bucket": "unknown",
        "vllm_time_to_first_token_seconds_count": "unknown",
        "vllm_time_to_first_token_seconds_sum": "unknown",
        "vllm_time_to_first_token_seconds_created": "unknown",
    }
    assert snapshot.up


async def test_series_a_rule_makes_identical_are_served_once_and_counted(upstream):
    snapshot = await poll_target(
        f"""{{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", profile: none,
        metric_relabel_configs: [{{action: labeldrop, regex: finished_reason}}]}}"""
    )
    finished = [key for key in served_samples(snapshot) if key[0] == "vllm_request_success_total"]
    # stop, length, abort and error become one series, for `_total` and for `_created`: 3 + 3 collapsed
    assert len(finished) == 1 and snapshot.dropped.get("duplicate") == 6
