"""The latest immutable snapshot of every target, swapped whole on each poll.

Polls write here and scrapes read here; a scrape never waits on a target. The store also keeps
one type per family name across targets (exporter.serve.claims), so that the merged exposition stays valid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import structlog

from exporter.pipeline.exposition import SeriesFamily
from exporter.serve.claims import Claims, Withheld
from exporter.sources.base import TargetConfig

log = structlog.get_logger("exporter.serve.store")


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
    #: What the last successful poll's families held for `explain` (an exporter.pipeline.unify.Reading): the
    #: target's page explains that poll from it, when asked.
    reading: Any = None

    @property
    def sample_count(self) -> int:
        return sum(len(family.samples) for family in self.families)

    def replaced(self, **changes: Any) -> Snapshot:
        """This snapshot with these fields changed, as `dataclasses.replace` makes it, in a third of the
        time: each field set through its slot, not through the frozen dataclass's `__init__` and its
        `object.__setattr__` per field (a poll makes one)."""
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError(f"Snapshot has no field {', '.join(sorted(unknown))}")
        made = _new(Snapshot)
        for name, set_field, get_field in _SLOTS:
            set_field(made, changes[name] if name in changes else get_field(self))
        return made


_FIELD_NAMES = frozenset(field.name for field in fields(Snapshot))
#: Each field's name, and its slot's setter and getter, in order.
_SLOTS = tuple((f.name, vars(Snapshot)[f.name].__set__, vars(Snapshot)[f.name].__get__) for f in fields(Snapshot))
_new = object.__new__


class Store:
    """Target name -> latest Snapshot. Insertion order is the order targets were added.

    A snapshot holds the families its poll made. Where targets disagree about a family, what each
    serves is decided by exporter.serve.claims: `served` gives a target's families less any withheld."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self.claims = Claims()
        #: target -> (its snapshot's families, its withheld map, the families served) from the last `served`
        self._served: dict[str, tuple[tuple[SeriesFamily, ...], dict, tuple[SeriesFamily, ...]]] = {}
        self._reported: set[tuple[str, str, str]] = set()
        #: Whether the last config (re)load succeeded, and when one last did.
        self.config_ok = True
        self.config_loaded_at: float | None = None
        #: Called with every snapshot published, as served (`served_snapshot`), on the event loop (the
        #: overview's windows); must not raise.
        self.observers: list[Callable[[Snapshot], None]] = []

    def publish(self, snapshot: Snapshot) -> Snapshot:
        """Replace a target's snapshot, and settle again which families it and the others serve."""
        name = snapshot.target.name
        old = self._snapshots.get(name)
        self._snapshots[name] = snapshot
        prefix = getattr(snapshot.target, "prefix", None) or ""
        if not (
            old is not None
            and (old.families is snapshot.families or _same_names(old.families, snapshot.families))
            and prefix == (getattr(old.target, "prefix", None) or "")
        ):  # unless the same names and types as last poll (a target's usual poll): settle again
            changed = self.claims.declare(name, [(family.name, family.type) for family in snapshot.families], prefix)
            self._say(changed)
        served = self.served_snapshot(name)
        assert served is not None  # published just above
        self._tell(served)
        return snapshot

    def served_snapshot(self, name: str) -> Snapshot | None:
        """The target's snapshot as /metrics serves it: its families less any withheld (for observers,
        which must not show what /metrics does not serve)."""
        snapshot = self._snapshots.get(name)
        if snapshot is None or not self.claims.withheld.get(name):
            return snapshot
        return snapshot.replaced(families=self.served(name))

    def _tell(self, snapshot: Snapshot) -> None:
        for observe in self.observers:
            try:
                observe(snapshot)
            except Exception:  # an observer's bug must not fail a poll
                log.exception("snapshot observer failed", target=snapshot.target.name)

    def remove(self, name: str) -> None:
        self._snapshots.pop(name, None)
        self._served.pop(name, None)
        self._say(self.claims.declare(name, ()))
        self._reported = {said for said in self._reported if said[0] != name}

    def get(self, name: str) -> Snapshot | None:
        return self._snapshots.get(name)

    def snapshots(self) -> list[Snapshot]:
        return list(self._snapshots.values())

    def withheld(self, name: str) -> dict[str, Withheld]:
        """The target's families not served now, by name (see exporter.serve.claims)."""
        return self.claims.withheld.get(name, {})

    def served(self, name: str) -> tuple[SeriesFamily, ...]:
        """The families this target serves: its snapshot's, less any withheld."""
        snapshot = self._snapshots.get(name)
        if snapshot is None:
            return ()
        withheld = self.claims.withheld.get(name)
        if not withheld:
            return snapshot.families
        cached = self._served.get(name)
        if cached is None or cached[0] is not snapshot.families or cached[1] is not withheld:
            kept = tuple(family for family in snapshot.families if family.name not in withheld)
            cached = self._served[name] = (snapshot.families, withheld, kept)
        return cached[2]

    def served_families(self) -> list[tuple[SeriesFamily, ...]]:
        """Every target's served families, in the order targets were added."""
        return [self.served(name) for name in self._snapshots]

    def _say(self, targets: set[str]) -> None:
        """Log each family a target has withheld for the first time."""
        for target in sorted(targets):
            for family in self.withheld(target).values():
                said = (target, family.family, family.type)
                if said in self._reported:
                    continue
                self._reported.add(said)
                served_by = self.claims.declarers(family.served)
                log.warning(
                    "family withheld: another target serves a clashing family of that name",
                    target=target,
                    family=family.family,
                    type=family.type,
                    reason=family.reason,
                    served_family=family.served[0],
                    served_type=family.served[1],
                    served_by=served_by[:5],
                    served_by_count=len(served_by),
                )


def _same_names(old: tuple[SeriesFamily, ...], new: tuple[SeriesFamily, ...]) -> bool:
    """Whether two polls' families have the same names and types, in order (a target's usual poll)."""
    return len(old) == len(new) and all(a.name == b.name and a.type == b.type for a, b in zip(old, new))
