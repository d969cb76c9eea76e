"""Every config mistake in tests/testdata/config/ is refused with the error expected.yaml gives for it.

The cases are files, as in blackbox_exporter's config/testdata/invalid-*.yml: each is loaded from its
path with the real loader, so the error names the file and line a user would see. To add a case, add
an invalid-<what>.yml (line 1 a comment saying what is wrong) and its lines in expected.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import support

from exporter.config.loader import ConfigError, load_config
from exporter.sources import KINDS

TESTDATA = support.TESTDATA / "config"
EXPECTED: dict[str, list[str] | dict[str, list[str]]] = yaml.safe_load(
    (TESTDATA / "expected.yaml").read_text(encoding="utf-8")
)
FILES = sorted(path.name for path in TESTDATA.glob("invalid-*.yml"))
#: `${VAR}` without a default: a case that uses one means it to be unset.
UNSET_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expectation(name: str, path: Path) -> tuple[list[str], list[str]]:
    """(the start of each reported line, values that must not appear) for `name`, placeholders filled in."""
    entry = EXPECTED.get(name)
    if entry is None:
        pytest.fail(f"{name} has no entry in {TESTDATA / 'expected.yaml'}")
    lines, hidden = (entry["errors"], entry.get("hidden", [])) if isinstance(entry, dict) else (entry, [])
    kinds = ", ".join(sorted(KINDS))  # every registered kind, whichever modules are in this build
    return [line.replace("{file}", str(path)).replace("{kinds}", kinds) for line in lines], hidden


def test_every_invalid_file_has_an_expectation_and_every_expectation_a_file():
    assert FILES, f"no invalid-*.yml in {TESTDATA}"
    assert sorted(set(FILES) - set(EXPECTED)) == [], "files without an entry in expected.yaml"
    assert sorted(set(EXPECTED) - set(FILES)) == [], "entries in expected.yaml without a file"


@pytest.mark.parametrize("name", FILES)
def test_invalid_config_is_refused_naming_file_line_and_reason(name, monkeypatch):
    path = TESTDATA / name
    for variable in UNSET_VARIABLE.findall(path.read_text(encoding="utf-8")):
        monkeypatch.delenv(variable, raising=False)
    expected, hidden = expectation(name, path)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    reported = str(caught.value).splitlines()
    assert reported == [str(issue) for issue in caught.value.issues], "one line per problem"
    assert len(reported) == len(expected), "\n".join(reported)
    assert [line[: len(start)] for line, start in zip(reported, expected)] == expected
    for value in hidden:
        assert value not in str(caught.value)
