"""`type: nvml` against a fake NVML host of 8 GPUs: what the operator sees in /metrics and the self-metrics.

The fake (tests/helpers/fake_nvml.py) raises nvidia-ml-py's own NVMLError classes. GPU 2 is split into MIG
instances, GPU 5 lacks some fields, and the tests lose GPUs, jam calls and hide the library.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import aiohttp
import pytest
from helpers.fake_nvml import FakeGPU, FakeMIG, FakeNVML, eight_gpus
from helpers.support import daemon_url, wait_until
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

import exporter.sources.nvml.source as nvml_source
from exporter.config.loader import ConfigError, parse_config
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.collector import Collector, registry_for
from exporter.serve.store import Store
from exporter.sources import Shared

GiB = 2**30


@pytest.fixture
def host(monkeypatch) -> Iterator[FakeNVML]:
    """The fake NVML every nvml target in this test loads instead of pynvml."""
    fake = FakeNVML(eight_gpus())
    monkeypatch.setattr(nvml_source, "load_binding", lambda: fake)
    yield fake
    for gpu in fake.gpus:  # let any call the test left stuck return
        for event in gpu.blocks.values():
            event.set()


def nvml_target(fields: str = "", defaults: str = "{interval: 5s, timeout: 2s, retries: 0}"):
    return parse_config(f"defaults: {defaults}\ntargets:\n  - {{name: gpus, type: nvml{fields}}}\n").targets[0]


class Poller:
    """One nvml target polled by hand through the real TargetPoller, Store and Collector."""

    def __init__(self, target):
        self.store = Store()
        self.poller = TargetPoller(target, self.store, Shared())

    async def poll(self):
        return await self.poller.poll()

    def metrics(self) -> str:
        return generate_latest(registry_for(Collector(self.store, process_metrics=False))).decode()

    async def close(self):
        await self.poller.close()


@pytest.fixture
async def gpus(host):
    poller = Poller(nvml_target(", processes: true"))
    yield poller
    await poller.close()


def series(text: str, name: str) -> dict[frozenset, float]:
    """Labels (less target and uuid) -> value, for every sample called `name`."""
    return {
        frozenset((k, v) for k, v in sample.labels.items() if k not in ("target", "uuid")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def by_gpu(text: str, name: str) -> dict[int, float]:
    return {int(dict(labels)["gpu"]): value for labels, value in series(text, name).items()}


def self_metric(text: str, name: str) -> dict[str, float]:
    """target or target/reason -> value of one of our own metrics."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels["target"] + ("/" + sample.labels["reason"] if "reason" in sample.labels else "")
                values[key] = sample.value
    return values


# -- what is served ------------------------------------------------------------------------------


async def test_every_gpu_is_served_in_base_units_with_gpu_and_uuid_labels(gpus):
    snap = await gpus.poll()
    assert snap.up and snap.errors == {} and snap.dropped == {}
    text = gpus.metrics()

    assert by_gpu(text, "gpu_power_usage_watts") == {i: 100 + 10 * i for i in range(8)}
    assert by_gpu(text, "gpu_power_limit_watts")[0] == 700
    assert by_gpu(text, "gpu_energy_consumed_joules_total")[0] == pytest.approx(123456.789)
    assert by_gpu(text, "gpu_memory_total_bytes")[0] == 80 * GiB
    assert by_gpu(text, "gpu_memory_used_bytes")[0] == 20 * GiB
    assert by_gpu(text, "gpu_memory_free_bytes")[0] == 60 * GiB
    assert by_gpu(text, "gpu_utilization_ratio")[0] == 0.5
    assert by_gpu(text, "gpu_memory_utilization_ratio")[0] == 0.3
    assert by_gpu(text, "gpu_sm_clock_hertz")[0] == 1980e6
    assert by_gpu(text, "gpu_memory_clock_hertz")[0] == 2619e6
    assert by_gpu(text, "gpu_temperature_celsius") == {i: 40 + i for i in range(8)}
    assert by_gpu(text, "gpu_memory_temperature_celsius")[0] == 70
    assert by_gpu(text, "gpu_fan_speed_ratio")[0] == 0.4
    assert by_gpu(text, "gpu_pcie_receive_bytes_per_second")[0] == 1000 * 1024
    assert by_gpu(text, "gpu_pcie_transmit_bytes_per_second")[0] == 2000 * 1024
    assert by_gpu(text, "gpu_performance_state")[0] == 0
    assert set(by_gpu(text, "gpu_pcie_replays_total")) == set(range(8))

    # Every sample of a GPU carries its index and its UUID, and the target.
    for family in text_string_to_metric_families(text):
        if family.name.startswith("gpu_"):
            for sample in family.samples:
                assert sample.labels["target"] == "gpus"
                assert (
                    sample.labels["uuid"]
                    == f"GPU-{int(sample.labels['gpu']):08x}-0000-4000-8000-{int(sample.labels['gpu']):012x}"
                )


