"""The documentation as a user finds it: a front page that fits (at most 250 lines) and pages whose
links lead somewhere."""

from __future__ import annotations

import re

from tests.helpers import DOCS, REPO


def test_the_front_page_fits_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)", readme))
    assert linked == {p.name for p in (REPO / "docs").glob("*.md")}


def test_every_relative_link_leads_to_a_file():
    broken = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} → {target}")
    assert broken == []
