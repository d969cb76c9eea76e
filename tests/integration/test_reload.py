"""Live reload: file changes (a Kubernetes ConfigMap's symlink swap included), SIGHUP and listen changes.

The daemon here watches its config file as `run` does; the tests only ever edit files or send
signals, and look at what a scrape of /metrics shows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest
import structlog
from helpers.support import daemon_url, free_port, is_up, wait_until

from exporter.config.loader import load_config
from exporter.runtime.daemon import Daemon

#: How often the tests' daemons look at their config file (the default is 1s).
WATCH = 0.1


class ConfigMap:
    """A directory laid out as the kubelet lays out a ConfigMap volume, updated the way it updates one.

    `config.yaml -> ..data/config.yaml`, `..data -> ..<version>`; an update writes a new version
    directory and renames a new `..data` link over the old one, then deletes the old directory.
    """

    def __init__(self, root: Path, text: str):
        self.root = root
        self.version = 0
        root.mkdir()
        self.update(text)
        (root / "config.yaml").symlink_to("..data/config.yaml")

    @property
    def path(self) -> Path:
        return self.root / "config.yaml"

    def update(self, text: str) -> None:
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        self.version += 1
        version = self.root / f"..2024_01_01_00_00_{self.version:02d}.{os.getpid()}"
        version.mkdir()
        (version / "config.yaml").write_text(text)
        (self.root / "..data_tmp").symlink_to(version.name)
        os.rename(self.root / "..data_tmp", self.root / "..data")
        if old is not None:
            for file in (self.root / old).iterdir():
                file.unlink()
            (self.root / old).rmdir()

    def edit_in_place(self, text: str) -> None:
        """What a person editing the file on a hostPath would do: the same file, new content."""
        self.path.write_text(text)


@pytest.fixture
async def watched_daemon():
    """Start a Daemon on a config file it watches, as `run` does; closed at the end of the test."""
    daemons: list[Daemon] = []

    async def start(path: Path, **kwargs) -> Daemon:
        kwargs.setdefault("listen", f"127.0.0.1:{free_port()}")
        daemon = Daemon(load_config(path), config_path=path, watch_interval=WATCH, **kwargs)
        await daemon.start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        await daemon.close()


def targets_yaml(upstream, *extra: str) -> str:
    lines = [f'  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", interval: 500ms}}', *extra]
    return "defaults: {interval: 500ms, retries: 0}\ntargets:\n" + "\n".join(lines) + "\n"


def series_of(text: str, target: str) -> set[str]:
    """The series (name and labels, not values) a scrape shows for one target, the exporter's own left out."""
    return {
        line.rpartition(" ")[0]
        for line in text.splitlines()
        if f'target="{target}"' in line and not line.startswith(("#", "inference_exporter_"))
    }


class Scraper:
    """Scrapes /metrics back to back, as an impatient Prometheus would, noting every scrape that misses a series."""

    def __init__(self, url: str, target: str, expected: set[str]):
        self.url, self.target, self.expected = url, target, expected
        self.scrapes = 0
        self.misses: list[set[str]] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Scraper:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(self.url) as response:
                    served = series_of(await response.text(), self.target)
                self.scrapes += 1
                if served != self.expected:
                    self.misses.append(self.expected - served)
                await asyncio.sleep(0.02)


async def scrape(daemon, path: str = "/metrics") -> str:
    async with aiohttp.ClientSession() as session, session.get(daemon_url(daemon, path)) as response:
        return await response.text()