async def test_gpu_info_names_each_gpu_and_the_driver(gpus):
    await gpus.poll()
    info = {
        sample.labels["gpu"]: sample
        for family in text_string_to_metric_families(gpus.metrics())
        for sample in family.samples
        if sample.name == "gpu_info"
    }
    assert sorted(info) == [str(i) for i in range(8)]
    first = info["0"]
    assert first.value == 1
    assert first.labels == {
        "target": "gpus",
        "gpu": "0",
        "uuid": "GPU-00000000-0000-4000-8000-000000000000",
        "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": "00000000:18:00.0",
        "serial": "1654321000",
        "driver_version": "550.54.15",
        "cuda_driver_version": "12.4",
    }
    assert info["5"].labels["name"] == "NVIDIA L4" and info["5"].labels["serial"] == ""


async def test_clock_event_reasons_are_one_labelled_zero_or_one_gauge_per_reason(host, gpus):
    host.gpus[1].clock_event_reasons = (
        host.nvmlClocksEventReasonSwPowerCap | host.nvmlClocksEventReasonHwThermalSlowdown
    )
    await gpus.poll()
    reasons = {
        dict(labels)["reason"]: value
        for labels, value in series(gpus.metrics(), "gpu_clock_event_reason").items()
        if dict(labels)["gpu"] == "1"
    }
    assert reasons == {
        "gpu_idle": 0,
        "applications_clocks_setting": 0,
        "sw_power_cap": 1,
        "hw_slowdown": 0,
        "sync_boost": 0,
        "sw_thermal_slowdown": 0,
        "hw_thermal_slowdown": 1,
        "hw_power_brake_slowdown": 0,
        "display_clock_setting": 0,
    }


async def test_a_driver_without_the_newer_functions_still_reports_through_the_older_ones(monkeypatch):
    gpu = FakeGPU(0, temperature=55, clock_event_reasons=0x4)
    fake = FakeNVML(
        [gpu], driver_lacks=frozenset({"nvmlDeviceGetTemperatureV", "nvmlDeviceGetCurrentClocksEventReasons"})
    )
    monkeypatch.setattr(nvml_source, "load_binding", lambda: fake)
    poller = Poller(nvml_target())
    try:
        for _ in range(2):
            snap = await poller.poll()
        text = poller.metrics()
    finally:
        await poller.close()
    assert snap.up and snap.dropped == {}
    assert by_gpu(text, "gpu_temperature_celsius") == {0: 55}
    assert series(text, "gpu_clock_event_reason")[frozenset({("gpu", "0"), ("reason", "sw_power_cap")})] == 1
    # The newer name is tried once, not at every poll.
    assert fake.called("nvmlDeviceGetTemperatureV", 0) == 1 and fake.called("nvmlDeviceGetTemperature", 0) == 2


async def test_ecc_errors_and_remapped_rows_are_counters(host, gpus):
    host.gpus[4].ecc = (12, 1)
    host.gpus[4].remapped_rows = (3, 1, 1, 0)
    await gpus.poll()
    text = gpus.metrics()
    gpu4 = lambda name: {  # noqa: E731
        tuple(sorted((k, v) for k, v in labels if k != "gpu")): value
        for labels, value in series(text, name).items()
        if dict(labels)["gpu"] == "4"
    }
    assert gpu4("gpu_ecc_errors_total") == {(("type", "corrected"),): 12, (("type", "uncorrected"),): 1}
    assert gpu4("gpu_remapped_rows_total") == {(("cause", "correctable"),): 3, (("cause", "uncorrectable"),): 1}
    assert gpu4("gpu_row_remap_pending") == {(): 1} and gpu4("gpu_row_remap_failure") == {(): 0}
    assert "# TYPE gpu_ecc_errors_total counter" in text and "# TYPE gpu_remapped_rows_total counter" in text


async def test_xid_errors_are_counted_by_code_from_the_event_api(host, gpus):
    await gpus.poll()  # registers every GPU for XID events
    host.xid_events += [(3, 79), (3, 79), (6, 48)]
    await gpus.poll()
    host.xid_events += [(3, 79)]
    await gpus.poll()
    xids = {
        (dict(labels)["gpu"], dict(labels)["xid"]): value
        for labels, value in series(gpus.metrics(), "gpu_xid_errors_total").items()
    }
    assert xids == {("3", "79"): 3, ("6", "48"): 1}


