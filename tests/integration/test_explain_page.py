"""`/targets/<name>` and `/api/targets/<name>` explain a target's last poll: which profile matched and
why, and per concept where its unified series came from or why it is missing. Worked out from what the
poll's families held (not from the first 64 KiB of the body kept for the page), through a real daemon.
"""

from __future__ import annotations

import html
import json
import re

import aiohttp
from helpers.support import Body, daemon_url, simulated, wait_until

from exporter.format.parse import parse
from exporter.serve.explain import explain
from exporter.sources.http import RAW_KEEP

#: Families no profile knows, more than the body copy the page keeps, before vLLM's own.
PADDING = "".join(f'# TYPE padding_{i} gauge\npadding_{i}{{slot="{"x" * 40}"}} {i}\n' for i in range(1200)).encode()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_a_targets_page_and_json_explain_its_last_poll_from_its_families(upstream, start_daemon):
    vllm = PADDING + simulated("vllm")
    assert len(PADDING) > RAW_KEEP  # the body copy kept for the page holds none of vLLM's families
    other = b"# TYPE app_requests counter\napp_requests_total 3\n"
    daemon = await start_daemon(
        "defaults: {interval: 1s, retries: 0}\ntargets:\n"
        f"  - {{name: engine, type: http, url: '{upstream.serve(Body('vllm-padded.prom', vllm))}'}}\n"
        f"  - {{name: app, type: http, url: '{upstream.serve(Body('app.prom', other))}'}}\n"
        f"  - {{name: quiet, type: http, url: '{upstream.serve(Body('quiet.prom', vllm))}', profile: none}}\n"
    )
    await wait_until(lambda: all(snap.up for snap in daemon.store.snapshots()))

    status, text = await get(daemon_url(daemon, "/api/targets/engine"))
    assert status == 200
    explained = json.loads(text)["explain"]
    assert explained["profile"] == "vllm"
    assert explained["why"].startswith("detected: family 'vllm:")
    snap = daemon.store.get("engine")
    # Each concept is served exactly where the poll served its unified family, with as many series.
    unified: dict[str, set] = {}
    for family in snap.families:
        for sample in family.samples:
            if sample.labels.get("backend") == "vllm":
                concept = (
                    re.sub(r"(_bucket|_count|_sum)$", "", sample.name) if family.type == "histogram" else family.name
                )
                if family.type == "counter":
                    concept += "_total"
                unified.setdefault(concept, set()).add(frozenset((k, v) for k, v in sample.labels.items() if k != "le"))
    states = {report["concept"]: report for report in explained["concepts"]}
    assert {name for name, report in states.items() if report["state"] == "served"} == set(unified)
    for name, series in unified.items():
        assert states[name]["series"] == len(series), name
    assert "vllm:kv_cache_usage_perc" in states["kv_cache_usage_ratio"]["detail"]
    # The same explanation `inference-exporter explain` gives for that body.
    assert explained == explain(snap.target, parse(vllm).families).as_dict()

    status, page = await get(daemon_url(daemon, "/targets/engine"))
    assert status == 200
    section = page[page.index('<div id="explain">') :]
    assert "profile <strong>vllm</strong>" in section
    for name, report in states.items():
        assert f'<tr data-concept="{name}" data-state="{report["state"]}">' in section
        assert html.escape(report["detail"]) in section

    app = json.loads((await get(daemon_url(daemon, "/api/targets/app")))[1])["explain"]
    assert app["profile"] is None and app["why"].startswith("no profile detected: none of the 1 families")
    quiet = json.loads((await get(daemon_url(daemon, "/api/targets/quiet")))[1])["explain"]
    assert quiet == {
        "target": "quiet",
        "profile": None,
        "why": "profile: none in the config: no unified series for this target",
        "concepts": [],
    }
    assert "profile: none in the config" in (await get(daemon_url(daemon, "/targets/quiet")))[1]


async def test_a_target_not_polled_yet_has_nothing_to_explain(upstream, start_daemon):
    # polled first at an offset within its interval: not within this test
    daemon = await start_daemon(
        f"targets:\n  - {{name: slow, type: http, url: '{upstream.url}/simulated/vllm', interval: 1h}}\n"
    )
    assert daemon.store.get("slow").up is None
    assert json.loads((await get(daemon_url(daemon, "/api/targets/slow")))[1])["explain"] is None
    assert 'id="explain">no successful poll yet' in (await get(daemon_url(daemon, "/targets/slow")))[1]
