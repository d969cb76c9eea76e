"""The `Secret` type: a config value that is never shown, in any form, anywhere we write.

Every field of the config schema that holds a credential is typed `Secret` (a value written in
the config), `SecretFile` (a file whose contents are one) or `SecretURL` (a URL whose userinfo may
carry a password). Everything else follows from the
type, not from the field's name: a Secret's str, repr, format and JSON form are `<secret>`, a
config shown on a page or printed shows `<secret>` in its place, a config error never quotes what
was written where a Secret belongs, and exporter.core.redact scrubs the values of every Secret (and
the contents of every SecretFile) of the running config from logs, pages and error texts. The
real value is reached only by `reveal()`, where a source sends it upstream.

This module imports nothing of the exporter's, so that any schema can use it.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

#: What is shown wherever a secret would be.
SHOWN = "<secret>"
#: `scheme://user:password@host...`: the password ends at the last `@` of the authority.
URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):(?P<password>[^/?#]*)@")


def redact_url(value: str) -> str:
    """`http://user:pw@host/x` -> `http://user:<secret>@host/x`; other strings unchanged."""
    return URL_PASSWORD.sub(lambda m: f"{m['head']}:{SHOWN}@", value, count=1)


class _Hidden:
    """What Secret and SecretURL share: they compare and hash by what they hide, copying gives the same
    object, and pickling, which would write the value out in full, is refused. Each says how it is
    shown (`__str__`) and what it hides (`_hidden`)."""

    __slots__ = ()

    def _hidden(self) -> str:
        raise NotImplementedError

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._hidden() == self._hidden()

    def __hash__(self) -> int:
        return hash((type(self), self._hidden()))

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"a {type(self).__name__} is not pickled: it would be written out in full")


class Secret(_Hidden):
    """A credential. Shown as `<secret>` however it is printed; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a string, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The value itself: only for sending it where it is meant to go."""
        return self._value

    def __str__(self) -> str:
        return SHOWN

    def __repr__(self) -> str:
        return SHOWN

    def _hidden(self) -> str:
        return self._value

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _secret_of,
            serialization=core_schema.plain_serializer_function_ser_schema(_shown, when_used="json"),
            json_schema_input_schema=core_schema.str_schema(),
        )


def _secret_of(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value)
    # The value is never quoted: it was written where a secret belongs.
    raise PydanticCustomError("string_type", "Input should be a valid string")


def _shown(value: object) -> str:
    return SHOWN


class SecretFile:
    """A file whose contents are a credential (`password_file`, a TLS key...). Shown by its path; it must
    be readable when the config is loaded, and is read again at each use, so that a rotated secret is
    used without a reload."""

    __slots__ = ("path",)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> Secret:
        """The contents now, without the trailing line break editors add. Raises OSError."""
        return Secret(self.path.read_text(encoding="utf-8").rstrip("\r\n"))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"SecretFile({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretFile) and other.path == self.path

    def __hash__(self) -> int:
        return hash((SecretFile, self.path))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _secret_file_of,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
            json_schema_input_schema=core_schema.str_schema(),
        )


def _secret_file_of(value: object) -> SecretFile:
    if isinstance(value, SecretFile):
        return value
    if not isinstance(value, (str, Path)):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"file {str(path)!r} does not exist or is not a regular file")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise ValueError(f"file {str(path)!r} cannot be read: {exc.strerror}") from None
    return SecretFile(path)


class SecretURL(_Hidden):
    """A URL whose userinfo may carry a password (`http://user:pw@host/metrics`). Shown, in str, repr and
    JSON, with `<secret>` in the password's place; `reveal()` gives it whole, for the request."""

    __slots__ = ("_shown", "_url")

    def __init__(self, url: str):
        if not isinstance(url, str):
            raise TypeError(f"a SecretURL holds a string, not {type(url).__name__}")
        self._url = url
        self._shown = redact_url(url)

    def reveal(self) -> str:
        return self._url

    def secrets(self) -> tuple[Secret, ...]:
        """Its password, as written (percent-encoded) and as sent; none without one."""
        match = URL_PASSWORD.match(self._url)
        if match is None:
            return ()
        written = match["password"]
        return tuple(Secret(form) for form in dict.fromkeys((written, unquote(written))))

    def __str__(self) -> str:
        return self._shown

    def __repr__(self) -> str:
        return repr(self._shown)

    def _hidden(self) -> str:
        return self._url

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _secret_url_of,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
            json_schema_input_schema=core_schema.str_schema(),
        )


def _secret_url_of(value: object) -> SecretURL:
    if isinstance(value, SecretURL):
        return value
    if isinstance(value, str):
        return SecretURL(value)
    raise PydanticCustomError("string_type", "Input should be a valid string")


def secrets_in(value: object) -> Iterator[Secret | SecretFile]:
    """Every Secret and SecretFile in a config (a URL's password is a Secret): a model's fields, lists,
    tuples and dicts, nested."""
    if isinstance(value, (Secret, SecretFile)):
        yield value
    elif isinstance(value, SecretURL):
        yield from value.secrets()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secrets_in(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from secrets_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from secrets_in(item)


def holds_secret(annotation: Any, _seen: frozenset[Any] = frozenset()) -> bool:
    """Whether a schema type is, or may contain, a Secret, SecretFile or SecretURL (a config error at such
    a place never shows what was written there)."""
    if annotation in (Secret, SecretFile, SecretURL):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in _seen:
            return False
        seen = _seen | {annotation}
        return any(holds_secret(field.annotation, seen) for field in annotation.model_fields.values())
    return any(holds_secret(arg, _seen) for arg in typing.get_args(annotation))
