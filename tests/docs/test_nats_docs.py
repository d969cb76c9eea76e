"""The NATS examples in docs/nats.md and config.example.yaml work as written.

docs/nats.md's responder and micro-service snippets are run as they are (only the server URL is
pointed at a test nats-server), and its YAML targets poll them; the commented NATS targets in
config.example.yaml are uncommented and validated.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest
from helpers.nats_server import NATSServer
from helpers.support import REPO

from exporter.config.loader import parse_config
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.store import Store
from exporter.sources import Shared
from exporter.sources.nats import NATSTarget

README = (REPO / "docs" / "nats.md").read_text()
EXAMPLE_URL = "nats://127.0.0.1:4222"


def nats_section() -> str:
    return README[README.index("# NATS targets") :]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", nats_section(), re.S)


def readme_target(protocol: str) -> str:
    """docs/nats.md's YAML example for a protocol (the block that names it, or the default's)."""
    for block in blocks("yaml"):
        if f"protocol: {protocol}" in block or (protocol == "runtime_stats" and "protocol:" not in block):
            return block
    raise AssertionError(f"docs/nats.md has no YAML example for protocol {protocol}")


def readme_program(marker: str) -> str:
    return next(block for block in blocks("python") if marker in block)


@pytest.fixture
async def run_program(tmp_path):
    """Run a docs/nats.md Python snippet against the test server; waits until it subscribes to `subject`."""
    started: list[asyncio.subprocess.Process] = []

    async def run(code: str, server: NATSServer, subject: str) -> None:
        path = tmp_path / f"snippet{len(started)}.py"
        path.write_text(code.replace(EXAMPLE_URL, server.url))
        started.append(await asyncio.create_subprocess_exec(sys.executable, str(path), stderr=subprocess.PIPE))
        deadline = asyncio.get_running_loop().time() + 15
        while not await server.subscribed(subject):
            stderr = started[-1].stderr
            assert stderr is not None
            assert started[-1].returncode is None, (await stderr.read()).decode()
            assert asyncio.get_running_loop().time() < deadline, "the snippet never subscribed"
            await asyncio.sleep(0.05)

    yield run
    for process in started:
        process.kill()
        await process.wait()


async def poll_readme_target(protocol: str, server: NATSServer):
    text = readme_target(protocol).replace(EXAMPLE_URL, server.url)
    config = parse_config("defaults: {interval: 5s, timeout: 2s, retries: 0}\n" + text)
    store, shared = Store(), Shared()
    poller = TargetPoller(config.targets[0], store, shared)
    try:
        return await poller.poll()
    finally:
        await poller.close()
        await shared.close()


async def test_readme_runtime_stats_example_works_as_written(natsd, run_program):
    await run_program(readme_program("nim.backend.runtime_stats"), natsd, "nim.backend.runtime_stats")

    snapshot = await poll_readme_target("runtime_stats", natsd)

    assert snapshot.up, snapshot.last_error
    served = {s.name: (s.value, s.labels) for f in snapshot.families for s in f.samples}
    assert served["total_requests_total"] == (120.0, {"worker_id": "w-1", "backend": "vllm", "target": "nim-backend"})
    assert served["active_requests"][0] == 5.0


async def test_readme_micro_example_works_as_written(natsd, run_program):
    await run_program(readme_program("add_service"), natsd, "generate")  # the endpoint: subscribed last

    snapshot = await poll_readme_target("micro", natsd)

    assert snapshot.up, snapshot.last_error
    names = {s.name for f in snapshot.families for s in f.samples}
    assert {
        "nats_micro_endpoint_requests_total",
        "nats_micro_endpoint_processing_time_seconds_total",
        "nats_micro_info",
    } <= names
    info = next(s for f in snapshot.families for s in f.samples if s.name == "nats_micro_info")
    assert info.labels["service"] == "inference" and info.labels["description"] == "demo"


def test_readme_dynamo_example_is_a_valid_target():
    target = parse_config(readme_target("dynamo")).targets[0]
    assert isinstance(target, NATSTarget)
    assert (target.protocol, target.endpoint, target.discovery, target.request_plane) == (
        "dynamo",
        "dynamo.backend.runtime_stats",
        "file",
        "nats",
    )


def test_commented_nats_targets_in_the_example_config_are_valid_when_uncommented():
    lines = (REPO / "config.example.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # NATS targets"))
    uncommented = []
    for line in lines[start + 1 :]:
        if line.startswith("  # Credentials and TLS"):
            break
        body = line[len("  # ") :]
        if line.startswith("  # ") and (body.startswith(("- ", "  "))):
            uncommented.append("  " + body)

    config = parse_config("targets:\n" + "\n".join(uncommented) + "\n", "config.example.yaml (uncommented)")
    targets = [target for target in config.targets if isinstance(target, NATSTarget)]
    assert len(targets) == len(config.targets)

    assert {target.name: target.protocol for target in targets} == {
        "nim-backend": "runtime_stats",
        "inference-service": "micro",
        "dynamo-backend": "dynamo",
    }
    assert all(server.startswith("nats://127.0.0.1:") for target in targets for server in target.servers)
