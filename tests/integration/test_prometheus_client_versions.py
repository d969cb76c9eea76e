"""The same registry served by the oldest prometheus_client a backend may pin and by the newest, through
each release's text and OpenMetrics handlers, reads as the same typed families and unified series.

vLLM pins `prometheus_client >= 0.18.0` (requirements/common.txt): 0.18 knows nothing of escaping
and writes `vllm:` names as they are; 0.23 and later escape OpenMetrics sample names unless asked for
`escaping=allow-utf-8`. The oldest release lives in its own virtual environment, which tests/run.sh
makes (OLDEST_VENV); the newest is the one this project installs.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from helpers.support import HELPERS, REPO, missing, poll_target, served

#: The oldest release a backend pins, and where tests/run.sh installs it.
OLDEST = "0.18.0"
OLDEST_VENV = REPO / ".venv-prometheus-client-oldest"
SERVER = HELPERS / "prometheus_client_server.py"

ACCEPTS = {
    "text 0.0.4": "text/plain;version=0.0.4",
    "openmetrics": "application/openmetrics-text",
    "openmetrics 1.0.0": "application/openmetrics-text;version=1.0.0",
    "our default Accept": None,
}


def _oldest_python() -> str:
    python = OLDEST_VENV / "bin" / "python"
    if not python.exists():
        missing(f"{OLDEST_VENV.name} is missing: tests/run.sh makes it (prometheus_client=={OLDEST})")
    return str(python)


async def _serve(python: str):
    """Start tests/helpers/prometheus_client_server.py under `python`: (process, URL, prometheus_client version)."""
    process = await asyncio.create_subprocess_exec(
        python,
        str(SERVER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    port, version = line.decode().split()
    return process, f"http://127.0.0.1:{port}/metrics", version


async def _stop(process) -> None:
    process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


@pytest.fixture
async def servers():
    """{release: URL} for the oldest release and the newest (ours), each in its own process."""
    started = []
    try:
        urls = {}
        for python in (_oldest_python(), sys.executable):
            process, url, version = await _serve(python)
            started.append(process)
            urls[version] = url
        yield urls
    finally:
        for process in started:
            await _stop(process)


async def _poll(url: str, accept: str | None):
    headers = f", headers: {{Accept: '{accept}'}}" if accept else ""
    snapshot = await poll_target(f"{{name: vllm, type: http, url: '{url}'{headers}}}")
    assert snapshot.up, snapshot.last_error
    return snapshot


async def test_the_oldest_and_newest_prometheus_client_serve_the_same_families_through_every_handler(servers):
    from importlib.metadata import version

    import prometheus_client

    assert set(servers) == {OLDEST, version("prometheus_client")}, servers
    assert version("prometheus_client") != OLDEST, prometheus_client.__file__
    reference = served(await _poll(servers[OLDEST], "text/plain;version=0.0.4"))
    kinds = {name: value[0] for name, value in reference.items()}
    assert kinds["vllm_time_to_first_token_seconds"] == "histogram"
    assert kinds["vllm_request_success"] == "counter"
    assert {"requests_running", "kv_cache_usage_ratio", "time_to_first_token_seconds", "requests_finished"} <= set(
        kinds
    )
    for release, url in servers.items():
        for what, accept in ACCEPTS.items():
            snapshot = await _poll(url, accept)
            assert snapshot.profile == "vllm", (release, what)
            assert served(snapshot) == reference, (release, what, snapshot.content_type)
            escaped = "escaped_names" in snapshot.last_problems
            # 0.18 writes names as they are; 0.23+ escapes OpenMetrics samples unless asked not to.
            assert escaped == (release != OLDEST and what.startswith("openmetrics")), (release, what)
            assert set(snapshot.last_problems) <= {"escaped_names"}, (release, what)
