"""exporter.format.parse against prometheus_client's parsers on both corpora (the simulated backends' bodies,
the real captures), and one test per irregularity."""

from __future__ import annotations

import math
from collections import Counter as Multiset
from typing import Any

import pytest
from helpers.support import body_of, capture, corpora, every_body, simulated
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, UnknownMetricFamily
from prometheus_client.exposition import generate_latest as text_exposition
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_oracle
from prometheus_client.parser import text_string_to_metric_families as text_oracle

from exporter.core.family import Family, Sample
from exporter.format.parse import ParseError, ParseResult, is_openmetrics, parse

SampleKey = tuple[str, tuple[tuple[str, str], ...], object]


def sample_key(name: str, labels: dict[str, str], value: float) -> SampleKey:
    """Comparable form of a sample; NaN compares equal to NaN."""
    return name, tuple(sorted(labels.items())), "NaN" if math.isnan(value) else float(value)


def our_samples(result: ParseResult, *, as_text_oracle_names: bool = False) -> Multiset[SampleKey]:
    """Every sample we read. prometheus_client's text parser appends `_total` to counter samples named
    exactly like a counter family that lacks it (Triton, TGI); `as_text_oracle_names` does the same."""
    samples: Multiset[SampleKey] = Multiset()
    for family in result.families:
        for sample in family.samples:
            name = sample.name
            renamed_by_oracle = family.type == "counter" and name == family.name and not name.endswith("_total")
            if as_text_oracle_names and renamed_by_oracle:
                name += "_total"
            samples[sample_key(name, sample.labels, sample.value)] += 1
    return samples


def oracle_samples(families) -> Multiset[SampleKey]:
    return Multiset(sample_key(s.name, s.labels, s.value) for family in families for s in family.samples)


def family(result: ParseResult, name: str) -> Family:
    matches = [f for f in result.families if f.name == name]
    assert len(matches) == 1, f"{name}: {len(matches)} families"
    return matches[0]


def samples_of(text: str | bytes, **kwargs) -> list[Sample]:
    return [s for f in parse(text, **kwargs).families for s in f.samples]


def only_sample(text: str | bytes, **kwargs) -> Sample:
    samples = samples_of(text, **kwargs)
    assert len(samples) == 1, samples
    return samples[0]


def parse_error(data: bytes | str, **kwargs) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse(data, **kwargs)
    return caught.value


def fixture(name: str) -> bytes:
    """A real capture, for a test about its irregularity: skipped without the corpus (failed under CI)."""
    return capture(name).read_bytes()


# --- differential: real payloads -------------------------------------------------------------------


@pytest.mark.parametrize("payload", corpora())
def test_every_payload_reads_the_same_samples_as_prometheus_client(payload):
    body = body_of(payload)
    data = body.data
    text = body.oracle_text  # an escaped body's oracle reads its unescaped twin
    if "TRUNCATED" in body.name:
        text = text[: text.rfind("\n") + 1]  # the oracle gets the body without its cut-off last line
    expected = oracle_samples(openmetrics_oracle(text) if body.openmetrics else text_oracle(text))

    cold = parse(data, openmetrics=body.openmetrics, escaping=body.escaping)
    warm = parse(
        data, openmetrics=body.openmetrics, escaping=body.escaping
    )  # second time round the sample heads come from the cache

    assert expected, "the oracle read nothing: the comparison would prove nothing"
    assert our_samples(cold, as_text_oracle_names=not body.openmetrics) == expected
    assert warm == cold


def test_payloads_parse_as_str_the_same_as_bytes():
    for body in every_body():
        form: dict[str, Any] = {"openmetrics": body.openmetrics, "escaping": body.escaping}
        assert parse(body.data.decode(), **form) == parse(body.data, **form), body.name


# --- differential: prometheus_client's own encoders ------------------------------------------------


