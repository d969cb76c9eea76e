"""/overview and its API: rates and percentiles checked against sums made here from the raw values a
simulated backend served, across a counter reset and an outage; the stream, the CSV, auth, escaping."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import json
import math
import re

import aiohttp
import pytest
from helpers.simulated_vllm import Served, SimulatedVLLM
from helpers.support import daemon_url
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config.loader import ConfigError, parse_config
from exporter.config.overview import OverviewSettings
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.collector import Collector
from exporter.serve.overview.live import Overview
from exporter.serve.overview.routes import CSV_COLUMNS
from exporter.serve.overview.windows import MAX_POINTS, Point, Windows
from exporter.serve.store import Store
from exporter.serve.web import build_app
from exporter.sources import Shared

INF = math.inf
OUTCOME_OF = {"stop": "success", "length": "success", "abort": "abort", "error": "error"}
LATENCY_OF = {
    "ttft_seconds": "vllm:time_to_first_token_seconds",
    "inter_token_latency_seconds": "vllm:inter_token_latency_seconds",
    "e2e_latency_seconds": "vllm:e2e_request_latency_seconds",
}


# -- what the test computes itself from the served values ------------------------------------------


def counter_increase(values: list[float]) -> float:
    """Sum of rises; after a drop (a restart) the new value is all that was counted since."""
    total = 0.0
    for before, after in itertools.pairwise(values):
        total += after if after < before else after - before
    return total


def finished(served: Served, outcome: str | None = None) -> float:
    return sum(
        value
        for key, value in served.counters.items()
        if key.startswith("vllm:request_success_total/")
        and (outcome is None or OUTCOME_OF[key.rsplit("/", 1)[1]] == outcome)
    )


def expected_quantile(q: float, polls: list[Served], histogram: str) -> float | None:
    """Each bucket's rise over the polls (a drop is a restart), then the rank's bucket, interpolated linearly."""
    bounds = sorted(polls[-1].buckets[histogram])
    rises = {bound: counter_increase([poll.buckets[histogram][bound] for poll in polls]) for bound in bounds}
    total = rises[INF]
    if total == 0:
        return None
    rank = q * total
    lower_bound = lower_count = 0.0
    for bound in bounds:
        if rises[bound] >= rank:
            if bound == INF:
                return bounds[-2]
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (rises[bound] - lower_count)
        lower_bound, lower_count = bound, rises[bound]
    raise AssertionError("unreachable: +Inf holds every observation")


# -- the scenario ------------------------------------------------------------------------------------


@pytest.fixture
async def simulated(aiohttp_server):
    sim = SimulatedVLLM()
    server = await aiohttp_server(sim.app(), host="127.0.0.1")
    sim.url = str(server.make_url("/metrics"))
    return sim


async def overview_server(aiohttp_server, store: Store, overview: Overview):
    app = build_app(store, Collector(store, process_metrics=False), is_ready=lambda: True, overview=overview)
    return await aiohttp_server(app, host="127.0.0.1")


@contextlib.asynccontextmanager
async def one_target_watched(aiohttp_server, config_text: str):
    """The config's first target, polled when the test says, its store watched by an overview that
    keeps every poll (spacing 0: the test's polls come milliseconds apart), served by the daemon's app.
    Yields (poller, server); the server outlives the block, the poller and its connections do not."""
    config = parse_config(config_text)
    store, shared = Store(), Shared()
    server = await overview_server(aiohttp_server, store, Overview(store, config.overview, spacing=0))
    poller = TargetPoller(config.targets[0], store, shared)
    try:
        yield poller, server
    finally:
        await poller.close()
        await shared.close()


async def get_json(server, path: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(server.make_url(path)) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_rates_and_percentiles_match_the_raw_counter_and_bucket_rises_across_a_reset_and_an_outage(
    simulated, aiohttp_server
):
    config = (
        "overview: {window: 15m}\n"
        f"targets:\n  - {{name: sim, type: http, url: '{simulated.url}', retries: 0, interval: 5s, timeout: 2s}}\n"
    )
    polls: list[tuple[float, Served]] = []
    async with one_target_watched(aiohttp_server, config) as (poller, server):

        async def poll_up(requests: int, **kwargs) -> None:
            simulated.step(requests, **kwargs)
            snapshot = await poller.poll()
            assert snapshot.up, snapshot.last_error
            polls.append((snapshot.last_poll, simulated.served()))

        for requests, errors, aborts in ((12, 0, 1), (30, 1, 0), (25, 0, 2), (40, 2, 1)):
            await poll_up(requests, errors=errors, aborts=aborts)
        simulated.restart()  # counters and buckets back to zero: a reset, never a negative rate
        await poll_up(5, errors=1)
        await poll_up(18)

        simulated.down = True
        failed_at = len(polls)  # its place in the history
        assert not (await poller.poll()).up
        during = await get_json(server, "/api/overview")
        row = during["backends"][0]
        assert row["state"] == "down" and row["health"] == "unhealthy"
        for name in (
            "requests_running",
            "kv_cache_usage_ratio",
            "request_rate",
            "error_rate",
            "generation_tokens_per_second",
        ):
            assert row[name] is None, name
        assert row["ttft_seconds"] == {"p50": None, "p90": None, "p99": None}
        assert row["history"]["request_rate"][-1] is None, "a down poll is a gap in the sparkline, not a zero"

        simulated.restart()  # it came back restarted
        simulated.down = False
        await poll_up(22, aborts=3)
        await poll_up(35, errors=1)
        report = await get_json(server, "/api/overview")

    row = report["backends"][0]
    from exporter.serve.overview.report import _no_series

    assert set(row) == set(_no_series("t", "up", None, "")) | {"untracked_rows"}, "one shape for every row"
    times = [t for t, _ in polls]
    span = times[-1] - times[0]
    served = [s for _, s in polls]
    assert row["state"] == "up" and row["model"] == "sim/model-a" and row["backend"] == "vllm"
    assert row["window"]["samples"] == len(polls)

    def rate(values: list[float]) -> float:
        return counter_increase(values) / span

    approx = lambda value: pytest.approx(value, rel=1e-5, abs=1e-9)  # noqa: E731 - the report keeps 6 digits
    assert row["request_rate"] == approx(rate([finished(s) for s in served]))
    assert row["success_rate"] == approx(rate([finished(s, "success") for s in served]))
    assert row["error_rate"] == approx(rate([finished(s, "error") for s in served]))
    assert row["abort_rate"] == approx(rate([finished(s, "abort") for s in served]))
    assert row["error_ratio"] == approx(
        counter_increase([finished(s, "error") for s in served]) / counter_increase([finished(s) for s in served])
    )
    assert row["prompt_tokens_per_second"] == approx(rate([s.counters["vllm:prompt_tokens_total"] for s in served]))
    assert row["generation_tokens_per_second"] == approx(
        rate([s.counters["vllm:generation_tokens_total"] for s in served])
    )
    for name, histogram in LATENCY_OF.items():
        for q in (0.5, 0.9, 0.99):
            assert row[name][f"p{q * 100:g}"] == approx(expected_quantile(q, served, histogram)), (name, q)
    last = served[-1].gauges
    assert row["requests_running"] == last["vllm:num_requests_running"]
    assert row["requests_waiting"] == last["vllm:num_requests_waiting"]
    assert row["kv_cache_usage_ratio"] == last["vllm:kv_cache_usage_perc"]

    history = row["history"]
    assert len(history["times"]) == len(polls) + 1, "every poll, the failed one included"
    assert all(
        value is None or value >= 0
        for name in ("request_rate", "generation_tokens_per_second")
        for value in history[name]
    )
    assert history["request_rate"][failed_at] is None and history["requests_running"][failed_at] is None, (
        "the failed poll"
    )

    ratio = row["error_ratio"]
    assert row["health"] == ("unhealthy" if ratio >= 0.05 else "degraded" if ratio >= 0.01 else "healthy")
    assert any("error ratio" in reason for reason in row["reasons"])


async def test_the_csv_has_one_row_per_target_and_model_with_the_json_values(simulated, aiohttp_server):
    config = f"targets:\n  - {{name: sim, type: http, url: '{simulated.url}', retries: 0}}\n"
    async with one_target_watched(aiohttp_server, config) as (poller, server):
        for _ in range(3):
            simulated.step(20, errors=1)
            await poller.poll()
    report = await get_json(server, "/api/overview")
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/api/overview.csv")) as response:
        assert response.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == len(report["backends"]) == 1
    row, entry = rows[0], report["backends"][0]
    assert (row["target"], row["model"], row["health"]) == ("sim", "sim/model-a", entry["health"])
    assert float(row["request_rate"]) == pytest.approx(entry["request_rate"], rel=1e-5)
    assert float(row["ttft_p99_seconds"]) == pytest.approx(entry["ttft_seconds"]["p99"], rel=1e-5)


async def test_label_values_from_an_upstream_are_escaped_on_the_page_and_defused_in_the_csv(aiohttp_server):
    hostile = SimulatedVLLM(model='=HYPERLINK("x")<img src=x onerror=alert(1)>"</script>')
    server = await aiohttp_server(hostile.app(), host="127.0.0.1")
    config = f"targets:\n  - {{name: sim, type: http, url: '{server.make_url('/metrics')}', retries: 0}}\n"
    async with one_target_watched(aiohttp_server, config) as (poller, ours):
        hostile.step(3)
        await poller.poll()
    async with aiohttp.ClientSession() as session:
        async with session.get(ours.make_url("/overview")) as response:
            page = await response.text()
            csp = response.headers["Content-Security-Policy"]
        async with session.get(ours.make_url("/api/overview.csv")) as response:
            table = await response.text()
    assert "<img" not in page and page.count("</script>") == 1
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    model = next(csv.DictReader(io.StringIO(table)))["model"]
    assert model.startswith("'=HYPERLINK"), "a spreadsheet must not run it as a formula"


async def test_a_bad_window_is_refused_and_one_beyond_keep_too(simulated, aiohttp_server):
    store = Store()
    server = await overview_server(
        aiohttp_server, store, Overview(store, OverviewSettings.model_validate({"keep": "5m"}))
    )
    async with aiohttp.ClientSession() as session:
        for window, status in (("5m", 200), ("1m", 200), ("15m", 400), ("soon", 400), ("<b>", 400)):
            async with session.get(server.make_url("/api/overview"), params={"window": window}) as response:
                assert response.status == status, window
                if status == 400:
                    assert "<b>" not in await response.text()


async def test_the_page_works_without_a_script_by_refreshing(simulated, aiohttp_server):
    store = Store()
    server = await overview_server(aiohttp_server, store, Overview(store))
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/overview")) as response:
        page = await response.text()
    assert re.search(r'<noscript><meta http-equiv="refresh" content="\d+"></noscript>', page)
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page and "@import" not in page


# -- the windows' bounds -----------------------------------------------------------------------------


def test_a_row_keeps_at_most_max_points_however_often_it_is_polled():
    windows = Windows(OverviewSettings.model_validate({"keep": "10m"}))
    from exporter.serve.overview.windows import Row

    row = Row("t", "backend", "m")
    for second in range(5000):
        windows._add(row, Point(1000.0 + second * 0.5, True))
    assert len(row.points) <= MAX_POINTS + 2
    assert row.points[-1].time == 1000.0 + 4999 * 0.5, "the newest poll is always kept"
    assert row.points[0].time >= row.points[-1].time - 600 - windows.spacing


def test_the_config_section_is_validated_with_its_line(tmp_path):
    with pytest.raises(ConfigError) as error:
        parse_config("listen: 127.0.0.1:9898\noverview:\n  window: 20m\n  keep: 10m\n", "c.yaml")
    assert "c.yaml:2: overview: window 1200s is longer than keep 600s" in str(error.value)
    with pytest.raises(ConfigError) as error:
        parse_config("overview:\n  error_ratio_degraded: 2\n", "c.yaml")
    assert "c.yaml:2: overview.error_ratio_degraded" in str(error.value)


# -- the stream, through a running daemon ------------------------------------------------------------


async def test_the_stream_delivers_at_least_three_messages_in_three_and_a_half_seconds(simulated, start_daemon):
    daemon = await start_daemon(f"targets:\n  - {{name: sim, type: http, url: '{simulated.url}', interval: 1s}}\n")
    messages: list[dict] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(daemon_url(daemon, "/api/overview/stream")) as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3.5
            with pytest.raises(TimeoutError):  # noqa: PT012 (the stream is read until the deadline ends it)
                async with asyncio.timeout_at(deadline):
                    async for line in response.content:
                        if line.startswith(b"data: "):
                            messages.append(json.loads(line[6:]))
    assert len(messages) >= 3
    assert all(message["schema_version"] == 1 for message in messages)
    assert [m["generated_unix"] for m in messages] == sorted({m["generated_unix"] for m in messages})


# -- GPUs beside the backends ------------------------------------------------------------------------


async def test_gpus_of_nvml_targets_show_utilisation_memory_and_power(monkeypatch, aiohttp_server):
    from helpers.fake_nvml import FakeNVML, eight_gpus

    from exporter.sources.nvml import source as nvml_source

    fake = FakeNVML(eight_gpus())
    monkeypatch.setattr(nvml_source, "load_binding", lambda: fake)
    config = "targets:\n  - {name: gpus, type: nvml, interval: 5s, timeout: 2s, retries: 0}\n"
    async with one_target_watched(aiohttp_server, config) as (poller, server):
        for _ in range(2):
            assert (await poller.poll()).up
    report = await get_json(server, "/api/overview")
    gpus = {gpu["gpu"]: gpu for gpu in report["gpus"]}
    assert set(gpus) == {str(gpu.index) for gpu in fake.gpus}
    assert report["backends"] == [], "an nvml target is a host's GPUs, not a backend"
    for gpu in fake.gpus:
        row = gpus[str(gpu.index)]
        if "nvmlDeviceGetPowerUsage" not in gpu.unsupported:
            assert row["power_watts"] == pytest.approx(gpu.power_mw / 1000)
        if "nvmlDeviceGetUtilizationRates" not in gpu.unsupported and not gpu.mig:
            assert row["utilization_ratio"] == pytest.approx(gpu.utilization[0] / 100)
        assert row["memory_total_bytes"] == gpu.memory_total
        assert row["memory_used_ratio"] == pytest.approx(gpu.memory_used / gpu.memory_total, rel=1e-5)


# -- the same auth and TLS as every endpoint -------------------------------------------------------


OVERVIEW_PATHS = ("/overview", "/api/overview", "/api/overview.csv", "/api/overview/stream")


async def test_basic_auth_and_tls_apply_to_all_four_overview_endpoints(simulated, start_daemon, tmp_path):
    from test_web_security import PASSWORD, Certs, basic, hashed

    from exporter.config.web import WebSecurity

    certs = Certs(tmp_path)
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        f"tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  prometheus: {hashed(PASSWORD)}\n"
    )
    daemon = await start_daemon(
        f"targets:\n  - {{name: sim, type: http, url: '{simulated.url}', interval: 1s}}\n",
        web_security=WebSecurity(web_config),
    )
    connector = aiohttp.TCPConnector(ssl=certs.client_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        for path in OVERVIEW_PATHS:
            url = daemon_url(daemon, path).replace("http://", "https://")
            async with session.get(url) as response:
                assert response.status == 401, path
            async with session.get(url, headers=basic("prometheus", "wrong-s3cr3t-pw")) as response:
                assert response.status == 401, path
            async with session.get(url, headers=basic("prometheus", PASSWORD)) as response:
                assert response.status == 200, path
                first = await response.content.readline()
                assert first, path
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as plain:
                await plain.get(daemon_url(daemon, "/api/overview"))


# -- PromQL's arithmetic -----------------------------------------------------------------------------


def test_histogram_quantile_follows_prometheus_at_the_edges():
    from exporter.serve.overview.promql import histogram_quantile

    bounds = (0.1, 0.5, 1.0, INF)
    assert histogram_quantile(0.5, bounds, (0, 0, 0, 0)) != histogram_quantile(0.5, bounds, (0, 0, 0, 0)), "NaN"
    assert histogram_quantile(0.99, bounds, (0, 0, 0, 10)) == 1.0, "in +Inf: the highest finite bound"
    assert histogram_quantile(0.5, bounds, (10, 10, 10, 10)) == pytest.approx(0.05), "from 0 in the first bucket"
    assert histogram_quantile(0.75, bounds, (0, 4, 8, 8)) == pytest.approx(0.75)
    assert math.isnan(histogram_quantile(0.5, (INF,), (5,))), "a summary's count alone gives no quantile"
    assert math.isnan(histogram_quantile(0.5, (0.1, 1.0), (1, 2))), "no +Inf bucket"
    assert histogram_quantile(0.5, (-1.0, 0.0, INF), (5, 10, 10)) == -1.0, (
        "a first bound not above 0 is returned as it is"
    )
    assert histogram_quantile(0.75, bounds, (2, 1, 4, 4)) == pytest.approx(0.75), (
        "counts forced monotonic: (2, 2, 4, 4)"
    )


def test_increase_counts_a_reset_as_what_was_counted_since():
    from exporter.serve.overview.promql import increase

    assert increase([10, 15, 3, 8]) == 5 + 3 + 5
    assert increase([5]) == 0 and increase([]) == 0
    assert increase([4, 4, 4]) == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=8),
    st.lists(st.integers(min_value=1, max_value=9), min_size=8, max_size=8),
    st.sampled_from((0.01, 0.25, 0.5, 0.9, 0.99, 1.0)),
)
def test_histogram_quantile_equals_the_interpolation_computed_here(counts, widths, q):
    from exporter.serve.overview.promql import histogram_quantile

    bounds = [float(sum(widths[: i + 1])) for i in range(len(counts))] + [INF]
    cumulative = [float(sum(counts[: i + 1])) for i in range(len(counts))]
    cumulative.append(cumulative[-1] + 3)
    polls = [Served(buckets={"h": dict.fromkeys(bounds, 0.0)}), Served(buckets={"h": dict(zip(bounds, cumulative))})]
    assert histogram_quantile(q, bounds, cumulative) == pytest.approx(expected_quantile(q, polls, "h"))


# -- docs/overview.md and the example config say what the code does --------------------------------------


def test_the_readme_documents_every_json_field_and_csv_column_and_the_example_config_the_defaults(simulated):
    from helpers.support import REPO

    from exporter.config.loader import load_config
    from exporter.serve.overview.report import report

    section = (REPO / "docs" / "overview.md").read_text()
    documented = set(re.findall(r"`([a-z_0-9]+)(?:\[\])?`", section))
    store = Store()
    windows = Overview(store).windows
    top = report(windows, 60.0)
    assert set(top) <= documented, set(top) - documented
    from exporter.serve.overview.report import _empty_gpu, _no_series

    for entry in (_no_series("t", "up", None, ""), _empty_gpu("g", "up", "")):
        assert set(entry) - {"reason"} <= documented, set(entry) - documented
    csv_text = re.sub(r"\s+", " ", section[section.index("## `/api/overview.csv`") :])
    assert ", ".join(CSV_COLUMNS) in csv_text
    assert load_config(REPO / "config.example.yaml").overview == OverviewSettings()


def test_models_beyond_the_cap_are_left_out_and_counted(monkeypatch):
    from exporter.format.parse import parse
    from exporter.pipeline.normalize import normalize
    from exporter.pipeline.unify import Unifier
    from exporter.serve.overview import windows as windows_module
    from exporter.serve.overview.report import report
    from exporter.serve.store import Snapshot

    monkeypatch.setattr(windows_module, "MAX_MODELS_PER_TARGET", 2)
    text = "".join(f'vllm:num_requests_running{{model_name="m{i}"}} {i}\n' for i in range(5))
    target = parse_config("targets:\n  - {name: many, type: http, url: 'http://127.0.0.1:1/metrics'}\n").targets[0]
    unified = Unifier(target).apply(parse(text.encode()).families).families
    served = normalize(unified, target=target.name, labels={}, prefix="").families
    windows = Windows(spacing=0)
    for poll in range(3):
        windows.observe(Snapshot(target, families=served, up=True, last_poll=1000.0 + poll))
    rows = report(windows, 60.0, now=1003.0)["backends"]
    assert len(rows) == 2 and all(row["untracked_rows"] == 3 for row in rows), "3 left out, counted once"


def test_thinned_polls_lose_no_reset():
    from exporter.serve.overview.report import report
    from exporter.serve.overview.windows import COUNTER_SLOTS, Row
    from exporter.serve.store import Snapshot

    windows = Windows(spacing=10.0)  # polls every second, kept every 10 s or so
    row = windows.rows[("t", "backend", "m")] = Row("t", "backend", "m")
    windows.targets["t"] = Snapshot(
        parse_config("targets: [{name: t, type: http, url: 'http://h/'}]").targets[0], up=True
    )
    raw = [100.0, 110.0, 120.0, 5.0, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0, 75.0, 85.0, 95.0, 105.0]  # a restart at 3
    for second, value in enumerate(raw):
        counters: list[float | None] = [None] * len(COUNTER_SLOTS)
        counters[COUNTER_SLOTS.index("finished")] = value
        windows._add(row, Point(1000.0 + second, True, (1.0, 0.0, 0.5), row.counters_read(counters), (None,) * 3))
    assert len(row.points) < len(raw)
    entry = report(windows, 60.0, now=1000.0 + len(raw))["backends"][0]
    assert entry["requests_finished"] == counter_increase(raw) == 20 + 5 + 100


async def test_streams_beyond_the_cap_are_told_to_retry_later(monkeypatch, aiohttp_server):
    from exporter.serve.overview import routes

    monkeypatch.setattr(routes, "MAX_STREAMS", 1)
    store = Store()
    server = await overview_server(aiohttp_server, store, Overview(store))
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/api/overview/stream")) as first:
        assert first.status == 200 and (await first.content.readline()).startswith(b"retry:")
        async with session.get(server.make_url("/api/overview/stream")) as second:
            assert second.status == 503 and second.headers["Retry-After"] == "10"
