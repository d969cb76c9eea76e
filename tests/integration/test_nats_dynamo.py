"""`protocol: dynamo` against real Dynamo workers (ai-dynamo-runtime) and a real nats-server.

Each worker is its own process (`dynamo_worker.py`), registered through Dynamo's file discovery
backend and answering over the NATS request plane; the daemon polls them through Dynamo's own
Python client, as it would on a Dynamo host. No etcd and no GPU are needed for that.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.nats_server import NATSServer
from helpers.support import HELPERS, missing, wait_until


@pytest.fixture(autouse=True)
def _dynamo_runtime():
    """Like helpers.support.require_tool: skipped on a developer's machine without the extra, failed under tests/run.sh."""
    try:
        import dynamo.runtime  # noqa: F401
    except ImportError:
        missing("ai-dynamo-runtime is not installed (pip install -e '.[dynamo]'; tests/run.sh does)")


WORKER = HELPERS / "dynamo_worker.py"
ENDPOINT = "demo.backend.runtime_stats"


class Workers:
    """`await workers(worker_id)` starts a Dynamo worker registered in the `discovery` folder."""

    def __init__(self, nats_url: str, discovery: Path) -> None:
        self.nats_url, self.discovery = nats_url, discovery
        self.started: list[asyncio.subprocess.Process] = []

    async def __call__(self, worker_id: str, request_plane: str = "nats") -> asyncio.subprocess.Process:
        env = {
            **os.environ,
            "NATS_SERVER": self.nats_url,
            "DYN_FILE_KV": str(self.discovery),
            "DYN_LOG": "error",
            "DYN_REQUEST_PLANE": request_plane,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), ENDPOINT, worker_id, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.started.append(process)
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"serving\n"
        return process


@pytest.fixture
async def workers(natsd, tmp_path):
    """Start real Dynamo workers serving runtime_stats on ENDPOINT; each is killed at the end."""
    discovery = tmp_path / "discovery"
    discovery.mkdir()
    start = Workers(natsd.url, discovery)
    yield start
    for process in start.started:
        if process.returncode is None:
            process.kill()
            await process.wait()


def dynamo_target(
    natsd: NATSServer, discovery: Path, *, name: str = "dynamo", endpoint: str = ENDPOINT, request_plane: str = "nats"
) -> str:
    return (
        f'  - {{name: {name}, type: nats, servers: ["{natsd.url}"], protocol: dynamo, endpoint: {endpoint},\n'
        f'     discovery: file, discovery_dir: "{discovery}", request_plane: {request_plane}, gather_window: 500ms}}\n'
    )


def instances(daemon, name: str = "dynamo") -> dict[str, dict[str, float]]:
    """instance_id -> {sample name: value} as served for the target."""
    found: dict[str, dict[str, float]] = {}
    for family in daemon.store.get(name).families:
        for sample in family.samples:
            if sample.labels.get("backend") == "nim":
                continue  # a unified series of NIM's profile: instances folded into one (test_vocabulary.py)
            found.setdefault(sample.labels["instance_id"], {})[sample.name] = sample.value
            assert sample.labels["target"] == name and sample.labels["backend"] == "vllm"
    return found


async def test_real_dynamo_workers_are_polled_each_instance_with_its_own_series(natsd, workers, start_daemon):
    await workers("w-1")
    await workers("w-2")
    daemon = await start_daemon(
        f"defaults: {{interval: 1s, timeout: 1s, retries: 0}}\ntargets:\n{dynamo_target(natsd, workers.discovery)}"
    )

    await wait_until(lambda: daemon.store.get("dynamo").up, timeout=15)
    first = instances(daemon)
    polls = daemon.store.get("dynamo").polls
    await wait_until(lambda: daemon.store.get("dynamo").polls >= polls + 2)
    later = instances(daemon)

    assert len(first) == 2, first
    worker_ids = {
        sample.labels["worker_id"]
        for family in daemon.store.get("dynamo").families
        for sample in family.samples
        if sample.labels.get("backend") != "nim"  # unified series fold the workers
    }
    assert worker_ids == {"w-1", "w-2"}
    for instance, values in first.items():
        assert values["kv_cache_usage_perc"] == 0.25 and values["active_requests"] == 3
        assert later[instance]["total_requests_total"] > values["total_requests_total"], (
            "the counter moves between polls"
        )
    types = {family.name: family.type for family in daemon.store.get("dynamo").families}
    assert types == {
        "kv_cache_usage_perc": "gauge",
        "active_requests": "gauge",
        "total_requests": "counter",
        "kv_cache_usage_ratio": "gauge",
        "requests_running": "gauge",  # NIM's profile reads the replies too
    }


async def test_dynamo_endpoint_without_instances_fails_with_no_responders(natsd, workers, start_daemon):
    daemon = await start_daemon(
        "defaults: {interval: 2s, timeout: 1s, retries: 0}\ntargets:\n"
        + dynamo_target(natsd, workers.discovery, endpoint="demo.backend.nothing")
    )

    await wait_until(lambda: daemon.store.get("dynamo").up is not None, timeout=15)

    snapshot = daemon.store.get("dynamo")
    assert (snapshot.up, snapshot.last_reason) == (False, "no_responders")
    assert "demo.backend.nothing" in snapshot.last_error


async def test_dynamo_target_survives_a_nats_restart_and_a_dead_instance_is_dropped(natsd, workers, start_daemon):
    await workers("w-1")
    doomed = await workers("w-2")
    daemon = await start_daemon(
        f"defaults: {{interval: 1s, timeout: 1s, retries: 0}}\ntargets:\n{dynamo_target(natsd, workers.discovery)}"
    )
    await wait_until(lambda: daemon.store.get("dynamo").up and len(instances(daemon)) == 2, timeout=15)

    doomed.kill()
    await doomed.wait()
    await wait_until(lambda: len(instances(daemon)) == 1, timeout=5)
    assert daemon.store.get("dynamo").up, "the other instance still counts"
    assert daemon.store.get("dynamo").dropped.get("instance_unavailable", 0) >= 1

    await natsd.stop()
    await wait_until(lambda: daemon.store.get("dynamo").up is False, timeout=5)
    assert daemon.store.get("dynamo").last_reason == "nats_disconnected"
    await natsd.start()
    await wait_until(lambda: daemon.store.get("dynamo").up, timeout=15)
    assert len(instances(daemon)) == 1


async def test_a_worker_on_the_tcp_request_plane_is_polled_the_same_way(natsd, workers, start_daemon):
    await workers("w-tcp", request_plane="tcp")
    daemon = await start_daemon(
        "defaults: {interval: 1s, timeout: 1s, retries: 0}\ntargets:\n"
        + dynamo_target(natsd, workers.discovery, request_plane="tcp")
    )

    await wait_until(lambda: daemon.store.get("dynamo").up, timeout=15)

    [values] = instances(daemon).values()
    assert values["kv_cache_usage_perc"] == 0.25 and values["total_requests_total"] >= 101
