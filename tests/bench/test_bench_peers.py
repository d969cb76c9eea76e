"""bench/peers.py hands each system a config it accepts, and reads a process's CPU and memory from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers.support import REPO, require_tool

sys.path.insert(0, str(REPO / "bench"))

import peers

PATHS = [f"/vllm/{i}/metrics" for i in range(peers.TARGETS)]


def test_the_prometheus_agent_config_passes_promtool(tmp_path):
    promtool = require_tool("promtool")
    path = tmp_path / "prometheus.yaml"
    path.write_text(peers.scrape_config("http://127.0.0.1:9", PATHS, "http://127.0.0.1:10/api/v1/write"))
    done = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_vmagent_gets_no_remote_write_section_which_it_refuses():
    assert "remote_write" not in peers.scrape_config("http://127.0.0.1:9", PATHS, None)


def test_the_exporter_config_has_one_http_target_per_upstream_at_one_second():
    from exporter.config.loader import parse_config
    from exporter.sources.http import HTTPTarget

    config = parse_config(peers.exporter_config("http://127.0.0.1:9", PATHS), "<test>")
    targets = [t for t in config.targets if isinstance(t, HTTPTarget)]
    assert len(targets) == len(config.targets)
    assert [str(t.url) for t in targets] == [f"http://127.0.0.1:9{path}" for path in PATHS]
    assert {t.interval for t in config.targets} == {1.0}


def test_cpu_and_memory_are_read_from_proc():
    assert peers.cpu_seconds(os.getpid()) > 0
    memory = peers.status(os.getpid())
    assert memory["VmHWM"] >= memory["VmRSS"] > 0
