"""The tests' own layout stays as docs/development.md describes it ("Where a test goes").

Test files sit in folders by kind (unit/ mirroring the package, integration/, deployment/, docs/,
bench/), what they share sits in the helpers package, and tests/ itself holds only conftest.py and
run.sh. Test folders are not packages: pytest imports each test file by its basename (its default
"prepend" import mode) and mypy names it so too, so two test files of one name in two folders would
clash; this test says so first, by name.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from helpers.support import REPO

TESTS = REPO / "tests"
#: The folders test files go in (see docs/development.md).
FOLDERS = {"unit", "integration", "deployment", "docs", "bench"}
#: Never tests or helpers: data, and what runs leave behind.
NOT_CODE = {"testdata", "artifacts", "__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def python_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if not NOT_CODE & set(path.relative_to(TESTS).parts[:-1]))


def is_test_file(path: Path) -> bool:
    return path.name.startswith("test_") or path.name.endswith("_test.py")


def test_tests_itself_holds_only_conftest_and_the_folders():
    loose = [path.name for path in TESTS.glob("*.py") if path.name != "conftest.py"]
    assert loose == [], (
        f"move {loose} out of tests/: a test file into one of {sorted(FOLDERS)}, a helper into tests/helpers/"
    )
    folders = {path.name for path in TESTS.iterdir() if path.is_dir()} - NOT_CODE
    assert folders <= FOLDERS | {"helpers"}, (
        f"tests/{sorted(folders - FOLDERS - {'helpers'})}: a new kind of test folder; put the tests in one of "
        f"{sorted(FOLDERS)}, or add the folder here and to docs/development.md"
    )


def test_every_test_file_is_in_a_test_folder_and_every_other_module_in_helpers():
    misplaced = []
    for path in python_files():
        where = path.relative_to(TESTS)
        top = where.parts[0]
        if path.name == "conftest.py":
            continue  # fixtures and hooks: pytest finds them in any folder
        if is_test_file(path):
            if top not in FOLDERS:
                misplaced.append(f"{where}: a test file goes under one of {sorted(FOLDERS)}")
        elif top != "helpers":
            misplaced.append(f"{where}: a module the tests share goes in tests/helpers/")
    assert misplaced == []


def test_helpers_is_a_package_and_the_test_folders_are_not():
    assert (TESTS / "helpers" / "__init__.py").is_file()
    packages = [
        str(path.relative_to(TESTS))
        for path in python_files()
        if path.name == "__init__.py" and path.parent.name != "helpers"
    ]
    assert packages == [], "test folders are not packages: pytest and mypy import test files by their basename"


def test_no_two_test_files_share_a_name():
    folders_of = defaultdict(list)
    for path in python_files():
        if is_test_file(path):
            folders_of[path.name].append(str(path.parent.relative_to(TESTS)))
    clashes = {name: folders for name, folders in folders_of.items() if len(folders) > 1}
    assert clashes == {}, "rename one of each: pytest imports a test file by its basename, so these clash"


def test_unit_folders_mirror_the_package():
    folders = {path.parent.relative_to(TESTS / "unit") for path in (TESTS / "unit").rglob("test_*.py")}
    strays = [
        f"tests/unit/{folder}"
        for folder in sorted(folders)
        if folder.parts and not (REPO / "exporter" / folder).is_dir()
    ]
    assert strays == [], "tests/unit/<folder> is named after the folder of exporter/ whose modules it tests"


#: Paths under tests/ named in the docs, the README and the scripts around the tests.
NAMED_PATH = re.compile(r"\btests/[\w./-]+\.(?:py|sh)\b")


def test_every_test_path_the_docs_and_scripts_name_exists():
    named = [REPO / "README.md", REPO / "pyproject.toml", *(REPO / "docs").glob("*.md"), *(REPO / "bench").glob("*.py")]
    named += [REPO / ".ci" / "run", TESTS / "run.sh", *python_files()]
    gone = sorted(
        f"{path.relative_to(REPO)}: {name}"
        for path in named
        if path.is_file()
        for name in set(NAMED_PATH.findall(path.read_text(encoding="utf-8")))
        if not (REPO / name).exists()
    )
    assert gone == []


def test_a_test_file_imports_another_only_from_its_own_folder():
    """Pytest puts a test file's own folder on sys.path, and no other: what tests in two folders share
    belongs in tests/helpers/."""
    imported = re.compile(r"^\s*(?:from|import) (test_\w+)", re.M)
    strays = sorted(
        f"{path.relative_to(TESTS)} imports {name}"
        for path in python_files()
        for name in set(imported.findall(path.read_text(encoding="utf-8")))
        if not (path.parent / f"{name}.py").is_file()
    )
    assert strays == [], "move what they share into tests/helpers/"
