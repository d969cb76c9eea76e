"""The config file's schema: the top level (`listen`, `defaults`, `targets` of every kind, `server`,
`overview`, `profile_files`), its defaults and how each target inherits them. Each target kind's own
fields are its source's (exporter.sources); exporter.config.loader reads a file into this."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter.config.overview import OverviewSettings
from exporter.config.server import ServerLimits
from exporter.core.fields import Duration, Interval, Timeout, format_duration, shown
from exporter.profiles import Profile
from exporter.sources import KINDS, TargetConfig

PREFIX = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"


_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")


_LISTEN_EXPECTED = "expected HOST:PORT like 127.0.0.1:9898, [::1]:9898 or :9898 (all interfaces)"


#: Fields a target inherits from `defaults` when it leaves them unset (if its schema has them).
_INHERITED = ("interval", "timeout", "retries", "backoff")


def parse_listen(value: object) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port). IPv6 hosts go in brackets; an empty host means all interfaces."""
    if not isinstance(value, str):
        raise ValueError(f"{_LISTEN_EXPECTED}, got {shown(value)}")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{_LISTEN_EXPECTED} with a port from 1 to 65535, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{_LISTEN_EXPECTED}; {host!r} is not an IPv6 address") from None
        return host[1:-1], int(port)
    if ":" in host:
        raise ValueError(f"{_LISTEN_EXPECTED}; write an IPv6 address in brackets, like [::1]:{port}, got {value!r}")
    if host and not _HOSTNAME.match(host):
        raise ValueError(f"{_LISTEN_EXPECTED}; {host!r} is not a host name or IP address")
    return host, int(port)


def _check_listen(value: object) -> object:
    parse_listen(value)
    return value


def check_prefix(value: str) -> str:
    if value and not PREFIX.match(value):
        raise ValueError(
            f"expected a metric name prefix of letters, digits and underscores that does not start with a digit, got {value!r}"
        )
    return value


class Defaults(BaseModel):
    """What a target gets for the timing fields it does not set itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: Interval = 15.0
    timeout: Timeout = 10.0
    retries: int = Field(default=2, ge=0, le=10)
    #: Wait before the first retry; each further retry doubles it, with jitter.
    backoff: Duration = 0.25

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Defaults:
        if self.timeout > self.interval:
            if "timeout" in self.model_fields_set:
                raise PydanticCustomError(
                    "timeout_over_interval",
                    "timeout {timeout} is greater than interval {interval}; a poll must end before the next one starts",
                    {"timeout": format_duration(self.timeout), "interval": format_duration(self.interval)},
                )
            # The built-in timeout shrinks to a short interval, as Prometheus does with its global one.
            object.__setattr__(self, "timeout", self.interval)
        return self


def _of_its_kind(value: Any, info: ValidationInfo) -> TargetConfig:
    """A target read by its kind's schema, told apart by `type:` (the errors are those of a union
    told apart by `type:`). The kind's module is imported here, when a config first names it."""
    if isinstance(value, TargetConfig):  # a Config built in code, of targets already made
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "model_attributes_type", "Input should be a valid dictionary or object to extract fields from"
        )
    if "type" not in value:
        raise PydanticCustomError("union_tag_not_found", "Unable to extract tag using discriminator 'type'")
    tag = value["type"]
    kind = KINDS.get(tag) if isinstance(tag, str) else None
    if kind is None:
        raise PydanticCustomError("union_tag_invalid", "unknown target type {tag}", {"tag": str(tag)})
    return kind.config.model_validate(value, context=info.context)


#: One of the kinds' configs, told apart by `type:` (and dumped as its kind's).
_AnyTarget: TypeAlias = SerializeAsAny[Annotated[TargetConfig, PlainValidator(_of_its_kind)]]


class Config(BaseModel):
    """The whole config. Targets come out resolved: whatever they leave unset is taken from `defaults`/`prefix`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: Annotated[str, BeforeValidator(_check_listen)] = "127.0.0.1:9898"
    prefix: Annotated[str, AfterValidator(check_prefix)] = ""
    defaults: Defaults = Defaults()
    #: The listening side's limits: header_timeout, max_connections (exporter.serve.listener).
    server: ServerLimits = ServerLimits()
    targets: list[_AnyTarget] = []
    #: Operator-written profile files (paths or globs, relative to this file's folder), beside the shipped ones.
    profile_files: list[str] = []
    #: /overview: its default window, how much history it keeps, its health thresholds.
    overview: OverviewSettings = OverviewSettings()
    #: The file this config was loaded from.
    source: str = "<string>"
    #: The profiles `profile_files:` named, as loaded (filled by the loader, like `source`).
    loaded_profiles: tuple[Profile, ...] = ()

    @model_validator(mode="after")
    def _resolve_targets(self) -> Config:
        resolved = [
            _resolve(target, self.defaults, self.prefix).with_profiles(self.loaded_profiles) for target in self.targets
        ]
        object.__setattr__(self, "targets", resolved)
        # parse_config reports these with their lines before we get here; this guards Config(...) built in code.
        problems = [
            f"targets[{i}]: {problem}"
            for i, target in enumerate(resolved)
            for problem in [timing_problem(target.timeout, target.interval, "")]
            if problem
        ]
        first: dict[str, int] = {}
        for i, target in enumerate(resolved):
            if target.name in first:
                problems.append(f"targets[{i}].name: duplicate target name {target.name!r}")
            first.setdefault(target.name, i)
        if problems:
            raise PydanticCustomError("config_check", "{problems}", {"problems": "; ".join(problems)})
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


def _resolve(target: TargetConfig, defaults: Defaults, prefix: str) -> TargetConfig:
    update: dict[str, Any] = {}
    fields = type(target).model_fields
    for name in _INHERITED:
        if name in fields and getattr(target, name) is None:
            update[name] = getattr(defaults, name)
    interval = update.get("interval", target.interval)
    if "timeout" in update and update["timeout"] > interval:
        update["timeout"] = interval  # an inherited timeout shrinks to the target's own shorter interval
    if "prefix" in fields and target.prefix is None:
        update["prefix"] = prefix
    return target.model_copy(update=update) if update else target


def timing_problem(timeout: float | None, interval: float | None, interval_from: str) -> str | None:
    if timeout is None or interval is None or timeout <= interval:
        return None
    return (
        f"timeout {format_duration(timeout)} is greater than interval {format_duration(interval)}{interval_from}; "
        "a poll must end before the next one starts"
    )


__all__ = ["Config", "Defaults", "parse_listen"]
