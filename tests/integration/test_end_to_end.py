"""The daemon in front of upstreams serving every payload of a corpus (the simulated backends, then the
real captures where they are): what it serves is complete and valid."""

from __future__ import annotations

import math
import subprocess

import aiohttp
import pytest
from helpers.support import (
    Body,
    corpus_missing,
    daemon_url,
    fixture_files,
    require_tool,
    scrape,
    simulated_bodies,
    wait_until,
    without_cut_off_line,
)
from helpers.upstream import fixtures_config, target_name
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from exporter.pipeline.normalize import go_float_label, sanitize_name


def oracle_samples(body: Body) -> dict[tuple, float]:
    """What prometheus_client's own parsers read from a payload; a truncated last line is left out."""
    text = body.oracle_text  # an escaped body's oracle reads its unescaped twin
    parsed = (
        openmetrics_families(text) if body.openmetrics else text_string_to_metric_families(without_cut_off_line(text))
    )
    samples = {}
    for family in parsed:
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and not name.endswith(("_total", "_created")):
                name += "_total"  # counters are served with _total, as the conventions want
            labels = dict(sample.labels)
            bound = {"histogram": "le", "gaugehistogram": "le", "summary": "quantile"}.get(family.type)
            if bound in labels:  # bounds are served as Prometheus writes them: `le="0"` as `le="0.0"`
                labels[bound] = go_float_label(float(labels[bound]))
            samples[(sanitize_name(name), frozenset(labels.items()))] = sample.value
    return samples


