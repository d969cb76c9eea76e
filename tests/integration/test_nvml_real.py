"""The nvml source against the real nvidia-ml-py and whatever driver this machine has.

With an NVIDIA driver, the first test reads every GPU and prints what it collected (run with -s
to see it); without one it is skipped, since there is nothing to read. Without a driver, the
second test shows what an operator sees from the command; with one it is skipped instead.
"""

from __future__ import annotations

import asyncio
import sys

import pynvml
import pytest
from helpers.support import REPO
from prometheus_client.parser import text_string_to_metric_families

from exporter.config.loader import parse_config
from exporter.runtime.once import poll_once


def nvml_is_usable() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


HAS_DRIVER = nvml_is_usable()


@pytest.mark.skipif(not HAS_DRIVER, reason="no NVIDIA driver here: run this on a machine with a GPU")
async def test_real_driver_every_gpu_is_read_and_labelled():
    config = parse_config(
        "defaults: {interval: 15s, timeout: 10s, retries: 0}\ntargets:\n  - {name: gpus, type: nvml, processes: true}\n"
    )
    text, failed = await poll_once(config)
    body = text.decode()
    print(body)  # what the real GPUs gave, for the person running this
    assert failed == []
    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
        uuids = {pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)}
    finally:
        pynvml.nvmlShutdown()
    families = {family.name: family for family in text_string_to_metric_families(body)}
    info = families["gpu_info"].samples
    assert {sample.labels["uuid"] for sample in info} == uuids
    assert all(sample.labels["driver_version"] for sample in info)
    for name in ("gpu_memory_used_bytes", "gpu_temperature_celsius", "gpu_power_usage_watts"):
        assert {sample.labels["uuid"] for sample in families[name].samples} == uuids, name


@pytest.mark.skipif(HAS_DRIVER, reason="this machine has an NVIDIA driver; the no-driver path cannot be shown here")
async def test_without_a_driver_once_says_what_is_missing(tmp_path):
    config = tmp_path / "gpus.yaml"
    config.write_text("targets:\n  - {name: gpus, type: nvml}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "once",
        "--config",
        str(config),
        "--log-level",
        "error",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    said = err.decode()
    assert "target gpus failed: nvml_unavailable: " in said
    assert "libnvidia-ml.so.1 not found" in said or "kernel driver is not loaded" in said, said
    assert 'inference_exporter_target_up{target="gpus"} 0.0' in out.decode()
