"""Command-line options that also come from the environment, the container convention.

`--log-level` is also `INFERENCE_EXPORTER_LOG_LEVEL`, `--web.config.file` also
`INFERENCE_EXPORTER_WEB_CONFIG_FILE`. A flag on the command line wins over its variable, the
variable over the built-in default; an empty variable counts as unset. A bad value fails like a bad
flag (usage, then the variable and what is wrong with its value; exit 2), and the value of an option
marked secret is never shown.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

PREFIX = "INFERENCE_EXPORTER_"
#: Variables with our prefix that are not options (the systemd unit's, the tests'): no option may take one.
RESERVED = frozenset(
    {
        "INFERENCE_EXPORTER_OPTS",
        "INFERENCE_EXPORTER_FIXTURES",
        "INFERENCE_EXPORTER_REQUIRE_TOOLS",
        "INFERENCE_EXPORTER_PURE_PYTHON",  # exporter.format.accel: the compiled accelerator's pure-Python twin
    }
)
#: What a switch (`--demo`) accepts from its variable, in any case.
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
#: The longest value an error message quotes.
SHOWN_CHARS = 80

_UNSEEN = object()  # stands in for an option's value while the command line is parsed


def variable_for(flag: str) -> str:
    """`--web.config.file` -> `INFERENCE_EXPORTER_WEB_CONFIG_FILE`."""
    return PREFIX + flag.lstrip("-").upper().replace("-", "_").replace(".", "_")


def variable_of(action: argparse.Action) -> str | None:
    """The variable an option takes its default from; None for one that has none (`--target`, `--help`)."""
    return getattr(action, "env_variable", None)


class EnvHelpFormatter(argparse.HelpFormatter):
    """Wraps help as argparse does, but never inside `[env: NAME]`, so the name can be found and copied."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        lines = super()._split_lines(text.replace("[env: ", "[env:\0"), width)
        return [line.replace("\0", " ") for line in lines]


class EnvArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose `add_env_argument` options fall back to their environment variables.

    Subparsers made with `add_subparsers().add_parser` are of this class too, so each command reads
    the variables of its own options when it parses.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", EnvHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_env_argument(
        self, *flags: str, secret: bool = False, required: bool = False, **kwargs: Any
    ) -> argparse.Action:
        """`add_argument` for an option with a variable, named after its longest flag; `[env: NAME]` ends its help.

        `required`: the flag or the variable must be given. `secret`: errors never show the value.
        """
        name = variable_for(max(flags, key=len))
        if name in RESERVED:
            raise ValueError(f"{name} is already used for something else; give the option another name")
        kwargs["help"] = f"{kwargs.get('help', '')} [env: {name}]".lstrip()
        action = self.add_argument(*flags, **kwargs)
        if action.nargs not in (None, 0) or action.option_strings == []:
            raise ValueError(f"{flags[0]}: only an option with one value, or a switch, can have a variable")
        action.env_variable = name  # type: ignore[attr-defined]
        action.env_secret = secret  # type: ignore[attr-defined]
        action.env_required = required  # type: ignore[attr-defined]
        return action

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace = argparse.Namespace() if namespace is None else namespace
        from_env = [action for action in self._actions if variable_of(action) and not hasattr(namespace, action.dest)]
        # Hold each place so argparse neither fills in the default nor hides whether the flag was given.
        for action in from_env:
            setattr(namespace, action.dest, _UNSEEN)
        namespace, extras = super().parse_known_args(args, namespace)
        for action in from_env:
            if getattr(namespace, action.dest) is _UNSEEN:  # not on the command line
                setattr(namespace, action.dest, self._from_environment(action))
        missing = [
            action
            for action in from_env
            if action.env_required and getattr(namespace, action.dest) is None  # type: ignore[attr-defined]
        ]
        if missing:
            self.error(
                "the following arguments are required: "
                + ", ".join(f"{action.option_strings[-1]} (or {variable_of(action)})" for action in missing)
            )
        return namespace, extras

    def _from_environment(self, action: argparse.Action) -> Any:
        """The option's value from its variable, or its default when the variable is unset or empty."""
        name = variable_of(action)
        assert name is not None
        raw = os.environ.get(name, "")
        if raw == "":
            return action.default
        shown = "(not shown: a secret)" if action.env_secret else _show(raw)  # type: ignore[attr-defined]
        if action.nargs == 0:  # a switch: store_true, store_false, store_const
            word = raw.strip().lower()
            if word in TRUE_WORDS:
                return action.const
            if word in FALSE_WORDS:
                return action.default
            self.error(f"{name}: expected true or false (or 1/0, yes/no), got {shown}")
        value: Any = raw
        if action.type is not None:
            try:
                value = action.type(raw)  # type: ignore[operator]
            except argparse.ArgumentTypeError as exc:
                self.error(f"{name}: {'invalid value ' + shown if action.env_secret else exc}")  # type: ignore[attr-defined]
            except (TypeError, ValueError):
                kind = getattr(action.type, "__name__", "")
                self.error(f"{name}: invalid {kind} value {shown}".replace("  ", " "))
        if action.choices is not None and value not in action.choices:
            self.error(f"{name}: invalid choice {shown} (choose from {', '.join(map(str, action.choices))})")
        return value


def _show(raw: str) -> str:
    """A value for an error message: quoted, bounded, its control characters escaped."""
    return repr(raw if len(raw) <= SHOWN_CHARS else raw[:SHOWN_CHARS] + "...")
