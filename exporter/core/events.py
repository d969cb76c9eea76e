"""The last few log events of each target, for its debugging page (/targets/<name>).

A structlog processor copies every event that names a target into a small ring per target, debug
events included whatever the log level, so that the page shows the retries and repeated failures
the log leaves out. The cost is one dict copy per targeted event; events without a target pass
straight through.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, MutableMapping
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

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """The structlog processor: place it after `add_log_level` and before any level filter."""
        target = event_dict.get("target")
        if isinstance(target, str):
            ring = self._rings.get(target)
            if ring is None:
                if len(self._rings) >= MAX_TARGETS:
                    return event_dict
                ring = self._rings[target] = deque(maxlen=self.keep)
            fields = {key: value for key, value in event_dict.items() if key not in _OWN_KEYS}
            ring.append(
                Event(time.time(), event_dict.get("level", method_name), str(event_dict.get("event", "")), fields)
            )
        return event_dict

    def recent(self, target: str) -> list[Event]:
        return list(self._rings.get(target, ()))

    def forget(self, target: str) -> None:
        self._rings.pop(target, None)


#: The process's one ring set: structlog's configuration is process-wide too.
EVENTS = TargetEvents()
