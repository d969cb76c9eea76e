"""Per-target relabeling in the shape of Prometheus's `metric_relabel_configs`, on every series a target serves.

Rules see each sample as it would be served: `__name__` is the served sample name (sanitized, prefixed,
with its `_total` or `_bucket`), and the labels include `target` and the target's static labels. Regexes
are fully anchored, as in Prometheus. Two guards keep one target's rules from breaking the exposition
for all: the `target` label cannot be changed or dropped, and the metric name cannot be dropped.
A family whose structure a rule breaks (a histogram missing its `+Inf` bucket) is served as untyped series.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Iterable
from typing import cast

from prometheus_client.samples import Sample as PromSample

from exporter.core.rules import LABEL_NAME, PROTECTED, RelabelConfig, anchored
from exporter.pipeline.exposition import SeriesFamily
from exporter.pipeline.normalize import (
    Assembler,
    Normalized,
    exposition_names,
    is_well_formed,
    samples_of,
    sanitize_name,
    unreserved,
)

#: Go's regexp.Expand: `$$`, `${name}` or `$name` (the longest run of word characters).
_REFERENCE = re.compile(r"\$(?:(\$)|\{(\w+)\}|(\w+))")


#: Whether a label name is a scratch label (`__tmp`), dropped after the rules as Prometheus does.
_SCRATCH = operator.methodcaller("startswith", "__")
_NAME = operator.attrgetter("name")
_LABELS = operator.attrgetter("labels")
_VALUE = operator.attrgetter("value")
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)


class _Rule:
    __slots__ = ("_source", "_target", "config", "regex")

    def __init__(self, config: RelabelConfig):
        self.config = config
        self.regex = anchored(config.regex)
        #: the one source label, when there is one (no join per sample)
        self._source = config.source_labels[0] if len(config.source_labels) == 1 else None
        #: the target label when it has no `$` to expand (the same for every sample)
        target = config.target_label or ""
        self._target = target if "$" not in target else None

    def apply(self, labels: dict[str, str]) -> bool:
        """Apply the rule to `labels` in place; False when the series is to be dropped."""
        config, regex = self.config, self.regex
        action = config.action
        if action in ("labeldrop", "labelkeep"):
            keep_matching = action == "labelkeep"
            for name in [n for n in labels if n not in PROTECTED]:
                if (regex.fullmatch(name) is not None) != keep_matching:
                    del labels[name]
            return True
        if action == "labelmap":
            for name, value in list(labels.items()):
                match = regex.fullmatch(name)
                if match is not None:
                    mapped = expand(config.replacement, match)
                    if LABEL_NAME.fullmatch(mapped) and mapped not in PROTECTED:
                        labels[mapped] = value
            return True
        if self._source is not None:
            value = labels.get(self._source, "")
        else:
            value = config.separator.join([labels.get(name, "") for name in config.source_labels])
        match = regex.fullmatch(value)
        if action == "keep":
            return match is not None
        if action == "drop":
            return match is None
        if match is not None:  # replace
            target = self._target if self._target is not None else expand(config.target_label or "", match)
            if LABEL_NAME.fullmatch(target) and target != "target":
                result = expand(config.replacement, match)
                if result:
                    labels[target] = result
                elif target != "__name__":
                    labels.pop(target, None)
        return True


def expand(template: str, match: re.Match[str]) -> str:
    """`$1`, `${1}`, `$name`, `${name}` and `$$` as Go's regexp.Expand reads them (which Prometheus uses):
    `$1x` is the group named `1x`, and a group that does not exist or did not match is empty."""

    def reference(found: re.Match[str]) -> str:
        dollar, braced, bare = found.groups()
        if dollar:
            return "$"
        name = braced or bare
        try:
            return match.group(int(name) if name.isdigit() else name) or ""
        except IndexError:  # no such group
            return ""

    return _REFERENCE.sub(reference, template)


class Relabeler:
    """A target's rules, applied to what `normalize` made; without rules it hands the series through."""

    def __init__(self, configs: Iterable[RelabelConfig]):
        self._rules = [_Rule(config) for config in configs]
        #: a relabeled `__name__` -> the name served, for one call (bounded: rules may make many names)
        self._names: dict[str, str] = {}

    def process(self, name: str, labels: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        """One series through every rule: its new name and labels, or None when a rule drops it."""
        working = {**labels, "__name__": name}
        for rule in self._rules:
            if not rule.apply(working):
                return None
        name = self._served_name(working.pop("__name__"))
        if any(map(_SCRATCH, working)):  # scratch labels, dropped as Prometheus does
            working = {label: value for label, value in working.items() if not label.startswith("__")}
        return name, working

    def _served_name(self, relabeled: str) -> str:
        name = self._names.get(relabeled)
        if name is None:
            if len(self._names) > 10_000:
                self._names.clear()
            name = self._names[relabeled] = unreserved(sanitize_name(relabeled))
        return name

    def __call__(self, normalized: Normalized) -> Normalized:
        if not self._rules:
            return normalized
        self._names = {}  # nothing is kept from one poll to the next
        assembler = Assembler()
        for family in normalized.families:
            old_names = list(map(_NAME, family.samples))
            results = list(map(self.process, old_names, map(_LABELS, family.samples)))
            values = list(map(_VALUE, family.samples))
            if None in results:  # some dropped
                kept = list(map(operator.is_not, results, itertools.repeat(None)))
                old_names, results, values = (
                    list(itertools.compress(each, kept)) for each in (old_names, results, values)
                )
            kept_results = cast("list[tuple[str, dict[str, str]]]", results)  # the dropped (None) are gone
            relabeled = samples_of(list(map(_FIRST, kept_results)), list(map(_SECOND, kept_results)), values)
            for name, kind, samples in _regroup(family, old_names, relabeled):
                series = assembler.family(name, kind, family.help, len(samples))
                if series is not None:
                    labels = map(_LABELS, samples)
                    assembler.add(
                        series, samples, list(zip(map(_NAME, samples), map(frozenset, map(dict.items, labels))))
                    )
        return assembler.result(normalized.dropped)


def _regroup(
    family: SeriesFamily, old_names: list[str], samples: list[PromSample]
) -> list[tuple[str, str, list[PromSample]]]:
    """Where a family's relabeled samples belong: the family itself, the family under a new name when
    every sample was renamed alike (`foo_bucket` -> `bar_bucket`, `foo_sum` -> `bar_sum`), or else one
    untyped family per sample name. A histogram or summary that lost its shape is split the same way."""
    if not samples:
        return []
    name = family.name
    if not set(map(_NAME, samples)) <= set(exposition_names(name, family.type)):
        bases = set()
        for old, sample in zip(old_names, samples):
            suffix = old[len(name) :]
            bases.add(sample.name[: len(sample.name) - len(suffix)] if sample.name.endswith(suffix) else None)
        base = bases.pop() if len(bases) == 1 else None
        if base is None or not LABEL_NAME.fullmatch(base):
            return _untyped(family, samples)
        name = base
    if not is_well_formed(name, family.type, samples):
        return _untyped(family, samples)
    return [(name, family.type, samples)]


def _untyped(family: SeriesFamily, samples: list[PromSample]) -> list[tuple[str, str, list[PromSample]]]:
    by_name: dict[str, list[PromSample]] = {}
    for sample in samples:
        by_name.setdefault(sample.name, []).append(sample)
    return [(name, "unknown", group) for name, group in by_name.items()]