class _CustomCollector:
    """What the client library's metric classes cannot produce: timestamps, ±Inf, NaN, gaugehistogram, unknown."""

    def collect(self):
        yield GaugeHistogramMetricFamily(
            "queue_wait_seconds", "Wait", buckets=[("1.0", 3), ("+Inf", 4)], gsum_value=2.5
        )
        gauge = GaugeMetricFamily("with_ts", "Timestamped and special values", labels=["a"])
        gauge.add_metric(["stamped"], 1.5, timestamp=1700000000.5)
        gauge.add_metric(["inf"], float("inf"))
        gauge.add_metric(["ninf"], float("-inf"))
        gauge.add_metric(["nan"], float("nan"))
        yield gauge
        yield UnknownMetricFamily("mystery", "Unknown", value=7)


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = Counter("requests", 'Requests "served"\nby path \\ ok', ["path"], registry=registry)
    requests.labels(path='a"b\\c\nd, e={f}').inc(3)
    requests.labels(path="/plain").inc(2, exemplar={"trace_id": "abc123"})
    Gauge("temperature_celsius", "Temperature", unit="celsius", registry=registry).set(float("nan"))
    Gauge("headroom", "Headroom", registry=registry).set(float("inf"))
    latency = Histogram("latency_seconds", "Latency", buckets=(0.1, 1.0), registry=registry)
    latency.observe(0.05, exemplar={"trace_id": "x"})
    latency.observe(5)
    Summary("payload_bytes", "Payload", registry=registry).observe(10)
    Info("build", "Build", registry=registry).info({"version": "1.2", "commit": "abc"})
    Enum("state", "State", states=["starting", "running"], registry=registry).state("running")
    registry.register(_CustomCollector())
    return registry


def test_openmetrics_encoding_reads_the_same_samples_as_prometheus_client(registry):
    text = openmetrics_exposition(registry).decode()
    assert " # {trace_id=" in text and "# UNIT" in text and text.endswith("# EOF\n")

    result = parse(text, openmetrics=True)

    assert our_samples(result) == oracle_samples(openmetrics_oracle(text))


def test_openmetrics_encoding_keeps_types_help_and_unit(registry):
    result = parse(openmetrics_exposition(registry), openmetrics=True)

    types = {f.name: f.type for f in result.families}
    assert types == {
        "requests": "counter",
        "temperature_celsius": "gauge",
        "headroom": "gauge",
        "latency_seconds": "histogram",
        "payload_bytes": "summary",
        "build": "info",
        "state": "stateset",
        "queue_wait_seconds": "gaugehistogram",
        "with_ts": "gauge",
        "mystery": "unknown",
    }
    requests = family(result, "requests")
    assert requests.help == 'Requests "served"\nby path \\ ok'
    assert {s.name for s in requests.samples} == {"requests_total", "requests_created"}
    assert family(result, "temperature_celsius").unit == "celsius"
    assert [s.name for s in family(result, "build").samples] == ["build_info"]
    assert {s.name for s in family(result, "queue_wait_seconds").samples} == {
        "queue_wait_seconds_bucket",
        "queue_wait_seconds_gcount",
        "queue_wait_seconds_gsum",
    }
    assert {s.name for s in family(result, "latency_seconds").samples} == {
        "latency_seconds_bucket",
        "latency_seconds_count",
        "latency_seconds_sum",
        "latency_seconds_created",
    }


def test_text_encoding_of_the_same_registry_reads_the_same_samples_as_prometheus_client(registry):
    text = text_exposition(registry).decode()
    assert "1700000000500" in text  # a millisecond timestamp, to be dropped

    result = parse(text)

    assert our_samples(result, as_text_oracle_names=True) == oracle_samples(text_oracle(text))
    assert family(result, "requests_total").help == 'Requests "served"\nby path \\ ok'
    label_values = {s.labels.get("path") for s in family(result, "requests_total").samples}
    assert label_values == {'a"b\\c\nd, e={f}', "/plain"}


# --- the backends' payloads: what the families look like -------------------------------------------


def test_vllm_v1_histogram_keeps_its_type_help_and_colons():
    result = parse(simulated("vllm"))

    latency = family(result, "vllm:e2e_request_latency_seconds")
    assert latency.type == "histogram"
    assert latency.help == "Histogram of e2e request latency in seconds."
    assert {s.name for s in latency.samples} == {
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_sum",
        "vllm:e2e_request_latency_seconds_count",
    }
    first = latency.samples[0]
    assert first.labels == {"engine": "0", "le": "0.3", "model_name": "Qwen/Qwen3-0.6B"}


