"""Profiles an operator writes: the config's `profile_files:` (paths, globs allowed), each file in the
schema of the shipped `exporter/profiles/*.yaml`, checked with the same file:line errors as the config.

A backend the project does not know (or one that renamed a metric since the release) is then one more
YAML file beside the config, read again whenever the config is.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from pydantic import ValidationError

from exporter.config.reader import ConfigError, ConfigIssue, Reader, compose, read_text, unknown_key_message
from exporter.profiles import CHOICE_TAGS, AllOf, Factor, Profile, Source

#: More files than this in `profile_files:` is a mistake (a glob over a whole tree), not a config.
MAX_FILES = 200
#: A profile is a page of YAML; a larger file is not one.
MAX_BYTES = 1 << 20
_KEYS_HINT = "name, description, priority, detect, series"
_SERIES_PREFIX = re.compile(r"^series\.([A-Za-z0-9_]+)(?: \([^)]*\))?: ")


def expand(patterns: list[str], config_file: str) -> list[tuple[int, str, list[str]]]:
    """Each pattern (relative to the config file's folder) with the files it names, sorted."""
    base = (
        os.path.dirname(os.path.abspath(config_file))
        if config_file and not config_file.startswith("<")
        else os.getcwd()
    )
    out = []
    for index, pattern in enumerate(patterns):
        full = os.path.join(base, os.path.expanduser(pattern))
        paths = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        out.append((index, pattern, [path for path in paths if os.path.isfile(path)]))
    return out


def load(patterns: list[str], config_file: str, line_of: Any) -> tuple[tuple[Profile, ...], list[ConfigIssue]]:
    """The profiles these patterns name, and every problem found (in the config or in a profile file).

    `line_of(path)` gives the config line of a key path, for problems with the list itself."""
    issues: list[ConfigIssue] = []
    loaded: dict[str, tuple[Profile, str, int | None]] = {}
    files = 0
    for index, pattern, paths in expand(patterns, config_file):
        key = f"profile_files[{index}]"
        if not paths:
            issues.append(
                ConfigIssue(config_file, line_of(("profile_files", index)), key, f"{pattern!r} matches no file")
            )
            continue
        for path in paths:
            files += 1
            if files > MAX_FILES:
                issues.append(
                    ConfigIssue(
                        config_file, line_of(("profile_files", index)), key, f"more than {MAX_FILES} profile files"
                    )
                )
                return tuple(profile for profile, _, _ in loaded.values()), issues
            try:
                profile, name_line = load_file(path)
            except ConfigError as exc:
                issues.extend(exc.issues)
                continue
            if profile.name in loaded:
                _, first, first_line = loaded[profile.name]
                where = f"{first}:{first_line}" if first_line else first
                issues.append(
                    ConfigIssue(path, name_line, "name", f"profile name {profile.name!r} is already used by {where}")
                )
                continue
            loaded[profile.name] = (profile, path, name_line)
    return tuple(profile for profile, _, _ in loaded.values()), issues


def load_file(path: str) -> tuple[Profile, int | None]:
    """One profile file, and the line of its `name:`; ConfigError names file:line of every problem."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, None, "", f"cannot read the profile file: {exc.strerror}")]) from None
    if size > MAX_BYTES:
        raise ConfigError([ConfigIssue(path, None, "", f"the profile file is larger than {MAX_BYTES} bytes")])
    text = read_text(path, "profile file")
    reader = Reader(path, root=Profile, expand_env=False)
    raw = compose(text, path, reader, _KEYS_HINT)
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            _report(reader, error)
        raise ConfigError(reader.issues) from None
    return profile, reader.line(("name",))


def _report(reader: Reader, error: Any) -> None:
    path = tuple(part for part in error["loc"] if part not in CHOICE_TAGS)
    kind = error["type"]
    if not path and kind == "value_error":  # the whole-profile check: it names the concept it is about
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        match = _SERIES_PREFIX.match(message)
        if match:
            reader.issue(("series", match.group(1)), message[match.end() :])
            return
        reader.issue((), message)
        return
    if kind == "missing":
        reader.issue(path[:-1], f"missing required key {path[-1]!r}")
    elif kind == "extra_forbidden":
        reader.issue(path, unknown_key_message(str(path[-1]), _keys_at(path[:-1])))
    else:
        scalar = not isinstance(error.get("input"), (dict, list))
        reader.issue(path, reader._describe(error, path), line_of="value" if scalar else "key")


def _keys_at(path: tuple[Any, ...]) -> list[str]:
    """The keys the schema allows where `path` ends: a profile, a source, `all:`, or a `times:` factor."""
    if not path:
        return sorted(Profile.model_fields)
    if path[-1] == "times":
        return sorted(Factor.model_fields)
    if len(path) == 3:  # one choice: a source, or `all:` sources
        return sorted({*Source.model_fields, *AllOf.model_fields})
    return sorted(Source.model_fields)