def served_samples(text: str) -> dict[tuple, float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.fixture(params=["simulated", "captures"])
def corpus(request) -> list[Body]:
    """Every payload of one corpus: the simulated backends' bodies, or the real captures."""
    if request.param == "simulated":
        return simulated_bodies()
    files = fixture_files()
    if not files:
        corpus_missing()
    return [Body(path.name, path.read_bytes()) for path in files]


@pytest.fixture
async def fixtures_daemon(upstream, start_daemon, corpus):
    daemon = await start_daemon(fixtures_config(upstream, corpus))
    await wait_until(lambda: all(snap.up is not None for snap in daemon.store.snapshots()))
    return daemon


#: The aibrix doc fragment's histogram is cut off (no +Inf bucket), so it is served as untyped
#: `..._bucket` / `..._sum` families, which clash with vLLM V1's complete histogram of that name.
#: The typed histogram is served whatever the poll order; the aibrix target's untyped families are
#: withheld from it alone, with reason `untyped` (docs/serving.md: When targets disagree about a family).
KNOWN_CLASHES = ("vllm_iteration_tokens_total",)

#: NIM's unprefixed names that are also unified names: those series are served once, as the unified
#: series of that name, where the model label is `model` and `backend="nim"` is added.
_NIM_NAMESAKES = (
    "prompt_tokens_total",
    "generation_tokens_total",
    "time_to_first_token_seconds",
    "e2e_request_latency_seconds",
)
UNIFIED_NAMESAKES = {
    "nim-datadog-fixture-nim_metrics.prom": _NIM_NAMESAKES,
    "simulated-nim.txt": _NIM_NAMESAKES,
    "simulated-nim.om": _NIM_NAMESAKES,
    "simulated-nim.escaped.om": _NIM_NAMESAKES,
}


def as_unified(labels: frozenset, backend: str) -> frozenset:
    renamed = {("model" if name == "model_name" else name): value for name, value in labels}
    return frozenset({**renamed, "backend": backend}.items())


async def test_every_payload_sample_is_served_with_its_value_target_and_static_labels(fixtures_daemon, corpus):
    served = served_samples(await scrape(fixtures_daemon))
    store = fixtures_daemon.store
    withheld = {snap.target.name: store.withheld(snap.target.name) for snap in store.snapshots()}
    for path in corpus:
        expected = oracle_samples(path)
        assert expected, path.name
        own = {"target": target_name(path), "site": "lab", "fixture": path.name}
        for (name, labels), value in expected.items():
            if name.startswith(UNIFIED_NAMESAKES.get(path.name, ())):
                labels = as_unified(labels, "nim")
            key = (name, frozenset({**dict(labels), **own}.items()))
            if key not in served and name.startswith(KNOWN_CLASHES) and name in withheld[own["target"]]:
                assert withheld[own["target"]][name].reason == "untyped"
                continue
            assert key in served, f"{path.name}: {name}{dict(labels)} is missing"
            assert same_value(served[key], value), f"{path.name}: {name}{dict(labels)} = {served[key]}, want {value}"
    assert all(name.startswith(KNOWN_CLASHES) for families in withheld.values() for name in families)
    assert len([target for target, families in withheld.items() if families]) <= len(KNOWN_CLASHES)


async def test_every_payload_target_is_up(fixtures_daemon):
    down = {snap.target.name: snap.last_error for snap in fixtures_daemon.store.snapshots() if not snap.up}
    assert down == {}


@pytest.mark.parametrize("corpus", ["captures"], indirect=True)
async def test_truncated_fixture_counts_its_dropped_line(fixtures_daemon, corpus):
    truncated = next(path for path in corpus if "TRUNCATED" in path.name)
    snap = fixtures_daemon.store.get(target_name(truncated))
    assert snap.up and snap.dropped.get("truncated_line") == 1


#: promtool lints that our own output must never earn; the others only repeat upstream naming.
OUR_LINTS = ("no help text", 'counter metrics should have "_total" suffix', "should not contain ':'")


async def test_promtool_finds_no_parse_error_and_no_lint_of_our_making(fixtures_daemon):
    promtool = require_tool("promtool")
    body = await scrape(fixtures_daemon, {"Accept": "text/plain"})
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    report = result.stdout + result.stderr
    assert "error while linting" not in report and "parsing error" not in report, report
    ours = [line for line in report.splitlines() if any(lint in line for lint in OUR_LINTS)]
    assert ours == [], "\n".join(ours)


async def test_openmetrics_exposition_parses_strictly_and_carries_the_same_samples(fixtures_daemon):
    text = await scrape(fixtures_daemon, {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert text.endswith("# EOF\n")
    openmetrics = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in openmetrics_families(text)
        if not family.name.startswith(("process_", "python_", "inference_exporter_"))
        for sample in family.samples
    }
    classic = {
        key: value
        for key, value in served_samples(await scrape(fixtures_daemon)).items()
        if not key[0].startswith(("process_", "python_", "inference_exporter_"))
    }
    assert openmetrics.keys() == classic.keys()


async def test_metrics_is_gzipped_when_asked(fixtures_daemon):
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(daemon_url(fixtures_daemon), headers={"Accept-Encoding": "gzip"}) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert (await response.read())[:2] == b"\x1f\x8b"


async def test_each_family_appears_once_with_one_help_and_type(fixtures_daemon):
    body = await scrape(fixtures_daemon)
    types = [line.split(" ")[2] for line in body.splitlines() if line.startswith("# TYPE ")]
    helps = [line.split(" ")[2] for line in body.splitlines() if line.startswith("# HELP ")]
    assert len(types) == len(set(types)) and len(helps) == len(set(helps))
    assert set(types) == set(helps)


async def test_metrics_rendered_once_per_poll_are_what_prometheus_clients_encoders_write(fixtures_daemon):
    """/metrics reuses each family's text from its poll; it must equal prometheus_client's own output."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from exporter.serve.collector import Collector, registry_for

    await fixtures_daemon.scheduler.close()  # hold the store still while both render it
    collector = Collector(fixtures_daemon.store, process_metrics=False)
    registry = registry_for(collector)
    assert collector.render() == generate_latest(registry)
    assert collector.render(openmetrics=True) == generate_openmetrics(registry)
    assert collector.render() == collector.render()  # and again, from the kept text
