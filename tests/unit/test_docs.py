"""The README and the pages under docs/: every relative link leads to a file (and a heading) that
exists, and the README's repository layout matches the tree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    heading = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_slugs_are_githubs() -> None:
    assert slug("Blurred faces: files as outputs (`face-blur`, `video-blur`)") == (
        "blurred-faces-files-as-outputs-face-blur-video-blur"
    )
    assert slug("The console's routes") == "the-consoles-routes"
    assert slug("The `dlpipe` command") == "the-dlpipe-command"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or REPO not in (dest, *dest.parents):
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no such heading in {dest.relative_to(REPO)}")
    assert broken == []


def test_every_page_of_docs_is_reached_from_the_readme() -> None:
    reached, todo = {README}, [README]
    while todo:
        page = todo.pop()
        for target in relative_links(page):
            dest = (page.parent / target.partition("#")[0]).resolve()
            if dest.suffix == ".md" and dest.exists() and dest not in reached:
                reached.add(dest)
                todo.append(dest)
    assert set(PAGES) - reached == set()


# --- the layout ----------------------------------------------------------------------------


def layout() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Repository layout\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```\n(.*?)^```", section, re.S | re.M)
    assert block, "the layout is a code block"
    return block[1].splitlines()


def test_every_name_in_the_layout_exists() -> None:
    missing, parent = [], REPO
    for line in layout():
        top = re.match(r"([\w.-]+(?:/[\w.-]+)*/?)(?:\s|$)", line)
        child = re.match(r"  ([\w.-]+/?)(?:\s|,|$)", line)
        if top:
            path = REPO / top[1]
            parent = path if top[1].endswith("/") else REPO
        elif child:
            path = parent / child[1]
        else:
            continue
        if not path.exists():
            missing.append(str(path.relative_to(REPO)))
    assert missing == []


def test_the_layout_names_every_top_level_folder_and_file() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    top = {line.split("/", 1)[0] + ("/" if "/" in line else "") for line in tracked.splitlines()}
    top = {name for name in top if not name.startswith(".") and name != "README.md"}
    named = {
        m[1].split("/", 1)[0] + ("/" if "/" in m[1] else "")
        for line in layout()
        if (m := re.match(r"([\w.-]+(?:/[\w.-]*)*)(?:\s|$)", line))
    }
    assert top - named == set(), "in the tree, not in the README's layout"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_test_a_page_names_exists(page: Path) -> None:
    """A page saying which test runs its example names a test module (and test) that is there."""
    missing = []
    for path, name in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", page.read_text()):
        module = REPO / path
        if not module.is_file() or (name and f"def {name}(" not in module.read_text()):
            missing.append(f"{path}::{name}" if name else path)
    assert missing == [], missing
