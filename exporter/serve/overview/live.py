"""The Overview a web app holds: windows fed by the store on every publish, and reports over them, cached."""

from __future__ import annotations

import json
import time
from typing import Any

from exporter.config.overview import OverviewSettings
from exporter.serve.overview.report import report
from exporter.serve.overview.windows import Windows
from exporter.serve.store import Store


class Overview:
    """The overview of one store: windows fed by its publishes, reports cached for the second they are made in."""

    def __init__(self, store: Store, settings: OverviewSettings | None = None, *, spacing: float | None = None):
        self.store = store
        self.windows = Windows(settings, spacing=spacing)
        for name in [snapshot.target.name for snapshot in store.snapshots()]:
            if (served := store.served_snapshot(name)) is not None:  # always: the name was just listed
                self.windows.observe(served)
        store.observers.append(self.windows.observe)
        #: (window, wall-clock second, polls seen) -> the report as JSON; streams in the same second share one.
        self._encoded: dict[tuple[float, int, int], bytes] = {}
        #: Stream clients connected now.
        self.streams = 0

    @property
    def settings(self) -> OverviewSettings:
        return self.windows.settings

    def configure(self, settings: OverviewSettings) -> None:
        """A reloaded config's settings; the points kept so far stay."""
        self.windows.configure(settings)
        self._encoded.clear()

    def report(self, window: float | None = None, now: float | None = None) -> dict[str, Any]:
        self.windows.forget({snapshot.target.name for snapshot in self.store.snapshots()})
        return report(self.windows, self.settings.window if window is None else window, now)

    def encoded(self, window: float) -> bytes:
        """The report as compact JSON (one line, as a server-sent event needs), made at most once a second per
        window unless a poll came in meanwhile."""
        second = int(time.time())
        key = (window, second, self.windows.version)
        data = self._encoded.get(key)
        if data is None:
            self._encoded = {k: v for k, v in self._encoded.items() if k[1] == second}
            data = self._encoded[key] = json.dumps(
                self.report(window), separators=(",", ":"), ensure_ascii=False
            ).encode()
        return data
