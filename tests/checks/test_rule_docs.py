"""Every rule in the catalog has its page in docs/rules, and each page agrees with the catalog.

Users reach these pages from every finding (``Rule.docs_url``), so a rule without
a page, a page without a rule, or a page stating another severity is a bug.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from canrun.findings import RULES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rules"


def test_every_rule_has_a_page_and_every_page_a_rule() -> None:
    pages = {p.stem for p in DOCS.glob("*.md")}
    assert pages == set(RULES)


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_page_names_the_rule_its_severity_and_the_fix(rule_id: str) -> None:
    text = (DOCS / f"{rule_id}.md").read_text()
    assert text.startswith(f"# `{rule_id}`")
    severity = re.search(r"\*\*Severity:\*\* (\w+)", text)
    assert severity is not None and severity.group(1) == RULES[rule_id].severity.value
    assert "**Runtime failure:**" in text
    # what the runtime does (or what the finding means), how canrun sees it, how to fix it
    assert "## What the runtime does" in text or "## What it means" in text
    if RULES[rule_id].severity.value != "info":
        assert "## How to fix" in text
    for link in re.findall(r"\]\(([a-z-]+)\.md\)", text):
        assert link in RULES, f"{rule_id}.md links to a rule that does not exist: {link}"


def test_the_package_ships_every_page_as_written() -> None:
    """``canrun explain`` and SARIF read the pages from the package (``canrun/rules`` links to docs/rules, and
    pyproject's package-data puts them in the wheel): what they print is what docs/rules holds."""
    from canrun.findings import rule_page

    for rule_id in RULES:
        assert rule_page(rule_id) == (DOCS / f"{rule_id}.md").read_text()


def test_user_not_found_page_says_the_image_group_is_ignored() -> None:
    """Kubernetes passes only the user part of the image USER on; a missing group cannot fail (architecture.md)."""
    text = (DOCS / "user-not-found.md").read_text()
    assert "ignores the image's group" in text
    assert "passwd/group" not in RULES["user-not-found"].title
