"""The latest immutable snapshot of every target, swapped whole on each poll.

Polls write here and scrapes read here; a scrape never waits on a target. The store also keeps
one type per family name across targets, so that the merged exposition stays valid.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Mapping

import structlog

from exporter.normalize import SeriesFamily, exposition_names
from exporter.sources.base import TargetConfig

log = structlog.get_logger("exporter.store")



@dataclass(frozen=True, slots=True)
class Snapshot:
    """One target as of its last poll. `up` is None until the first poll has finished."""

    target: TargetConfig
    families: tuple[SeriesFamily, ...] = ()
    up: bool | None = None
    last_poll: float | None = None
    last_duration: float | None = None
    last_success: float | None = None
    last_error: str = ""
    last_reason: str = ""
    next_poll: float | None = None
    polls: int = 0
    retries: int = 0
    errors: Mapping[str, int] = field(default_factory=dict)
    dropped: Mapping[str, int] = field(default_factory=dict)
    #: The start of the last body a poll received (an error page too), and when it came.
    raw: bytes = b""
    raw_at: float | None = None
    #: The backend profile the last successful poll used for the unified series, if any.
    profile: str | None = None
    #: Polls whose payload's sample lines did not match its declared families, by reason; and the
    #: last successful poll's problems (reason -> sample lines concerned) and Content-Type.
    problems: Mapping[str, int] = field(default_factory=dict)
    last_problems: Mapping[str, int] = field(default_factory=dict)
    content_type: str = ""

    @property
    def sample_count(self) -> int:
        return sum(len(family.samples) for family in self.families)


class Store:
    """Target name -> latest Snapshot. Insertion order is the order targets were added."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        #: exposition name -> (owning family name, its type, how many targets serve that family)
        self._claims: dict[str, tuple[str, str, int]] = {}
        #: target -> families dropped for a type conflict, summed over polls
        self.type_conflicts: Counter[str] = Counter()
        self._reported: set[tuple[str, str]] = set()
        #: Whether the last config (re)load succeeded, and when one last did.
        self.config_ok = True
        self.config_loaded_at: float | None = None
        #: /metrics scrapes served so far: until the first, pollers deflate for gzip scrapes unasked.
        self.scrapes = 0

    def publish(self, snapshot: Snapshot) -> Snapshot:
        """Replace a target's snapshot. Families whose type clashes with another target's are dropped."""
        name = snapshot.target.name
        old = self._snapshots.get(name)
        if old is not None and (old.families is snapshot.families or _same_names(old.families, snapshot.families)):
            # The same families, or new ones of the same names and types, all of which were kept last
            # time: this target already holds every name they need.
            self._snapshots[name] = snapshot
            return snapshot
        if old is not None:
            self._release(old.families)
        kept = self._claim(name, snapshot.families)
        if len(kept) != len(snapshot.families):
            snapshot = replace(snapshot, families=kept)
        self._snapshots[name] = snapshot
        return snapshot

    def remove(self, name: str) -> None:
        old = self._snapshots.pop(name, None)
        self.type_conflicts.pop(name, None)
        self._reported = {pair for pair in self._reported if pair[0] != name}
        if old is not None:
            self._release(old.families)

    def get(self, name: str) -> Snapshot | None:
        return self._snapshots.get(name)

    def snapshots(self) -> list[Snapshot]:
        return list(self._snapshots.values())

    def _claim(self, target: str, families: tuple[SeriesFamily, ...]) -> tuple[SeriesFamily, ...]:
        kept = []
        for family in families:
            owner = (family.name, family.type)
            names = exposition_names(*owner)
            clash = next((claim for name in names if (claim := self._claims.get(name)) and claim[:2] != owner), None)
            if clash is not None:
                self.type_conflicts[target] += 1
                if (target, family.name) not in self._reported:
                    self._reported.add((target, family.name))
                    log.warning(
                        "family conflicts with another target's family of another type; dropping it here",
                        target=target, family=family.name, type=family.type, kept_family=clash[0], kept_type=clash[1],
                    )
                continue
            for name in names:
                count = self._claims.get(name, (*owner, 0))[2]
                self._claims[name] = (*owner, count + 1)
            kept.append(family)
        return tuple(kept)

    def _release(self, families: tuple[SeriesFamily, ...]) -> None:
        for family in families:
            for name in exposition_names(family.name, family.type):
                *owner, count = self._claims[name]
                if count <= 1:
                    del self._claims[name]
                else:
                    self._claims[name] = (*owner, count - 1)


def _same_names(old: tuple[SeriesFamily, ...], new: tuple[SeriesFamily, ...]) -> bool:
    """Whether two polls' families have the same names and types, in order (a target's usual poll)."""
    return len(old) == len(new) and all(a.name == b.name and a.type == b.type for a, b in zip(old, new))
