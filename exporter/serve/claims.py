"""Which family is served under a name when targets disagree: one rule, decided by the set of what the
targets declare and never by the order their polls arrive in, and never costing a target anything but
its own clashing family.

Two families clash when they share an exposition name but not their name and type: a gauge and a
counter `x`, or a histogram `x` and a gauge `x_bucket`. Families of one target never clash (normalize
keeps one type per name within a poll). Across targets, each declaration, a (name, type) and the
targets that serve it, is ranked:

1. a typed family before an untyped one: untyped never wins over a typed declaration;
2. the vocabulary's type for a name it knows: a unified family's own (`requests_running`, a gauge),
   and a backend family a profile reads, as the profile reads it (`vllm:num_requests_running`, a gauge);
3. the declaration more targets make;
4. a fixed type order: histogram, summary, gaugehistogram, counter, gauge, info, stateset;
5. the name, alphabetically.

Declarations are taken in rank order and each is served unless it clashes with one served already.
A declaration that is not served is withheld from the targets that made it, and only from them: each
keeps every other family, and the withheld one is counted by reason, logged once and shown on the
target's page. The rank depends on the declarations alone, so the same targets' families give the
same served output whatever order they were published in, and `once` and `run` agree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from exporter.pipeline.normalize import exposition_names, served_base
from exporter.profiles import CONCEPTS, profiles, sources_of

#: A declaration: a served family name and its served type (`unknown` for untyped).
Key = tuple[str, str]

#: Families that own suffixed names first: a lone `x_bucket` or `x_count` most likely came from one.
TYPE_ORDER = ("histogram", "summary", "gaugehistogram", "counter", "gauge", "info", "stateset", "unknown")
_TYPE_RANK = {kind: rank for rank, kind in enumerate(TYPE_ORDER)}

#: Why a target's family is withheld, by the first rank step that put the served one ahead of it.
REASONS = ("untyped", "vocabulary", "outnumbered", "tie_break")


@dataclass(frozen=True, slots=True)
class Withheld:
    """One of a target's families that is not served, why, and the declaration served in its place."""

    family: str
    type: str
    reason: str
    served: Key


@lru_cache(maxsize=64)
def vocabulary(prefix: str) -> dict[str, frozenset[str]]:
    """Served names under this prefix -> the types the vocabulary gives them: each unified family its
    own, and each backend family a profile reads the type the profile reads it as (a histogram concept,
    or a counter made of a `_sum`, reads a histogram or a summary)."""
    types: dict[str, set[str]] = defaultdict(set)
    for name, concept in CONCEPTS.items():
        types[served_base(name, concept.type, prefix)].add(concept.type)
    for profile in profiles():
        for concept_name, choices in profile.series.items():
            concept = CONCEPTS[concept_name]
            for source in (source for choice in choices for source in sources_of(choice)):
                summed = concept.type == "histogram" or source.part == "sum"
                for kind in ("histogram", "summary") if summed else (concept.type,):
                    types[served_base(source.metric, kind, prefix)].add(kind)
                if source.minus:
                    types[served_base(source.minus, "gauge", prefix)].add("gauge")
    return {name: frozenset(kinds) for name, kinds in types.items()}


