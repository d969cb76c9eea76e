"""YAML read so that every value keeps the line it was written on, `${VAR}` expanded, and pydantic's
errors said back as file:line, key and what was expected. Every problem in a file is reported at once,
sorted by line.

The YAML is composed into a node tree rather than loaded, so that each pydantic error can be mapped
back to its line. A secret's value is never quoted in an error."""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exporter.config.schema import (
    PREFIX,
    Config,
    Defaults,
    check_prefix,
    timing_problem,
)
from exporter.core.fields import parse_duration, shown
from exporter.core.secret import holds_secret
from exporter.sources import KINDS

#: A config has hundreds of nodes; this bounds what aliases may expand to ("billion laughs").
#: The most values (scalars, lists, mappings) a config may hold, counted as it is parsed and again with
#: aliases and merge keys expanded: 1,000 targets take ~20,000.
_MAX_NODES = 50_000


#: The largest config file read (checked before it is parsed): a config of 1,000 targets is ~200 kB.
MAX_CONFIG_BYTES = 1024 * 1024


#: The deepest nesting of lists and mappings a config may have (the schema needs 6).
MAX_DEPTH = 64


M = TypeVar("M", bound=BaseModel)


_MERGE_TAG = "tag:yaml.org,2002:merge"


_MAP_TAG = "tag:yaml.org,2002:map"


_SEQ_TAG = "tag:yaml.org,2002:seq"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, where it is and what was expected."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; `issues` holds every problem found, sorted by line."""

    def __init__(self, issues: list[ConfigIssue]):
        # By line within each file, the files in the order their first issue was found (the config, then
        # the profile files it names).
        files = {issue.file: None for issue in issues}
        order = {name: index for index, name in enumerate(files)}
        self.issues = sorted(issues, key=lambda issue: (order[issue.file], issue.line or 0))
        super().__init__("\n".join(str(issue) for issue in self.issues))


def read_text(filename: str, what: str) -> str:
    """A YAML file's text; ConfigError if it cannot be read or is not UTF-8."""
    try:
        with open(filename, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([ConfigIssue(filename, None, "", f"cannot read the {what}: {exc.strerror}")]) from None
    if len(data) > MAX_CONFIG_BYTES:
        message = f"the {what} is larger than {MAX_CONFIG_BYTES // 1024} KiB; nothing was read from it"
        raise ConfigError([ConfigIssue(filename, None, "", message)])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(filename, line, "", "the file is not valid UTF-8 text")]) from None


def parse_model(
    text: str, filename: str, model: type[M], *, keys_hint: str, context: dict[str, Any] | None = None
) -> M:
    """Validate YAML text against another schema (the web config) with the same file:line errors.

    Values are taken as written: no `${VAR}` expansion, so files shared with other tools mean the same here.
    """
    reader = Reader(filename, root=model, expand_env=False)
    raw = compose(text, filename, reader, keys_hint)
    return reader.validate(model, raw, context)


