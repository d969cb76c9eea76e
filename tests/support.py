"""Helpers shared by the tests: where the real captured payloads live, free ports."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Real /metrics payloads captured from real servers; `../shared/fixtures` beside the checkout.
FIXTURES = Path(os.environ.get("INFERENCE_EXPORTER_FIXTURES", REPO.parent / "shared" / "fixtures"))


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
    message = f"{name} is not installed (Debian: apt-get install {package})"
    if os.environ.get("INFERENCE_EXPORTER_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


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
