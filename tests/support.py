"""Helpers shared by the tests: where the real captured payloads live, free ports."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Real /metrics payloads captured from real servers; `../shared/fixtures` beside the checkout.
FIXTURES = Path(os.environ.get("INFERENCE_EXPORTER_FIXTURES", REPO.parent / "shared" / "fixtures"))

#: The runtime_stats reply NIM backends send to Dynamo, as the NATS issue shows it.
NIM_REPLY = {
    "schema_version": 1,
    "worker_id": "w-1",
    "backend": "vllm",
    "ts": 1759967807,
    "metrics": {"gauges": {"kv_cache_usage_perc": 0.3, "active_requests": 5}, "counters": {"total_requests": 120}},
}


def fixture_files() -> list[Path]:
    files = sorted(FIXTURES.glob("*.prom"))
    assert files, f"no fixtures found in {FIXTURES}"
    return files


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_tool(name: str) -> str:
    """The path of an external program the test needs (promtool, prometheus, nats-server, systemd-analyze).

    Missing, the test is skipped on a developer's machine but fails where
    INFERENCE_EXPORTER_REQUIRE_TOOLS=1 (set by tests/run.sh), so CI can never skip it silently.
    """
    import shutil

    import pytest

    path = shutil.which(name)
    if path:
        return path
    package = {"promtool": "prometheus", "systemd-analyze": "systemd"}.get(name, name)
    missing(f"{name} is not installed (Debian: apt-get install {package})")


def missing(message: str) -> None:
    """Something a test needs is not installed: skip on a developer's machine, fail where
    INFERENCE_EXPORTER_REQUIRE_TOOLS=1 (tests/run.sh), so that CI can never skip silently."""
    import pytest

    if os.environ.get("INFERENCE_EXPORTER_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def without_cut_off_line(text: str) -> str:
    """Exposition text less a last line cut off mid-sample (one fixture is an excerpt that ends so),
    for prometheus_client's parser, which refuses such a line where ours drops it."""
    from prometheus_client.parser import text_string_to_metric_families

    if text.endswith("\n"):
        return text
    head, _, last = text.rpartition("\n")
    try:
        list(text_string_to_metric_families(last + "\n"))
    except Exception:
        return head + "\n"
    return text


def with_values_moved(body: bytes, step: int) -> bytes:
    """The body with every finite sample value raised by `step`: what a live server's next answer looks
    like (counters and bucket counts grow, gauges move) with the same series and metadata."""
    if not step:
        return body
    lines = body.decode().split("\n")
    for number, line in enumerate(lines):
        if line and not line.startswith("#"):
            head, space, value = line.rpartition(" ")
            try:
                moved = float(value) + step
            except ValueError:
                continue
            if space and math.isfinite(moved):
                lines[number] = f"{head} {moved!r}"
    return "\n".join(lines).encode()
