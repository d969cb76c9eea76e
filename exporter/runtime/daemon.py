"""The daemon's lifecycle: start the web server and the pollers, reload on SIGHUP, stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from exporter.config.loader import Config, ConfigError, load_config, parse_listen
from exporter.config.web import WebSecurity
from exporter.core import compression
from exporter.core.events import TargetEvents
from exporter.core.fields import format_duration
from exporter.core.watch import FileWatch
from exporter.format import accel
from exporter.runtime.release import HeapTrim, limit_arenas
from exporter.runtime.scheduler import Scheduler
from exporter.runtime.systemd import Notifier
from exporter.serve.collector import Collector
from exporter.serve.listener import Guard, GuardedRunner, GuardedSite
from exporter.serve.overview.live import Overview
from exporter.serve.store import Store
from exporter.serve.web import build_app
from exporter.sources import Shared, TargetConfig
from exporter.sources.http import HTTPTarget

if TYPE_CHECKING:
    from exporter.runtime.demo import Demo

log = structlog.get_logger("exporter.runtime.daemon")

#: How long in-flight requests get to finish when the daemon stops.
SHUTDOWN_GRACE = 2.0
#: The demo backends are polled at least this often, so that a newcomer sees the numbers move.
DEMO_INTERVAL = 2.0
#: How often the config file is checked for a change (a stat, nothing more).
WATCH_INTERVAL = 1.0


#: Allocations between young-generation garbage collections (CPython's default is 700). A poll of a
#: large target allocates hundreds of thousands of short-lived objects that reference counting frees
#: at once; at the default, the collector also walks the long-lived per-series caches over and over,
#: a large share of the CPU of ingesting a large payload (bench/ingest.py; the figure is in
#: docs/performance.md). Cycles are still collected.
GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collection() -> None:
    """Collect cycles less often: the daemon's garbage is almost all freed by reference counting."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(GC_YOUNG_THRESHOLD, young), middle, old)