def compose(text: str, filename: str, reader: Reader, keys_hint: str) -> dict[str, Any]:
    """YAML text -> a dict with every value's line remembered by `reader`."""
    if len(text) > MAX_CONFIG_BYTES:
        message = f"the text is larger than {MAX_CONFIG_BYTES // 1024} KiB; nothing was read from it"
        raise ConfigError([ConfigIssue(filename, None, "", message)])
    try:
        root = yaml.compose(text, Loader=_BoundedLoader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([reader.yaml_issue(exc)]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text[: exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError([ConfigIssue(filename, line, "", f"invalid YAML: {exc.reason} (U+{code:04X})")]) from None
    if root is None:
        message = f"the file is empty; expected a mapping with keys like {keys_hint}"
        raise ConfigError([ConfigIssue(filename, None, "", message)])
    raw = reader.read(root)
    if not isinstance(raw, dict):
        message = f"expected a mapping at the top level (keys like {keys_hint}), got {shown(raw)}"
        raise ConfigError([ConfigIssue(filename, root.start_mark.line + 1, "", message)])
    return raw


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than MAX_DEPTH (its composer recurses per level) and
    more than _MAX_NODES values, as it reads them: a flat list of a million items costs little."""

    _depth = 0
    _count = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        self._count += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"lists and mappings nested deeper than {MAX_DEPTH} levels", mark
                )
            if self._count > _MAX_NODES:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"more than {_MAX_NODES} values in one file", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class Reader:
    """Turns a YAML node tree into plain data, remembering the line of every key path; collects issues."""

    def __init__(self, filename: str, *, root: type[BaseModel] = Config, expand_env: bool = True):
        self.filename = filename
        #: The schema the file is validated against, for naming keys in errors.
        self.root = root
        self.expand_env = expand_env
        self.issues: list[ConfigIssue] = []
        #: key path -> (line of the key, line of the value), 1-based.
        self.lines: dict[tuple[str | int, ...], tuple[int, int]] = {}
        #: key path -> the scalar as written, for hints like "put it in quotes".
        self.written: dict[tuple[str | int, ...], str] = {}
        #: Paths whose problem is already reported (bad env var, bad tag): pydantic's say-so is noise there.
        self.reported: set[tuple[str | int, ...]] = set()
        #: Paths whose own validator's finding is already reported, key by key (labels).
        self.checked: set[tuple[str | int, ...]] = set()
        #: What `validate` was last given, for telling its targets' kinds apart in errors.
        self._data: dict[str, Any] = {}
        self._constructor = yaml.SafeLoader("")
        self._building: list[Node] = []
        self._nodes = 0
        self._env_seen: set[tuple[int, str]] = set()

    # -- issues -------------------------------------------------------------------------------

    def issue(
        self, path: tuple[str | int, ...], message: str, *, line: int | None = None, line_of: str = "key"
    ) -> None:
        if line is None:
            line = self.line(path, line_of)
        self.issues.append(ConfigIssue(self.filename, line, _format_path(path), message))

    def line(self, path: tuple[str | int, ...], line_of: str = "key") -> int | None:
        """The line of `path`, or of the nearest enclosing key that was written (for a missing key)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                key_line, value_line = self.lines[path[:end]]
                return value_line if line_of == "value" and end == len(path) else key_line
        return None

    def yaml_issue(self, exc: yaml.MarkedYAMLError) -> ConfigIssue:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot be parsed"
        if exc.context and exc.problem and exc.context_mark is not None:
            if "end of stream" in exc.problem:  # the end of the file is no place to look: say where it began
                mark = exc.context_mark
                problem = f"{exc.context} that starts here, {exc.problem}"
            elif exc.problem_mark is not None and exc.context_mark.line != exc.problem_mark.line:
                problem = f"{exc.problem} ({exc.context} at line {exc.context_mark.line + 1})"
            else:
                problem = f"{exc.problem} ({exc.context})"
        column = f" at column {mark.column + 1}" if mark is not None else ""
        return ConfigIssue(
            self.filename, mark.line + 1 if mark is not None else None, "", f"invalid YAML{column}: {problem}"
        )

    # -- nodes -> data ------------------------------------------------------------------------

    def read(self, root: Node) -> Any:
        line = root.start_mark.line + 1
        self.lines[()] = (line, line)
        try:
            return self._build(root, ())
        except _TooLarge:
            raise ConfigError(
                [
                    ConfigIssue(
                        self.filename,
                        line,
                        "",
                        f"the document expands to more than {_MAX_NODES} values (aliases inside aliases?)",
                    )
                ]
            ) from None

    def _build(self, node: Node, path: tuple[str | int, ...]) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _TooLarge
        if any(node is outer for outer in self._building):
            self._fail(path, node, "an alias refers to a value that contains it; YAML recursion is not supported")
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            self._fail(path, node, f"unsupported YAML tag {node.tag!r}")
            return None
        self._building.append(node)
        try:
            if isinstance(node, SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    line = item.start_mark.line + 1
                    self.lines[path + (index,)] = (line, line)
                    items.append(self._build(item, path + (index,)))
                return items
            assert isinstance(node, MappingNode)  # the one kind of YAML node left
            return self._mapping(node, path)
        finally:
            self._building.pop()

    def _mapping(self, node: MappingNode, path: tuple[str | int, ...]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        explicit: dict[str, int] = {}
        for key_node, value_node, merged in self._pairs(node, path):
            if not isinstance(key_node, ScalarNode):
                self._fail(path, key_node, "a key must be a plain string, not a list or mapping")
                continue
            key = key_node.value
            key_line = key_node.start_mark.line + 1
            if not merged:
                if key in explicit:
                    self.issue(path + (key,), f"duplicate key {key!r} (first at line {explicit[key]})", line=key_line)
                    continue
                explicit[key] = key_line
            elif key in result:
                continue  # the mapping's own keys, and earlier merges, win over later merges
            self.lines[path + (key,)] = (key_line, value_node.start_mark.line + 1)
            result[key] = self._build(value_node, path + (key,))
        return result

    def _pairs(self, node: MappingNode, path: tuple[str | int, ...]) -> list[tuple[Node, Node, bool]]:
        """The mapping's own pairs, then those its `<<` merge keys bring in (flagged merged)."""
        own: list[tuple[Node, Node, bool]] = []
        merged: list[tuple[Node, Node, bool]] = []
        merge_line: int | None = None
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node, False))
                continue
            line = key_node.start_mark.line + 1
            if merge_line is not None:
                self.issue(
                    path,
                    f"duplicate merge key '<<' (first at line {merge_line}); write <<: [*a, *b] to merge several",
                    line=line,
                )
                continue
            merge_line = line
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self.issue(
                        path, "merge key '<<' expects a mapping or a list of mappings, like <<: *base", line=line
                    )
                    continue
                if any(source is outer for outer in self._building):
                    self.issue(path, "merge key '<<' refers to a mapping that contains it", line=line)
                    continue
                self._building.append(source)
                try:
                    pairs = self._pairs(source, path)
                finally:
                    self._building.pop()
                # Merges inside merges multiply: count what they bring in, before it is built.
                self._nodes += len(pairs)
                if self._nodes > _MAX_NODES:
                    raise _TooLarge
                merged.extend((k, v, True) for k, v, _ in pairs)
        return own + merged

    def _scalar(self, node: ScalarNode, path: tuple[str | int, ...]) -> Any:
        try:
            value = self._constructor.construct_object(node, deep=True)
        except Exception:  # a bad !!int, an unknown !tag: never echo the value, it may be a secret
            self._fail(path, node, f"cannot read this value as YAML tag {node.tag!r}")
            return None
        self.written[path] = node.value
        if self.expand_env and isinstance(value, str) and "$" in value:
            value = self._expand(value, path, node.start_mark.line + 1)
        return value

    def _fail(self, path: tuple[str | int, ...], node: Node, message: str) -> None:
        self.issue(path, message, line=node.start_mark.line + 1)
        self.reported.add(path)

    # -- ${VAR} -------------------------------------------------------------------------------

    def _expand(self, value: str, path: tuple[str | int, ...], line: int) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group("dollar"):
                return "$"
            name = match.group("name")
            if name is None:
                self._env_issue(
                    path, line, "", "an unfinished ${...}: write ${VAR} or ${VAR:-default}, or $$ for a literal $"
                )
                return ""
            current = os.environ.get(name)
            if current:
                return current
            if match.group("default") is not None:
                return match.group("default")
            if current is None:
                self._env_issue(
                    path,
                    line,
                    name,
                    f"environment variable {name!r} is not set; set it, or write ${{{name}:-default}}, or $$ for a literal $",
                )
            return ""

        return _ENV.sub(substitute, value)

    def _env_issue(self, path: tuple[str | int, ...], line: int, name: str, message: str) -> None:
        self.reported.add(path)
        if (line, name) not in self._env_seen:  # a shared anchor is read once per use; say it once
            self._env_seen.add((line, name))
            self.issue(path, message, line=line)

    # -- checks pydantic cannot do with lines ---------------------------------------------------

    def check(self, raw: dict[str, Any]) -> None:
        """Target names unique, timeouts within intervals, label names, target prefixes: every one, with lines."""
        targets = raw.get("targets")
        if not isinstance(targets, list):
            return
        defaults = _defaults_or_none(raw.get("defaults", {}))
        names: dict[str, int | None] = {}
        for index, target in enumerate(targets):
            if not isinstance(target, dict):
                continue
            here = ("targets", index)
            name = target.get("name")
            if isinstance(name, str):
                if name in names:
                    self.issue(
                        here + ("name",), f"duplicate target name {name!r} (first defined at line {names[name]})"
                    )
                else:
                    names[name] = self.line(here + ("name",))
            self._check_timing(here, target, defaults)
            self._check_labels(here, target)
            prefix = target.get("prefix")
            if isinstance(prefix, str) and prefix and not PREFIX.match(prefix):
                self.issue(here + ("prefix",), _prefix_message(prefix))

    def _check_timing(self, here: tuple[str | int, ...], target: dict[str, Any], defaults: Defaults | None) -> None:
        if "timeout" not in target:
            return  # an inherited timeout shrinks to fit the interval
        timeout = _duration_or_none(target["timeout"])
        if "interval" in target:
            interval, interval_from = _duration_or_none(target["interval"]), ""
        else:
            interval, interval_from = (defaults.interval if defaults else None), " (from defaults.interval)"
        problem = timing_problem(timeout, interval, interval_from)
        if problem:
            self.issue(here + ("timeout",), problem)

    def _check_labels(self, here: tuple[str | int, ...], target: dict[str, Any]) -> None:
        labels = target.get("labels")
        kind_name = target.get("type")
        kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if not isinstance(labels, dict) or kind is None:
            return
        checks = _field_validators(kind.config, "labels")
        for key in labels:
            for check in checks:
                try:
                    check({key: ""})
                except ValueError as exc:
                    self.issue(here + ("labels", key), str(exc))
                    self.checked.add(here + ("labels",))
                    break

    # -- pydantic errors ----------------------------------------------------------------------

    def validate(self, model: type[M], data: dict[str, Any], context: dict[str, Any] | None = None) -> M:
        """`data` as `model`; ConfigError with every issue found, the reader's own ones included."""
        self._data = data
        try:
            result = model.model_validate(data, context=context)
        except ValidationError as exc:
            self.add_validation_errors(exc)
            raise ConfigError(self.issues) from None
        if self.issues:
            raise ConfigError(self.issues)
        return result

    def add_validation_errors(self, exc: ValidationError) -> None:
        checked_already = bool(self.issues)
        for error in exc.errors(include_url=False):
            if error["type"] == "config_check" and checked_already:
                continue  # the same findings as check(), which said where
            path, _ = _locate(error["loc"], self.root, self._kind_of)
            if any(path[:end] in self.reported for end in range(len(path) + 1)):
                continue
            if path in self.checked and error["type"] == "value_error":
                continue
            kind = error["type"]
            if kind == "missing":
                self.issue(path[:-1], f"missing required key {path[-1]!r}")
            elif kind == "extra_forbidden":
                parent = _locate(error["loc"][:-1], self.root, self._kind_of)[1]
                valid = keys_of(parent) if parent else []
                self.issue(path, unknown_key_message(str(path[-1]), valid))
            elif kind == "union_tag_invalid":
                tag = error.get("ctx", {}).get("tag")
                self.issue(
                    path + ("type",), f"unknown target type {tag!r}; expected one of: {', '.join(sorted(KINDS))}"
                )
            elif kind == "union_tag_not_found":
                self.issue(path, f"missing required key 'type'; expected one of: {', '.join(sorted(KINDS))}")
            elif kind == "timeout_over_interval":
                self.issue(path + ("timeout",), error["msg"])
            elif kind == "config_check":
                self.issue(path, error["msg"])
            else:
                scalar = not isinstance(error.get("input"), (dict, list))
                self.issue(path, self._describe(error, path), line_of="value" if scalar else "key")

    def _kind_of(self, index: int) -> type[BaseModel] | None:
        """The schema of the validated data's target at `index`, by its `type:`; None if it has no known one."""
        targets = self._data.get("targets")
        target = targets[index] if isinstance(targets, list) and 0 <= index < len(targets) else None
        tag = target.get("type") if isinstance(target, dict) else None
        kind = KINDS.get(tag) if isinstance(tag, str) else None
        return kind.config if kind is not None else None

    def _describe(self, error: Any, path: tuple[str | int, ...]) -> str:
        kind, ctx = error["type"], error.get("ctx", {})
        if kind in ("value_error", "assertion_error") and "error" in ctx:
            return str(ctx["error"])
        secret = holds_secret(_type_at(error["loc"], self.root, self._kind_of))
        value = error.get("input")
        got = "" if secret and not isinstance(value, (dict, list)) and value is not None else f", got {shown(value)}"
        if kind == "string_type":
            written = self.written.get(path)
            if written is not None and value is not None and not secret:
                return f'expected a string, got {shown(value)}; write it in quotes, "{written}", to keep it as text'
            return f"expected a string{got}"
        if kind in ("int_type", "int_parsing", "int_from_float"):
            return f"expected a whole number{got}"
        if kind in ("float_type", "float_parsing"):
            return f"expected a number{got}"
        if kind in ("bool_type", "bool_parsing"):
            return f"expected true or false{got}"
        if kind in ("dict_type", "model_type", "model_attributes_type"):
            return f"expected a mapping of keys to values{got}"
        if kind in ("list_type", "tuple_type"):
            return f"expected a list (items written '- ...'){got}"
        for bound, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if bound in ctx and kind.startswith(("greater_than", "less_than")):
                return f"expected a value {word} {ctx[bound]}{got}"
        if kind == "string_pattern_mismatch":
            if path and path[-1] == "name":
                return f"expected a name of letters, digits and _ . : - that starts with a letter or digit{got}"
            return f"expected text matching {ctx.get('pattern')}{got}"
        if kind == "string_too_long":
            return f"expected at most {ctx.get('max_length')} characters"
        if kind == "literal_error":
            return f"expected one of: {ctx.get('expected')}{got}"
        message = error["msg"]
        return f"{message[:1].lower()}{message[1:]}{got}"


class _TooLarge(Exception):
    pass


_ENV = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bad>\{))")


def _locate(
    loc: tuple[Any, ...],
    root: type[BaseModel],
    kind_of: Callable[[int], type[BaseModel] | None],
) -> tuple[tuple[str | int, ...], type[BaseModel] | None]:
    """A pydantic error location -> (the key path as written, the model that path ends in, if any).

    Pydantic's own markers are not keys; a target's fields are those of its kind (`kind_of` its index).
    """
    path, current = _walk(loc, root, kind_of)
    model = _unwrap(current)
    return path, model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _type_at(loc: tuple[Any, ...], root: type[BaseModel], kind_of: Callable[[int], type[BaseModel] | None]) -> Any:
    """The schema's type at a pydantic error location (None where the schema has no such key)."""
    return _walk(loc, root, kind_of)[1]


def _walk(
    loc: tuple[Any, ...], root: type[BaseModel], kind_of: Callable[[int], type[BaseModel] | None]
) -> tuple[tuple[str | int, ...], Any]:
    path: list[str | int] = []
    current: Any = root
    for part in loc:
        if part == "[key]":
            continue
        unwrapped = _unwrap(current)
        path.append(part)
        if root is Config and len(path) == 2 and path[0] == "targets" and isinstance(part, int):
            current = kind_of(part)  # a target's fields are its kind's
        else:
            current = _child_type(unwrapped, part)
    return tuple(path), current


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _child_type(tp: Any, part: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    origin = typing.get_origin(tp)
    if origin in (list, tuple, set, frozenset):
        return typing.get_args(tp)[0]
    if origin is dict:
        return typing.get_args(tp)[1]
    return None


def keys_of(model: type[BaseModel]) -> list[str]:
    return sorted(
        name for name in model.model_fields if not (model is Config and name in ("source", "loaded_profiles"))
    )


def unknown_key_message(key: str, valid: list[str]) -> str:
    by_lower = {name.lower(): name for name in valid}
    import difflib  # for a config with a mistake in it only

    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
    return f"unknown key{hint}; expected one of: {', '.join(valid)}"


def _prefix_message(prefix: str) -> str:
    try:
        check_prefix(prefix)
    except ValueError as exc:
        return str(exc)
    return ""


def _field_validators(model: type[BaseModel], field: str) -> list[Any]:
    """The model's own after-validators of `field`, to run them key by key (a dict validator stops at the first)."""
    try:
        decorators = model.__pydantic_decorators__.field_validators.values()
        return [d.func for d in decorators if field in d.info.fields and d.info.mode == "after"]
    except AttributeError:
        return []


def _defaults_or_none(raw: Any) -> Defaults | None:
    try:
        return Defaults.model_validate(raw)
    except ValidationError:
        return None


def _duration_or_none(value: Any) -> float | None:
    try:
        return parse_duration(value)
    except ValueError:
        return None


def _format_path(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_\-/]+", part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


__all__ = ["MAX_CONFIG_BYTES", "ConfigError", "ConfigIssue", "Reader", "compose", "parse_model", "read_text"]