def test_created_series_written_as_their_own_gauge_family_stay_there():
    result = parse(simulated("vllm"))

    created = family(result, "vllm:prefix_cache_queries_created")
    assert created.type == "gauge"
    assert [s.value > 1.7e9 for s in created.samples] == [True]
    counter = family(result, "vllm:prefix_cache_queries_total")
    assert (counter.type, [s.name for s in counter.samples]) == ("counter", ["vllm:prefix_cache_queries_total"])


def test_family_with_help_and_type_but_no_samples_is_kept():
    # prometheus_client writes a labelled metric with no series yet so (LMCache's gauges in Dynamo's capture).
    registry = CollectorRegistry()
    Gauge("lmcache:local_cpu_hot_cache_count", "The size of the hot cache", ["model_name"], registry=registry)
    result = parse(text_exposition(registry))

    empty = family(result, "lmcache:local_cpu_hot_cache_count")
    assert empty.type == "gauge"
    assert empty.samples == []


def test_counter_samples_without_total_belong_to_their_counter():
    result = parse(simulated("triton"))

    success = family(result, "nv_inference_request_success")
    assert success.type == "counter"
    assert success.help == "Number of successful inference requests, all batch sizes"
    assert [(s.name, s.labels) for s in success.samples] == [
        ("nv_inference_request_success", {"model": "tensorrt_llm", "version": "1"})
    ]


def test_type_without_help_gives_empty_help():
    result = parse(simulated("tgi"))

    concat = family(result, "tgi_batch_concat")
    assert (concat.type, concat.help) == ("counter", "")
    assert {s.name for s in concat.samples} == {"tgi_batch_concat"} and all(
        "reason" in s.labels for s in concat.samples
    )


# --- the real captures: irregularities as they were found ---------------------------------------


def test_samples_whose_names_do_not_fit_the_declared_family_start_untyped_families():
    # Triton's hand-written doc histogram: TYPE says nv_first_response_histogram_ms, samples say otherwise.
    result = parse(fixture("triton-server-docs-histogram.prom"))

    declared = family(result, "nv_first_response_histogram_ms")
    assert (declared.type, declared.samples) == ("histogram", [])
    buckets = family(result, "nv_inference_first_response_histogram_ms")
    assert buckets.type == "untyped"
    assert [s.labels["le"] for s in buckets.samples] == ["100", "500", "2000", "5000", "+Inf"]
    assert family(result, "nv_inference_first_response_histogram_ms_count").samples[0].value == 37.0


def test_free_text_comments_in_a_real_payload_are_ignored():
    result = parse(fixture("dcgm-exporter-datadog-fixture-metrics.prom"))

    assert all(not f.name.startswith("NOTE") for f in result.families)
    assert family(result, "DCGM_FI_DEV_FB_RESERVED").samples[0].value == 15109.0


def test_payload_without_trailing_newline_keeps_its_last_sample():
    data = fixture("nim-datadog-fixture-nim_metrics.prom")
    assert not data.endswith(b"\n")
    assert data.endswith(b'\nrequest_failure_total{model_name="meta/llama-3.1-8b-instruct"} 0.0')

    result = parse(data)

    assert result.truncated_lines == 0
    last = result.families[-1]
    assert (last.name, last.type) == ("request_failure_total", "counter")
    assert last.samples == [Sample("request_failure_total", {"model_name": "meta/llama-3.1-8b-instruct"}, 0.0)]


def test_truncated_last_line_is_dropped_and_counted():
    data = fixture("tgis-ibm-vllm-pr18-excerpt-TRUNCATED.prom")
    assert data.endswith(b"tgi_batch_inference_dura")

    result = parse(data)

    assert result.truncated_lines == 1
    histogram = family(result, "tgi_batch_inference_duration")
    assert len(histogram.samples) == 13
    assert histogram.samples[-1].labels == {"le": "10.0", "method": "{'method': 'prefill'}"}
    assert all(not f.name.startswith("tgi_batch_inference_dura") or f is histogram for f in result.families)


# --- irregularities, one at a time -----------------------------------------------------------------


def test_colons_in_names_are_kept():
    sample = only_sample('# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0"} 2\n')
    assert sample == Sample("vllm:num_requests_running", {"engine": "0"}, 2.0)


def test_comments_that_are_not_metadata_are_ignored():
    text = "# some text\n#HELP foo not metadata\n#\n# NOTE foo is a gauge\n#TYPE foo counter\n"
    text += "#: TYPE foo counter\nfoo 1\n"
    result = parse(text)
    assert [(f.name, f.type, f.help) for f in result.families] == [("foo", "untyped", "")]


