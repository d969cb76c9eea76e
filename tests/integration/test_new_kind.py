"""A new target kind is one module and one line in the kind registry, nothing else.

`helpers.file_kind` is such a module, written for this test only: `type: file` reads exposition text
from a file. With the one registry line below, the config reads it (its mistakes said with file:line),
the daemon polls it, its pipeline unifies and serves its series, a failure of it is counted and
contained like any other target's, and its secret is hidden by its type alone."""

from __future__ import annotations

import aiohttp
import pytest
from helpers.file_kind import FileTarget
from helpers.support import daemon_url, simulated, wait_until

from exporter.config.loader import ConfigError, parse_config
from exporter.sources import KINDS, Kind

SECRET = "file-kind-passphrase-0451"


@pytest.fixture
def file_kind(monkeypatch):
    """The one registry line (here undone after the test)."""
    monkeypatch.setitem(KINDS, "file", Kind("helpers.file_kind:FileTarget", "helpers.file_kind:FileSource"))


def test_without_its_registry_line_the_kind_is_unknown(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_config("targets:\n  - {name: f, type: file, path: /x}\n", "config.yaml")
    assert "config.yaml:2: targets[0].type: unknown target type 'file'" in str(caught.value)


def test_the_config_reads_the_kind_and_says_where_it_is_wrong(file_kind, tmp_path):
    body = tmp_path / "metrics.prom"
    body.write_bytes(b"x 1\n")
    config = parse_config(f"targets:\n  - {{name: f, type: file, path: {body}}}\n", "config.yaml")
    target = config.targets[0]
    assert isinstance(target, FileTarget) and target.path == body
    text = "targets:\n  - name: f\n    type: file\n    pathh: /x\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.yaml")
    errors = str(caught.value).splitlines()
    assert "config.yaml:2: targets[0]: missing required key 'path'" in errors
    assert any(line.startswith("config.yaml:4: targets[0].pathh: unknown key") and "path" in line for line in errors)


async def test_the_daemon_polls_unifies_and_serves_it_beside_the_others(file_kind, tmp_path, start_daemon):
    good, gone = tmp_path / "vllm.prom", tmp_path / "gone.prom"
    good.write_bytes(simulated("vllm"))
    daemon = await start_daemon(
        "defaults: {interval: 200ms, timeout: 150ms, retries: 0}\n"
        "targets:\n"
        f"  - {{name: engine, type: file, path: {good}, passphrase: {SECRET}}}\n"
        f"  - {{name: broken, type: file, path: {gone}}}\n"
    )
    await wait_until(lambda: all(snapshot.up is not None for snapshot in daemon.store.snapshots()))
    async with aiohttp.ClientSession() as session:
        async with session.get(daemon_url(daemon)) as response:
            text = await response.text()
        assert 'inference_exporter_target_up{target="engine"} 1.0' in text
        assert 'inference_exporter_target_up{target="broken"} 0.0' in text
        assert 'inference_exporter_target_poll_errors_total{reason="read",target="broken"}' in text
        # the upstream's own series, named and labelled as every target's are, and the unified ones
        assert any(
            line.startswith("vllm_num_requests_running{") and 'target="engine"' in line for line in text.splitlines()
        )
        assert 'backend="vllm"' in text
        # a new body is a new poll: the kind's series follow the file
        good.write_bytes(simulated("vllm").replace(b"vllm:num_requests_running", b"vllm:num_requests_runnin"))

        async def renamed() -> bool:
            async with session.get(daemon_url(daemon)) as response:
                return "vllm_num_requests_runnin{" in await response.text()

        await wait_until(renamed)
        pages = [
            daemon_url(daemon, path) for path in ("/targets", "/targets/engine", "/api/targets", "/api/targets/engine")
        ]
        for page in pages:
            async with session.get(page) as response:
                assert response.status == 200
                assert SECRET not in await response.text()
    engine = daemon.config.targets[0]
    assert isinstance(engine, FileTarget) and str(engine.passphrase) == "<secret>"
    assert SECRET not in str(daemon.config.targets[0].redacted())
