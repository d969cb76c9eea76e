"""A config file cannot crash check-config, take minutes or gigabytes, make the daemon spin, or stop
/metrics while a reload reads it: every limit is checked before the work it bounds, and named with file:line."""

from __future__ import annotations

import asyncio

import pytest
from helpers.support import TESTDATA, daemon_url
from test_cli import command
from test_web_security import fetch

from exporter.config.loader import MAX_CONFIG_BYTES, ConfigError, load_config

#: The hostile configs, among the invalid ones whose messages tests/unit/config/test_config_invalid.py checks.
HOSTILE = sorted((TESTDATA / "config").glob("invalid-hostile-*.yml"))


def merge_bomb(depth: int) -> str:
    lines = ["x-a0: &a0 {k: 1}"] + [
        f"x-a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: 1}}" for i in range(1, depth + 1)
    ]
    return "\n".join(lines) + f"\nx-bomb: *a{depth}\ntargets: []\n"


@pytest.mark.parametrize("path", HOSTILE, ids=lambda path: path.name)
async def test_check_config_reports_each_hostile_config_as_the_loader_does_without_a_traceback(path):
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    code, out, err = await command("check-config", str(path))
    assert code == 1
    assert "Traceback" not in out + err
    assert str(caught.value) in err, out + err


async def test_check_config_refuses_a_flat_list_longer_than_the_value_limit_as_it_reads_it(tmp_path):
    path = tmp_path / "hostile.yaml"
    path.write_text("targets: [" + ",".join(["1"] * 400_000) + "]\n")  # 800 kB: made here, not kept in testdata
    code, out, err = await command("check-config", str(path))
    assert code == 1
    assert "Traceback" not in out + err
    assert f"{path}:1: invalid YAML at column " in err and "more than 50000 values in one file" in err, out + err


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
    from exporter.config.loader import parse_config
    from exporter.runtime.scheduler import TargetPoller
    from exporter.serve.store import Store
    from exporter.sources import Shared

    config = parse_config("targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/m', retries: 0}\n")
    shared = Shared()
    try:
        snapshot = await TargetPoller(config.targets[0], Store(), shared).poll(budget=0.0)
    finally:
        await shared.close()
    assert snapshot.last_reason == "timeout"
    assert "no time left" in snapshot.last_error and "-" not in snapshot.last_error.split("within")[-1]
