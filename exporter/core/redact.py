"""Keeping secrets out of what we show: URL passwords redacted, and every form of a config's secrets scrubbed.

What is secret is said by the schema's types (exporter.core.secret): the values of a config's `Secret`
fields, its `SecretURL`s' passwords and the contents of its `SecretFile`s are exactly the ones to
scrub, whatever the kind (a URL-shaped string elsewhere, such as a label's value, is parsed for a
password too, as a net). An
upstream's error page may echo the request (its `Authorization: Basic <base64 of user:password>`
header, the URL with its password percent-encoded), and what we show is HTML or JSON: so `Secrets`
knows each value in every form it can take there, and `REGISTRY` holds the live configs' Secrets
for the three places that show text: the log (a structlog processor, before the per-target event
rings), the pages and JSON (a web middleware), and each poll's stored error and raw body.
"""

from __future__ import annotations

import base64
import html
import json
import weakref
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from pydantic import BaseModel

from exporter.core.secret import SHOWN, URL_PASSWORD, SecretFile, redact_url, secrets_in

SECRET = SHOWN
#: Shorter values are not scrubbed from messages: a one-letter password would garble every line.
MIN_SCRUBBED = 4


def redact_urls(data: Any) -> Any:
    """Every URL password in a config dump (strings, lists and dicts, nested) redacted: a net under the
    fields typed SecretURL, for URLs written where no schema expects one (a label's value)."""
    if isinstance(data, str):
        return redact_url(data)
    if isinstance(data, list):
        return [redact_urls(item) for item in data]
    if isinstance(data, dict):
        return {key: redact_urls(value) for key, value in data.items()}
    return data


def _url_passwords(data: Any, found: set[str]) -> None:
    """The password of every `scheme://user:password@host` in a config dump, as written and percent-decoded:
    the same net as `redact_urls` (a SecretURL's password is found by its type, and shows redacted here)."""
    if isinstance(data, dict):
        for value in data.values():
            _url_passwords(value, found)
    elif isinstance(data, list):
        for value in data:
            _url_passwords(value, found)
    elif isinstance(data, str):
        match = URL_PASSWORD.match(data)
        if match and match["password"] != SHOWN:  # a SecretURL's dump: its password is already hidden
            found.update({match["password"], unquote(match["password"])})


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret value replaced by `<secret>`."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, SECRET)
    return text


def _usernames(data: Any, found: set[str]) -> None:
    """Usernames configured anywhere (basic_auth.username, NATS user, a URL's user): a basic-auth
    header encodes `user:password` together."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("username", "user") and isinstance(value, str):
                found.add(value)
            else:
                _usernames(value, found)
    elif isinstance(data, list):
        for item in data:
            _usernames(item, found)
    elif isinstance(data, str) and "://" in data:
        try:
            user = urlsplit(data).username
        except ValueError:
            return
        if user:
            found.update({user, unquote(user)})


def forms_of(values: Iterable[str], usernames: Iterable[str] = ()) -> tuple[str, ...]:
    """Every way a secret value may be written where we show text, longest first: as is,
    percent-encoded, base64 alone and as basic auth's `user:value`, JSON- and HTML-escaped."""
    users = tuple(usernames)
    forms: set[str] = set()
    for value in values:
        for secret in {value, value.strip()}:
            if len(secret) < MIN_SCRUBBED:
                continue
            raw = secret.encode()
            encoded = [secret, quote(secret), quote(secret, safe=""), quote_plus(secret)]
            encoded += [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
            encoded += [base64.b64encode(f"{user}:{secret}".encode()).decode() for user in users]
            for form in list(encoded):
                encoded += [json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1], html.escape(form)]
            forms.update(form for form in encoded if len(form) >= MIN_SCRUBBED)
    return tuple(sorted(forms, key=len, reverse=True))


class Secrets:
    """One config's secrets (a target's, the web config's) in every form (see `forms_of`): its Secrets'
    values, its URLs' passwords and its SecretFiles' contents, read again when they change, so that a
    rotated password is scrubbed too."""

    __slots__ = ("__weakref__", "_files", "_forms", "_stamps", "_users", "_values")

    def __init__(self, config: BaseModel):
        dumped = config.model_dump(mode="json")
        values: set[str] = set()
        files: list[Path] = []
        for secret in secrets_in(config):
            if isinstance(secret, SecretFile):
                files.append(secret.path)
            else:
                values.add(secret.reveal())
        _url_passwords(dumped, values)
        self._values = tuple(sorted(values))
        users: set[str] = set()
        _usernames(dumped, users)
        self._users = tuple(sorted(users))
        self._files = tuple(files)
        self._stamps: tuple | None = None
        self._forms: tuple[str, ...] = ()
        self.forms()

    def forms(self) -> tuple[str, ...]:
        stamps = tuple(_stamp(path) for path in self._files)
        if stamps != self._stamps:
            contents = []
            for path in self._files:
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                raw = data.decode("utf-8", "replace")  # as written, and as a text read of it gives it
                text = raw.replace("\r\n", "\n").replace("\r", "\n")
                contents += [raw, text, text.rstrip("\n"), *raw.splitlines()]
            self._forms = forms_of((*self._values, *contents), self._users)
            self._stamps = stamps
        return self._forms

    def scrub(self, text: str) -> str:
        return scrub(text, self.forms())

    def scrub_bytes(self, data: bytes) -> bytes:
        for form in self.forms():
            encoded = form.encode()
            if encoded in data:
                data = data.replace(encoded, SECRET.encode())
        return data


def _stamp(path: Path) -> tuple:
    try:
        stat = path.stat()
    except OSError:
        return ()
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class SecretRegistry:
    """The Secrets of every live config (held weakly: a poller owns its target's, the web security its
    file's), for the log and pages."""

    def __init__(self) -> None:
        self._live: weakref.WeakSet[Secrets] = weakref.WeakSet()

    def add(self, secrets: Secrets) -> Secrets:
        self._live.add(secrets)
        return secrets

    def discard(self, secrets: Secrets) -> None:
        self._live.discard(secrets)

    def forms(self) -> tuple[str, ...]:
        forms: set[str] = set()
        for secrets in list(self._live):
            forms.update(secrets.forms())
        return tuple(sorted(forms, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        return scrub(text, self.forms())

    def scrub_any(self, value: Any) -> Any:
        """Strings scrubbed, lists, tuples and dicts searched; anything else made a string first if it shows one."""
        forms = self.forms()
        return _scrub_any(value, forms) if forms else value

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """The structlog processor: every field of every event scrubbed (place it before the event rings)."""
        forms = self.forms()
        if forms:
            for key, value in event_dict.items():
                event_dict[key] = _scrub_any(value, forms)
        return event_dict


def _scrub_any(value: Any, forms: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return scrub(value, forms)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {key: _scrub_any(item, forms) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_any(item, forms) for item in value)
    if isinstance(value, BaseException):
        text = str(value)
        scrubbed = scrub(text, forms)
        return value if scrubbed == text else f"{type(value).__name__}: {scrubbed}"
    return value


#: The process's one registry: the log is process-wide too.
REGISTRY = SecretRegistry()
