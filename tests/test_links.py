"""Every relative link in README.md, docs/ and results/**/README.md names a file or folder that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target)
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "results").rglob("README.md")])


def relative_links(text: str) -> list[str]:
    targets = (m.group(1) for m in LINK.finditer(text))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_links_are_found_in_markdown_as_written():
    text = "see [a](results/x.md), ![fig](curves.png \"title\"), [web](https://x.org), [here](#tests), [b](<c.csv>)"
    assert relative_links(text) == ["results/x.md", "curves.png", "c.csv"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(document):
    missing = [t for t in relative_links(document.read_text(encoding="utf-8"))
               if not (document.parent / t.split("#")[0]).exists()]
    assert missing == [], f"{document.relative_to(REPO)} links to missing {missing}"
