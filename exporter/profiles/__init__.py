"""Backend profiles: one data file per backend saying where it keeps each concept of the unified vocabulary.

The YAML files beside this module are read and checked once, on first use. A profile names upstream
metrics as the backend spells them (`vllm:num_requests_running`), lists a backend's current name before
the deprecated one it replaced, and says how a payload is recognised (`detect`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from exporter.family_filter import anchored

DIRECTORY = Path(__file__).parent
#: `profile: none` in a target's config: no unified series for it.
NONE = "none"


@dataclass(frozen=True)
class Concept:
    """One unified family: its type, how samples that land on the same series combine, and its HELP."""

    type: Literal["gauge", "counter", "histogram"]
    help: str
    #: Gauges only: `sum` for counts (several engines or ranks add up), `max` for a ratio (the fullest one).
    combine: Literal["sum", "max"] = "sum"


#: The vocabulary, in the order it is served. Names are before the configured prefix.
CONCEPTS: dict[str, Concept] = {
    "requests_running": Concept("gauge", "Requests the backend is processing now (in its running batch)."),
    "requests_waiting": Concept("gauge", "Requests queued in the backend, waiting to be scheduled."),
    "kv_cache_usage_ratio": Concept(
        "gauge", "Share of the KV cache in use, 0 to 1 (the fullest engine or rank when there are several).", "max"
    ),
    "prefix_cache_hit_tokens_total": Concept("counter", "Prompt tokens found in the prefix cache."),
    "prefix_cache_query_tokens_total": Concept("counter", "Prompt tokens looked up in the prefix cache."),
    "time_to_first_token_seconds": Concept("histogram", "Time from a request's arrival to its first output token."),
    "inter_token_latency_seconds": Concept("histogram", "Time between consecutive output tokens of a request."),
    "e2e_request_latency_seconds": Concept("histogram", "Time from a request's arrival to its last output token."),
    "request_queue_time_seconds": Concept("histogram", "Time a request waited in the queue before it was scheduled."),
    "prompt_tokens_total": Concept("counter", "Prompt (prefill) tokens processed."),
    "generation_tokens_total": Concept("counter", "Output tokens generated."),
    "requests_finished_total": Concept(
        "counter", "Requests finished, by outcome: success, abort (cancelled) or error."
    ),
}
FINISHED = "requests_finished_total"
#: Upstream units a profile may convert from, with what to divide by to reach the base unit.
UNITS = {"milliseconds": 1e3, "microseconds": 1e6}


class ProfileError(Exception):
    """A profile file that cannot be used; the message names the file and the key."""


class Source(BaseModel):
    """Where one concept's samples come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The upstream name as the backend spells it. For counters, without `_total`: both spellings are read.
    metric: str
    #: Only samples with these label values (`request_type: active`).
    match: dict[str, str] = Field(default_factory=dict)
    #: The upstream unit when it is not the base unit; values (and histogram bounds) are converted.
    unit: Literal["milliseconds", "microseconds"] | None = None
    #: `sum`: a histogram's `_sum`, read as a counter (a token total where the backend keeps no counter).
    part: Literal["sum"] | None = None
    #: Gauges only: subtract this upstream gauge (a backend that counts its queue inside its in-flight total).
    minus: str | None = None
    #: requests_finished_total only: the outcome of every sample, or the upstream label that says it ...
    outcome: str | None = None
    outcome_label: str | None = None
    #: ... with the label's values renamed into the vocabulary (`stop: success`); others pass as they are.
    outcomes: dict[str, str] = Field(default_factory=dict)

    @property
    def divisor(self) -> float:
        return UNITS[self.unit] if self.unit else 1.0


class AllOf(BaseModel):
    """Several sources that together make one concept (successes from one counter, errors from another)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    all: list[Source] = Field(min_length=1)


Choice = Union[Source, AllOf]  # noqa: UP007 - a pydantic union


class Profile(BaseModel):
    """One backend: how to recognise it and where each concept lives. `name` is the `backend` label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    description: str
    #: Detection tries profiles in this order (lower first): an engine before the runtime that wraps it.
    priority: int
    #: Fully anchored regexes over family names; a payload with any such family is this backend's.
    detect: list[str] = Field(min_length=1)
    #: The upstream label that names the model; without one, the target's `model:` is used.
    model_label: str | None = None
    #: Concept -> the choices in order of preference: the first one present in a payload is used, alone.
    series: dict[str, list[Choice]]

    @field_validator("detect")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                anchored(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _sources_fit_concepts(self) -> "Profile":
        for concept_name, choices in self.series.items():
            concept = CONCEPTS.get(concept_name)
            if concept is None:
                raise ValueError(f"series.{concept_name}: not a concept; expected one of: {', '.join(CONCEPTS)}")
            for source in (s for choice in choices for s in sources_of(choice)):
                _check_source(concept_name, concept, source)
        return self

    def detects(self, name: str) -> bool:
        return any(pattern.fullmatch(name) for pattern in _compiled(tuple(self.detect)))


def sources_of(choice: Choice) -> list[Source]:
    return choice.all if isinstance(choice, AllOf) else [choice]


def _check_source(concept_name: str, concept: Concept, source: Source) -> None:
    where = f"series.{concept_name} ({source.metric})"
    finished = concept_name == FINISHED
    if finished != (source.outcome is not None or source.outcome_label is not None):
        raise ValueError(f"{where}: outcome or outcome_label is for {FINISHED}, and it needs one")
    if source.outcome is not None and source.outcome_label is not None:
        raise ValueError(f"{where}: set outcome or outcome_label, not both")
    if source.part is not None and concept.type != "counter":
        raise ValueError(f"{where}: part: sum makes a counter, but this concept is a {concept.type}")
    if source.minus is not None and concept.type != "gauge":
        raise ValueError(f"{where}: minus is for gauges")
    if source.unit is not None and concept.type == "counter":
        raise ValueError(f"{where}: unit conversion is for gauges and histograms")


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(anchored(pattern) for pattern in patterns)


@functools.lru_cache(maxsize=1)
def profiles() -> tuple[Profile, ...]:
    """Every profile shipped, in detection order."""
    found: dict[str, tuple[Profile, Path]] = {}
    for path in sorted(DIRECTORY.glob("*.yaml")):
        profile = load_profile(path)
        if profile.name in found:
            raise ProfileError(f"{path}: profile name {profile.name!r} is already used by {found[profile.name][1]}")
        found[profile.name] = (profile, path)
    return tuple(sorted((profile for profile, _ in found.values()), key=lambda p: (p.priority, p.name)))


def load_profile(path: Path) -> Profile:
    """Read and check one profile file; ProfileError says which file and key are wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: {exc}") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'top level'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ProfileError(f"{path}: {problems}") from None


def names() -> list[str]:
    """The values `profile:` accepts."""
    return [profile.name for profile in profiles()] + [NONE]


def by_name(name: str) -> Profile:
    return next(profile for profile in profiles() if profile.name == name)


def detect(family_names: list[str]) -> Profile | None:
    """The first profile, in priority order, that recognises any of these family names."""
    for profile in profiles():
        if any(profile.detects(name) for name in family_names):
            return profile
    return None