async def test_a_mig_gpu_reports_memory_per_instance_labelled_with_instance_ids_and_profile(gpus):
    await gpus.poll()
    text = gpus.metrics()
    used = {tuple(sorted(labels)): value for labels, value in series(text, "gpu_mig_memory_used_bytes").items()}
    assert used == {
        (("compute_instance", "0"), ("gpu", "2"), ("gpu_instance", "1"), ("profile", "3g.40gb")): 10 * GiB,
        (("compute_instance", "0"), ("gpu", "2"), ("gpu_instance", "2"), ("profile", "2g.20gb")): 5 * GiB,
    }
    assert sorted(series(text, "gpu_mig_memory_total_bytes").values()) == [20 * GiB, 40 * GiB]
    # NVML gives no utilization for a MIG-enabled GPU or its instances: nothing is made up.
    assert 2 not in by_gpu(text, "gpu_utilization_ratio")
    assert series(text, "gpu_mig_utilization_ratio") == {}
    # The GPU itself still reports everything else.
    assert by_gpu(text, "gpu_power_usage_watts")[2] == 120


async def test_mig_utilization_is_served_where_nvml_reports_it(monkeypatch):
    gpu = FakeGPU(0, mig=[FakeMIG(3, 1, "1g.10gb", 10 * GiB, GiB, utilization=(25, 5))])
    fake = FakeNVML([gpu])
    monkeypatch.setattr(nvml_source, "load_binding", lambda: fake)
    poller = Poller(nvml_target())
    try:
        await poller.poll()
        util = series(poller.metrics(), "gpu_mig_utilization_ratio")
    finally:
        await poller.close()
    assert util == {
        frozenset({("gpu", "0"), ("gpu_instance", "3"), ("compute_instance", "1"), ("profile", "1g.10gb")}): 0.25
    }


async def test_process_memory_is_served_per_process_when_asked(gpus):
    await gpus.poll()
    memory = {
        (dict(labels)["gpu"], dict(labels)["pid"], dict(labels)["process"]): value
        for labels, value in series(gpus.metrics(), "gpu_process_memory_used_bytes").items()
    }
    assert memory[("3", "1003", "python3")] == 4 * GiB
    assert len(memory) == 8


async def test_processes_are_left_out_unless_asked(host):
    poller = Poller(nvml_target())
    try:
        await poller.poll()
        assert "gpu_process_memory_used_bytes" not in poller.metrics()
        assert host.called("nvmlDeviceGetComputeRunningProcesses", 0) == 0
    finally:
        await poller.close()


async def test_devices_selects_which_gpus_are_read(host):
    poller = Poller(nvml_target(", devices: [1, 3]"))
    try:
        await poller.poll()
        assert set(by_gpu(poller.metrics(), "gpu_info")) == {1, 3}
        assert not any(gpu == 0 for gpu, _ in host.calls), "GPU 0 was not selected and must not be asked"
    finally:
        await poller.close()


async def test_prefix_applies_to_gpu_families(host):
    poller = Poller(nvml_target(', prefix: "node"'))
    try:
        await poller.poll()
        assert by_gpu(poller.metrics(), "node_gpu_power_usage_watts")[1] == 110
    finally:
        await poller.close()


# -- fields a GPU does not support ---------------------------------------------------------------


async def test_fields_a_gpu_does_not_support_are_skipped_said_once_at_debug_and_not_asked_again(host, gpus):
    with capture_logs() as logs:
        for _ in range(3):
            snap = await gpus.poll()
    assert snap.up and snap.errors == {} and snap.dropped == {}
    text = gpus.metrics()
    for name in ("gpu_fan_speed_ratio", "gpu_memory_temperature_celsius", "gpu_row_remap_failure"):
        assert 5 not in by_gpu(text, name) and 4 in by_gpu(text, name), name
    assert {dict(labels)["gpu"] for labels in series(text, "gpu_ecc_errors_total")} == {str(i) for i in range(8)} - {
        "5"
    }
    # The rest of GPU 5 is served.
    assert by_gpu(text, "gpu_power_usage_watts")[5] == 150

    assert host.called("nvmlDeviceGetFanSpeed", 5) == 1 and host.called("nvmlDeviceGetFanSpeed", 4) == 3
    said = [(e["gpu"], e["field"], e["log_level"]) for e in logs if e["event"].startswith("GPU field not available")]
    assert sorted(said) == sorted(
        [
            (2, "utilization", "debug"),
            (2, "mig_utilization", "debug"),
            (5, "fan_speed", "debug"),
            (5, "memory_temperature", "debug"),
            (5, "ecc_errors", "debug"),
            (5, "remapped_rows", "debug"),
            (5, "mig", "debug"),
        ]
    )


