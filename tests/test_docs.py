"""The READMEs are landing pages; the rest lives in docs/, in English and Chinese, linked."""

import re

import pytest

from conftest import REPO

PAGES = sorted(REPO.glob("docs/*.md")) + [REPO / "README.md", REPO / "README.zh-CN.md"]


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
def test_each_readme_is_a_landing_page_of_at_most_200_lines(readme):
    assert len((REPO / readme).read_text().splitlines()) <= 200


def test_every_english_page_has_its_chinese_twin():
    english = {p.name for p in REPO.glob("docs/*.md") if not p.name.endswith(".zh-CN.md")}
    chinese = {p.name.replace(".zh-CN", "") for p in REPO.glob("docs/*.zh-CN.md")}
    assert english == chinese and len(english) >= 8


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked.read_text()), f"{page.name}: {target}"