def test_blank_lines_and_blank_only_lines_are_skipped():
    result = parse("\n# TYPE a gauge\n\na 1\n   \n\t\nb 2\n\n")
    assert [(s.name, s.value) for f in result.families for s in f.samples] == [("a", 1.0), ("b", 2.0)]


def test_crlf_line_endings():
    body = b'# HELP a Help text\r\n# TYPE a counter\r\n\r\na_total{x="y"} 3\r\na_total 4 1700000000000\r\nb 5\r\n'
    result = parse(body)
    assert [(f.name, f.type, f.help) for f in result.families] == [("a", "counter", "Help text"), ("b", "untyped", "")]
    assert family(result, "a").samples == [Sample("a_total", {"x": "y"}, 3.0), Sample("a_total", {}, 4.0)]
    assert parse(body.replace(b"\r\n", b"\n")) == result


def test_no_trailing_newline_keeps_a_complete_last_line():
    result = parse('a 1\nb{x="y"} 2')
    assert result.truncated_lines == 0
    assert [s.value for f in result.families for s in f.samples] == [1.0, 2.0]


def test_histogram_samples_in_any_order_stay_in_one_family():
    text = (
        "# TYPE h histogram\n"
        'h_count{m="a"} 3\nh_sum{m="a"} 1.5\nh_bucket{le="+Inf",m="a"} 3\nh_bucket{le="0.1",m="a"} 1\nh_created 5\n'
    )
    result = parse(text)
    assert [f.name for f in result.families] == ["h"]
    assert [s.name for s in family(result, "h").samples] == ["h_count", "h_sum", "h_bucket", "h_bucket", "h_created"]


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("1e+06", 1e6),
        ("1.15891634176e+011", 1.15891634176e11),
        ("1.7382173358407154e+09", 1.7382173358407154e09),
        ("9.999999e-05", 9.999999e-05),
        ("1.0", 1.0),
        ("42", 42.0),
        ("-1.0", -1.0),
        ("0.000008", 0.000008),
        ("+Inf", math.inf),
        ("-Inf", -math.inf),
        (".5", 0.5),
    ],
)
def test_number_formats(written: str, value: float):
    assert only_sample(f"m {written}\n").value == value
    assert only_sample(f'm{{a="b"}} {written}\n').value == value


def test_nan_values():
    assert math.isnan(only_sample("m NaN\n").value)
    assert math.isnan(only_sample('m{a="b"} NaN\n').value)


def test_values_are_floats():
    sample = only_sample("m 3\n")
    assert type(sample.value) is float


def test_escaped_label_values_are_unescaped():
    sample = only_sample('m{a="back\\\\slash",b="say \\"hi\\"",c="two\\nlines",d="\\\\n"} 1\n')
    assert sample.labels == {"a": "back\\slash", "b": 'say "hi"', "c": "two\nlines", "d": "\\n"}


def test_unknown_escapes_in_label_values_are_kept_as_written():
    assert only_sample('m{a="tab\\there"} 1\n').labels == {"a": "tab\\there"}


def test_braces_commas_spaces_and_equals_inside_quoted_values():
    sample = only_sample('m{a="{x, y=1}",b=" = , } { ",c="it\'s"} 7\n')
    assert sample.labels == {"a": "{x, y=1}", "b": " = , } { ", "c": "it's"}
    assert sample.value == 7.0


def test_spaces_around_commas_and_equals_in_label_sets():
    triton = only_sample('m{model="my_model",version="1", le="100"} 8\n')
    spaced = only_sample('m{ a = "1" , b="2" ,c= "3" } 9\n')
    assert triton.labels == {"model": "my_model", "version": "1", "le": "100"}
    assert spaced.labels == {"a": "1", "b": "2", "c": "3"}


def test_trailing_comma_in_label_set():
    assert only_sample('m{a="1",} 1\n').labels == {"a": "1"}
    assert only_sample('m{a="1", } 1\n').labels == {"a": "1"}


def test_empty_label_set():
    assert only_sample("m{} 1\n") == Sample("m", {}, 1.0)
    assert only_sample("m{ } 1\n") == Sample("m", {}, 1.0)


