"""The README and docs/ link each other and the reports by relative paths: each must lead to
a file of the checkout, and each #anchor to a heading there (GitHub's anchors). An unpacked
sdist has no reports/ (90 MB of reports and plots): links into it are checked in a checkout."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPORTS = ROOT / "reports"


def anchors(page: Path) -> set[str]:
    """GitHub's anchor of each heading: lower case, punctuation dropped, spaces as hyphens."""
    heads = (line.lstrip("#").strip() for line in page.read_text().splitlines()
             if line.startswith("#"))
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_the_anchor_rule():
    assert "2-core-amd-zen-3-vm-avx2-no-gpu" in anchors(ROOT / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_lead_somewhere(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code is not links
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links or page.name != "README.md"
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not REPORTS.is_dir() and target.is_relative_to(REPORTS):
            continue  # an sdist
        if not target.exists() or (anchor and anchor not in anchors(target)):
            broken.append(link)
    assert not broken, f"{page.name}: {broken}"