# -- a GPU that is lost --------------------------------------------------------------------------


async def test_a_lost_gpu_loses_its_series_and_is_counted_while_the_others_keep_reporting(host, gpus):
    await gpus.poll()
    assert 7 in by_gpu(gpus.metrics(), "gpu_info")

    host.gpus[7].lost = True
    with capture_logs() as logs:
        await gpus.poll()
        snap = await gpus.poll()
    text = gpus.metrics()
    assert snap.up is True
    assert not any(
        dict(labels).get("gpu") == "7"
        for family in ("gpu_info", "gpu_power_usage_watts", "gpu_xid_errors_total")
        for labels in series(text, family)
    )
    assert set(by_gpu(text, "gpu_power_usage_watts")) == set(range(7))
    assert self_metric(text, "inference_exporter_target_dropped_samples_total") == {"gpus/gpu_lost": 2}
    assert self_metric(text, "inference_exporter_target_up") == {"gpus": 1}
    lost = [e for e in logs if e["event"].startswith("GPU is lost")]
    assert len(lost) == 1 and lost[0]["log_level"] == "warning" and lost[0]["gpu"] == 7

    host.gpus[7].lost = False
    await gpus.poll()
    assert 7 in by_gpu(gpus.metrics(), "gpu_info")


async def test_a_configured_gpu_the_host_does_not_have_is_counted_as_lost(host):
    poller = Poller(nvml_target(", devices: [6, 9]"))
    try:
        snap = await poller.poll()
        assert snap.up and snap.dropped == {"gpu_lost": 1}
        assert set(by_gpu(poller.metrics(), "gpu_info")) == {6}
    finally:
        await poller.close()


# -- NVML's lifetime -----------------------------------------------------------------------------


async def test_nvml_is_initialized_once_per_target_and_shut_down_on_close(host):
    poller = Poller(nvml_target())
    for _ in range(3):
        await poller.poll()
    assert host.init_attempts == 1 and host.initialized == 1 and host.shutdowns == 0
    await poller.close()
    assert host.initialized == 0 and host.shutdowns == 1


async def test_a_driver_that_goes_away_fails_the_poll_and_nvml_is_started_again(host, gpus):
    await gpus.poll()
    host.initialized = 0  # the driver was unloaded: every call now answers NVML_ERROR_UNINITIALIZED
    snap = await gpus.poll()
    assert snap.up is False and snap.last_reason == "nvml_unavailable"
    assert "Uninitialized" in snap.last_error
    snap = await gpus.poll()
    assert snap.up is True and host.init_attempts == 2


# -- a call stuck in the driver ------------------------------------------------------------------


async def test_a_call_stuck_past_the_timeout_reports_timeout_and_queues_nothing_behind_it(host):
    host.gpus[3].blocks["nvmlDeviceGetPowerUsage"] = stuck = threading.Event()
    poller = Poller(nvml_target(defaults="{interval: 5s, timeout: 300ms, retries: 0}"))
    try:
        first = await poller.poll()
        assert first.up is False and first.last_reason == "timeout"
        for _ in range(3):
            later = await poller.poll()
            assert later.last_reason == "timeout"
            assert "nvmlDeviceGetPowerUsage on GPU 3 has not returned" in later.last_error
        assert later.errors == {"timeout": 4}
        assert host.called("nvmlDeviceGetPowerUsage", 3) == 1, "no call may start while one is stuck"

        stuck.set()

        async def up():
            return (await poller.poll()).up

        await wait_until(up)
        # One more sample after the stuck one, not a backlog of the skipped polls.
        assert host.called("nvmlDeviceGetPowerUsage", 3) == 2
        assert by_gpu(poller.metrics(), "gpu_power_usage_watts")[3] == 130
    finally:
        stuck.set()
        await poller.close()


async def test_closing_a_target_with_a_stuck_call_does_not_wait_for_it_and_shuts_nvml_down_after(host, monkeypatch):
    monkeypatch.setattr(nvml_source, "CLOSE_GRACE", 0.1)
    host.gpus[0].blocks["nvmlDeviceGetPowerUsage"] = stuck = threading.Event()
    poller = Poller(nvml_target(defaults="{interval: 5s, timeout: 300ms, retries: 0}"))
    assert (await poller.poll()).last_reason == "timeout"
    with capture_logs() as logs:
        await asyncio.wait_for(poller.close(), timeout=10)  # the guard only catches a close that waits on the call
    assert host.shutdowns == 0, "nvmlShutdown must not run beside a call still in the driver"
    assert any(e["event"].startswith("an NVML call is still stuck") for e in logs)
    stuck.set()
    await wait_until(lambda: host.shutdowns == 1 and host.initialized == 0)