def test_empty_label_value():
    assert only_sample('m{a=""} 1\n').labels == {"a": ""}


def test_timestamps_are_parsed_and_dropped():
    assert only_sample("m 1 1700000000000\n") == Sample("m", {}, 1.0)
    assert only_sample('m{a="b"} 2 1700000000000\n') == Sample("m", {"a": "b"}, 2.0)
    assert only_sample('m{a="b"} 3 1700000000.5\n', openmetrics=True) == Sample("m", {"a": "b"}, 3.0)


def test_blanks_and_tabs_in_odd_places():
    for line in ["m  1", "m\t1", "  m 1", "m 1  ", 'm {a="b"} 1', 'm{a="b"}\t1']:
        sample = only_sample(line + "\n")
        assert (sample.name, sample.value) == ("m", 1.0), line


def test_first_help_and_type_win_when_a_family_appears_twice():
    text = "# HELP a First\n# TYPE a gauge\na 1\n# HELP b B\nb 2\n# HELP a Second\n# TYPE a counter\na 3\n"
    result = parse(text)
    assert [f.name for f in result.families] == ["a", "b"]
    a = family(result, "a")
    assert (a.help, a.type, [s.value for s in a.samples]) == ("First", "gauge", [1.0, 3.0])


def test_samples_without_metadata_are_untyped_families_named_after_them():
    result = parse('a 1\nb{x="1"} 2\nb{x="2"} 3\n')
    assert [(f.name, f.type, len(f.samples)) for f in result.families] == [("a", "untyped", 1), ("b", "untyped", 2)]


def test_openmetrics_default_type_is_unknown_and_untyped_stays_as_written():
    assert parse("a 1\n# EOF\n", openmetrics=True).families[0].type == "unknown"
    assert parse("# TYPE a untyped\na 1\n").families[0].type == "untyped"
    assert parse("# TYPE a unknown\na 1\n").families[0].type == "unknown"


def test_summary_takes_quantiles_sum_count_and_created():
    result = parse(fixture("triton-server-docs-summary.prom"))
    summary = family(result, "nv_inference_queue_summary_us")
    assert summary.type == "summary"
    assert [s.labels.get("quantile") for s in summary.samples] == [None, None, "0.5", "0.9", "0.95", "0.99", "0.999"]


def test_each_sample_keeps_its_series_as_written_so_later_stages_can_reuse_their_work():
    first, second = samples_of('m{a="b"} 1\nm{a="b"} 2\n')
    assert first.key == second.key == 'm{a="b"}'
    assert first.labels == second.labels == {"a": "b"}


def test_bytes_and_str_give_the_same_result():
    text = '# HELP m Caf\u00e9 \u2603\n# TYPE m gauge\nm{city="K\u00f8benhavn"} 1\n'
    assert parse(text) == parse(text.encode())
    assert family(parse(text.encode()), "m").samples[0].labels == {"city": "K\u00f8benhavn"}


def test_utf8_byte_order_mark_is_skipped():
    assert only_sample(b"\xef\xbb\xbfm 1\n") == Sample("m", {}, 1.0)


def test_text_help_unescapes_backslash_and_newline_only():
    help_ = family(parse('# HELP m a \\\\ b \\n c \\" d\nm 1\n'), "m").help
    assert help_ == 'a \\ b \n c \\" d'


def test_openmetrics_help_also_unescapes_quotes():
    help_ = family(parse('# HELP m a \\\\ b \\n c \\" d\nm 1\n# EOF\n', openmetrics=True), "m").help
    assert help_ == 'a \\ b \n c " d'


def test_empty_input_has_no_families():
    assert parse(b"") == ParseResult([], 0)
    assert parse("\n\n") == ParseResult([], 0)


# --- OpenMetrics ---------------------------------------------------------------------------------


def test_openmetrics_eof_stops_parsing():
    result = parse("a 1\n# EOF\nthis is not exposition text\n", openmetrics=True)
    assert [s.name for f in result.families for s in f.samples] == ["a"]


def test_eof_is_just_a_comment_in_text_format():
    result = parse("a 1\n# EOF\nb 2\n")
    assert [s.name for f in result.families for s in f.samples] == ["a", "b"]


