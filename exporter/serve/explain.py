"""Why a target's unified series are what they are: which profile matched and why, and for each concept of
the vocabulary the upstream series it came from, or why it is missing. The first thing an operator asks
when a dashboard panel is empty (`inference-exporter explain --config FILE --target NAME`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from exporter import profiles
from exporter.core.family import Family
from exporter.pipeline.family_filter import family_filter
from exporter.pipeline.target import families_of
from exporter.pipeline.unify import (
    Reading,
    _compute,
    _DefaultModel,
    _primary_names,
    _sample_names,
    _SampleIndex,
    _wanted_names,
)
from exporter.profiles import CONCEPTS, Profile, sources_of
from exporter.sources import Shared, SourceError, TargetConfig, create_source


@dataclass(frozen=True)
class ConceptReport:
    concept: str
    #: "served", "unmapped" (the profile names no source), "absent" (none of its sources is in the payload)
    #: or "empty" (a source is there, but yields no usable series).
    state: str
    #: What it came from, or why it is missing, in a sentence.
    detail: str
    series: int = 0


@dataclass(frozen=True)
class Explanation:
    target: str
    profile: str | None
    #: How the profile was chosen, in a sentence.
    why: str
    concepts: list[ConceptReport] = field(default_factory=list)

    def as_dict(self) -> dict:
        """For JSON: the target, the profile and why, and per concept its state, detail and series."""
        return asdict(self)

    def text(self) -> str:
        lines = [f"target {self.target}: profile {self.profile or '(none)'}", f"  {self.why}"]
        if self.concepts:
            width = max(len(report.concept) for report in self.concepts)
            for report in self.concepts:
                mark = {"served": "+", "unmapped": " ", "absent": "-", "empty": "!"}[report.state]
                lines.append(f"{mark} {report.concept:{width}}  {report.detail}")
        return "\n".join(lines) + "\n"


def explain(target: TargetConfig, families: list[Family]) -> Explanation:
    """The explanation for one poll's families (as parsed, before they are unified)."""
    keep = family_filter(target.allow_families, target.deny_families)
    if keep is not None:
        families = [family for family in families if keep(family.name)]
    names = tuple(family.name for family in families if family.samples)
    return explain_reading(target, Reading(names), lambda profile: _SampleIndex(families, _wanted_names(profile)))


def explain_reading(
    target: TargetConfig, reading: Reading, index_for: Callable[[Profile], _SampleIndex] | None = None
) -> Explanation:
    """The explanation for a poll as the poller kept it (exporter.pipeline.unify.Reading: the names of its
    families with samples, after the family filter, and the samples its profile read). `index_for`
    makes the samples a profile reads where the reading has none for it."""
    extra = target.operator_profiles
    if target.profile == profiles.NONE:
        return Explanation(target.name, None, "profile: none in the config: no unified series for this target")
    names = list(reading.names)
    profile: Profile | None
    if target.profile:
        profile = profiles.by_name(target.profile, extra)
        why = f"profile: {target.profile} is set in the config (detection is not tried)"
    else:
        profile, matched = profiles.detection(names, extra)
        if profile is None:
            tried = ", ".join(p.name for p in profiles.catalog(extra))
            return Explanation(
                target.name,
                None,
                f"no profile detected: none of the {len(names)} families with samples matches the detect patterns of {tried}; "
                "set profile: on the target, or write a profile (profile_files:)",
            )
        pattern = next(p for p in profile.detect if profiles._compiled((p,))[0].fullmatch(matched or ""))
        earlier = [p.name for p in profiles.catalog(extra) if (p.priority, p.name) < (profile.priority, profile.name)]
        why = (
            f"detected: family {matched!r} matches {pattern!r} of profile {profile.name} (priority {profile.priority})"
        )
        if earlier:
            why += f"; no family matched the profiles tried before it ({', '.join(earlier)})"
    if reading.index is not None and reading.profile == profile.name:
        index = reading.index
    elif index_for is not None:
        index = index_for(profile)
    else:
        index = _SampleIndex((), frozenset())  # the poll read nothing for this profile
    return Explanation(target.name, profile.name, why, concepts(profile, index, target.model))


def explain_snapshot(snap) -> Explanation | None:
    """The explanation of a target's last successful poll (an exporter.serve.store.Snapshot), None before one."""
    if snap.reading is None:
        return None
    return explain_reading(snap.target, snap.reading)


def concepts(profile: Profile, index: _SampleIndex, model: str | None) -> list[ConceptReport]:
    """Each concept of the vocabulary: where it comes from in these samples, or why it is missing."""
    reports = []
    for name, concept in CONCEPTS.items():
        choices = profile.series.get(name, [])
        if not choices:
            reports.append(ConceptReport(name, "unmapped", f"profile {profile.name} maps no upstream series to it"))
            continue
        skipped = []
        for number, choice in enumerate(choices, 1):
            sources = sources_of(choice)
            present = [s for s in sources if index.has(s, concept)]
            if not present:
                skipped.append(" + ".join(s.metric for s in sources))
                continue
            family = _compute(name, concept, sources, index, profile, _DefaultModel(index, profile, model))
            series = len({tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")) for s in family.samples})
            read = ", ".join(sorted({name for s in present for name in _names_found(s, concept, index)}))
            where = f"choice {number} of {len(choices)}" + (
                f"; not in the payload: {'; '.join(skipped)}" if skipped else ""
            )
            if family.samples:
                reports.append(ConceptReport(name, "served", f"{series} series from {read} ({where})", series))
            else:
                reports.append(
                    ConceptReport(
                        name,
                        "empty",
                        f"{read} is in the payload but yields no usable series (no matching labels, no +Inf bucket, "
                        f"or values that are not numbers) ({where})",
                    )
                )
            break
        else:
            wanted = "; ".join(
                " or ".join(_primary_names(s, concept)) for choice in choices for s in sources_of(choice)
            )
            reports.append(ConceptReport(name, "absent", f"not in the payload: {wanted}"))
    return reports


def _names_found(source, concept, index: _SampleIndex) -> list[str]:
    """The upstream names a source was read from, as written: a histogram by its name, a counter by the
    spelling found (with or without `_total`), and what a gauge is multiplied by or less."""
    if concept.type == "histogram" and not source.count:
        return [source.metric]
    return [name for name in _sample_names(source, concept) if index.samples(name, source.match)] or [source.metric]


async def poll_and_explain(target: TargetConfig) -> Explanation:
    """Poll the target once (no retries) and explain what its families become. SourceError if the poll fails."""
    shared = Shared()
    source = create_source(target, shared)
    try:
        async with asyncio.timeout(target.timeout or 10.0):
            payload = await source.poll()
    except TimeoutError:
        raise SourceError("timeout", f"no answer within {target.timeout or 10.0:.3g}s") from None
    finally:
        await source.close()
        await shared.close()
    return explain(target, families_of(payload))
