"""Every relative link in the README and the docs points at a file of the repository, and every
test they cite exists."""

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


# `tests/x/test_y.py::test_name[param]`, and `::other` for another test of the last file named
TEST_REF = re.compile(r"(tests/[\w/]+\.py)?::(\w+)")


def missing_tests(path):
    """Tests cited in the markdown file ``path`` (``tests/<file>.py::<name>``, or ``::<name>``
    after a file on the same line) whose file or ``def <name>`` does not exist."""
    bad = []
    with open(path) as f:
        for line in f:
            current = None
            for match in TEST_REF.finditer(line):
                current = match.group(1) or current
                if current is None:
                    continue
                file = os.path.join(REPO, current)
                try:
                    with open(file) as f_test:
                        ok = re.search(rf"def {match.group(2)}\b", f_test.read()) is not None
                except OSError:
                    ok = False
                if not ok:
                    bad.append(f"{current}::{match.group(2)}")
    return bad


def test_cited_tests_exist():
    files = _markdown_files()
    missing = {os.path.relpath(p, REPO): m for p in files if (m := missing_tests(p))}
    assert missing == {}


def test_a_missing_test_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "| a | `tests/test_docs_links.py::test_cited_tests_exist`, `::test_gone` |\n"
        "`tests/nowhere.py::test_x`\n"
    )
    assert missing_tests(str(page)) == [
        "tests/test_docs_links.py::test_gone",
        "tests/nowhere.py::test_x",
    ]
