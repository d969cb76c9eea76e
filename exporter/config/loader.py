"""The config file read into its schema (exporter.config.schema) with the YAML reader
(exporter.config.reader), together with the profile files it names.

Top-level keys starting with `x-` are ignored, so that they can hold YAML anchors that targets
share through merge keys (`<<: *base`), as in docker-compose files.
"""

from __future__ import annotations

import os

from exporter.config.reader import (
    MAX_CONFIG_BYTES,
    ConfigError,
    ConfigIssue,
    Reader,
    compose,
    keys_of,
    read_text,
    unknown_key_message,
)
from exporter.config.schema import Config, Defaults, parse_listen
from exporter.profiles import Profile

#: Snippet keys at the top level (anchors for merge keys), ignored by the schema.
_SNIPPET_PREFIX = "x-"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError, naming file:line, on any problem."""
    filename = os.fspath(path)
    return parse_config(read_text(filename, "config file"), filename)


def parse_config(text: str, filename: str = "<string>") -> Config:
    """Validate config text; `filename` is what errors name. Raises ConfigError on any problem."""
    reader = Reader(filename)
    raw = compose(text, filename, reader, "listen, defaults, targets")
    for key in [key for key in raw if key.startswith(_SNIPPET_PREFIX)]:
        del raw[key]
    for key, empty in (("targets", []), ("defaults", {})):  # `targets:` with nothing under it is an empty list
        if key in raw and raw[key] is None:
            raw[key] = empty
    reader.check(raw)
    for own in ("source", "loaded_profiles"):  # fields for the loader to fill, not for the file
        if own in raw:
            reader.issue((own,), unknown_key_message(own, keys_of(Config)))
            del raw[own]
    loaded: tuple[Profile, ...] = ()
    issues: list[ConfigIssue] = []
    files = raw.get("profile_files")
    if isinstance(files, list) and all(isinstance(item, str) for item in files):
        from exporter.config import profile_files  # it reads YAML with this module's reader

        loaded, issues = profile_files.load(files, filename, reader.line)
        reader.issues.extend(issues)
    # A target may name a profile whose file has a mistake: that mistake is the one to report.
    context = {"profiles": loaded, "profiles_incomplete": bool(issues)}
    return reader.validate(Config, {**raw, "source": filename, "loaded_profiles": loaded}, context=context)


__all__ = [
    "MAX_CONFIG_BYTES",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Defaults",
    "load_config",
    "parse_config",
    "parse_listen",
    "read_text",
]
