"""Every relative link in the README and the docs points at a file of the repository."""

import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown_files():
    patterns = ("README.md", "docs/*.md", "*/README.md")
    return sorted(p for pattern in patterns for p in glob.glob(os.path.join(REPO, pattern)))


def broken_links(path):
    """Relative link targets of the markdown file ``path`` that do not exist."""
    with open(path) as f:
        text = f.read()
    bad = []
    for match in LINK.finditer(text):
        target = match.group(1).split("#")[0]
        if target and "://" not in target and not target.startswith("mailto:"):
            if not os.path.exists(os.path.join(os.path.dirname(path), target)):
                bad.append(target)
    return bad


def test_relative_links_resolve():
    files = _markdown_files()
    assert len(files) >= 10  # README, docs/*.md, package READMEs
    broken = {os.path.relpath(p, REPO): b for p in files if (b := broken_links(p))}
    assert broken == {}


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [web](https://example.org) [gone](missing.md#part) [a](#top)")
    assert broken_links(str(page)) == ["missing.md"]
