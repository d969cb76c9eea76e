"""The last few log events of each target, for its debugging page (/targets/<name>).

A structlog processor (`record`) copies every event that names a target into a small ring per
target, debug events included whatever the log level, so that the page shows the retries and
repeated failures the log leaves out. The cost is one dict copy per targeted event; events without
a target pass straight through.

There is no process-wide ring: each daemon makes its own `TargetEvents` and hands it to its
scheduler and its web app. structlog's configuration is process-wide, so the processor finds the
ring in the context of the work that logs (a context variable that the scheduler and each poller
set, which asyncio tasks and the ingest threads inherit): two daemons in one process keep their
events apart, and work outside any daemon (`once`) records nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

#: Events kept per target.
KEEP = 50
#: Rings kept at most, so that a bug logging arbitrary target names cannot grow memory without end.
MAX_TARGETS = 10_000
#: Keys every event has, shown in their own columns rather than among the fields.
_OWN_KEYS = frozenset({"event", "level", "target", "timestamp"})


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    level: str
    message: str
    fields: Mapping[str, Any]


class TargetEvents:
    """Target name -> its most recent events, oldest first."""

    def __init__(self, keep: int = KEEP):
        self.keep = keep
        self._rings: dict[str, deque[Event]] = {}

    def add(self, target: str, method_name: str, event_dict: Mapping[str, Any]) -> None:
        ring = self._rings.get(target)
        if ring is None:
            if len(self._rings) >= MAX_TARGETS:
                return
            ring = self._rings[target] = deque(maxlen=self.keep)
        fields = {key: value for key, value in event_dict.items() if key not in _OWN_KEYS}
        ring.append(Event(time.time(), event_dict.get("level", method_name), str(event_dict.get("event", "")), fields))

    @contextlib.contextmanager
    def recording(self) -> Iterator[TargetEvents]:
        """Within this block (and in the tasks and ingest work started from it), targets' events come here."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    @property
    def is_recording(self) -> bool:
        """Whether targets' events come here now (within `recording`, or in a task started there)."""
        return _CURRENT.get() is self

    def recent(self, target: str) -> list[Event]:
        return list(self._rings.get(target, ()))

    def forget(self, target: str) -> None:
        self._rings.pop(target, None)


#: The rings of the daemon whose work is running: set by `TargetEvents.recording`, inherited by tasks.
_CURRENT: ContextVar[TargetEvents | None] = ContextVar("target_events", default=None)


def record(logger: object, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The structlog processor: place it after `add_log_level` and before any level filter."""
    target = event_dict.get("target")
    if isinstance(target, str):
        events = _CURRENT.get()
        if events is not None:
            events.add(target, method_name, event_dict)
    return event_dict
