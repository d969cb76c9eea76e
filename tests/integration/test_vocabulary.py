"""The vocabulary as backends speak today: each new profile against its simulated backend, the profiles
brought current against payloads in the backends' current names, detection that tells look-alikes apart,
NIM's runtime_stats over NATS, profiles an operator writes, and `explain`.

Expected values are computed here from the raw payload with prometheus_client's parser and the rules
written out below (test_unify's oracle), never by exporter code.
"""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest
from helpers.support import NIM_REPLY, REPO, poll_target, served_samples, wait_until
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from test_unify import NEW_PROFILES as RULES
from test_unify import assert_same_series, expected_series, raw_samples, unified_served

from exporter.config.loader import ConfigError, parse_config
from exporter.simulate import TEXT_ACCEPT, SimulatedServer, simulator
from exporter.simulate.base import load_backends

OUTCOMES = {"success", "abort", "error"}


async def poll_simulated(profile: str, *, ticks: int = 12, model: str | None = None, extra: str = "") -> tuple:
    """Poll a simulated backend once; (snapshot, the raw text it served)."""
    sim = simulator(profile, ticks=ticks)
    server = SimulatedServer(sim, ticking=False)
    url = await server.start()
    try:
        model_field = f", model: {model}" if model else ""
        snapshot = await poll_target(
            f'{{name: t, type: http, url: "{url}"{model_field}, headers: {{Accept: "{TEXT_ACCEPT}"}}{extra}}}'
        )
    finally:
        await server.stop()
    return snapshot, sim.render(TEXT_ACCEPT)[0].decode()


def test_every_new_profile_has_rules_and_a_simulator():
    assert set(RULES) <= set(load_backends())


@pytest.mark.parametrize("profile", sorted(load_backends()))
async def test_every_simulated_backend_finishes_requests_only_as_success_abort_or_error(profile):
    model = None if simulator(profile).model else "demo/model"
    snapshot, _ = await poll_simulated(profile, model=model)
    outcomes = {
        dict(labels)["outcome"] for name, labels in unified_served(snapshot) if name == "requests_finished_total"
    }
    assert outcomes <= OUTCOMES


# -- detection tells look-alikes apart ---------------------------------------------------------------------


async def test_the_production_stack_routers_vllm_names_are_not_detected_as_a_vllm_engine():
    router, _ = await poll_simulated("vllm-router")
    engine, _ = await poll_simulated("vllm")
    assert (router.profile, engine.profile) == ("vllm-router", "vllm")
    assert {dict(labels)["backend"] for _, labels in unified_served(router)} == {"vllm-router"}


async def test_trtllm_serve_is_detected_as_tensorrt_llm_alone_and_through_a_dynamo_worker(bodies):
    alone, text = await poll_simulated("trtllm")
    assert alone.profile == "trtllm"
    # A Dynamo worker running TensorRT-LLM: its own dynamo_component_* families beside the engine's trtllm_*
    worker = simulator("dynamo-worker", ticks=12).render(TEXT_ACCEPT)[0].decode()
    through = await poll_target(f'{{name: t, type: http, url: "{bodies("worker", (worker + text).encode())}"}}')
    assert through.profile == "trtllm"
    backend, rules = RULES["trtllm"]
    assert_same_series(unified_served(through), expected_series(backend, rules, worker + text, "t"))


# -- profiles brought current: payloads in the backends' current names -------------------------------------


