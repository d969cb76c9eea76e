"""docs/gpus.md's GPU tables stay true: every family we serve is listed, every dcgm-exporter metric is mapped,
and the output passes promtool's lint."""

from __future__ import annotations

import re
import subprocess

import pytest
from helpers.fake_nvml import FakeNVML, eight_gpus
from helpers.support import REPO, capture, require_tool
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import exporter.sources.nvml.source as nvml_source
from exporter.config.loader import parse_config
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.collector import Collector, registry_for
from exporter.serve.store import Store
from exporter.sources import Shared
from exporter.sources.nvml.metrics import FAMILIES

DCGM_FIXTURE = "dcgm-exporter-datadog-fixture-metrics.prom"


def readme_table(heading: str) -> list[list[str]]:
    """The rows (cells, markdown stripped of nothing) of the first table under `heading`."""
    text = (REPO / "docs" / "gpus.md").read_text()
    section = text[text.index(heading) :]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # less the header


def names(cell: str, pattern: str) -> set[str]:
    return set(re.findall(rf"`({pattern})[`{{]", cell))


@pytest.fixture
async def served(monkeypatch) -> str:
    """/metrics of the 8-GPU host with processes on and an XID on record."""
    fake = FakeNVML(eight_gpus())
    monkeypatch.setattr(nvml_source, "load_binding", lambda: fake)
    target = parse_config("targets:\n  - {name: gpus, type: nvml, processes: true}\n").targets[0]
    store = Store()
    poller = TargetPoller(target, store, Shared())
    try:
        await poller.poll()
        fake.xid_events.append((0, 79))
        await poller.poll()
    finally:
        await poller.close()
    return generate_latest(registry_for(Collector(store, process_metrics=False))).decode()


def served_names(text: str) -> set[str]:
    return {
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("gpu_")
    }


def test_the_readme_lists_exactly_the_families_the_source_can_serve():
    listed = {row[0].strip("`") for row in readme_table("# GPU metrics (`type: nvml`)")}
    servable = {name + "_total" if kind == "counter" else name for name, (kind, _) in FAMILIES.items()}
    assert listed == servable


def test_every_dcgm_exporter_metric_in_a_real_payload_is_mapped_in_the_readme():
    mapped = set()
    for row in readme_table("## dcgm-exporter's counters, and ours"):
        mapped |= names(row[0], r"DCGM_[A-Z0-9_]+")
    shipped = {family.name for family in text_string_to_metric_families(capture(DCGM_FIXTURE).read_text())}
    assert shipped, DCGM_FIXTURE
    assert shipped - mapped == set()


async def test_every_family_the_readme_maps_dcgm_exporter_to_is_served(served):
    ours = set()
    for row in readme_table("## dcgm-exporter's counters, and ours"):
        ours |= names(row[1], r"gpu_[a-z_]+")
    assert ours, "the mapping table names none of our families"
    assert ours - served_names(served) == set()


async def test_promtool_finds_nothing_to_lint_in_gpu_output(served):
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=served, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and (result.stdout + result.stderr).strip() == "", result.stdout + result.stderr
