"""Pointers from the code, params.yaml and the presets into the docs stay true: every
`docs/<page>.md` named exists, and a section named after it (`docs/results.md, *Transfer learning
on a CPU*`, `"..."`, or plain words up to the closing bracket) begins a heading of that page (or a paragraph's bold
title). The
README's sections moved to docs/ once and the pointers went stale: this keeps them from drifting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((REPO / "pipeline").rglob("*.py")),
    REPO / "params.yaml",
    *sorted((REPO / "presets").glob("*.yaml")),
    *sorted((REPO / "benchmarks").glob("*.py")),
]
POINTER = re.compile(r"(docs/[a-z0-9-]+\.md)(?:, ?(?:\*([^*]+)\*|\"([^\"]+)\"|([A-Z][^)\n.;:]*)))?")


def headings(page: Path) -> list[str]:
    """A page's headings, and its run-in paragraph titles (`**Memory allocator.** On Linux, ...`)."""
    lines = page.read_text().splitlines()
    run_in = [m.group(1) for line in lines if (m := re.match(r"\*\*([^*]+?)\.?\*\*", line))]
    return [h.strip().lower() for h in [line.lstrip("#") for line in lines if line.startswith("#")] + run_in]


def pointers() -> list[tuple[str, str, str | None]]:
    found = []
    for source in SOURCES:
        for m in POINTER.finditer(source.read_text()):
            section = next((g for g in m.groups()[1:] if g), None)
            found.append((f"{source.relative_to(REPO)}", m.group(1), section.strip() if section else None))
    return found


def test_the_finder_reads_each_way_of_naming_a_section():
    text = 'x (docs/a.md, *One two*) y (docs/b.md, "Three") z (docs/c.md, Four five) w (docs/d.md)'
    assert [(m.group(1), next((g for g in m.groups()[1:] if g), None)) for m in POINTER.finditer(text)] == [
        ("docs/a.md", "One two"),
        ("docs/b.md", "Three"),
        ("docs/c.md", "Four five"),
        ("docs/d.md", None),
    ]


@pytest.mark.parametrize("where, page, section", pointers(), ids=lambda v: str(v)[:60])
def test_every_docs_pointer_names_a_page_and_a_heading_that_exist(where, page, section):
    assert (REPO / page).is_file(), f"{where} points at {page}, which does not exist"
    if section:
        assert any(h.startswith(section.lower()) for h in headings(REPO / page)), (
            f"{where}: {page} has no heading starting {section!r}"
        )


def test_nothing_points_at_a_readme_section_any_more():
    stale = [
        f"{s.relative_to(REPO)}: {m.group(0)}"
        for s in SOURCES
        for m in re.finditer(r"README(?:\.md)?, ?[*\"(]", s.read_text())
    ]
    assert stale == []


def preset_rows(page: Path) -> dict[str, list[str]]:
    """{preset: its table row's cells} of a page's presets table (rows that begin with a `name`)."""
    rows = {}
    for line in page.read_text().splitlines():
        if m := re.match(r"\| `([a-z0-9-]+)`", line):
            rows[m.group(1)] = [cell.strip() for cell in line.strip().strip("|").split("|")]
    return rows


def test_the_readmes_preset_times_are_the_running_pages():
    # the times in the README's table are copies: running.md's table names the machines and commands
    readme, running = preset_rows(REPO / "README.md"), preset_rows(REPO / "docs" / "running.md")
    assert {"quickstart", "cpu-64", "cpu-zoo", "cpu-transfer", "cpu-course"} <= set(readme)
    for name, cells in readme.items():
        assert cells[-2:] == running[name][-2:], name
    header = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| preset |"))
    assert "AVX-512 BF16" in header and "AVX2 only" in header  # a time says on which CPU


def test_the_pipeline_page_names_every_module():
    # docs/pipeline.md, the newcomer's map: a stage by its name in the stages table, any other module by its file
    page = (REPO / "docs" / "pipeline.md").read_text()
    stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    missing = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        named = f"`{path.stem}`" if path.parent.name == "pipeline" and path.stem in stages else f"`{path.name}`"
        if named not in page:
            missing.append(path.relative_to(REPO).as_posix())
    assert missing == []


def test_the_stored_durations_name_test_files_that_exist():
    # tests/durations.json orders a fresh clone's files (tests/conftest.py): a renamed file would be guessed
    stored = json.loads((REPO / "tests" / "durations.json").read_text())
    files = {p.name for p in (REPO / "tests").glob("test_*.py")}
    assert set(stored) <= files, sorted(set(stored) - files)
    assert all(isinstance(s, (int, float)) and s >= 0 for s in stored.values())
