"""The daemon's lifecycle: start the web server and the pollers, reload on SIGHUP, stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client.exposition import generate_latest

from exporter.collector import Collector, registry_for
from exporter.config import Config, ConfigError, load_config, parse_listen
from exporter.fields import format_duration
from exporter.demo import DEMO_TARGET, DemoBackend
from exporter.scheduler import Scheduler, TargetPoller
from exporter.sources import Shared, TargetConfig
from exporter.sources.http import HTTPTarget
from exporter.store import Snapshot, Store
from exporter.systemd import Notifier
from exporter.web import build_app

log = structlog.get_logger("exporter.daemon")

#: How long in-flight requests get to finish when the daemon stops.
SHUTDOWN_GRACE = 2.0
#: The demo backend is polled at least this often, so that a newcomer sees the numbers move.
DEMO_INTERVAL = 2.0


class Daemon:
    def __init__(self, config: Config, *, config_path: Path | None, listen: str | None = None, demo: bool = False):
        self.config = config
        self.config_path = config_path
        self.listen = listen or config.listen
        self.store = Store()
        self.shared = Shared()
        self.scheduler = Scheduler(self.store, self.shared)
        self.registry = registry_for(Collector(self.store))
        self.demo = DemoBackend() if demo else None
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._started = False
        self.bound: list[tuple] = []
        self.notifier = Notifier.from_environment()

    def targets(self, config: Config) -> list[TargetConfig]:
        """The config's targets, plus the simulated backend when running as a demo."""
        targets = list(config.targets)
        if self.demo is not None and self.demo.url:
            defaults = config.defaults
            interval = min(defaults.interval, DEMO_INTERVAL)
            targets.append(
                HTTPTarget(
                    name=DEMO_TARGET, type="http", url=self.demo.url, labels={"demo": "true"},
                    interval=format_duration(interval), timeout=format_duration(min(defaults.timeout, interval)),
                    retries=defaults.retries, backoff=format_duration(defaults.backoff), prefix=config.prefix,
                )
            )
        return targets

    async def start(self) -> None:
        if self.demo is not None:
            await self.demo.start()
        self._runner = web.AppRunner(
            build_app(self.store, self.registry, is_ready=lambda: self._started),
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE,
        )
        await self._runner.setup()
        host, port = parse_listen(self.listen)
        await web.TCPSite(self._runner, host or None, port).start()
        self.bound = list(self._runner.addresses)
        self.store.config_ok, self.store.config_loaded_at = True, time.time()
        await self.scheduler.apply(self.targets(self.config))
        self._started = True
        log.info(
            "inference-exporter started",
            listen=self.listen, config=str(self.config_path) if self.config_path else None,
            targets=len(self.scheduler.targets),
        )
        self.notifier.ready(f"serving on {self.listen}, polling {len(self.scheduler.targets)} targets")
        self.notifier.start_watchdog()

    async def reload(self) -> bool:
        """Load the config file again; a bad file keeps the running config and says why."""
        if self.config_path is None:
            return False
        self.notifier.reloading()
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            self.store.config_ok = False
            log.error("config reload failed, keeping the running config", errors=[str(issue) for issue in exc.issues])
            self.notifier.ready(f"config reload failed, kept the running config; polling {len(self.scheduler.targets)} targets")
            return False
        if config.listen != self.config.listen:
            log.warning(
                "the listen address changed in the config; it is applied at the next restart",
                running=self.listen, configured=config.listen,
            )
        self.config = config
        await self.scheduler.apply(self.targets(config))
        self.store.config_ok, self.store.config_loaded_at = True, time.time()
        log.info("config reloaded", targets=len(self.scheduler.targets))
        self.notifier.ready(f"config reloaded; serving on {self.listen}, polling {len(self.scheduler.targets)} targets")
        return True

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        await self.notifier.stopping()
        await self.scheduler.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.shared.close()
        if self.demo is not None:
            await self.demo.stop()
        self.notifier.close()
        log.info("inference-exporter stopped")

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP reloads the config."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.create_task(self.reload()))
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.close()


async def poll_once(config: Config, names: list[str] | None = None) -> tuple[bytes, list[Snapshot]]:
    """Poll the selected targets once each (retries included) -> (the exposition we would serve, failed targets)."""
    selected = [t for t in config.targets if not names or t.name in names]
    store, shared = Store(), Shared()
    try:
        pollers = [TargetPoller(target, store, shared) for target in selected]
        snapshots = await asyncio.gather(*(poller.poll() for poller in pollers))
        for poller in pollers:
            await poller.close()
    finally:
        await shared.close()
    store.config_ok, store.config_loaded_at = True, time.time()
    text = generate_latest(registry_for(Collector(store, process_metrics=False)))
    return text, [snap for snap in snapshots if not snap.up]