async def get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def test_a_stuck_call_holds_up_neither_the_scrape_nor_other_targets(host, upstream, start_daemon):
    host.gpus[3].blocks["nvmlDeviceGetPowerUsage"] = release = threading.Event()
    daemon = await start_daemon(
        f"""
defaults: {{interval: 1s, timeout: 1s, retries: 0}}
targets:
  - {{name: gpu-stuck, type: nvml, devices: [3], timeout: 400ms}}
  - {{name: gpus-fine, type: nvml, devices: [0, 1]}}
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}
"""
    )
    await wait_until(
        lambda: daemon.store.get("gpu-stuck").errors.get("timeout", 0) >= 2 and daemon.store.get("gpus-fine").up
    )
    # A scrape that waited on the stuck call would never end: the guard only catches that.
    text = await asyncio.wait_for(get(daemon_url(daemon)), timeout=10)

    assert self_metric(text, "inference_exporter_target_up") == {"gpu-stuck": 0, "gpus-fine": 1, "vllm": 1}
    assert self_metric(text, "inference_exporter_target_poll_errors_total")["gpu-stuck/timeout"] >= 2
    assert by_gpu(text, "gpu_power_usage_watts") == {0: 100, 1: 110}
    assert "vllm_num_requests_running" in text
    assert host.called("nvmlDeviceGetPowerUsage", 3) == 1

    release.set()  # the driver answers at last: the target recovers by itself
    await wait_until(lambda: daemon.store.get("gpu-stuck").up, timeout=15)


# -- no driver -----------------------------------------------------------------------------------


async def test_a_missing_library_marks_the_target_down_says_so_once_and_keeps_retrying(host, upstream, start_daemon):
    host.library_missing = True
    with capture_logs() as logs:
        daemon = await start_daemon(
            f"""
defaults: {{interval: 1s, timeout: 1s, retries: 0}}
targets:
  - {{name: gpus, type: nvml, interval: 200ms}}
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}
"""
        )
        await wait_until(lambda: daemon.store.get("gpus").polls >= 6 and daemon.store.get("vllm").up is not None)
        text = await get(daemon_url(daemon))

        assert self_metric(text, "inference_exporter_target_up") == {"gpus": 0, "vllm": 1}
        errors = self_metric(text, "inference_exporter_target_poll_errors_total")
        assert set(errors) == {"gpus/nvml_unavailable"}
        assert "libnvidia-ml.so.1 not found" in daemon.store.get("gpus").last_error
        # Retried with backoff: after the 1st poll, the 2nd, the 4th, the 8th ...
        polls = daemon.store.get("gpus").polls
        assert 2 <= host.init_attempts < polls
        said = [e for e in logs if e.get("target") == "gpus" and e["log_level"] == "error"]
        assert len(said) == 1 and "libnvidia-ml.so.1" in said[0]["error"]

        host.library_missing = False  # the driver finished loading
        await wait_until(lambda: daemon.store.get("gpus").up, timeout=15)
    assert len(by_gpu(await get(daemon_url(daemon)), "gpu_info")) == 8


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("devices: []", "targets[0].devices: list should have at least 1 item"),
        ("devices: [-1]", "targets[0].devices[0]: expected a value >= 0"),
        ("devices: [1, 1]", "targets[0].devices: each GPU index may be listed once"),
        ("proceses: true", "targets[0].proceses: unknown key (did you mean 'processes'?)"),
        ("url: http://x", "targets[0].url: unknown key"),
    ],
)
def test_nvml_config_mistakes_are_named_with_their_line(fields, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"targets:\n  - name: gpus\n    type: nvml\n    {fields}\n", "gpus.yaml")
    assert str(caught.value).startswith(f"gpus.yaml:4: {message}"), str(caught.value)


async def test_pcie_throughput_can_be_turned_off_and_is_then_never_asked(host):
    poller = Poller(nvml_target(", pcie_throughput: false"))
    try:
        await poller.poll()
        text = poller.metrics()
        assert "gpu_pcie_receive_bytes_per_second" not in text and "gpu_pcie_transmit_bytes_per_second" not in text
        assert "gpu_pcie_replays_total" in text, "only the 20 ms throughput sample is skipped"
        assert not any(name == "nvmlDeviceGetPcieThroughput" for _, name in host.calls)
    finally:
        await poller.close()
