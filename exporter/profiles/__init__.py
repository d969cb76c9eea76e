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
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from exporter.core.rules import anchored

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
    "requests_preempted_total": Concept(
        "counter", "Requests evicted from the running batch (preempted, retracted) to be recomputed or resumed later."
    ),
    "kv_cache_capacity_tokens": Concept(
        "gauge", "Tokens the KV cache holds when full (summed over engines and ranks)."
    ),
    "requests_running_limit": Concept(
        "gauge", "Most requests the backend runs at once (its max_num_seqs, maximum batch size or slots)."
    ),
    "speculative_draft_tokens_total": Concept("counter", "Tokens proposed by speculative decoding's draft."),
    "speculative_accepted_tokens_total": Concept(
        "counter", "Draft tokens of speculative decoding the target model accepted."
    ),
    "request_prefill_time_seconds": Concept(
        "histogram", "Time a request spent in prefill, from being scheduled to its first token."
    ),
    "request_decode_time_seconds": Concept(
        "histogram", "Time a request spent decoding, from its first token to its last."
    ),
    "request_time_per_output_token_seconds": Concept(
        "histogram", "A request's mean time per output token after its first: one observation per request."
    ),
}
FINISHED = "requests_finished_total"
#: The outcomes `requests_finished_total` promises.
OUTCOMES = ("success", "abort", "error")
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
    #: `sum` / `count`: a histogram's `_sum` or `_count`, read as a counter (a token total where the backend
    #: keeps no counter; finished requests from a latency histogram's count).
    part: Literal["sum", "count"] | None = None
    #: Histograms only: `metric` is a counter of the total of the values observed and `count` the counter of
    #: observations (Triton's default `nv_inference_request_duration_us` / `nv_inference_request_success`):
    #: a histogram with its `+Inf` bucket only, whose mean is all it says.
    count: str | None = None
    #: Gauges only: multiply by this upstream gauge, matched by its own labels (blocks times tokens per block).
    times: Factor | None = None
    #: Gauges only: the value is the product of these labels' values (an `_info` gauge's `num_gpu_blocks`
    #: and `block_size`); a sample whose labels are not numbers is left out.
    value_labels: list[str] = Field(default_factory=list)
    #: Gauges only: subtract this upstream gauge (a backend that counts its queue inside its in-flight total).
    minus: str | None = None
    #: requests_finished_total only: the outcome of every sample, or the upstream label that says it (a list:
    #: the first of them with a non-empty value; `outcome` then names the outcome where none has one) ...
    outcome: str | None = None
    outcome_label: str | list[str] | None = None
    #: ... with the label's values renamed into the vocabulary (`stop: success`) ...
    outcomes: dict[str, str] = Field(default_factory=dict)
    #: ... and the outcome of every other value (without it, other values pass as they are).
    others: str | None = None

    @property
    def outcome_labels(self) -> tuple[str, ...]:
        label = self.outcome_label
        return () if label is None else (label,) if isinstance(label, str) else tuple(label)

    @property
    def divisor(self) -> float:
        return UNITS[self.unit] if self.unit else 1.0


class Factor(BaseModel):
    """An upstream gauge another gauge is multiplied by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    match: dict[str, str] = Field(default_factory=dict)


Source.model_rebuild()


class AllOf(BaseModel):
    """Several sources that together make one concept (successes from one counter, errors from another)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    all: list[Source] = Field(min_length=1)


def _choice_tag(value: object) -> str:
    return "all" if isinstance(value, AllOf) or (isinstance(value, dict) and "all" in value) else "source"


#: One choice: a source, or `all:` sources together. Told apart by the `all` key, so that a mistake in
#: one is reported once, against what was meant.
Choice = Annotated[
    Union[Annotated[Source, Tag("source")], Annotated[AllOf, Tag("all")]],  # noqa: UP007 - a pydantic union
    Discriminator(_choice_tag),
]
#: Discriminator tags pydantic puts in an error's location; they are not keys of the file.
CHOICE_TAGS = ("source", "all")


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
    def _sources_fit_concepts(self) -> Profile:
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
    if isinstance(source.outcome_label, list) and not source.outcome_label:
        raise ValueError(f"{where}: outcome_label needs at least one label")
    for outcome in [source.outcome, source.others, *source.outcomes.values()]:
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"{where}: outcome {outcome!r} is not one of: {', '.join(OUTCOMES)}")
    if (source.outcomes or source.others) and source.outcome_label is None:
        raise ValueError(f"{where}: outcomes and others rename the values of outcome_label, which is not set")
    if source.part is not None and concept.type != "counter":
        raise ValueError(f"{where}: part: {source.part} makes a counter, but this concept is a {concept.type}")
    if source.minus is not None and concept.type != "gauge":
        raise ValueError(f"{where}: minus is for gauges")
    if (source.times is not None or source.value_labels) and concept.type != "gauge":
        raise ValueError(f"{where}: times and value_labels are for gauges")
    if source.count is not None and concept.type != "histogram":
        raise ValueError(f"{where}: count makes a histogram from two counters, but this concept is a {concept.type}")
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
        # libyaml's reader where PyYAML has it (the same data, faster: the first poll waits for this;
        # docs/performance.md)
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
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


def catalog(extra: tuple[Profile, ...] = ()) -> tuple[Profile, ...]:
    """The shipped profiles with an operator's own (`profile_files:`), in detection order. An operator's
    profile of a shipped one's name replaces it (a mapping fixed without waiting for a release)."""
    if not extra:
        return profiles()
    own = {profile.name for profile in extra}
    merged = [profile for profile in profiles() if profile.name not in own] + list(extra)
    return tuple(sorted(merged, key=lambda p: (p.priority, p.name)))


def names(extra: tuple[Profile, ...] = ()) -> list[str]:
    """The values `profile:` accepts."""
    return [profile.name for profile in catalog(extra)] + [NONE]


def by_name(name: str, extra: tuple[Profile, ...] = ()) -> Profile:
    return next(profile for profile in catalog(extra) if profile.name == name)


def detect(family_names: list[str], extra: tuple[Profile, ...] = ()) -> Profile | None:
    """The first profile, in priority order, that recognises any of these family names."""
    for profile in catalog(extra):
        if any(profile.detects(name) for name in family_names):
            return profile
    return None


def detection(family_names: list[str], extra: tuple[Profile, ...] = ()) -> tuple[Profile | None, str | None]:
    """The profile detected, and the first family name (in the payload's order) it recognised."""
    for profile in catalog(extra):
        for name in family_names:
            if profile.detects(name):
                return profile, name
    return None, None
