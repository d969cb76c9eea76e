"""The `Secret` type: a config value that is never shown, in any form, anywhere we write.

Every field of the config schema that holds a credential is typed `Secret` (a value written in
the config) or `SecretFile` (a file whose contents are one). Everything else follows from the
type, not from the field's name: a Secret's str, repr, format and JSON form are `<secret>`, a
config shown on a page or printed shows `<secret>` in its place, a config error never quotes what
was written where a Secret belongs, and exporter.redact scrubs the values of every Secret (and
the contents of every SecretFile) of the running config from logs, pages and error texts. The
real value is reached only by `reveal()`, where a source sends it upstream.

This module imports nothing of the exporter's, so that any schema can use it.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

#: What is shown wherever a secret would be.
SHOWN = "<secret>"


class Secret:
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

    def __format__(self, spec: str) -> str:
        return format(SHOWN, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not pickled: it would be written out in full")

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


def secrets_in(value: object) -> Iterator[Secret | SecretFile]:
    """Every Secret and SecretFile in a config: a model's fields, lists, tuples and dicts, nested."""
    if isinstance(value, (Secret, SecretFile)):
        yield value
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
    """Whether a schema type is, or may contain, a Secret or SecretFile (a config error at such a
    place never shows what was written there)."""
    if annotation in (Secret, SecretFile):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in _seen:
            return False
        seen = _seen | {annotation}
        return any(holds_secret(field.annotation, seen) for field in annotation.model_fields.values())
    return any(holds_secret(arg, _seen) for arg in typing.get_args(annotation))