class Claims:
    """Every target's declarations and the rule's outcome, kept up to date one target at a time.

    A target's declarations change rarely (it comes up, goes down, an upstream adds a family), and a
    change is settled within the clashes it touches: the declarations connected to it by shared
    exposition names, usually just itself."""

    def __init__(self) -> None:
        self._keys: dict[str, frozenset[Key]] = {}
        self._prefixes: dict[str, str] = {}
        self._declarers: dict[Key, set[str]] = {}
        #: exposition name -> the declarations that use it
        self._users: dict[str, set[Key]] = {}
        #: declaration not served -> (reason, the declaration served in its place)
        self._lost: dict[Key, tuple[str, Key]] = {}
        #: every prefix some declaring target has (usually one): whose vocabularies a name is looked up in
        self._prefixes_used: set[str] = set()
        #: target -> family name -> Withheld; each target's map is replaced, never changed in place
        self.withheld: dict[str, dict[str, Withheld]] = {}

    def declare(self, target: str, keys: Iterable[Key], prefix: str = "") -> set[str]:
        """Set what `target` serves now (nothing: it is down or gone) -> the targets whose withheld
        families changed."""
        new = frozenset(keys)
        old = self._keys.get(target, frozenset())
        dirty: set[Key] = set()
        if prefix != self._prefixes.get(target, prefix):
            dirty |= old  # the vocabulary rank of everything it declares may change
        self._prefixes[target] = prefix
        for key in old - new:
            declarers = self._declarers[key]
            declarers.discard(target)
            dirty.add(key)
            if not declarers:
                del self._declarers[key]
                for name in exposition_names(*key):
                    users = self._users[name]
                    users.discard(key)
                    dirty |= users  # its neighbours may be served now
                    if not users:
                        del self._users[name]
        for key in new - old:
            holders = self._declarers.get(key)
            if holders is None:
                holders = self._declarers[key] = set()
                for name in exposition_names(*key):
                    self._users.setdefault(name, set()).add(key)
            holders.add(target)
            dirty.add(key)
        if new:
            self._keys[target] = new
        else:
            self._keys.pop(target, None)
            self._prefixes.pop(target, None)
        self._prefixes_used = set(self._prefixes.values())
        affected = {target} | self._settle(dirty)
        changed = set()
        for name in affected:
            withheld = self._withheld_of(name)
            if withheld != self.withheld.get(name, {}):
                changed.add(name)
                if withheld:
                    self.withheld[name] = withheld
                else:
                    self.withheld.pop(name, None)
        return changed

    def declarers(self, key: Key) -> list[str]:
        """The targets that serve this declaration, by name."""
        return sorted(self._declarers.get(key, ()))

    def _withheld_of(self, target: str) -> dict[str, Withheld]:
        out = {}
        for key in self._keys.get(target, ()):
            lost = self._lost.get(key)
            if lost is not None:
                out[key[0]] = Withheld(key[0], key[1], lost[0], lost[1])
        return out

    def _settle(self, dirty: set[Key]) -> set[str]:
        """Apply the rule again to the clashes the dirty declarations are part of -> the targets whose
        declarations changed from served to withheld, or back, or to another reason."""
        changed: set[Key] = set()
        seen: set[Key] = set()
        for start in dirty:
            if start in seen:
                continue
            if start not in self._declarers:  # gone: it may have been withheld
                seen.add(start)
                if self._lost.pop(start, None) is not None:
                    changed.add(start)
                continue
            component = self._component(start)
            seen |= component
            changed |= self._decide(component)
        return {target for key in changed for target in self._declarers.get(key, ())}

    def _component(self, start: Key) -> set[Key]:
        """The declarations linked to `start` by shared exposition names, directly or through others."""
        component, todo = {start}, [start]
        while todo:
            key = todo.pop()
            for name in exposition_names(*key):
                for other in self._users.get(name, ()):
                    if other not in component:
                        component.add(other)
                        todo.append(other)
        return component

    def _decide(self, component: set[Key]) -> set[Key]:
        """Serve the component's declarations in rank order, each unless it clashes with one served
        already -> the declarations whose outcome changed."""
        outcome: dict[Key, tuple[str, Key] | None] = {}
        if len(component) > 1:
            ranks = {key: self._rank(key) for key in component}
            taken: dict[str, Key] = {}
            for key in sorted(component, key=ranks.__getitem__):
                names = exposition_names(*key)
                blockers = [taken[name] for name in names if name in taken]
                if blockers:
                    winner = min(blockers, key=ranks.__getitem__)
                    outcome[key] = (self._reason(ranks[key], ranks[winner]), winner)
                else:
                    taken.update(dict.fromkeys(names, key))
                    outcome[key] = None
        else:
            outcome = dict.fromkeys(component)
        changed = set()
        for key, lost in outcome.items():
            if self._lost.get(key) != lost:
                changed.add(key)
                if lost is None:
                    del self._lost[key]
                else:
                    self._lost[key] = lost
        return changed

    def _rank(self, key: Key) -> tuple:
        name, kind = key
        declarers = self._declarers[key]
        prefixes = [prefix for prefix in self._prefixes_used if kind in vocabulary(prefix).get(name, ())]
        unified = bool(prefixes) and any(self._prefixes.get(target, "") in prefixes for target in declarers)
        return (kind == "unknown", not unified, -len(declarers), _TYPE_RANK.get(kind, len(TYPE_ORDER)), name, kind)

    @staticmethod
    def _reason(lost: tuple, won: tuple) -> str:
        for reason, lost_step, won_step in zip(REASONS[:3], lost, won):
            if lost_step != won_step:
                return reason
        return REASONS[3]
