"""A config file cannot crash check-config, take minutes or gigabytes, make the daemon spin, or stop
/metrics while a reload reads it: every limit is checked before the work it bounds, and named with file:line."""

from __future__ import annotations

import asyncio

import pytest

from conftest import daemon_url
from exporter.config import MAX_CONFIG_BYTES, MAX_DEPTH, ConfigError, load_config
from test_cli import command
from test_web_security import fetch

TARGET = '  - {name: a, type: http, url: "http://h/m"'


def merge_bomb(depth: int) -> str:
    lines = ["x-a0: &a0 {k: 1}"] + [f"x-a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: 1}}" for i in range(1, depth + 1)]
    return "\n".join(lines) + f"\nx-bomb: *a{depth}\ntargets: []\n"


HOSTILE = {
    "nested lists": ("targets: " + "[" * 1000 + "]" * 1000 + "\n", f"nested deeper than {MAX_DEPTH} levels", 1),
    "nested mappings": ("targets:\n  - " + "{a: " * 1000 + "1" + "}" * 1000 + "\n", "nested deeper", 2),
    "nested regex groups": (
        f'targets:\n{TARGET}, allow_families: ["' + "(" * 1500 + "x" + ")" * 1500 + '"]}\n', "nested too deeply", 2
    ),
    "long regex": (f'targets:\n{TARGET}, deny_families: ["' + "a" * 5000 + '"]}\n', "at most 4096", 2),
    "400-digit body_size_limit": (f"targets:\n{TARGET}, body_size_limit: {'9' * 400}}}\n", "body_size_limit", 2),
    "400-digit size string": (f'targets:\n{TARGET}, body_size_limit: "{"9" * 400}MiB"}}\n', "below 2^63 bytes", 2),
    "400-digit sample_limit": (f"targets:\n{TARGET}, sample_limit: {'9' * 400}}}\n", "sample_limit", 2),
    "tiny interval": ("defaults: {interval: 0.0000001ms}\ntargets: []\n", "from 1ms", 1),
    "interval under 100ms": (f"targets:\n{TARGET}, interval: 50ms}}\n", "interval must be at least 100ms", 2),
    "timeout under 10ms": (f"targets:\n{TARGET}, timeout: 1ms}}\n", "timeout must be at least 10ms", 2),
    "400-digit duration": (f"defaults: {{interval: {'9' * 400}s}}\ntargets: []\n", "at most", 1),
    "merge keys inside merge keys": (merge_bomb(22), "expands to more than", 1),
    "a flat list of a million": ("targets: [" + ",".join(["1"] * 400_000) + "]\n", "values in one file", 1),
}


@pytest.mark.parametrize("case", HOSTILE)
async def test_check_config_names_every_hostile_config_with_its_line_and_no_traceback(case, tmp_path):
    text, expected, line = HOSTILE[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    code, out, err = await command("check-config", str(path))
    assert code == 1
    assert "Traceback" not in out + err
    assert f"{path}:{line}: " in out + err and expected in out + err, out + err


def test_a_config_larger_than_the_limit_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("targets: []\n" + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)


async def test_metrics_keep_answering_while_a_reload_reads_a_slow_config(start_daemon, tmp_path):
    daemon = await start_daemon("targets: []\n")
    daemon.config_path.write_text(merge_bomb(15) + "\n".join(f"x-{i}: [{','.join(['1'] * 40)}]" for i in range(600)))
    reload = asyncio.create_task(daemon.reload())
    answered = 0
    while not reload.done():
        status = (await fetch(daemon_url(daemon)))[0]
        assert status == 200
        answered += 1
    assert await reload is False
    assert answered >= 2, "/metrics answered while the reload ran"


async def test_a_poll_with_no_time_left_fails_as_a_timeout_without_a_negative_one():
    from exporter.config import parse_config
    from exporter.scheduler import TargetPoller
    from exporter.sources import Shared
    from exporter.store import Store

    config = parse_config("targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/m', retries: 0}\n")
    shared = Shared()
    try:
        snapshot = await TargetPoller(config.targets[0], Store(), shared).poll(budget=0.0)
    finally:
        await shared.close()
    assert snapshot.last_reason == "timeout"
    assert "no time left" in snapshot.last_error and "-" not in snapshot.last_error.split("within")[-1]
