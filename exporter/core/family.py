"""The values that flow from a source to the store: metric families as an upstream exposed them.

Parsing and the non-HTTP sources produce these; `normalize` turns them into what we serve.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import cast

#: Family types as the exposition formats name them. The classic text format says
#: `untyped` where OpenMetrics says `unknown`; both are accepted and mean the same.
TYPES = frozenset(
    {"counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset", "gaugehistogram"}
)


@dataclass(slots=True)
class Sample:
    """One sample line: the full sample name (with any `_bucket`, `_total` ... suffix), labels, value.

    Timestamps and exemplars are dropped when parsed: an exporter must not pass them on. `labels` may
    be shared with the parser's cache and other polls' samples: read them, never change them in place.
    """

    name: str
    labels: dict[str, str]
    value: float
    #: The series as the upstream wrote it (`name{labels}`), when the parser has it: a cheap identity
    #: that lets later stages reuse their per-series work from one poll to the next.
    key: str | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Family:
    """One metric family: the name from its TYPE line (or its sample's name when untyped)."""

    name: str
    type: str = "untyped"
    help: str = ""
    unit: str = ""
    samples: list[Sample] = field(default_factory=list)
    #: The family with its values left out (name, type, HELP, unit, each sample's series), when the
    #: parser already had it from an earlier body, or a stage has worked it out this poll (exporter.pipeline.conform,
    #: for the template stage that follows): see `shape_of`.
    shape: tuple | None = field(default=None, compare=False, repr=False)


def shape_of(family: Family) -> tuple:
    """Everything about a family but its sample values: two polls whose families have equal shapes
    differ in values alone, so what was made from the first can be made again with the second's values.

    A parsed family's series are kept as a digest of their text as the upstream wrote them, not the text
    itself: a target's shapes are remembered for as long as it serves the same series, and the text
    would double what that costs."""
    if family.shape is not None:
        return family.shape
    keys = [sample.key for sample in family.samples]
    if None in keys:
        # A family a stage made (the unified vocabulary's): few series, kept as they are.
        return (
            family.name,
            family.type,
            family.help,
            family.unit,
            tuple(key or (sample.name, *sample.labels.items()) for key, sample in zip(keys, family.samples)),
        )
    # No key holds a newline (a key is one line's series): joined, they read back one way.
    series = hashlib.blake2b("\n".join(cast("list[str]", keys)).encode(), digest_size=16).digest()  # no None here
    return (family.name, family.type, family.help, family.unit, len(keys), series)
