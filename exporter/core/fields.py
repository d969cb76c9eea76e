"""Config value types shared by every target kind: durations, byte sizes and readable files.

Secrets and secret files have their own types, in exporter.core.secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


#: The bounds every duration setting keeps to: under a millisecond a loop spins, and a week is longer
#: than any poll, retry or wait this daemon has. Intervals and timeouts have their own, higher minimums.
MIN_DURATION = 0.001
MAX_DURATION = 7 * 86400.0
#: The shortest poll interval: shorter, the daemon spends its time polling and a GPU host's CPU with it.
MIN_INTERVAL = 0.1
#: The shortest poll timeout: shorter, no poll over a network can succeed.
MIN_TIMEOUT = 0.01


def parse_duration(value: object) -> float:
    """`500ms`, `5s`, `1.5m`, `1h` -> seconds. Bare numbers are refused: a unit must be said."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration with a unit like 500ms, 5s or 1m, got {value!r}")
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"expected a duration with a unit like 500ms, 5s or 1m, got {value!r}")
    if len(match.group(1)) > 20:
        raise ValueError(f"expected a duration of at most {format_duration(MAX_DURATION)}, got {value[:40]!r}...")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not MIN_DURATION <= seconds <= MAX_DURATION:
        raise ValueError(
            f"expected a duration from {format_duration(MIN_DURATION)} to {format_duration(MAX_DURATION)}, got {value!r}"
        )
    return seconds


def _at_least(minimum: float, what: str):
    def check(seconds: float) -> float:
        if seconds < minimum:
            raise ValueError(f"{what} must be at least {format_duration(minimum)}, got {format_duration(seconds)}")
        return seconds

    return check


def parse_byte_size(value: object) -> int:
    """`10MiB`, `512KB`, `1048576` -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 10MiB, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            if len(match.group(1)) > 20:  # more bytes than any disk holds; float() would say inf
                raise ValueError(f"expected a size below 2^63 bytes, got {value[:40]!r}...")
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ValueError(f"expected a size like 10MiB, 512KB or a number of bytes, got {value!r}")


def format_duration(seconds: float) -> str:
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def _readable_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"file {str(value)!r} does not exist or is not a regular file")
    try:
        value.open("rb").close()
    except OSError as exc:
        raise ValueError(f"file {str(value)!r} cannot be read: {exc.strerror}") from None
    return value


#: Seconds, written in the config as `500ms`, `5s`, `1m`.
Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
#: A poll interval: a Duration of at least MIN_INTERVAL.
Interval = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_at_least(MIN_INTERVAL, "interval")),
    PlainSerializer(format_duration),
]
#: A poll timeout: a Duration of at least MIN_TIMEOUT.
Timeout = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_at_least(MIN_TIMEOUT, "timeout")),
    PlainSerializer(format_duration),
]
#: Bytes, written in the config as `10MiB`, `512KB` or a plain integer.
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
#: A file that must exist and be readable when the config is loaded (a CA or a certificate), read again at
#: each use so that a renewed one is picked up without a reload. A file whose contents are a credential is
#: an exporter.core.secret.SecretFile.
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]


def shown(value: Any) -> str:
    """A value as an error message quotes it: its kind for a mapping or list, else its repr, cut."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