@pytest.fixture
async def bodies(aiohttp_server):
    """An upstream serving bodies the test made (prometheus_client registries, or simulators' text) at /{name}."""
    from aiohttp import web

    served: dict[str, bytes] = {}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=served[request.match_info["name"]], headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    app = web.Application()
    app.router.add_get("/{name}", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")

    def serve(name: str, body) -> str:
        served[name] = body if isinstance(body, bytes) else generate_latest(body)
        return f"{base}/{name}"

    return serve


def series(snapshot, name: str) -> dict[frozenset, float]:
    return {labels: value for (n, labels), value in unified_served(snapshot).items() if n == name}


def of(**labels: object) -> frozenset:
    return frozenset({"target": "t", **labels}.items())


async def test_a_dynamo_workers_current_kv_gauge_is_read_before_the_deprecated_one_and_every_series_names_the_model(
    bodies,
):
    registry = CollectorRegistry()
    # lib/runtime/src/metrics/prometheus_names.rs (kvstats): labels model, dynamo_component, dp_rank
    usage = Gauge(
        "dynamo_component_gpu_cache_usage_percent",
        "GPU cache usage as a percentage (0.0-1.0)",
        ["model", "dynamo_component", "dp_rank"],
        registry=registry,
    )
    usage.labels("Qwen/Qwen3-0.6B", "backend", "0").set(0.25)
    usage.labels("Qwen/Qwen3-0.6B", "backend", "1").set(0.75)
    Gauge(
        "dynamo_component_total_blocks",
        "Total number of KV cache blocks",
        ["model", "dynamo_component", "dp_rank"],
        registry=registry,
    ).labels("Qwen/Qwen3-0.6B", "backend", "0").set(1024)
    Gauge(
        "dynamo_component_kvstats_gpu_cache_usage_percent", "deprecated", ["dynamo_component"], registry=registry
    ).labels("backend").set(0.1)
    Gauge(
        "dynamo_component_inflight_requests", "in flight", ["dynamo_component", "dynamo_endpoint"], registry=registry
    ).labels("backend", "generate").set(3)  # the work handler's gauges name no model
    snapshot = await poll_target(
        f'{{name: t, type: http, url: "{bodies("worker", registry)}", profile: dynamo-worker}}'
    )
    model = {"backend": "dynamo-worker", "model": "Qwen/Qwen3-0.6B"}
    assert series(snapshot, "kv_cache_usage_ratio") == {of(**model): 0.75}
    assert series(snapshot, "requests_running") == {of(**model): 3.0}
    assert all("model" in dict(labels) for _, labels in unified_served(snapshot))


async def test_vllms_repetition_is_a_success(bodies):
    registry = CollectorRegistry()
    success = Counter("vllm:request_success", "finished", ["model_name", "finished_reason"], registry=registry)
    for reason, count in {"stop": 5, "length": 2, "repetition": 3, "abort": 1, "error": 4}.items():
        success.labels("m", reason).inc(count)
    snapshot = await poll_target(f'{{name: t, type: http, url: "{bodies("vllm", registry)}"}}')
    assert series(snapshot, "requests_finished_total") == {
        of(backend="vllm", model="m", outcome="success"): 10.0,
        of(backend="vllm", model="m", outcome="abort"): 1.0,
        of(backend="vllm", model="m", outcome="error"): 4.0,
    }


async def test_llamacpp_prompt_tokens_are_the_uncached_plus_the_cached_and_the_cached_are_prefix_hits(bodies):
    registry = CollectorRegistry()  # tools/server/server-context.cpp since 2026-08-13
    Counter(
        "llamacpp:prompt_tokens", "Total prompt processing tokens (excluding cached tokens).", registry=registry
    ).inc(12345)
    Counter("llamacpp:prompt_tokens_cached", "Total prompt processing tokens (cached tokens).", registry=registry).inc(
        678
    )
    Counter("llamacpp:tokens_predicted", "Total predicted tokens.", registry=registry).inc(99)
    Counter("llamacpp:spec_decode_num_draft_tokens", "drafted", registry=registry).inc(300)
    Counter("llamacpp:spec_decode_num_accepted_tokens", "accepted", registry=registry).inc(150)
    snapshot = await poll_target(f'{{name: t, type: http, url: "{bodies("llama", registry)}", model: qwen}}')
    model = {"backend": "llamacpp", "model": "qwen"}
    assert series(snapshot, "prompt_tokens_total") == {of(**model): 12345.0 + 678.0}
    assert series(snapshot, "prefix_cache_query_tokens_total") == {of(**model): 12345.0 + 678.0}
    assert series(snapshot, "prefix_cache_hit_tokens_total") == {of(**model): 678.0}
    assert series(snapshot, "speculative_accepted_tokens_total") == {of(**model): 150.0}


@pytest.mark.parametrize("old", ["dynamo-worker", "llamacpp"])
async def test_the_profiles_fallbacks_read_a_simulated_older_build(old):
    """The simulators serve today's names; their older builds serve the deprecated ones the profiles
    still read after them (Dynamo 0.x's `kvstats_*` gauges, llama.cpp without the cached counter)."""
    from test_unify import DYNAMO_WORKER_DEPRECATED, LLAMACPP_BEFORE_CACHED, Backend

    from exporter.simulate.backends.dynamo import DeprecatedDynamoWorkerSimulator
    from exporter.simulate.backends.llamacpp import LlamaCppBeforeCachedSimulator

    sim, backend, rules, model = {
        "dynamo-worker": (
            DeprecatedDynamoWorkerSimulator(),
            Backend("dynamo-worker", "model"),
            DYNAMO_WORKER_DEPRECATED,
            None,
        ),
        "llamacpp": (
            LlamaCppBeforeCachedSimulator(),
            Backend("llamacpp", None, model="qwen"),
            LLAMACPP_BEFORE_CACHED,
            "qwen",
        ),
    }[old]
    sim.advance(12)
    text = sim.render(TEXT_ACCEPT)[0].decode()
    assert (
        ("kvstats_gpu_cache_usage_percent" in text) if old == "dynamo-worker" else ("prompt_tokens_cached" not in text)
    )
    server = SimulatedServer(sim, ticking=False)
    url = await server.start()
    try:
        model_field = f", model: {model}" if model else ""
        snapshot = await poll_target(f'{{name: t, type: http, url: "{url}"{model_field}, profile: {old}}}')
    finally:
        await server.stop()
    expected = expected_series(backend, rules, text, "t")
    assert any(name == "kv_cache_usage_ratio" for name, _ in expected) or old == "llamacpp"
    assert_same_series(unified_served(snapshot), expected)


async def test_a_default_triton_gives_mean_latencies_from_its_counters_and_failures_by_reason(bodies):
    registry = CollectorRegistry()  # what a Triton without --metrics-config sends (docs/user_guide/metrics.md)
    labels = ["model", "version"]
    Counter("nv_inference_request_success", "ok", labels, registry=registry).labels("llama", "1").inc(40)
    failure = Counter("nv_inference_request_failure", "failed", ["model", "reason", "version"], registry=registry)
    for reason, count in {"REJECTED": 1, "CANCELED": 2, "BACKEND": 3, "OTHER": 4}.items():
        failure.labels("llama", reason, "1").inc(count)
    Counter("nv_inference_request_duration_us", "request", labels, registry=registry).labels("llama", "1").inc(
        8_000_000
    )
    Counter("nv_inference_queue_duration_us", "queue", labels, registry=registry).labels("llama", "1").inc(400_000)
    snapshot = await poll_target(f'{{name: t, type: http, url: "{bodies("triton", registry)}"}}')
    model = {"backend": "triton", "model": "llama"}
    served = unified_served(snapshot)
    assert served[("e2e_request_latency_seconds_sum", of(**model))] == 8.0
    assert served[("e2e_request_latency_seconds_count", of(**model))] == 40.0
    assert served[("e2e_request_latency_seconds_bucket", of(**model, le=math.inf))] == 40.0
    assert served[("request_queue_time_seconds_sum", of(**model))] == 0.4
    assert series(snapshot, "requests_finished_total") == {
        of(**model, outcome="success"): 40.0,
        of(**model, outcome="abort"): 2.0,
        of(**model, outcome="error"): 8.0,
    }


async def test_sglang_retractions_are_preemptions_and_its_pool_size_the_kv_capacity(bodies):
    registry = CollectorRegistry()
    Counter("sglang:num_retracted_requests", "retracted", ["model_name"], registry=registry).labels("m").inc(7)
    Gauge("sglang:num_retracted_reqs", "last batch", ["model_name"], registry=registry).labels("m").set(2)
    Gauge("sglang:max_total_num_tokens", "pool", ["model_name"], registry=registry).labels("m").set(500_000)
    snapshot = await poll_target(f'{{name: t, type: http, url: "{bodies("sglang", registry)}"}}')
    assert series(snapshot, "requests_preempted_total") == {of(backend="sglang", model="m"): 7.0}
    assert series(snapshot, "kv_cache_capacity_tokens") == {of(backend="sglang", model="m"): 500_000.0}


async def test_dynamo_frontend_outcomes_come_from_error_type_and_cached_tokens_are_prefix_hits(bodies):
    registry = CollectorRegistry()  # prometheus_names.rs frontend_service: status and error_type
    requests = Counter(
        "dynamo_frontend_requests",
        "requests",
        ["model", "endpoint", "request_type", "status", "error_type"],
        registry=registry,
    )
    requests.labels("m", "chat_completions", "stream", "success", "").inc(20)
    requests.labels("m", "chat_completions", "stream", "error", "cancelled").inc(3)
    requests.labels("m", "chat_completions", "unary", "error", "internal").inc(2)
    requests.labels("m", "chat_completions", "unary", "error", "overload").inc(1)
    cached = Histogram("dynamo_frontend_cached_tokens", "cached", ["model"], buckets=[10, 100], registry=registry)
    for tokens in (5, 50, 500):
        cached.labels("m").observe(tokens)
    snapshot = await poll_target(f'{{name: t, type: http, url: "{bodies("frontend", registry)}"}}')
    model = {"backend": "dynamo-frontend", "model": "m"}
    assert series(snapshot, "requests_finished_total") == {
        of(**model, outcome="success"): 20.0,
        of(**model, outcome="abort"): 3.0,
        of(**model, outcome="error"): 3.0,
    }
    assert series(snapshot, "prefix_cache_hit_tokens_total") == {of(**model): 555.0}


async def test_tgi_failures_by_err_are_errors():
    snapshot, text = await poll_simulated("tgi", model="bigscience/bloom")
    failed = sum(value for name, labels, value in raw_samples(text) if name == "tgi_request_failure")
    assert (
        series(snapshot, "requests_finished_total")[of(backend="tgi", model="bigscience/bloom", outcome="error")]
        == failed
    )


# -- NATS replies go through the same profiles --------------------------------------------------------------


async def test_nims_runtime_stats_over_nats_become_unified_series(natsd):
    import json

    import nats

    from exporter.runtime.scheduler import TargetPoller
    from exporter.serve.store import Store
    from exporter.sources import Shared

    client = await nats.connect(natsd.url)

    async def handler(msg) -> None:
        await msg.respond(json.dumps(NIM_REPLY).encode())

    await client.subscribe("nim.backend.runtime_stats", cb=handler)
    await client.flush()
    config = parse_config(
        "defaults: {interval: 5s, timeout: 2s, retries: 0}\ntargets:\n"
        f"  - {{name: stats, type: nats, servers: ['{natsd.url}'], subject: nim.backend.runtime_stats, model: nim/llama}}\n"
    )
    store, shared = Store(), Shared()
    poller = TargetPoller(config.targets[0], store, shared)
    try:
        snapshot = await poller.poll()
    finally:
        await poller.close()
        await shared.close()
        await client.close()
    assert snapshot.up, snapshot.last_error
    assert snapshot.profile == "nim"
    unified = {
        (name, labels): value
        for (name, labels), value in served_samples(snapshot).items()
        if dict(labels).get("backend") == "nim"
    }
    model = frozenset({"backend": "nim", "model": "nim/llama", "target": "stats"}.items())
    gauges = NIM_REPLY["metrics"]["gauges"]
    assert unified == {
        ("kv_cache_usage_ratio", model): gauges["kv_cache_usage_perc"],
        ("requests_running", model): float(gauges["active_requests"]),
    }


# -- profiles an operator writes ----------------------------------------------------------------------------

ACME = """\
# A made-up backend: the operator's own names
name: acme
description: Acme inference server
priority: 15
detect: ["acme_.+"]
model_label: llm
series:
  requests_running:
    - metric: acme_busy_slots
  requests_finished_total:
    - {metric: acme_done, outcome_label: result, outcomes: {ok: success, dropped: abort}, others: error}
"""


def acme_registry(busy: float = 3) -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("acme_busy_slots", "busy", ["llm"], registry=registry).labels("acme-7b").set(busy)
    done = Counter("acme_done", "done", ["llm", "result"], registry=registry)
    done.labels("acme-7b", "ok").inc(9)
    done.labels("acme-7b", "dropped").inc(1)
    done.labels("acme-7b", "oom").inc(2)
    Gauge("acme_free_slots", "free", ["llm"], registry=registry).labels("acme-7b").set(5)
    return registry


def write_config(tmp_path: Path, url: str, profile_text: str = ACME) -> Path:
    (tmp_path / "profiles").mkdir(exist_ok=True)
    (tmp_path / "profiles" / "acme.yaml").write_text(profile_text)
    config = tmp_path / "config.yaml"
    config.write_text(
        "defaults: {interval: 200ms, timeout: 150ms, retries: 0}\n"
        "profile_files: [profiles/*.yaml]\n"
        f'targets:\n  - {{name: t, type: http, url: "{url}"}}\n'
    )
    return config


async def test_an_operators_profile_for_a_made_up_backend_serves_its_unified_series(bodies, tmp_path, start_daemon):
    config = write_config(tmp_path, bodies("acme", acme_registry()))
    daemon = await start_daemon(config.read_text().replace("profiles/*.yaml", str(tmp_path / "profiles" / "*.yaml")))
    await wait_until(lambda: daemon.store.get("t").up)
    snapshot = daemon.store.get("t")
    assert snapshot.profile == "acme"
    model = {"backend": "acme", "model": "acme-7b"}
    assert series(snapshot, "requests_running") == {of(**model): 3.0}
    assert series(snapshot, "requests_finished_total") == {
        of(**model, outcome="success"): 9.0,
        of(**model, outcome="abort"): 1.0,
        of(**model, outcome="error"): 2.0,
    }


def test_a_mistake_in_an_operators_profile_names_its_file_and_line(tmp_path):
    wrong = ACME.replace("    - metric: acme_busy_slots", "    - metrc: acme_busy_slots").replace(
        "others: error", "others: failed"
    )
    config = write_config(tmp_path, "http://127.0.0.1:1/metrics", wrong)
    with pytest.raises(ConfigError) as caught:
        parse_config(config.read_text(), str(config))
    profile = tmp_path / "profiles" / "acme.yaml"
    assert f"{profile}:9: series.requests_running[0].metrc: unknown key (did you mean 'metric'?)" in str(caught.value)
    fixed = ACME.replace("others: error", "others: failed")
    write_config(tmp_path, "http://127.0.0.1:1/metrics", fixed)
    with pytest.raises(ConfigError) as caught:
        parse_config(config.read_text(), str(config))
    assert (
        f"{profile}:10: series.requests_finished_total: outcome 'failed' is not one of: success, abort, error"
        in str(caught.value)
    )


def test_a_profile_glob_that_matches_nothing_is_an_error_at_its_config_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("targets: []\nprofile_files:\n  - nowhere/*.yaml\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(config.read_text(), str(config))
    assert str(caught.value) == f"{config}:3: profile_files[0]: 'nowhere/*.yaml' matches no file"


async def test_check_config_shows_the_operators_profiles(bodies, tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:1/metrics")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "check-config",
        str(config),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "profile acme (priority 15, detects acme_.+): 2 concept(s)" in out.decode()


async def test_a_reload_picks_up_an_edit_to_an_operators_profile(bodies, tmp_path, start_daemon):
    url = bodies("acme", acme_registry())
    config = write_config(tmp_path, url)
    daemon = await start_daemon(config.read_text().replace("profiles/*.yaml", str(tmp_path / "profiles" / "*.yaml")))
    await wait_until(lambda: daemon.store.get("t").up and daemon.store.get("t").profile == "acme")
    model = {"backend": "acme", "model": "acme-7b"}
    assert series(daemon.store.get("t"), "requests_running") == {of(**model): 3.0}
    # the operator maps one more concept and points running requests at the other gauge
    edited = (
        ACME.replace("acme_busy_slots", "acme_free_slots")
        + "  requests_running_limit:\n    - metric: acme_busy_slots\n"
    )
    (tmp_path / "profiles" / "acme.yaml").write_text(edited)
    assert await daemon.reload()
    await wait_until(lambda: series(daemon.store.get("t"), "requests_running_limit") == {of(**model): 3.0})
    assert series(daemon.store.get("t"), "requests_running") == {of(**model): 5.0}
    # a broken edit keeps the running config
    (tmp_path / "profiles" / "acme.yaml").write_text(edited.replace("priority: 15", "priority: high"))
    assert not await daemon.reload()
    await asyncio.sleep(0.5)
    assert series(daemon.store.get("t"), "requests_running_limit") == {of(**model): 3.0}


async def test_an_edit_to_a_profile_file_alone_is_noticed_like_an_edit_to_the_config(bodies, tmp_path, start_daemon):
    config = write_config(tmp_path, bodies("acme", acme_registry()))
    daemon = await start_daemon(
        config.read_text().replace("profiles/*.yaml", str(tmp_path / "profiles" / "*.yaml")), watch_interval=0.1
    )
    await wait_until(lambda: daemon.store.get("t").up and daemon.store.get("t").profile == "acme")
    (tmp_path / "profiles" / "acme.yaml").write_text(ACME.replace("acme_busy_slots", "acme_free_slots"))
    model = {"backend": "acme", "model": "acme-7b"}
    await wait_until(lambda: series(daemon.store.get("t"), "requests_running") == {of(**model): 5.0})


# -- explain ------------------------------------------------------------------------------------------------


async def run_explain(config: Path, target: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "explain",
        "--config",
        str(config),
        "--target",
        target,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None  # it exited: communicate() waits for that
    return process.returncode, out.decode(), err.decode()


async def test_explain_says_which_profile_matched_and_where_each_concept_comes_from_or_why_not(tmp_path):
    server = SimulatedServer(simulator("trtllm", ticks=10), ticking=False)
    url = await server.start()
    try:
        config = tmp_path / "config.yaml"
        config.write_text(
            f'targets:\n  - {{name: trt, type: http, url: "{url}", headers: {{Accept: "{TEXT_ACCEPT}"}}}}\n'
        )
        code, out, err = await run_explain(config, "trt")
    finally:
        await server.stop()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "target trt: profile trtllm"
    assert lines[1].startswith("  detected: family 'trtllm_") and "matches 'trtllm_.+' of profile trtllm" in lines[1]
    running = next(line for line in lines if " requests_running " in f" {line[2:]} ")
    assert (
        running.startswith("+ requests_running")
        and "1 series from trtllm_num_requests_running (choice 1 of 1)" in running
    )
    capacity = next(line for line in lines if "kv_cache_capacity_tokens" in line)
    assert "trtllm_kv_cache_max_blocks" in capacity and "trtllm_kv_cache_tokens_per_block" in capacity
    itl = next(line for line in lines if "inter_token_latency_seconds" in line)
    assert itl.strip() == "inter_token_latency_seconds            profile trtllm maps no upstream series to it"
    preempted = next(line for line in lines if "requests_preempted_total" in line)
    assert preempted.startswith(" ") and "maps no upstream series" in preempted


async def test_explain_says_why_no_profile_matched_and_what_is_missing(bodies, tmp_path):
    registry = CollectorRegistry()
    Gauge("vllm:num_requests_running", "r", ["model_name"], registry=registry).labels("m").set(1)
    config = tmp_path / "config.yaml"
    config.write_text(
        f'targets:\n  - {{name: v, type: http, url: "{bodies("v", registry)}"}}\n'
        f'  - {{name: n, type: http, url: "{bodies("n", CollectorRegistry())}"}}\n'
    )
    code, out, _ = await run_explain(config, "v")
    assert code == 0
    waiting = next(line for line in out.splitlines() if "requests_waiting" in line)
    assert waiting.startswith("- requests_waiting") and "not in the payload: vllm:num_requests_waiting" in waiting
    code, out, _ = await run_explain(config, "n")
    assert code == 0 and "no profile detected" in out
    code, _, err = await run_explain(config, "nope")
    assert code == 1 and "no target named nope" in err
