"""Keeping secrets out of what we show: URL passwords redacted, and a target's secret values scrubbed from errors.

A target's `redacted()` config is the one place that knows which of its values are secret; the
values it hides are therefore exactly the ones to scrub from error messages, whatever the kind
(a library's exception may quote a URL with its password, a NATS server's reply its token).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from exporter.sources.base import TargetConfig

SECRET = "<secret>"
#: `scheme://user:password@host...`: the password ends at the last `@` of the authority.
_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):(?P<password>[^/?#]*)@")
#: Shorter values are not scrubbed from messages: a one-letter password would garble every line.
MIN_SCRUBBED = 4


def redact_url(value: str) -> str:
    """`http://user:pw@host/x` -> `http://user:<secret>@host/x`; other strings unchanged."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{SECRET}@", value, count=1)


def redact_urls(data: Any) -> Any:
    """Every URL password in a config dump (strings, lists and dicts, nested) redacted."""
    if isinstance(data, str):
        return redact_url(data)
    if isinstance(data, list):
        return [redact_urls(item) for item in data]
    if isinstance(data, dict):
        return {key: redact_urls(value) for key, value in data.items()}
    return data


def secret_values(target: "TargetConfig") -> tuple[str, ...]:
    """The values `target.redacted()` hides (passwords, tokens, secret headers, URL passwords), longest first."""
    found: set[str] = set()
    _differences(target.model_dump(mode="json"), target.redacted(), found)
    return tuple(sorted((value for value in found if len(value) >= MIN_SCRUBBED), key=len, reverse=True))


def _differences(full: Any, shown: Any, found: set[str]) -> None:
    if isinstance(full, dict):
        for key, value in full.items():
            _differences(value, shown.get(key) if isinstance(shown, dict) else None, found)
    elif isinstance(full, list):
        for index, value in enumerate(full):
            _differences(value, shown[index] if isinstance(shown, list) and index < len(shown) else None, found)
    elif isinstance(full, str) and full != shown:
        match = _URL_PASSWORD.match(full)
        if match and isinstance(shown, str) and redact_url(full) == shown:
            found.update({match["password"], unquote(match["password"])})
        else:
            found.add(full)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret value replaced by `<secret>`."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, SECRET)
    return text
