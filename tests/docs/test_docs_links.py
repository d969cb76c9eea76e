"""The README and docs/ hold together: every relative link leads to a file that exists and, where it
names an anchor, to a heading of that file (as GitHub makes anchors); the README's minimal config is
one `check-config` accepts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

#: The checkout: the folder above this file that holds pyproject.toml (wherever tests/ puts this file).
REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans, where links are links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces as `-`,
    a repeated one suffixed `-1`, `-2`..."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r"#{1,6} (.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def links(page: Path) -> list[str]:
    return [target for _, target in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z]+:", target)]


def test_the_docs_pages_are_there():
    names = {page.name for page in PAGES}
    assert {
        "README.md",
        "configuration.md",
        "nats.md",
        "gpus.md",
        "vocabulary.md",
        "security.md",
        "deployment.md",
        "performance.md",
        "development.md",
    } <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_readme_links_every_docs_page():
    linked = {(REPO / target.partition("#")[0]).resolve() for target in links(REPO / "README.md")}
    assert set(PAGES[1:]) <= linked, {page.name for page in set(PAGES[1:]) - linked}


def test_the_readme_minimal_config_is_valid(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## A minimal config") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert example, "README has no minimal config"
    (tmp_path / "config.yaml").write_text(example[1])
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


def test_the_readme_stays_a_newcomer_s_page():
    """What it is, how to run and test it, what it serves, a minimal config, links: the rest is in docs/."""
    assert len((REPO / "README.md").read_bytes()) <= 16 * 1024