async def test_edits_and_configmap_swaps_never_cost_a_healthy_target_a_series(upstream, watched_daemon, tmp_path):
    sglang = f'  - {{name: sglang, type: http, url: "{upstream.url}/simulated/sglang"}}'
    tgi = f'  - {{name: tgi, type: http, url: "{upstream.url}/simulated/tgi", labels: {{pool: a}}}}'
    tgi_changed = tgi.replace("pool: a", "pool: b")
    configmap = ConfigMap(tmp_path / "configmap", targets_yaml(upstream, tgi))
    since = time.time()
    daemon = await watched_daemon(configmap.path)
    await wait_until(lambda: all(snap.up for snap in daemon.store.snapshots()))
    baseline = series_of(await scrape(daemon), "vllm")
    assert len(baseline) > 100
    started = lambda: [e for e in daemon.events.recent("vllm") if e.message == "target started" and e.time >= since]  # noqa: E731
    assert len(started()) == 1

    async with Scraper(daemon_url(daemon), "vllm", baseline) as scraper:
        configmap.edit_in_place(targets_yaml(upstream, tgi, sglang))  # add
        await wait_until(lambda: daemon.store.get("sglang") is not None and daemon.store.get("sglang").up)

        configmap.edit_in_place(targets_yaml(upstream, tgi))  # remove
        await wait_until(lambda: daemon.store.get("sglang") is None)
        assert 'target="sglang"' not in await scrape(daemon)

        configmap.edit_in_place(targets_yaml(upstream, tgi_changed))  # change
        await wait_until(lambda: daemon.store.get("tgi").target.labels == {"pool": "b"} and daemon.store.get("tgi").up)
        await wait_until(lambda: _has(scrape(daemon), 'pool="b",target="tgi"'))

        with structlog.testing.capture_logs() as logs:
            configmap.edit_in_place(targets_yaml(upstream, tgi_changed) + "  - {name: broken, type: http\n")  # break
            await wait_until(lambda: not daemon.store.config_ok)
        failure = next(event for event in logs if event["event"] == "config reload failed, keeping the running config")
        assert any(error.startswith(f"{configmap.path}:") for error in failure["errors"])
        assert "inference_exporter_config_last_reload_successful 0.0" in await scrape(daemon)
        assert {snap.target.name for snap in daemon.store.snapshots()} == {"vllm", "tgi"}

        configmap.edit_in_place(targets_yaml(upstream, tgi_changed))  # fix
        await wait_until(lambda: daemon.store.config_ok)

        configmap.update(targets_yaml(upstream, tgi_changed, sglang))  # the kubelet's symlink swap
        await wait_until(lambda: daemon.store.get("sglang") is not None and daemon.store.get("sglang").up)
        assert "inference_exporter_config_last_reload_successful 1.0" in await scrape(daemon)
        await asyncio.sleep(0.3)  # a few more scrapes after the last reload

    print(f"{scraper.scrapes} scrapes through 6 reloads, {len(scraper.misses)} missed a series")
    assert scraper.scrapes > 20
    assert scraper.misses == []
    assert len(started()) == 1, "the unchanged target was never restarted"


async def _has(response, text: str) -> bool:
    return text in await response


async def test_sighup_reloads_the_config(upstream, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(targets_yaml(upstream))
    daemon = Daemon(load_config(path), config_path=path, listen=f"127.0.0.1:{free_port()}", watch_interval=None)
    running = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: is_up(daemon.store, "vllm"))
        path.write_text(targets_yaml(upstream, f'  - {{name: tgi, type: http, url: "{upstream.url}/simulated/tgi"}}'))
        await asyncio.sleep(2 * WATCH)
        assert daemon.store.get("tgi") is None, "this daemon does not watch the file: only the signal reloads"

        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(lambda: is_up(daemon.store, "tgi"))
    finally:
        daemon.stop()
        await asyncio.wait_for(running, 10)


async def test_a_changed_listen_address_is_applied_without_a_restart(upstream, watched_daemon, tmp_path):
    first, second = free_port(), free_port()
    path = tmp_path / "config.yaml"
    path.write_text(f"listen: 127.0.0.1:{first}\n" + targets_yaml(upstream))
    daemon = await watched_daemon(path, listen=None)
    assert daemon.bound[0][1] == first

    path.write_text(f"listen: 127.0.0.1:{second}\n" + targets_yaml(upstream))
    await wait_until(lambda: daemon.listen == f"127.0.0.1:{second}")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{second}/healthz") as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{first}/healthz")
    assert daemon.store.config_ok


async def test_a_listen_address_that_cannot_be_bound_keeps_the_old_one_and_says_so(upstream, watched_daemon, tmp_path):
    port = free_port()
    path = tmp_path / "config.yaml"
    path.write_text(f"listen: 127.0.0.1:{port}\n" + targets_yaml(upstream))
    daemon = await watched_daemon(path, listen=None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with structlog.testing.capture_logs() as logs:
            path.write_text(f"listen: 127.0.0.1:{taken.getsockname()[1]}\n" + targets_yaml(upstream))
            await wait_until(lambda: not daemon.store.config_ok)
    refusal = next(event for event in logs if event["event"].startswith("cannot listen on the config's new address"))
    assert refusal["running"] == f"127.0.0.1:{port}" and refusal["log_level"] == "error"
    assert "inference_exporter_config_last_reload_successful 0.0" in await scrape(daemon)


async def test_the_listen_flag_outranks_the_configs_listen_on_reload(upstream, watched_daemon, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(targets_yaml(upstream))
    daemon = await watched_daemon(path)
    bound = daemon.bound
    path.write_text(f"listen: 127.0.0.1:{free_port()}\n" + targets_yaml(upstream))
    await wait_until(lambda: daemon.config.listen != "127.0.0.1:9898")
    assert daemon.bound == bound and daemon.store.config_ok
