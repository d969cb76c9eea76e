"""What a config's regular expressions and relabel rules say, checked when the config is loaded: the
rules' schema (`RelabelConfig`), not what they do to series (exporter.pipeline.relabel does that).
Shared by the target schema (exporter.sources.base), the profiles and the pipeline."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

#: Labels no rule may change or drop: every series must still say which target it came from.
PROTECTED = frozenset({"target", "__name__"})
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: What Prometheus accepts as a replace target label: a label name, possibly with `$1` / `${name}` in it.
_TARGET_TEMPLATE = re.compile(r"(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*")


def anchored(pattern: str) -> re.Pattern[str]:
    """A regex that Prometheus would anchor: use it with `fullmatch`; `.` matches newlines too (RE2's `s` flag)."""
    return re.compile(f"(?s:{pattern})")


#: The longest regular expression a config may hold.
MAX_REGEX = 4096


def check_regex(pattern: str) -> str:
    """The pattern if it compiles; ValueError saying why it does not."""
    if len(pattern) > MAX_REGEX:
        raise ValueError(f"regular expression of {len(pattern)} characters; at most {MAX_REGEX} are read")
    try:
        anchored(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    except (RecursionError, OverflowError):  # groups nested thousands deep: Python's parser gives up
        raise ValueError(f"regular expression nested too deeply: {pattern[:40]!r}...") from None
    return pattern


class RelabelConfig(BaseModel):
    """One rule, with Prometheus's keys and defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_labels: list[str] = Field(default_factory=list)
    separator: str = ";"
    regex: str = "(.*)"
    target_label: str | None = None
    replacement: str = "$1"
    action: Literal["replace", "keep", "drop", "labeldrop", "labelkeep", "labelmap"] = "replace"

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, pattern: str) -> str:
        return check_regex(pattern)

    @field_validator("source_labels")
    @classmethod
    def _source_label_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not LABEL_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a label name")
        return names

    @model_validator(mode="after")
    def _fields_fit_action(self) -> RelabelConfig:
        action = self.action
        if action == "replace":
            if not self.target_label:
                raise ValueError("action replace needs a target_label")
            if not _TARGET_TEMPLATE.fullmatch(self.target_label):
                raise ValueError(f"target_label {self.target_label!r} is not a label name (or a $1-style template)")
            if self.target_label == "target":
                raise ValueError("the target label says which target a series came from; relabeling cannot change it")
        elif action in ("labeldrop", "labelkeep"):
            if self.source_labels or self.target_label or self.separator != ";" or self.replacement != "$1":
                raise ValueError(f"action {action} takes only regex")
        elif action == "labelmap":
            if not _TARGET_TEMPLATE.fullmatch(self.replacement):
                raise ValueError(f"labelmap replacement {self.replacement!r} does not make a label name")
        elif self.target_label:  # keep, drop
            raise ValueError(f"action {action} does not take a target_label")
        return self


#: A fully anchored regular expression, checked when the config is loaded.
Regex = Annotated[str, AfterValidator(check_regex)]