def test_openmetrics_unit_is_stored():
    text = "# TYPE size_bytes gauge\n# UNIT size_bytes bytes\n# HELP size_bytes Size.\nsize_bytes 3\n# EOF\n"
    size = family(parse(text, openmetrics=True), "size_bytes")
    assert (size.type, size.unit, size.help) == ("gauge", "bytes", "Size.")


def test_openmetrics_exemplars_are_dropped():
    text = (
        "# TYPE c counter\n"
        'c_total{a="b"} 4 # {trace_id="abc",span="x}y"} 1.0 1700000000.123\n'
        'c_total 5 # {trace_id="def"} 2\n'
        "# TYPE h histogram\n"
        'h_bucket{le="0.1"} 1 # {trace_id="e\\"f"} 0.05\n'
        "# EOF\n"
    )
    result = parse(text, openmetrics=True)
    assert family(result, "c").samples == [Sample("c_total", {"a": "b"}, 4.0), Sample("c_total", {}, 5.0)]
    assert family(result, "h").samples == [Sample("h_bucket", {"le": "0.1"}, 1.0)]


def test_openmetrics_counter_family_without_total_takes_total_and_created():
    text = "# TYPE c counter\n# HELP c Count.\nc_total 4\nc_created 1.7e9\n# EOF\n"
    c = family(parse(text, openmetrics=True), "c")
    assert [(s.name, s.value) for s in c.samples] == [("c_total", 4.0), ("c_created", 1.7e9)]


def test_openmetrics_info_stateset_gaugehistogram_and_unknown_types():
    text = (
        '# TYPE build info\nbuild_info{version="1"} 1\n'
        '# TYPE state stateset\nstate{state="a"} 1\nstate{state="b"} 0\n'
        '# TYPE wait gaugehistogram\nwait_bucket{le="+Inf"} 2\nwait_gcount 2\nwait_gsum 1.5\n'
        "# TYPE odd unknown\nodd 3\n"
        "# EOF\n"
    )
    result = parse(text, openmetrics=True)
    assert [(f.name, f.type, len(f.samples)) for f in result.families] == [
        ("build", "info", 1),
        ("state", "stateset", 2),
        ("wait", "gaugehistogram", 3),
        ("odd", "unknown", 1),
    ]


