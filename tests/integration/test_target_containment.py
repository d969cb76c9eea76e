"""A degraded target beside healthy ones costs them no series, whichever target is polled first, and
`once` serves what the running daemon serves.

The degraded target serves a vLLM payload whose families come out untyped (its TYPE and HELP lines
lost, as when a reader misses escaped names): its clashing families are withheld from it alone."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from helpers.support import TEXT_0_0_4, daemon_url, wait_until
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config.loader import parse_config
from exporter.runtime.once import poll_once

OWN = ("inference_exporter_", "process_", "python_")


def vllm_payload() -> bytes:
    """A vLLM V1 server's families through prometheus_client's text format, as vLLM serves them.

    Names, types and labels as vLLM registers them: vllm-project/vllm vllm/v1/metrics/loggers.py
    (PrometheusStatLogger) and docs/design/v1/metrics.md, v0.11."""
    registry = CollectorRegistry()
    labels = ["model_name", "engine"]
    series = ("tiny", "0")
    Gauge(
        "vllm:num_requests_running", "Number of requests in model execution batches.", labels, registry=registry
    ).labels(*series).set(3)
    Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels, registry=registry).labels(
        *series
    ).set(1)
    Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, registry=registry).labels(
        *series
    ).set(0.25)
    Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=registry).labels(*series).inc(
        120
    )
    Counter("vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=registry).labels(
        *series
    ).inc(80)
    Counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        [*labels, "finished_reason"],
        registry=registry,
    ).labels(*series, "stop").inc(4)
    for name, value in (("vllm:time_to_first_token_seconds", 0.05), ("vllm:e2e_request_latency_seconds", 1.5)):
        Histogram(name, "Histogram of " + name, labels, buckets=(0.1, 1.0, 10.0), registry=registry).labels(
            *series
        ).observe(value)
    return generate_latest(registry)


HEALTHY = vllm_payload()
#: The same samples with every TYPE and HELP line lost: each sample name an untyped family of its own.
DEGRADED = b"".join(line for line in HEALTHY.splitlines(keepends=True) if not line.startswith(b"#"))


class Backends:
    """One aiohttp server for every target: /<target>/metrics, a 503 while the target is held back."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.app = web.Application()
        self.app.router.add_get("/{target}/metrics", self.metrics)
        self.url = ""

    async def metrics(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        if target in self.held:
            return web.Response(status=503, text="held back by the test\n")
        body = DEGRADED if target.startswith("degraded") else HEALTHY
        return web.Response(body=body, headers={"Content-Type": TEXT_0_0_4})


@pytest.fixture
async def backends(aiohttp_server) -> Backends:
    served = Backends()
    server = await aiohttp_server(served.app, host="127.0.0.1")
    served.url = str(server.make_url("")).rstrip("/")
    return served


def config(url: str, names: list[str]) -> str:
    targets = "".join(f'\n  - {{name: {name}, type: http, url: "{url}/{name}/metrics"}}' for name in names)
    return f"defaults: {{interval: 1s, timeout: 1s, retries: 0}}\ntargets:{targets}\n"


def upstream_series(text: str) -> set[tuple]:
    """Every served series of the targets (ours left out): family, type, HELP, sample, labels, value."""
    return {
        (family.name, family.type, family.documentation, sample.name, frozenset(sample.labels.items()), sample.value)
        for family in text_string_to_metric_families(text)
        if not family.name.startswith(OWN)
        for sample in family.samples
    }


def of_target(series: set[tuple], target: str) -> set[tuple]:
    return {one for one in series if dict(one[4]).get("target") == target}


def own_samples(text: str, name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def test_a_degraded_target_costs_healthy_ones_no_series_in_either_poll_order_and_once_agrees(
    backends, start_daemon
):
    names = ["healthy-a", "degraded", "healthy-b"]
    alone_text, failed = await poll_once(parse_config(config(backends.url, ["healthy-a"]), "alone.yaml"))
    assert not failed
    alone = upstream_series(alone_text.decode())
    assert len({series[0] for series in alone}) > 10  # raw vLLM families and unified ones

    served = {}
    for order in (["degraded", "healthy-a", "healthy-b"], ["healthy-a", "healthy-b", "degraded"]):
        # Each target's first answer is held back until the one before it is up: the polls land in `order`.
        backends.held = set(order[1:])
        daemon = await start_daemon(config(backends.url, names))
        for index, name in enumerate(order):
            await wait_until(lambda name=name: daemon.store.get(name).up)
            backends.held.discard(order[index + 1] if index + 1 < len(order) else "")
        text = await get(daemon_url(daemon))
        served[order[0]] = upstream_series(text)

        # The healthy targets serve every series they serve alone, with the same types and HELP.
        for healthy in ("healthy-a", "healthy-b"):
            want = {(*one[:4], one[4] - {("target", "healthy-a")} | {("target", healthy)}, one[5]) for one in alone}
            assert of_target(served[order[0]], healthy) == want
            assert daemon.store.withheld(healthy) == {}

        # The degraded target loses its untyped raw families, counted and listed; its unified series stay.
        snap = daemon.store.get("degraded")
        untyped = {family.name for family in snap.families if family.type == "unknown"}
        withheld = daemon.store.withheld("degraded")
        assert set(withheld) == untyped and len(untyped) >= 10
        assert {family.reason for family in withheld.values()} == {"untyped"}
        assert own_samples(text, "inference_exporter_target_withheld_families") == {
            (("reason", "untyped"), ("target", "degraded")): len(untyped)
        }
        degraded_families = {one[0] for one in of_target(served[order[0]], "degraded")}
        assert degraded_families and not degraded_families & untyped
        assert "requests_running" in degraded_families

        detail = await get(daemon_url(daemon, "/api/targets/degraded"))
        assert '"reason": "untyped"' in detail and '"served_by": ["healthy-a", "healthy-b"]' in detail
        page = await get(daemon_url(daemon, "/targets/degraded"))
        assert 'id="withheld"' in page and "vllm_num_requests_running" in page

    assert served["degraded"] == served["healthy-a"]
    once_text, failed = await poll_once(parse_config(config(backends.url, names), "once.yaml"))
    assert not failed
    assert upstream_series(once_text.decode()) == served["degraded"]
