"""Helpers shared by the tests: where the real captured payloads live, free ports."""

from __future__ import annotations

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