class ListenError(Exception):
    """The daemon cannot serve where it was told to: said in one line, with the address."""


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None,
        listen: str | None = None,
        demo: bool = False,
        web_security: WebSecurity | None = None,
        watch_interval: float | None = WATCH_INTERVAL,
    ):
        self.config = config
        self.config_path = config_path
        self.listen = listen or config.listen
        #: A --listen flag outranks the config's listen, on reloads too.
        self._listen_fixed = listen is not None
        self.web_security = web_security
        self._watch = (
            FileWatch(config_path, watch_interval, also=self._profile_paths)
            if config_path is not None and watch_interval
            else None
        )
        self._watcher: asyncio.Task | None = None
        #: Gives the C heap's free pages back after load (see exporter.runtime.release).
        self.heap = HeapTrim()
        self._trimmer: asyncio.Task | None = None
        self._reloading = asyncio.Lock()
        self._site: web.TCPSite | None = None
        self.store = Store()
        self.shared = Shared()
        #: Each target's recent log events, for its page: this daemon's own, shared with no other.
        self.events = TargetEvents()
        self.scheduler = Scheduler(self.store, self.shared, self.events)
        #: The listening side's connection cap and header deadline; a reload changes its limits in place.
        self.guard = Guard(config.server)
        self.collector = Collector(self.store, listener=self.guard)
        self.overview = Overview(self.store, config.overview)
        self.demo: Demo | None = None
        if demo:  # the simulated backends and prometheus_client's servers: imported for a demo only
            from exporter.runtime.demo import Demo

            self.demo = Demo()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._started = False
        self.bound: list[tuple] = []
        self.notifier = Notifier.from_environment()

    def _profile_paths(self) -> list[str]:
        """The profile files the running config names: a change to one reloads the config, as its own does."""
        from exporter.config.profile_files import expand

        if not self.config.profile_files or self.config_path is None:
            return []
        return [path for _, _, paths in expand(self.config.profile_files, str(self.config_path)) for path in paths]

    def targets(self, config: Config) -> list[TargetConfig]:
        """The config's targets, plus one per simulated backend when running as a demo."""
        targets = list(config.targets)
        if self.demo is not None:
            defaults = config.defaults
            interval = min(defaults.interval, DEMO_INTERVAL)
            for name, url in self.demo.urls.items():
                targets.append(
                    # As a config file would give them: durations as text, read by the fields' validators.
                    HTTPTarget.model_validate(
                        {
                            "name": name,
                            "type": "http",
                            "url": url,
                            "labels": {"demo": "true"},
                            "model": self.demo.model_of(name),
                            "interval": format_duration(interval),
                            "timeout": format_duration(min(defaults.timeout, interval)),
                            "retries": defaults.retries,
                            "backoff": format_duration(defaults.backoff),
                            "prefix": config.prefix,
                        }
                    )
                )
        return targets

    async def start(self) -> None:
        tune_garbage_collection()
        limit_arenas()
        if self.demo is not None:
            await self.demo.start()
        self._runner = GuardedRunner(
            build_app(
                self.store,
                self.collector,
                is_ready=lambda: self._started,
                security=self.web_security,
                events=self.events,
                overview=self.overview,
            ),
            guard=self.guard,
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE,
        )
        await self._runner.setup()
        try:
            self._site = await self._serve(self.listen)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            log.error("cannot listen", listen=self.listen, error=reason)
            raise ListenError(f"cannot listen on {self.listen}: {reason}") from None
        self.store.config_ok, self.store.config_loaded_at = True, time.time()
        await self.scheduler.apply(self.targets(self.config))
        self._started = True
        if self._watch is not None:
            self._watcher = asyncio.create_task(self._watch.run(self.reload), name="watch config")
        if self.heap.available:
            self._trimmer = asyncio.create_task(self.heap.run(), name="give memory back")
        log.info(
            "inference-exporter started",
            listen=self.listen,
            tls=self.web_security is not None and self.web_security.tls,
            config=str(self.config_path) if self.config_path else None,
            targets=len(self.scheduler.targets),
            accelerator=accel.IMPLEMENTATION,
            **({"accelerator_off": accel.WHY_PYTHON} if accel.WHY_PYTHON else {}),
            zlib=compression.BACKEND,
        )
        self.notifier.ready(f"serving on {self.listen}, polling {len(self.scheduler.targets)} targets")
        self.notifier.start_watchdog()

    async def _serve(self, listen: str) -> web.TCPSite:
        host, port = parse_listen(listen)
        ssl_context = self.web_security.server_ssl() if self.web_security is not None else None
        runner = self._runner
        assert runner is not None  # set up by start() before anything is served
        site = GuardedSite(runner, host or None, port, ssl_context=ssl_context)
        await site.start()
        self.bound = list(runner.addresses)
        return site

    async def reload(self) -> bool:
        """Load the config file again (SIGHUP, or the file changed); a bad file keeps the running config and says why."""
        if self.config_path is None:
            return False
        async with self._reloading:  # a signal and a file change at once: one after the other
            self.notifier.reloading()
            reloaded = False
            try:
                reloaded = await self._reload()
            finally:  # systemd must not be left thinking we are still reloading
                state = "config reloaded" if reloaded else "config reload failed, kept the running config"
                self.notifier.ready(f"{state}; serving on {self.listen}, polling {len(self.scheduler.targets)} targets")
            return reloaded

    async def _reload(self) -> bool:
        if self._watch is not None:
            self._watch.mark()
        try:
            # Off the event loop: a large or crafted file must not stop /metrics while it is read.
            assert self.config_path is not None  # reload() returns first without one
            config = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            self.store.config_ok = False
            log.error("config reload failed, keeping the running config", errors=[str(issue) for issue in exc.issues])
            return False
        listened = await self._apply_listen(config.listen)
        self.guard.limits = config.server
        self.config = config
        self.overview.configure(config.overview)
        await self.scheduler.apply(self.targets(config))
        self.store.config_ok = listened
        if listened:
            self.store.config_loaded_at = time.time()
        log.info("config reloaded", targets=len(self.scheduler.targets))
        return listened

    async def _apply_listen(self, listen: str) -> bool:
        """Move to a changed listen address: bind the new one first, then let the old go. False if it cannot bind."""
        if self._listen_fixed:
            if listen != self.config.listen:
                log.info(
                    "the config's listen address changed; --listen overrides it", running=self.listen, configured=listen
                )
            return True
        if listen == self.listen or self._site is None:
            return True
        try:
            site = await self._serve(listen)
        except OSError as exc:
            log.error(
                "cannot listen on the config's new address; still serving on the old one",
                running=self.listen,
                configured=listen,
                error=exc.strerror or str(exc),
            )
            return False
        old, self._site = self._site, site
        await old.stop()
        self.bound = list(self._runner.addresses) if self._runner is not None else []
        log.info("listen address changed", old=self.listen, new=listen)
        self.listen = listen
        return True

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        await self.notifier.stopping()
        for task in (self._watcher, self._trimmer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
        reloads: set[asyncio.Task] = set()  # referenced until done, so that a reload is never collected midway

        def on_sighup() -> None:
            task = asyncio.create_task(self.reload(), name="reload on SIGHUP")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if reloads:  # a reload under way when told to stop (SIGTERM right after SIGHUP) finishes first
                _, late = await asyncio.wait(set(reloads), timeout=SHUTDOWN_GRACE)
                for task in late:
                    task.cancel()
                await asyncio.gather(*reloads, return_exceptions=True)
            await self.close()