def test_is_openmetrics():
    assert is_openmetrics("application/openmetrics-text")
    assert is_openmetrics("application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert is_openmetrics("Application/OpenMetrics-Text;version=0.0.1")
    assert not is_openmetrics("text/plain; version=0.0.4; charset=utf-8")
    assert not is_openmetrics("text/plain")
    assert not is_openmetrics("application/json")
    assert not is_openmetrics("")
    assert not is_openmetrics(None)


# --- errors ----------------------------------------------------------------------------------------


def test_parse_error_says_the_line_number():
    error = parse_error("a 1\nb 2\nc oops\nd 4\n")
    assert (error.line, error.message) == (3, "invalid value 'oops'")
    assert str(error) == "line 3: invalid value 'oops'"
    assert isinstance(error, ValueError)


def test_html_body_is_an_error():
    error = parse_error(b"<!DOCTYPE html>\n<html><body>Not Found</body></html>\n")
    assert error.line == 1
    assert "not a sample or comment line" in error.message


def test_sample_without_value_is_an_error():
    assert parse_error("a 1\nb\nc 3\n").line == 2
    assert parse_error('a{x="y"}\n').message == "sample has no value"


def test_unparsable_value_is_an_error():
    assert parse_error('a{x="y"} one\n').message == "invalid value 'one'"
    assert parse_error("a 1_000\n").message == "invalid value '1_000'"


def test_garbage_after_value_is_an_error():
    assert parse_error("a 1 2 3\n").line == 1
    assert "exemplar" in parse_error("a 1 # not an exemplar\n").message


def test_unterminated_label_value_is_an_error():
    error = parse_error('a 1\nb{x="y} 1\n')
    assert (error.line, error.message) == (2, "value of label 'x' has no closing quote")


def test_unclosed_label_set_is_an_error():
    assert parse_error('b{x="y" 1\n').message == "expected ',' or '}' after label 'x'"
    assert parse_error('b{x="y",\n').message == "label set is not closed with '}'"


def test_text_between_a_label_value_and_the_next_comma_or_brace_is_an_error():
    assert parse_error('a{x="y"z} 1\n').message == "expected ',' or '}' after label 'x'"
    assert parse_error('a{x="y" z="w"} 1\n').message == "expected ',' or '}' after label 'x'"


def test_bad_label_name_is_an_error():
    assert parse_error('a{1x="y"} 1\n').message == "invalid label name '1x'"
    assert parse_error('a{x-y="z"} 1\n').message == "invalid label name 'x-y'"
    assert parse_error('a{,x="y"} 1\n').line == 1


def test_unquoted_label_value_is_an_error():
    assert parse_error("a{x=y} 1\n").message == "value of label 'x' is not quoted"


def test_duplicate_label_names_are_an_error():
    error = parse_error('a 1\na{x="1",y="2",x="3"} 1\n')
    assert (error.line, error.message) == (2, "duplicate label name 'x'")


def test_bad_metric_name_is_an_error():
    assert "invalid metric name" in parse_error("a-b 1\n").message
    assert "invalid metric name" in parse_error("# TYPE a-b gauge\n").message
    assert "without a metric name" in parse_error('{x="a.b"} 1\n').message
    assert "without a metric name" in parse_error('{"a.b"="x"} 1\n').message
    assert parse_error('{"a.b" 1\n').message == "expected ',' or '}' after metric name 'a.b'"
    assert "no closing quote" in parse_error('# TYPE "a.b gauge\n').message


def test_unknown_or_missing_type_is_an_error():
    assert parse_error("# TYPE a histogramm\n").message == "unknown metric type 'histogramm' for 'a'"
    assert parse_error("a 1\n# TYPE a\n").line == 2
    assert parse_error("# HELP\n").message == "HELP line without a metric name"


def test_non_utf8_bytes_are_an_error():
    error = parse_error(b'a 1\nb{x="\xff"} 2\nc 3\n')
    assert error.line == 2
    assert "UTF-8" in error.message


def test_malformed_last_line_with_its_newline_is_still_an_error():
    assert parse_error('a 1\nb{x="y\n').line == 2


def test_truncated_last_line_cut_in_a_label_set_is_dropped():
    result = parse('a 1\nb{x="y",z="w')
    assert result.truncated_lines == 1
    assert [s.name for f in result.families for s in f.samples] == ["a"]


def test_truncated_metadata_line_is_dropped_without_a_trace():
    result = parse("a 1\n# TYPE b")
    assert result.truncated_lines == 1
    assert [f.name for f in result.families] == ["a"]


def test_truncated_utf8_in_the_last_line_is_dropped():
    whole = 'a 1\nb{city="K\u00f8benhavn"} 2'.encode()
    cut = whole[: whole.index(b"\xc3") + 1]  # ends inside the two-byte ø
    assert cut.endswith(b"K\xc3")
    result = parse(cut)
    assert result.truncated_lines == 1
    assert [s.name for f in result.families for s in f.samples] == ["a"]


def test_only_the_last_line_may_be_truncated():
    error = parse_error('a 1\nb{x="\nc 3')
    assert error.line == 2


# -- keep: families skipped before their samples are parsed ------------------------------------------------


def test_unwanted_family_lines_are_not_parsed_so_their_errors_cost_nothing():
    body = '# TYPE broken gauge\nbroken{a="1" 2\nbroken{a=} x\n# TYPE fine gauge\nfine 1\n'
    with pytest.raises(ParseError):
        parse(body)
    result = parse(body, keep=lambda name: name != "broken")
    assert [(f.name, [s.value for s in f.samples]) for f in result.families] == [("fine", [1.0])]


@pytest.mark.parametrize("payload", corpora())
def test_a_filtered_parse_is_the_unfiltered_one_without_the_unwanted_families(payload):
    body = body_of(payload)
    whole = parse(body.data, openmetrics=body.openmetrics, escaping=body.escaping)
    unwanted = {f.name for f in whole.families[::2]}  # every other family, whatever it holds
    filtered = parse(
        body.data, openmetrics=body.openmetrics, escaping=body.escaping, keep=lambda name: name not in unwanted
    )
    expected = [(f.name, f.type, f.samples) for f in whole.families if f.name not in unwanted]
    assert [(f.name, f.type, f.samples) for f in filtered.families] == expected
    assert filtered.truncated_lines == whole.truncated_lines
