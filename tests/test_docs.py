"""The user documentation: README size and links, the reject-reason table against errors.REASONS, no work history."""
from __future__ import annotations

import re
from pathlib import Path

from crystalflow.common.errors import REASONS

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
#: phrases that narrate work history rather than describe the software or a dated measurement
HISTORY = re.compile(r"this session|previous session|earlier session|when we stopped|last session", re.I)


def test_readme_is_short_and_links_exist() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(((?:docs|crystalflow)/[^)#]+)\)", text):
        assert (REPO / target).exists(), target


def test_reject_reason_table_lists_every_reason_in_order() -> None:
    text = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    block = text[text.index("| reason | meaning |"):].split("\n\n", 1)[0]
    assert re.findall(r"^\| `([a-z_0-9]+)` \| ", block, re.M) == list(REASONS)


def test_no_work_history_in_the_documentation() -> None:
    for path in [REPO / "README.md", *DOCS]:
        found = HISTORY.findall(path.read_text(encoding="utf-8"))
        assert not found, (path.name, found)
