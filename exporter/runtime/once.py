"""`inference-exporter once`: poll the selected targets one time and print what /metrics would serve.

It loads what polling needs and nothing of the daemon's (web server, pages, demo, config watcher):
a user runs it to see one target's series, often on a large first poll, and waits for all of it.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

from exporter.config.loader import Config
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.collector import Collector
from exporter.serve.store import Snapshot, Store
from exporter.sources import Shared


async def poll_once(config: Config, names: list[str] | None = None) -> tuple[bytes, list[Snapshot]]:
    """Poll the selected targets once each (retries included) -> (the exposition we would serve, failed targets)."""
    selected = [t for t in config.targets if not names or t.name in names]
    store, shared = Store(), Shared()
    try:
        # Polled once: remembering the shape of each poll, for a next one, would be work for nothing.
        pollers = [TargetPoller(target, store, shared, remember=False) for target in selected]
        snapshots = await asyncio.gather(*(poller.poll() for poller in pollers))
        for poller in pollers:
            await poller.close()
    finally:
        await shared.close()
    store.config_ok, store.config_loaded_at = True, time.time()
    text = Collector(store, process_metrics=False).render()
    return text, [snap for snap in snapshots if not snap.up]


def run_once(config: Config, names: list[str] | None = None) -> int:
    """Poll, print the exposition to stdout and each failed target to stderr; 1 if any failed, else 0.

    The command's whole work, for the process to end right after: it leaves the cycle collector off."""
    # One poll, then the process ends: a cycle collection would only walk the poll's objects again and
    # again (0.18 s of a first poll of 199k samples), and the few cycles a poll leaves go at exit.
    gc.disable()
    try:
        return asyncio.run(_print_once(config, names))
    finally:
        gc.freeze()  # nor need the interpreter's last collections, at exit, walk every object it imported


async def _print_once(config: Config, names: list[str] | None) -> int:
    # Printed here rather than returned: on its way out asyncio.run compares signal handlers, and in
    # CPython 3.11 that writes the repr of the main task, its result included (twice: 0.16 s for the
    # text of a 199k-sample poll).
    text, failed = await poll_once(config, names)
    _write(text)
    for snap in failed:
        print(f"target {snap.target.name} failed: {snap.last_reason}: {snap.last_error}", file=sys.stderr)
    return 1 if failed else 0


def _write(text: bytes) -> None:
    """The exposition on stdout as it is, UTF-8 (not decoded to be encoded again)."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a stdout that takes text only (a caller's StringIO)
        sys.stdout.write(text.decode())
        return
    sys.stdout.flush()
    out.write(text)
    out.flush()
